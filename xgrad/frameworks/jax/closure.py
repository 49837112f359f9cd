"""Arrays a pure-JAX function closes over, read as state where they are running statistics.

A BatchNorm ported by hand to pure JAX in inference mode often keeps its moving statistics
out of the params pytree, as arrays of the enclosing scope::

    mean, var = stats["mean"], stats["var"]

    def f(params, x):
        h = x @ params["w1"] + params["b1"]
        h = (h - mean) / jnp.sqrt(var + 1e-5) * params["gamma"] + params["beta"]
        return jax.nn.relu(h) @ params["w2"] + params["b2"]

:func:`xgrad.frameworks.jax.jaxpr.statistics` finds the closed-over arrays that a
normalisation takes as its mean and variance; :func:`lift` turns the function into one that
reads them from a state pytree (``{"mean": ..., "var": ...}``, named as the function's code
names them), so that they are the norm's ``mean`` and ``var`` like a framework's BatchNorm
state: paired with the reference's running statistics, compared, copied across by
``transfer=True``. The function itself is traced again at each call and its constants
replaced, so its own code (custom derivative rules included) is what runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.errors import AlignmentError
from xgrad.frameworks.jax import jaxpr
from xgrad.frameworks.jax.ops import key_path_parts

__all__ = ["Closed", "bound", "closure_arrays", "initial_state", "lift", "name_constants"]


def _arrays_in(name: str, value) -> list[tuple[str, object]]:
    if isinstance(value, np.ndarray | jax.Array):
        return [(name, value)]
    if not isinstance(value, dict | list | tuple):
        return []
    try:
        paths = jax.tree_util.tree_flatten_with_path(value)[0]
    except Exception:  # a container jax cannot flatten: no names from it
        return []
    return [
        ("/".join([name, *key_path_parts(path)]), leaf)
        for path, leaf in paths
        if isinstance(leaf, np.ndarray | jax.Array)
    ]


def closure_arrays(fn: Callable, depth: int = 3) -> list[tuple[str, object]]:
    """``(name, array)`` for the arrays ``fn`` reads from its closure and its module's
    globals (inside dicts, lists and tuples too: ``stats/mean``), and those of the functions
    it wraps (``jax.vmap``, ``jax.jit``, ``functools.partial``) or calls by name, ``depth``
    calls deep."""
    out: list[tuple[str, object]] = []
    seen: set[int] = set()
    todo = [(fn, 0)]
    while todo:
        fn, level = todo.pop(0)
        if fn is None or id(fn) in seen or level > depth:
            continue
        seen.add(id(fn))
        try:
            scopes = inspect.getclosurevars(fn)
        except TypeError:  # not a Python function (a jitted one): look at what it wraps
            scopes = None
        if scopes is not None:
            for scope in (scopes.nonlocals, scopes.globals):
                for name, value in scope.items():
                    out += _arrays_in(name, value)
                    if inspect.isfunction(value) or hasattr(value, "__wrapped__"):
                        todo.append((value, level + 1))
        todo.append((getattr(fn, "__wrapped__", None) or getattr(fn, "func", None), level))
    return out


def _same(a, b) -> bool:
    """Whether two arrays hold the same values (dtype, shape and every element)."""
    if a is b:
        return True
    if np.shape(a) != np.shape(b) or jnp.dtype(a.dtype) != jnp.dtype(b.dtype):
        return False
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


@dataclass(frozen=True)
class Closed:
    """One closed-over array read as a statistic.

    Attributes:
        name: its name in the state pytree (as the function's code names it).
        const: the array as the jaxpr holds it.
        value: what the state holds: ``const``, or the array of the code it was computed
            from by adding a number (NumPy folds ``var + 1e-5`` before JAX sees it).
        offset: that number (0 when none): the function computes with ``state + offset``.
    """

    name: str
    const: object
    value: object
    offset: float = 0.0


def _offset(const, array) -> float | None:
    """``c`` when ``const`` is ``array + c`` (``c > 0``, written as short as the rounding
    of ``const`` allows: 1e-05), else ``None``."""
    if np.shape(const) != np.shape(array) or not np.size(const):
        return None
    a, b = np.asarray(const, np.float64), np.asarray(array, np.float64)
    diff = a - b
    c = float(diff.mean())
    slack = float(np.finfo(np.asarray(const).dtype).eps) * float(np.abs(a).max())
    if c <= slack or float(np.ptp(diff)) > 2 * slack:
        return None
    for digits in range(1, 9):
        short = float(f"{c:.{digits - 1}e}")
        if abs(short - c) <= slack:
            return short
    return c


def name_constants(fn: Callable, constants: list[tuple[object, str]]) -> list[Closed]:
    """A :class:`Closed` for each closed-over ``(array, role)``, named as ``fn``'s code
    names it (``mean``, ``bn_stats/var``; ``var`` for ``var + eps`` folded by NumPy), else
    ``constant_<role>_<k>``."""
    named = closure_arrays(fn)
    taken: set[str] = set()
    out = []
    for k, (const, role) in enumerate(constants):
        free = [(n, v) for n, v in named if n not in taken]
        found = next((Closed(n, const, v) for n, v in free if v is const), None)
        found = found or next((Closed(n, const, v) for n, v in free if _same(v, const)), None)
        if found is None and role == "var":
            offsets = ((n, v, _offset(const, v)) for n, v in free)
            found = next((Closed(n, const, v, c) for n, v, c in offsets if c is not None), None)
        found = found or Closed(f"constant_{role}_{k}", const, const)
        taken.add(found.name)
        out.append(found)
    return out


def _replacements(graph: jaxpr.Graph, closed: list[Closed], state) -> dict[int, object]:
    """Graph const id -> the state value standing for it: the const that *is* the original
    array, else (a copy made inside the function, ``jnp.asarray(stats["mean"])``) the first
    one with its values."""
    out, free = {}, {c.name: c for c in closed}
    for same in (lambda a, b: a is b, _same):
        for cid, value in graph.consts.items():
            if cid in out or np.ndim(value) == 0 or not hasattr(value, "dtype"):
                continue
            name = next((n for n, c in free.items() if same(value, c.const)), None)
            if name is not None:
                c = free.pop(name)
                out[cid] = state[name] + c.offset if c.offset else state[name]
    if free:
        raise AlignmentError(
            f"the closed-over array(s) {sorted(free)} read as running statistics are not "
            "among the function's constants at this input shape (is the function traced "
            "differently for other batch sizes?)"
        )
    return out


def lift(apply_fn: Callable, closed: list[Closed]) -> Callable:
    """``fn(params, state, x) -> (apply_fn(params, x), state)`` that computes with
    ``state[c.name] (+ c.offset)`` wherever ``apply_fn`` closes over ``c.const``.

    ``apply_fn`` is traced at each call (once per compiled shape) and its jaxpr evaluated
    with those constants replaced; with the state of :func:`initial_state` it computes what
    ``apply_fn`` does.
    """

    def fn(params, state, x):
        def struct(a):
            return jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))

        args = jax.tree_util.tree_map(struct, (params, x))
        traced, out_shape = jax.make_jaxpr(apply_fn, return_shape=True)(*args)
        graph = jaxpr.Graph(traced)
        consts = _replacements(graph, closed, state)
        outs = jaxpr.run(graph, jax.tree_util.tree_leaves((params, x)), consts=consts)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), outs), state

    return fn


def initial_state(closed: list[Closed]) -> dict[str, jax.Array]:
    """The state pytree ``{name: array}`` holding the arrays as the code has them (call
    under the model's float64 setting: a float64 array stays float64)."""
    return {c.name: jnp.asarray(c.value, dtype=c.const.dtype) for c in closed}


def bound(apply_fn: Callable, fn: Callable, closed: list[Closed], state) -> Callable:
    """``apply_fn`` itself while ``state`` holds the arrays of its code, else
    ``(params, x) -> output`` computing with ``state``'s (the user's kind of model, after
    ``convert(into=...)`` copied other statistics in)."""
    if all(_same(state[c.name], jnp.asarray(c.value, dtype=c.const.dtype)) for c in closed):
        return apply_fn

    def with_state(params, x):
        return fn(params, state, x)[0]

    with_state.__name__ = getattr(apply_fn, "__name__", "apply_fn")
    return with_state
