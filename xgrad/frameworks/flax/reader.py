"""Users' Flax models: NNX modules and Linen ``(module, variables)`` pairs.

Both become a pure function ``fn(params, state, x) -> (output, new_state)`` read by the JAX
reader (:class:`~xgrad.frameworks.jax.reader.JaxFunctionModel`): for NNX the ``nnx.Param``
state is ``params`` and everything else (``BatchStat``, RNG state) ``state``; for Linen
``variables["params"]`` and the other collections (``batch_stats``). The user's objects are
never changed: each call merges a fresh module from the arrays.

The transformer kinds are read from the jaxpr too (:mod:`xgrad.frameworks.jax.blocks`): a
model whose input is token ids (``nnx.Embed``, Linen ``nn.Embed``, ``jnp.take`` of a table)
is probed with ids in ``[0, vocab)``; ``nnx.MultiHeadAttention`` (called on ``x`` alone or
with ``nnx.make_causal_mask``, ``decode=False``) and xgrad's own ``SelfAttention`` and
``GatedMLPLayer`` (:mod:`.modules`) read as ``attention`` and ``gated_mlp``, their kernels
``(in, heads, head_dim)`` / ``(heads, head_dim, out)`` as they stand. One whose values no
configuration of :class:`~xgrad.layers.Attention` reproduces (a mask computed from the input)
is an attention of unknown configuration, compared as computed.
"""

from __future__ import annotations

import jax
from flax import nnx

from xgrad.errors import InputError, SpecError
from xgrad.frameworks.flax.kinds import KINDS
from xgrad.frameworks.jax.reader import JaxFunctionModel

__all__ = ["linen_model", "module_hints", "nnx_model"]


def nnx_model(module, *, input_shape=None) -> JaxFunctionModel:
    """A Flax NNX module; ``nnx.Param`` leaves are trained, the rest is state."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def fn(p, state, x):
        # fresh Variables at the caller's trace level: BatchNorm and RNG updates may assign
        state = jax.tree_util.tree_map(lambda a: a, state)
        live = nnx.merge(graphdef, p, state)
        out = live(x)
        return out, nnx.split(live, nnx.Param, ...)[2]  # the state, as it came in, updated

    def rebuild(p, state):
        return nnx.merge(graphdef, p, state)

    modules = {"/".join(map(str, path)): node for path, node in nnx.iter_graph(module)}

    def hints(name: str) -> dict:
        return module_hints(modules.get(name))

    return JaxFunctionModel(
        fn,
        params,
        rest,
        framework="flax.nnx",
        description=f"flax.nnx {type(module).__name__}",
        rebuild=rebuild,
        input_shape=input_shape,
        hints=hints,
    )


def module_hints(module) -> dict:
    """What an NNX module states of the layer it is: ``{"kind": kind, field: value, ...}``
    from the first entry of :data:`~xgrad.frameworks.flax.kinds.KINDS` with ``hints`` whose
    ``modules`` it is an instance of (``nnx.LayerNorm`` -> ``{"kind": "layernorm", "epsilon":
    1e-06}``); empty for any other module (``nnx.Linear`` states nothing the jaxpr does not),
    for one configured beyond its kind (an ``nnx.Conv`` with circular padding: its entry's
    ``hints`` refuse it, and its values alone decide what it is read as), or none."""
    for kind, entry in KINDS.items():
        if entry.modules and entry.hints and isinstance(module, entry.modules):
            try:
                return {"kind": kind, **entry.hints(module)}
            except SpecError:  # configured beyond the kind (circular padding): values decide
                return {}
    return {}


def linen_model(module, variables, *, input_shape=None) -> JaxFunctionModel:
    """A Flax Linen module with its variables: ``params`` are trained, other collections
    (``batch_stats``) are state. A module whose ``__call__`` needs more than ``x`` (a
    ``train`` flag) is read as a pure-JAX pair instead:
    ``(lambda v, x: module.apply(v, x, train=False), variables)``."""
    if not hasattr(variables, "get") or "params" not in variables:
        raise InputError(
            "a Linen model is a (module, variables) pair whose variables hold a 'params' "
            "collection, e.g. module.init(key, x)"
        )
    rest = {k: v for k, v in variables.items() if k != "params"}
    mutable = [k for k in rest if k == "batch_stats"]

    def fn(p, state, x):
        try:
            out, updates = module.apply({**p, **state}, x, mutable=mutable)
        except TypeError as exc:
            raise InputError(
                f"calling flax.linen {type(module).__name__} with x alone failed ({exc}); if "
                "its __call__ takes a train/deterministic flag, pass "
                "(lambda v, x: module.apply(v, x, train=False), variables) instead"
            ) from None
        return out, {**state, **updates}

    return JaxFunctionModel(
        fn,
        {"params": variables["params"]},
        rest,
        framework="flax.linen",
        description=f"flax.linen {type(module).__name__}",
        rebuild=lambda p, state: (module, {**p, **state}),
        input_shape=input_shape,
    )
