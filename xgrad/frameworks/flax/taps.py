"""One run of a Flax model with every module's ``__call__`` intercepted (for
:mod:`xgrad.frameworks.flax.capture`).

* NNX has no interceptor of its own: while a run is traced, ``__call__`` of every class in
  the merged module's graph is wrapped (the class that defines it; restored on exit, errors
  included), as ``nnx.capture(..., method_outputs=...)`` wraps methods to sow their outputs.
* Linen's is :func:`flax.linen.intercept_methods`; ``training`` switches ``nn.Dropout`` and
  ``nn.BatchNorm`` in the call.

Each call goes through :class:`Taps`, which records it and adds ``eps[path]`` to the
module's first floating output.

Importing this module imports JAX and Flax.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from xgrad.frameworks.capture import Batch, leaf_paths
from xgrad.frameworks.jax.ops import key_path_parts

__all__ = [
    "Call",
    "Forward",
    "Taps",
    "call_inputs",
    "input_arrays",
    "is_float",
    "linen_forward",
    "nnx_forward",
    "patched",
]

Forward = Callable[..., object]
"""``(params, state, args, kwargs, taps) -> what the model returns``: one run of the model
on arrays, every module call going through ``taps`` (:class:`Taps`)."""

# -- one run, tapped ----------------------------------------------------------------------------


@dataclass
class Call:
    """One module call seen in a run: its path, the module, its floating inputs, its first
    floating output leaf (``eps`` added) and where that leaf sits, the mode flags the call
    passed (``deterministic``, ``use_running_average``), and how often it was called."""

    path: str
    module: object
    inputs: list
    output: object | None
    key: str
    flags: dict
    calls: int = 1


def is_float(leaf) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)


def _floating_leaves(args, kwargs) -> list:
    leaves = [leaf for _, leaf in leaf_paths(list(args))]
    leaves += [leaf for _, leaf in leaf_paths(dict(kwargs))]
    return [leaf for leaf in leaves if is_float(leaf)]


def _first_floating(out) -> tuple[str, object | None]:
    for key, leaf in leaf_paths(out):
        if is_float(leaf):
            return key, leaf
    return "", None


def _with_leaf(tree, key: str, new):
    """``tree`` with the leaf at ``key`` (a :func:`leaf_paths` path) replaced by ``new``."""
    if key == "":
        return new
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: new if ".".join(key_path_parts(path)) == key else leaf, tree
    )


def _flags(module, args, kwargs) -> dict:
    """The mode a call states: ``deterministic`` / ``use_running_average`` given as Python
    booleans (by keyword, or second positional argument of a Dropout or BatchNorm)."""
    out = {k: kwargs[k] for k in ("deterministic", "use_running_average") if k in kwargs}
    if len(args) > 1 and isinstance(args[1], bool):
        if isinstance(module, nnx.BatchNorm | nn.BatchNorm):
            out["use_running_average"] = args[1]
        elif isinstance(module, nn.Dropout):
            out["deterministic"] = args[1]
    return {k: v for k, v in out.items() if isinstance(v, bool)}


class Taps:
    """The module calls of one run, in the order they finish; ``eps[path]`` (when given) is
    added to the module's first floating output on its first call.

    Args:
        eps: path -> a zero array of the module's first floating output.
        hidden: paths of modules called inside a JAX transformation of the model's own
            (``jax.vmap``, ``nnx.scan``, a jitted method): their values belong to that
            transformation's trace, so they are neither tapped nor recorded.
        eager: the run is not traced: a module whose values are tracers is called inside
            such a transformation, and added to ``hidden``.
    """

    def __init__(
        self,
        eps: Mapping[str, jax.Array] | None = None,
        hidden: Iterable[str] = (),
        *,
        eager: bool = False,
    ) -> None:
        self.eps = dict(eps or {})
        self.hidden = set(hidden)
        self.eager = eager
        self.calls: dict[str, Call] = {}
        self._running: set[int] = set()

    def call(self, path: str | None, module, fn: Callable, args: tuple, kwargs: dict):
        """Run ``fn(*args, **kwargs)``, the call of ``module`` at ``path`` (``None``: a module
        outside the model's graph, run as it is)."""
        if path is None or id(module) in self._running:  # a super().__call__ of its own
            return fn(*args, **kwargs)
        self._running.add(id(module))
        try:
            out = fn(*args, **kwargs)
        finally:
            self._running.discard(id(module))
        if path in self.calls:
            self.calls[path].calls += 1
            return out
        key, leaf = _first_floating(out)
        inputs = _floating_leaves(args, kwargs)
        if self.eager and any(isinstance(v, jax.core.Tracer) for v in (leaf, *inputs)):
            self.hidden.add(path)
        if path in self.hidden:
            leaf, inputs = None, []
        elif leaf is not None and path in self.eps:
            leaf = leaf + self.eps[path].astype(leaf.dtype)
            out = _with_leaf(out, key, leaf)
        self.calls[path] = Call(path, module, inputs, leaf, key, _flags(module, args, kwargs))
        return out

    def values(self) -> dict:
        return {p: c.output for p, c in self.calls.items() if c.output is not None}

    def inputs(self) -> dict:
        return {p: tuple(c.inputs) for p, c in self.calls.items()}


# -- inputs ------------------------------------------------------------------------------------


def input_arrays(batch: Batch, dtype: str) -> tuple[list, list]:
    """``(floating inputs in ``dtype``, the other inputs)`` as JAX arrays, in batch order
    (integer ids as ``int32``, or ``int64`` when computing in float64)."""
    floats, others = [], []
    floating = set(batch.floating)
    for name, arr in batch.leaves.items():
        if name in floating:
            floats.append(jnp.asarray(np.asarray(arr, dtype=np.float64), dtype=dtype))
        elif arr.dtype.kind == "b":
            others.append(jnp.asarray(arr))
        else:
            others.append(jnp.asarray(arr.astype(np.int64 if dtype == "float64" else np.int32)))
    return floats, others


def call_inputs(batch: Batch, floats, others, kwargs: dict) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of a call: the batch's inputs in place, then ``kwargs``."""
    floating = set(batch.floating)
    fl, ot = iter(floats), iter(others)
    leaves = [next(fl) if n in floating else next(ot) for n in batch.names]
    k = len(batch.args)
    return tuple(leaves[:k]), {**dict(zip(batch.kwargs, leaves[k:], strict=True)), **kwargs}


# -- NNX: __call__ of the classes in the graph, patched for one run ------------


@contextlib.contextmanager
def patched(root: nnx.Module, taps: Taps) -> Iterator[None]:
    """``__call__`` of every class in ``root``'s graph goes through ``taps`` for the block
    (the class that defines the method is patched, and restored on exit, errors included)."""
    paths: dict[int, str] = {}
    originals: dict[type, Callable] = {}
    for parts, module in nnx.iter_modules(root):
        paths.setdefault(id(module), ".".join(map(str, parts)))
        for cls in type(module).__mro__:
            if "__call__" in cls.__dict__:
                originals.setdefault(cls, cls.__dict__["__call__"])
                break

    def tapped(original: Callable) -> Callable:
        @functools.wraps(original)
        def call(self, *args, **kwargs):
            run = functools.partial(original, self)
            return taps.call(paths.get(id(self)), self, run, args, kwargs)

        return call

    try:
        for cls, original in originals.items():
            cls.__call__ = tapped(original)  # type: ignore[method-assign]
        yield
    finally:
        for cls, original in originals.items():
            cls.__call__ = original  # type: ignore[method-assign]


def nnx_forward(graphdef) -> Forward:
    def forward(params, state, args, kwargs, taps: Taps):
        # fresh Variables at the caller's trace level: BatchNorm and RNG updates may assign
        state = jax.tree_util.tree_map(lambda a: a, state)
        live = nnx.merge(graphdef, params, state)
        with patched(live, taps):
            return live(*args, **kwargs)

    return forward


# -- Linen: Linen's own interceptor ----------------------------------------------------------


@contextlib.contextmanager
def _linen_mode(module, training: bool | None, kwargs: dict) -> Iterator[dict]:
    """The call's keyword arguments with a Dropout / BatchNorm switched to ``training``; a
    flag set on the module (a clone bound for this ``apply``) is cleared for the call and
    restored after it."""
    attr = (
        "deterministic"
        if isinstance(module, nn.Dropout)
        else "use_running_average"
        if isinstance(module, nn.BatchNorm)
        else None
    )
    if training is None or attr is None:
        yield kwargs
        return
    before = getattr(module, attr)
    object.__setattr__(module, attr, None)
    try:
        yield {**kwargs, attr: not training}
    finally:
        object.__setattr__(module, attr, before)


def linen_forward(module, rngs, mutable, training) -> Forward:
    def forward(params, state, args, kwargs, taps: Taps):
        def intercept(next_fun, call_args, call_kwargs, context):
            m = context.module
            path = ".".join(map(str, m.path))
            if context.method_name != "__call__":
                if context.method_name == "attend" and isinstance(m, nn.Embed):
                    seen = getattr(taps, "attended", None)  # a tied head (flax/capture.py)
                    if seen is not None:
                        seen(path)
                return next_fun(*call_args, **call_kwargs)
            if training is not None and isinstance(m, nn.Dropout | nn.BatchNorm):
                # the flag, if given positionally, is set below (Dropout's rng by keyword)
                if len(call_args) > 2:
                    call_kwargs = {**call_kwargs, "rng": call_args[2]}
                call_args = call_args[:1]
            with _linen_mode(m, training, call_kwargs) as call_kwargs:
                return taps.call(path, m, next_fun, call_args, call_kwargs)

        with nn.intercept_methods(intercept):
            out, _ = module.apply({**params, **state}, *args, **kwargs, rngs=rngs, mutable=mutable)
        return out

    return forward
