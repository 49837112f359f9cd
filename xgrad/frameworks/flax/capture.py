"""A user's Flax model captured at its modules' boundaries (tier (a); see
:mod:`xgrad.frameworks.capture`): NNX modules and Linen ``(module, variables)`` pairs.

Each is run as one pure function of ``(params, state, inputs)`` with every module's
``__call__`` intercepted (:mod:`xgrad.frameworks.flax.taps`): an NNX module is split once and
merged afresh for each run (yours never changes), its paths its graph paths joined with ``.``
(``attn.query``, ``layers.0``); a Linen module runs under ``module.apply`` and
:func:`flax.linen.intercept_methods`, its paths its scope paths (``block.Dense_0``). An
evaluation adds a zero ``eps[path]`` to each module's first floating output (first call)
and differentiates with respect to the params, the floating inputs and ``eps``, in one step
compiled per input shapes.

Parameter native names are pytree paths joined with ``/`` as the JAX reader writes them:
``attn/query/kernel`` (NNX), ``params/Dense_0/kernel`` (Linen). Each called module owns the
parameters below its path not owned by a called submodule (a tied weight: the module whose
call finishes first). An Embed's table (``nnx.Embed``, Linen's ``nn.Embed``) used by
``attend`` from another module's code (a tied LM head: ``self.embed.attend(h)``) is a tied
weight of that module, named
``{embed path}.attend``: the run that reads the modules sees each ``attend`` call and the
module whose code made it. A module that calls no other module is read as a layer kind from its
class or its values where it can be (:mod:`xgrad.frameworks.flax.module_kinds`); anything
else (``nnx.MultiHeadAttention``, ``nnx.Embed``) is opaque: compared and localised, never
refused.

Importing this module imports JAX and Flax.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx

from xgrad.errors import InputError, ParamsError, XgradError
from xgrad.frameworks.base import Gradients
from xgrad.frameworks.capture import (
    Batch,
    CapturedModel,
    ModuleInfo,
    as_batch,
    leaf_paths,
    pick_output,
)
from xgrad.frameworks.flax.module_kinds import Weights, by_values, known, own_dropout
from xgrad.frameworks.flax.taps import (
    Forward,
    Taps,
    call_inputs,
    input_arrays,
    is_float,
    linen_forward,
    nnx_forward,
)
from xgrad.frameworks.jax.ops import jax_loss, x64
from xgrad.frameworks.jax.reader import tree_leaves
from xgrad.losses import Loss
from xgrad.params import Params

__all__ = ["FlaxCapturedModel", "capture_linen", "capture_nnx"]

HIDDEN_NOTE = (
    "called inside a JAX transformation of the model's own (jax.vmap, nnx.scan, a jitted "
    "method): its values are not captured, only its parameters compared"
)
RNG_NOTE = (
    "no rngs given: its mask comes from jax.random.key(0) (pass "
    "apply_kwargs={'rngs': {'dropout': key}} for another)"
)


# -- NNX ------------------------------------------------------------------------------------------


def _nnx_aliases(module: nnx.Module, natives: set[str]) -> dict[str, str]:
    """Native name of a Variable reached under a second attribute path (a tied weight) -> the
    name ``nnx.split`` keeps it under."""
    names: dict[int, list[str]] = {}
    for parts, m in nnx.iter_modules(module):
        for attr, value in vars(m).items():
            if isinstance(value, nnx.Variable):
                names.setdefault(id(value), []).append("/".join(map(str, (*parts, attr))))
    out = {}
    for found in names.values():
        owner = next((n for n in found if n in natives), None)
        out.update({n: owner for n in found if owner is not None and n != owner})
    return out


def capture_nnx(
    module, batch, *, output=None, training: bool | None = None, apply_kwargs=None
) -> FlaxCapturedModel:
    """A user's NNX module read at its modules' boundaries (yours never changes).

    Args:
        module: the ``nnx.Module``.
        batch: the inputs (anything :func:`~xgrad.frameworks.capture.as_batch` takes),
            passed as ``module(*args, **kwargs)``.
        output: which of the module's outputs the loss sees (``None``: the first floating
            array; a key, index or path: :func:`~xgrad.frameworks.capture.pick_output`).
        training: ``None`` keeps every ``deterministic`` / ``use_running_average`` flag as
            you set them (``model.train()`` / ``model.eval()``); ``True`` / ``False`` sets
            them on a copy (``nnx.with_attributes``).
        apply_kwargs: further keyword arguments of the model's call (no gradient).

    Raises:
        InputError: its parameters are not floating arrays of one dtype, or it fails on the
            batch (its error quoted).
    """
    if not isinstance(module, nnx.Module):
        raise InputError(f"capture_nnx needs a flax.nnx.Module, got {type(module).__name__}")
    batch = as_batch(batch)
    if training is not None:
        flags = {"deterministic": not training, "use_running_average": not training}
        module = nnx.with_attributes(module, raise_if_not_found=False, **flags)
    graphdef, params, state = nnx.split(module, nnx.Param, ...)
    p_names = tree_leaves(params)[0]
    source = _Source(
        forward=nnx_forward(graphdef),
        params=params,
        state=state,
        rebuild=lambda p, s: nnx.merge(graphdef, p, s),
        framework="flax.nnx",
        name=type(module).__name__,
        depth=0,
        aliases=_nnx_aliases(module, set(p_names)),
        kwargs=dict(apply_kwargs or {}),
    )
    return _capture(source, batch, output)


# -- Linen ----------------------------------------------------------------------------------------


def capture_linen(
    module,
    variables,
    batch,
    *,
    output=None,
    training: bool | None = None,
    apply_kwargs=None,
    rngs=None,
) -> FlaxCapturedModel:
    """A user's Linen module with its variables, read at its modules' boundaries.

    Args:
        module: the ``flax.linen.Module``.
        variables: its variables (``module.init(key, x)``): ``params`` are trained, other
            collections (``batch_stats``) are state, passed as mutable and never updated.
        batch: the inputs (anything :func:`~xgrad.frameworks.capture.as_batch` takes),
            passed as ``module.apply(variables, *args, **kwargs)``.
        output: which output the loss sees (see :func:`capture_nnx`).
        training: ``None`` keeps the modes as the module and ``apply_kwargs`` state them;
            ``True`` / ``False`` switches every ``nn.Dropout`` and ``nn.BatchNorm``.
        apply_kwargs: further keyword arguments of ``apply`` (``{"train": False}``); an
            ``rngs`` among them is ``apply``'s own, taken as ``rngs`` (as
            ``compare_models(apply_kwargs=...)`` passes it).
        rngs: ``apply``'s ``rngs`` (``{"dropout": key}``; a key alone is the dropout
            key). ``None``: ``{"dropout": jax.random.key(0)}``, said on each active Dropout.

    Raises:
        InputError: the variables hold no ``params``, the parameters are not floating
            arrays of one dtype, or the module fails on the batch (its error quoted).
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"capture_linen needs a flax.linen.Module, got {type(module).__name__}")
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise InputError(
            "a Linen model is a (module, variables) pair whose variables hold a 'params' "
            "collection, e.g. module.init(key, x)"
        )
    batch = as_batch(batch)
    apply_kwargs = dict(apply_kwargs or {})
    if "rngs" in apply_kwargs:  # apply's own argument, given where users give apply's others
        if rngs is not None:
            raise InputError("rngs is given twice (as rngs= and in apply_kwargs); give it once")
        rngs = apply_kwargs.pop("rngs")
    default_rng = rngs is None
    if rngs is None:
        rngs = {"dropout": jax.random.key(0)}
    elif not isinstance(rngs, Mapping):
        rngs = {"dropout": rngs}
    state = {k: v for k, v in variables.items() if k != "params"}
    source = _Source(
        forward=linen_forward(module, dict(rngs), list(state), training),
        params={"params": variables["params"]},
        state=state,
        rebuild=lambda p, s: (module, {**p, **s}),
        framework="flax.linen",
        name=type(module).__name__,
        depth=1,
        kwargs=dict(apply_kwargs or {}),
        rng_note=RNG_NOTE if default_rng else None,
    )
    return _capture(source, batch, output)


# -- nnx.Embed.attend: a table used outside its module's call ---------------------------------


class _UseTaps(Taps):
    """:class:`~xgrad.frameworks.flax.taps.Taps` that also know which module's code is
    running, and record ``(that module's path, the Embed's path)`` for each ``attend`` call
    of an Embed (NNX: :func:`_attends_seen`; Linen: its interceptor, in
    :func:`~xgrad.frameworks.flax.taps.linen_forward`)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.running: list[tuple[str, object]] = []  # (path, module), outermost first
        self.attends: set[tuple[str, str]] = set()

    def call(self, path, module, fn, args, kwargs):
        if path is None:
            return super().call(path, module, fn, args, kwargs)
        self.running.append((path, module))
        try:
            return super().call(path, module, fn, args, kwargs)
        finally:
            self.running.pop()

    def attended(self, embed: str) -> None:
        """The Embed at path ``embed`` computed ``attend``, called from the code of the
        innermost module running (a tied LM head)."""
        if self.running:
            self.attends.add((self.running[-1][0], embed))


@contextlib.contextmanager
def _attends_seen(taps: _UseTaps) -> Iterator[None]:
    """``nnx.Embed.attend`` records its caller in ``taps`` for the block (restored on exit,
    errors included)."""
    original = nnx.Embed.attend

    def attend(self, query):
        if taps.running:
            root = taps.running[0][1]
            paths = {id(m): ".".join(map(str, parts)) for parts, m in nnx.iter_modules(root)}
            if id(self) in paths:
                taps.attended(paths[id(self)])
        return original(self, query)

    nnx.Embed.attend = attend  # type: ignore[method-assign]
    try:
        yield
    finally:
        nnx.Embed.attend = original  # type: ignore[method-assign]


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """What capture needs of either kind of model.

    Attributes:
        forward: the model's run (:data:`Forward`).
        params, state: the trainable pytree and the other arrays.
        rebuild: ``(params, state) -> the native object`` (an NNX module, a Linen pair).
        framework: ``flax.nnx`` or ``flax.linen``.
        name: the model's class name.
        depth: leading parts of a native name that are not module path (Linen's
            collection: 1).
        aliases: native name -> the native name of the array it is (NNX tied weights).
        kwargs: keyword arguments of every call beside the inputs.
        rng_note: what an active Dropout should say of its random key, if anything.
    """

    forward: Forward
    params: object
    state: object
    rebuild: Callable
    framework: str
    name: str
    depth: int
    aliases: dict[str, str] = field(default_factory=dict)
    kwargs: dict = field(default_factory=dict)
    rng_note: str | None = None


def _param_dtype(leaves: list, batch: Batch, what: str) -> str:
    dtypes = {jnp.dtype(leaf.dtype) for leaf in leaves}
    if not dtypes:  # a model without parameters computes in its inputs' dtype
        floats = [batch.leaves[n] for n in batch.floating]
        name = np.dtype(floats[0].dtype).name if floats else "float32"
        return name if name in ("float64", "float32", "bfloat16", "float16") else "float32"
    if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
        raise InputError(
            f"{what}: its parameters must be floating arrays of one dtype, got "
            f"{sorted(d.name for d in dtypes)}"
        )
    return dtypes.pop().name


def _record(source: _Source, batch: Batch, dtype: str) -> tuple[Taps, object]:
    """Run the model once on the batch (eagerly), recording every module call."""
    overlap = sorted(set(batch.kwargs) & set(source.kwargs))
    if overlap:
        raise InputError(f"apply_kwargs {overlap} are also inputs; give each argument once")
    taps = _UseTaps(eager=True)
    # Linen's interceptor sees attend calls itself (taps.linen_forward)
    seen = _attends_seen(taps) if source.framework == "flax.nnx" else contextlib.nullcontext()
    try:
        with x64(dtype), seen:
            floats, others = input_arrays(batch, dtype)
            args, kwargs = call_inputs(batch, floats, others, source.kwargs)
            tree = source.forward(source.params, source.state, args, kwargs, taps)
    except XgradError:
        raise
    except Exception as exc:  # whatever the user's module raises on these inputs
        text = " ".join(str(exc).split())[:600]
        raise InputError(
            f"running {source.framework} {source.name} on inputs {batch.describe()} failed: "
            f"{type(exc).__name__}: {text}"
        ) from None
    return taps, tree


def _scope(path: str, called: set[str]) -> str | None:
    """The nearest called module enclosing ``path`` (``""``: the model; ``None``: the model
    itself)."""
    if path == "":
        return None
    parts = path.split(".")
    return next(
        (
            ".".join(parts[:k])
            for k in range(len(parts) - 1, 0, -1)
            if ".".join(parts[:k]) in called
        ),
        "",
    )


def _owner(native: str, depth: int, called: set[str]) -> tuple[str, str]:
    """``(owner path, local name)`` of a weight: the nearest called module at or above it
    (the model at the latest), and its name below that module, joined with ``.``."""
    parts = native.split("/")[depth:]
    for k in range(len(parts) - 1, 0, -1):
        owner = ".".join(parts[:k])
        if owner in called:
            return owner, ".".join(parts[k:])
    return "", ".".join(parts)


def _owners(source: _Source, order: dict[str, int], arrays: dict):
    """``(owner path -> its weights, alias -> the native name it shares an array with)``:
    every parameter, and every floating state array (BatchNorm statistics, not RNG keys or
    counters), owned by the nearest called module above it; a tied weight (reached under
    several names) by the module whose call finishes first, the others alias it."""
    called = set(order)
    others: dict[str, list[str]] = {}
    for alias, native in source.aliases.items():
        others.setdefault(native, []).append(alias)
    owned: dict[str, Weights] = {}
    aliases: dict[str, str] = {}
    for native in tree_leaves(source.params)[0]:
        names = [native, *others.get(native, [])]
        first = min(names, key=lambda n: order[_owner(n, source.depth, called)[0]])
        owner, local = _owner(first, source.depth, called)
        owned.setdefault(owner, Weights()).params[local] = native
        aliases.update({n: native for n in names if n != first})
    for native in tree_leaves(source.state)[0]:
        if is_float(arrays[native]):
            owner, local = _owner(native, source.depth, called)
            owned.setdefault(owner, Weights()).state[local] = native
    return owned, aliases


def _infos(taps: Taps, source: _Source, arrays: dict, dtype: str) -> tuple[ModuleInfo, ...]:
    calls = list(taps.calls.values())
    order = {c.path: i for i, c in enumerate(calls)}
    called = set(order)
    owned, aliases = _owners(source, order, arrays)
    scopes = {c.path: _scope(c.path, called) for c in calls}
    parents = {s for s in scopes.values() if s is not None}
    shapes = {n: tuple(np.shape(a)) for n, a in arrays.items()}
    out = []
    for c in calls:
        own = owned.get(c.path, Weights())
        found = None
        if c.path not in parents and c.output is not None:
            found = known(c, own, shapes, linen=source.depth > 0, rng_note=source.rng_note)
            found = found or by_values(c, own, arrays, dtype)
        layer, kind, params, state, note = found or (None, "module", own.params, own.state, None)
        if found is None:
            note = HIDDEN_NOTE if c.path in taps.hidden else own_dropout(c, source.rng_note)
        out.append(
            ModuleInfo(
                path=c.path,
                kind=kind,
                name=c.path or source.name,
                layer=layer,
                params=dict(params),
                state=dict(state),
                input_shape=tuple(c.inputs[0].shape[1:]) if c.inputs else (),
                output_shape=tuple(c.output.shape[1:]) if c.output is not None else (),
                note=note,
                scope=scopes[c.path],
                type=type(c.module).__name__,
                input_shapes=tuple(tuple(t.shape[1:]) for t in c.inputs),
                calls=c.calls,
            )
        )
    attends = getattr(taps, "attends", set())
    return _with_shared(tuple(out), aliases, source.depth, called, attends)


def _with_shared(
    infos: tuple[ModuleInfo, ...],
    aliases: dict,
    depth: int,
    called: set[str],
    attends: set[tuple[str, str]] = frozenset(),
):
    """Each module's tied weights: the local name of an alias below it -> the canonical name
    of the parameter it is; and, for each ``(module, embed)`` of ``attends``, the Embed's
    table used by that module's code (local name ``{embed}.attend``)."""
    canonical = {
        native: f"{info.path}.{local}" if info.path else local
        for info in infos
        for local, native in info.params.items()
    }
    shared: dict[str, dict[str, str]] = {}
    for alias, native in aliases.items():
        owner, local = _owner(alias, depth, called)
        shared.setdefault(owner, {})[local] = canonical.get(native, native)
    tables = {info.path: info.params.get("embedding") for info in infos}
    for user, embed in sorted(attends):
        if user != embed and tables.get(embed) is not None:
            table = f"{embed}.embedding" if embed else "embedding"
            shared.setdefault(user, {})[f"{embed}.attend"] = table
    return tuple(
        dataclasses.replace(info, shared=shared[info.path]) if info.path in shared else info
        for info in infos
    )


def _capture(source: _Source, batch: Batch, output) -> FlaxCapturedModel:
    """Record one run of ``source`` on ``batch`` and read its modules."""
    p_names, p_leaves, _ = tree_leaves(source.params)
    s_names, s_leaves, _ = tree_leaves(source.state)
    what = f"{source.framework} {source.name}"
    dtype = _param_dtype(p_leaves, batch, what)
    taps, tree = _record(source, batch, dtype)
    leaf, path = pick_output(tree, output, what=what)
    if not is_float(leaf):
        raise InputError(
            f"{what} returns {path or 'its output'} of dtype {leaf.dtype}; the loss needs a "
            "floating output (pass output= to pick one)"
        )
    others = [p for p, v in leaf_paths(tree) if p != path]
    note = None
    if others:
        note = (
            f"the model returns {len(others) + 1} arrays; the loss sees {path or 'the output'} "
            f"{tuple(leaf.shape)} (output= picks another: {', '.join(others[:4])})"
        )
    arrays = dict(zip([*p_names, *s_names], [*p_leaves, *s_leaves], strict=True))
    model = FlaxCapturedModel(
        source,
        _infos(taps, source, arrays, dtype),
        hidden=frozenset(taps.hidden),
        batch=batch,
        dtype=dtype,
        output_path=path,
        output_shape=tuple(leaf.shape[1:]),
        description=f"{what} (module by module)",
    )
    model.output_note = note
    return model


# -- the model ------------------------------------------------------------------------------------


class FlaxCapturedModel(CapturedModel):
    """A Flax model read module by module (see :func:`capture_nnx`, :func:`capture_linen`).

    Weights keep Flax's layout (kernels ``(in, out)``, the canonical one); canonical names
    are ``{module path}.{local}``."""

    def __init__(
        self,
        source: _Source,
        modules: tuple[ModuleInfo, ...],
        *,
        hidden: frozenset[str] = frozenset(),
        batch: Batch,
        dtype: str,
        output_path: str,
        output_shape,
        description: str,
    ) -> None:
        self._source = source
        self._hidden = hidden  # modules called inside a transformation: not tapped
        self.framework = source.framework
        self.layers = modules
        self.batch = batch
        self.dtype = dtype
        self.output_path = output_path
        self.output_shape = tuple(output_shape)
        self.input_shape = tuple(batch.first.shape[1:])
        self.description = description
        self._p_names, self._p_leaves, self._p_tree = tree_leaves(source.params)
        self._s_names, self._s_leaves, self._s_tree = tree_leaves(source.state)
        # compiled steps hold no weights: copies made by with_weights share them
        self._steps: dict = {}

    @property
    def native(self):
        """A fresh NNX module, or a Linen ``(module, variables)`` pair, holding the weights."""
        return self._source.rebuild(self._source.params, self._source.state)

    def _index(self) -> dict[str, tuple[bool, int]]:
        """Canonical name -> (trainable, its leaf's index among the params or the state)."""
        p = {n: i for i, n in enumerate(self._p_names)}
        s = {n: i for i, n in enumerate(self._s_names)}
        out = {}
        for info in self.layers:
            for local, native in info.params.items():
                out[f"{info.path}.{local}" if info.path else local] = (True, p[native])
            for local, native in info.state.items():
                out[f"{info.path}.{local}" if info.path else local] = (False, s[native])
        return out

    def weights(self) -> Params:
        return {
            name: np.array(self._p_leaves[i] if trainable else self._s_leaves[i])
            for name, (trainable, i) in self._index().items()
        }

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> FlaxCapturedModel:
        index = self._index()
        unknown = [k for k in weights if k not in index]
        if unknown:
            raise ParamsError(
                f"unknown weight name(s) {unknown} for {self.description}; its canonical "
                f"names are {list(index)}"
            )
        leaves = {True: list(self._p_leaves), False: list(self._s_leaves)}
        with x64(self.dtype):
            for name, value in weights.items():
                trainable, i = index[name]
                old, arr = leaves[trainable][i], np.asarray(value)
                if arr.size != old.size:
                    raise ParamsError(
                        f"{name} has shape {arr.shape}; {self.description} holds it as "
                        f"{tuple(old.shape)}"
                    )
                leaves[trainable][i] = jnp.asarray(arr.reshape(old.shape), dtype=old.dtype)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._p_leaves, new._s_leaves = leaves[True], leaves[False]
        new._source = dataclasses.replace(
            self._source,
            params=jax.tree_util.tree_unflatten(self._p_tree, leaves[True]),
            state=jax.tree_util.tree_unflatten(self._s_tree, leaves[False]),
        )
        return new

    # -- evaluation ----------------------------------------------------------------------------

    def _run(self, batch: Batch, capture: bool) -> Callable:
        """``(param leaves, state leaves, floating inputs, other inputs, eps) -> (picked
        output, (module outputs, module inputs))``: one tapped run."""
        source, p_tree, s_tree, hidden = self._source, self._p_tree, self._s_tree, self._hidden
        path, what = self.output_path or None, self.description

        def run(p, s, floats, others, eps):
            taps = Taps(eps, hidden)
            args, kwargs = call_inputs(batch, floats, others, source.kwargs)
            params = jax.tree_util.tree_unflatten(p_tree, p)
            tree = source.forward(
                params, jax.tree_util.tree_unflatten(s_tree, s), args, kwargs, taps
            )
            out, _ = pick_output(tree, path, what=what)
            return out, ((taps.values(), taps.inputs()) if capture else ({}, {}))

        return run

    def _step(self, batch: Batch, floats, others, loss, capture: bool):
        """The compiled step for these input shapes and this loss, and the shapes of the
        module outputs tapped (cached)."""
        shapes = tuple((a.shape, a.dtype.name) for a in (*floats, *others))
        key = (shapes, batch.floating, loss.name if isinstance(loss, Loss) else loss, capture)
        if key in self._steps:
            return self._steps[key]
        run = self._run(batch, capture)
        taps = {}
        if capture:
            taps = jax.eval_shape(
                lambda *a: run(*a, {})[1][0], self._p_leaves, self._s_leaves, floats, others
            )
        loss_fn = None if loss is None else jax_loss(loss) if isinstance(loss, Loss) else loss

        def step(p, s, fl, ot, eps, last):
            if loss_fn is None:
                out, vjp, aux = jax.vjp(
                    lambda pp, ff, ee: run(pp, s, ff, ot, ee), p, fl, eps, has_aux=True
                )
                return (None, out, *vjp(last.astype(out.dtype)), aux)

            def objective(pp, ff, ee):
                out, aux = run(pp, s, ff, ot, ee)
                return loss_fn(out, last), (out, aux)

            grad = jax.value_and_grad(objective, argnums=(0, 1, 2), has_aux=True)
            (value, (out, aux)), grads = grad(p, fl, eps)
            return (value, out, *grads, aux)

        # a loss function of the user's own may not trace; Flax's own steps are compiled
        compiled = step if loss_fn is not None and not isinstance(loss, Loss) else jax.jit(step)
        self._steps[key] = (compiled, taps)
        return self._steps[key]

    def _evaluate_batch(self, batch: Batch, y, loss, cotangent, capture: bool) -> Gradients:
        with x64(self.dtype):
            floats, others = input_arrays(batch, self.dtype)
            last = cotangent if loss is None else y
            if isinstance(last, np.ndarray) and last.dtype.kind == "f":
                last = jnp.asarray(last, dtype=self.dtype)
            try:
                step, taps = self._step(batch, floats, others, loss, capture)
                eps = {p: jnp.zeros(t.shape, t.dtype) for p, t in taps.items()}
                value, out, gp, gf, ge, (values, inputs) = step(
                    self._p_leaves, self._s_leaves, floats, others, eps, last
                )
            except XgradError:
                raise
            except Exception as exc:  # whatever the user's module raises
                text = " ".join(str(exc).split())[:600]
                raise InputError(
                    f"flax could not evaluate {self.description}: {type(exc).__name__}: {text}"
                ) from None
        dparams = {
            name: np.asarray(gp[i]) for name, (trainable, i) in self._index().items() if trainable
        }
        dinputs = dict(zip(batch.floating, (np.asarray(g) for g in gf), strict=True))
        return Gradients(
            loss=None if value is None else float(value),
            params=dparams,
            input=next(iter(dinputs.values()), np.zeros((0,))),
            output=np.asarray(out),
            activations={p: np.asarray(v) for p, v in values.items()} if capture else None,
            activation_grads={p: np.asarray(g) for p, g in ge.items()} if capture else None,
            inputs=dinputs,
            module_inputs=(
                {p: tuple(np.asarray(t) for t in ts) for p, ts in inputs.items()}
                if capture
                else None
            ),
        )
