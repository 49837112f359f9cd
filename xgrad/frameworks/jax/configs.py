"""How the JAX reader configures what it read (:mod:`~xgrad.frameworks.jax.reader`): each
read layer's xgrad configuration identified from its values (:func:`configure`; the
transformer kinds in :mod:`~xgrad.frameworks.jax.blocks`), completed with what an NNX module
states (:func:`hinted`), an embedding's padding row found from its gradient
(:func:`padding_row`), and the name a read layer is shown under (:func:`module_name`).

Importing this module imports JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.frameworks.jax import windows
from xgrad.frameworks.kinds import TRANSPOSED, Layout, to_canonical
from xgrad.identify import fit_activation, fit_norm
from xgrad.layers import Activation, Dense, Flatten

__all__ = ["configure", "hinted", "module_name", "padding_row", "stops_gradients"]


def configure(layer, arrays, values, in_shape, dtype):
    """``(config or None, kind, output shape, note, layouts)`` of a read layer; ``layouts``:
    local name -> the layout its leaf stores it in (a kernel read ``(out, in)``:
    :data:`~xgrad.frameworks.kinds.TRANSPOSED`), for those not stored canonically."""
    layouts: dict[str, Layout] = {}
    note = None
    if layer.kind in windows.KINDS:
        return windows.configure(layer, arrays, values, in_shape, dtype)
    if layer.kind == "dense":
        if layer.transposed:
            layouts["kernel"] = TRANSPOSED
        kernel = to_canonical(arrays[layer.leaves["kernel"]], layouts.get("kernel"))
        z, a = values[layer.pre], values[layer.end]
        act = "linear" if layer.end == layer.pre else fit_activation(z, a, dtype)[0]
        use_bias = "bias" in layer.leaves
        config = None if act is None else Dense(kernel.shape[1], act, use_bias=use_bias)
        return config, "dense", (*in_shape[:-1], kernel.shape[1]), note, layouts
    if layer.kind == "norm":
        local = {role: arrays[leaf].reshape(-1) for role, leaf in layer.leaves.items()}
        config, _ = fit_norm(
            values[layer.start],
            values[layer.end],
            local,
            dtype=dtype,
            epsilons=layer.constants,
            training=layer.batch_stats,
        )
        if config is None and not ({"mean", "var"} & set(local) or layer.batch_stats):
            config = windows.fit_groupnorm(
                values[layer.start], values[layer.end], local, layer.constants, dtype
            )
        if config is not None:
            kind = config.kind
        elif {"mean", "var"} & set(local) or layer.batch_stats:
            kind = "batchnorm"
        else:
            kind = "layernorm"
        if layer.batch_stats:
            note = (
                "BatchNorm in training mode (batch statistics): call model.eval() (NNX) or "
                "use_running_average=True (Linen) to compare in inference mode"
            )
        return config, kind, in_shape, note, layouts
    if layer.kind in ("activation", "reduce"):
        name = fit_activation(values[layer.start], values[layer.end], dtype)[0]
        if name is not None:
            return Activation(name), "activation", in_shape, note, layouts
        if layer.kind == "reduce":  # a normalisation without scale or shift
            norm, _ = fit_norm(
                values[layer.start],
                values[layer.end],
                {},
                dtype=dtype,
                epsilons=layer.constants,
                training=layer.batch_stats,
            )
            if norm is not None:
                return norm, norm.kind, in_shape, note, layouts
        note = (
            "computes a function none of xgrad's activations reproduces on a probe batch "
            "(its values are still compared; diagnosis cannot name a cause inside it)"
        )
        return None, "activation", in_shape, note, layouts
    if layer.kind == "dropout":
        note = (
            "dropout in training mode (random masks): call model.eval() (NNX) or pass "
            "deterministic=True (Linen)"
        )
        return None, "dropout", in_shape, note, layouts
    return Flatten(), "flatten", (int(np.prod(in_shape)),), note, layouts


def hinted(config, hint: dict, layer):
    """A norm's configuration completed with what its module states (epsilon, momentum)."""
    from dataclasses import fields, replace

    from xgrad.layers import LAYERS

    if not hint:
        return config
    kind = hint.pop("kind", None)
    if config is None and kind in ("layernorm", "rmsnorm", "batchnorm"):
        flags = {"scale": "scale" in layer.leaves}
        if kind != "rmsnorm":
            flags["center"] = "bias" in layer.leaves
        if kind == "batchnorm":
            flags["training"] = layer.batch_stats
        config = LAYERS[kind](**flags)
    if config is None:
        return None
    names = {f.name for f in fields(config)}
    return replace(config, **{k: v for k, v in hint.items() if k in names})


def padding_row(flat, p_leaves, s_leaves, leaf: int, vocab: int, shape) -> int | None:
    """The ``padding_idx`` a function gives the table ``p_leaves[leaf]``: the one row that
    gets no gradient although the ids pick it (``stop_gradient`` on it, as xgrad's JAX and
    Flax builds of torch's ``padding_idx`` do), found by one VJP on ids picking every row
    (at most 64 examples of ``shape``); ``None`` when no row, or more than one, gets none.

    Args:
        flat: ``(*params, *state, x) -> (output, ...)``, the model's flat function.
        p_leaves, s_leaves: its parameter and state leaves.
        leaf: the table's index among ``p_leaves``.
        vocab: the table's rows.
        shape: the shape of one example of ids.
    """
    n = int(np.prod(shape))
    rows = min(-(-vocab // n), 64)
    ids = (np.arange(rows * n) % vocab).reshape(rows, *shape)
    xs = jnp.asarray(ids, dtype=jnp.int32)

    def table_grad(leaves, state):
        value, vjp = jax.vjp(lambda *p: flat(*p, *state, xs)[0], *leaves)
        cot = jax.random.normal(jax.random.key(1), value.shape, value.dtype)
        return vjp(cot)[leaf]

    grad = np.asarray(jax.jit(table_grad)(list(p_leaves), list(s_leaves)))
    picked = np.zeros(vocab, dtype=bool)
    picked[np.unique(ids)] = True
    zero = np.flatnonzero(picked & ~np.any(grad != 0, axis=tuple(range(1, grad.ndim))))
    return int(zero[0]) if len(zero) == 1 else None


def stops_gradients(graph, *, before: int) -> bool:
    """Whether the function stops a gradient before it computes the value ``before`` (an
    embedding's output: a padding row's ``stop_gradient``, not a softmax's later on)."""
    for node in graph.nodes:
        if node.name == "stop_gradient":
            return True
        if before in node.outs:
            return False
    return False


def module_name(natives: list[str], path: str, *, whole: bool) -> str:
    """A read layer's name: the module path of its first weight (``l1`` of ``l1/kernel``),
    or for a block of several modules (an attention's ``query``, ``key``, ...) the path all
    its weights share."""
    if not natives:
        return path
    if whole and len(natives) > 1:
        parts = [n.split("/")[:-1] for n in natives]
        common = []
        for level in zip(*parts, strict=False):
            if len(set(level)) > 1:
                break
            common.append(level[0])
        return "/".join(common) or path
    return natives[0].rsplit("/", 1)[0] if "/" in natives[0] else natives[0]
