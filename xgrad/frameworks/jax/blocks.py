"""The transformer kinds in a JAX function's jaxpr: where they are, then what they compute.

:mod:`~xgrad.frameworks.jax.jaxpr` cuts the stream into segments (:class:`~.jaxpr.ReadLayer`);
this module reads three kinds of segment it would otherwise refuse:

* **embedding**: a ``gather`` of a parameter's rows by the integer input (``jnp.take(table,
  ids, axis=0)``, ``table[ids]``, ``nnx.Embed``), after the code ``jnp.take`` runs on the ids
  (its wrap of negative ids) and before a multiplication by a constant (its ``scale``);
* **attention**: matmuls of the stream by 3-D kernels ``(dim, N, hd)`` (one fused, or three:
  query, key, value, in call order; their biases ``(N, hd)`` added in the same order), the
  code between (RoPE, repeated key/value heads, scores, mask, softmax), then a matmul by an
  output kernel ``(H, hd, dim)`` and its bias (xgrad's JAX and Flax builds,
  ``nnx.MultiHeadAttention``, ``nnx.LinearGeneral`` code);
* **gated_mlp**: two matmuls of the same input by 2-D kernels whose outputs are multiplied
  (one through an activation), then a third matmul and its bias (SwiGLU, GeGLU).

Weights must be stored in the canonical shapes (an ``(out, in)`` 2-D kernel is a layout and is
read as such; a q/k/v kernel stored ``(dim, H * hd)`` is a reshape, which no layout says, and is
refused as the dense layers it then looks like). What each block computes is then identified
numerically (:func:`configure`): the configuration of xgrad's layer whose float64 forward,
run on the block's recorded input with the read weights, reproduces its recorded output
(key against value, gate against up, RoPE layout, causal mask, scale, activation). Nothing is
taken from names.

Importing this module imports JAX.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np

from xgrad.activations import ACTIVATIONS
from xgrad.errors import SpecError
from xgrad.frameworks.kinds import TRANSPOSED, to_canonical
from xgrad.identify import rel
from xgrad.layers import Attention, Embedding, GatedMLP

__all__ = [
    "KINDS",
    "check",
    "configure",
    "extend",
    "read_bias",
    "read_block",
    "read_embedding",
]

KINDS = ("embedding", "attention", "gated_mlp")
"""The kinds read here; their weights keep their shapes (not flattened like a norm's)."""

TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 3e-2, "float16": 1e-2}
"""Relative error under which a configuration reproduces a block's recorded output."""

ROPE_BASES = (10000.0, 500000.0, 1000000.0)
"""RoPE bases tried (LLaMA 1/2 and most code; LLaMA 3; Qwen 2)."""


# -- where they are (segments of the jaxpr) -------------------------------------------------------


def read_embedding(analyser, layers: list, d: dict, a: int, b: int, last) -> bool:
    """Read a segment on the integer ids (``ids``: ``jnp.take``'s wrap of negative ids) or
    gathering rows of a table by them: an embedding, the first layer. ``False`` for any
    other segment."""
    if not d["gathers"]:
        if not jnp.issubdtype(analyser.g.avals[b].dtype, jnp.integer):
            return False
        if not jnp.issubdtype(analyser.g.avals[a].dtype, jnp.integer):
            analyser.fail(
                "the function computes integer indices from a float value; xgrad reads an "
                "embedding of the integer token ids the function is given"
            )
        if last is not None and last.kind == "ids":
            last.end = b
        else:
            layers.append(analyser.new("ids", a, b))
        return True
    extra = d["dots"] or d["scale"] or d["shift"] or d["sub"] or d["other"]
    ids_given = last is not None or jnp.issubdtype(analyser.g.avals[a].dtype, jnp.integer)
    if len(d["gathers"]) != 1 or extra or not ids_given:
        names = [analyser.names[leaf] for leaf in d["gathers"]]
        analyser.fail(f"parameters {names} are gathered in a way xgrad cannot read as an embedding")
    if (last is not None and last.kind != "ids") or len(layers) > (last is not None):
        analyser.fail(
            f"parameter {analyser.names[d['gathers'][0]]!r} is gathered by integer ids after "
            "other layers; xgrad reads an embedding as the first layer only"
        )
    start = last.start if last is not None else a
    layers[:] = [analyser.new("embedding", start, b, {"embedding": d["gathers"][0]})]
    return True


def check(layers: list) -> str | None:
    """Why the read layers are not a model xgrad reads, or ``None``: the integer input used
    otherwise than by an embedding, or an attention or gated MLP without its last matmul
    (two products of one input multiplied and nothing more is no layer xgrad has)."""
    for layer in layers:
        if layer.kind == "ids":
            return (
                "the model's integer input is used in a way xgrad does not read; xgrad reads "
                "integer token ids as the rows an embedding gathers from its table (jnp.take, "
                "table[ids], nnx.Embed)"
            )
        closing = {"attention": "out", "gated_mlp": "down"}.get(layer.kind)
        if closing and f"{closing}_kernel" not in layer.leaves:
            return (
                f"parameters {sorted(layer.leaves)} are combined in one step xgrad cannot read "
                f"as a dense layer, nor as a {layer.kind.replace('_', ' ')} (no {closing} "
                "projection follows)"
            )
        inner = check(layer.children)
        if inner:
            return inner
    return None


def read_block(analyser, layers: list, d: dict, a: int, b: int, last) -> bool:
    """Read a segment with matmuls as (part of) an attention or a gated MLP; ``False`` for
    any other (a dense layer's)."""
    dots = d["dots"]
    ndims = [len(analyser.g.shape(analyser.g.inputs[dot[1]])) for dot in dots]
    if d["scale"] or d["sub"] or d["other"]:
        return False
    if last is not None and last.kind == "attention" and "out_kernel" not in last.leaves:
        if ndims == [3] and not d["shift"]:
            last.leaves["out_kernel"] = dots[0][1]
            last.end = last.pre = b
            return True
    if ndims and all(n == 3 for n in ndims) and len(dots) in (1, 3):
        roles = ["qkv"] if len(dots) == 1 else ["query", "key", "value"]
        leaves = _paired(analyser, roles, d)
        layers.append(analyser.new("attention", a, b, leaves, pre=b, constants=d["constants"]))
        return True
    if ndims == [2, 2] and d["stream_mul"]:
        layer = analyser.new("gated_mlp", a, b, _paired(analyser, ["gate", "up"], d), pre=b)
        pairs = zip(("gate", "up"), dots, strict=True)
        layer.flipped = [f"{r}_kernel" for r, dot in pairs if _flip(analyser, dot)]
        layers.append(layer)
        return True
    if last is not None and last.kind == "gated_mlp" and "down_kernel" not in last.leaves:
        if ndims == [2] and not d["shift"]:
            last.leaves["down_kernel"] = dots[0][1]
            if _flip(analyser, dots[0]):
                last.flipped.append("down_kernel")
            last.end = last.pre = b
            return True
    return False


def extend(last, d: dict, b: int) -> bool:
    """Join a segment without matmuls to an attention or gated MLP still waiting for its last
    matmul (the code between: a fused projection's bias and split, the heads' layout
    changes); ``False`` when ``last`` is no such block."""
    closing = {"attention": "out", "gated_mlp": "down"}.get(last.kind if last else "")
    if not closing or f"{closing}_kernel" in last.leaves or d["dots"]:
        return False
    fused_bias = "qkv_kernel" in last.leaves and "qkv_bias" not in last.leaves
    if d["shift"] and not (fused_bias and len(d["shift"]) == 1):
        return False
    if d["shift"]:
        last.leaves["qkv_bias"] = d["shift"][0]
    last.constants += d["constants"]  # the score scale among them
    last.end = last.pre = b
    return True


def read_bias(last, d: dict, b: int) -> bool:
    """Give an attention its output bias, a gated MLP its down bias: the one leaf added
    right after its last matmul."""
    closing = {"attention": "out", "gated_mlp": "down"}.get(last.kind if last else "")
    if not closing or f"{closing}_kernel" not in last.leaves or last.pre != last.end:
        return False
    if f"{closing}_bias" in last.leaves:
        return False
    last.leaves[f"{closing}_bias"] = d["shift"][0]
    last.end = last.pre = b
    return True


def _flip(analyser, dot) -> bool:
    """Whether a matmul's 2-D leaf is stored ``(out, in)`` (it contracts the leaf's second
    axis, through any transposes on the way)."""
    k, leaf, t, v = dot
    node = analyser.g.nodes[k]
    (lc, rc), _ = node.eqn.params["dimension_numbers"]
    return ((lc if node.ins[0] == v else rc)[0] == 1) != t


def _paired(analyser, roles: list[str], d: dict) -> dict[str, int]:
    """``{role}_kernel`` for each matmul's leaf in order, ``{role}_bias`` for each added leaf
    in order (a projection's bias follows its matmul)."""
    shifts = d["shift"]
    if shifts and len(shifts) != len(roles):
        analyser.fail(
            f"parameters {[analyser.names[leaf] for leaf in shifts]} are added in a block of "
            f"{len(roles)} projections: xgrad reads one bias per projection, or none"
        )
    out = {f"{r}_kernel": dot[1] for r, dot in zip(roles, d["dots"], strict=True)}
    out.update({f"{r}_bias": leaf for r, leaf in zip(roles, shifts, strict=False)})
    return out


# -- what they compute ----------------------------------------------------------------------------


def configure(layer, arrays: list, values: dict, in_shape: tuple, dtype: str):
    """``(config or None, kind, output shape, note, layouts)`` of a read transformer block,
    as :func:`~xgrad.frameworks.jax.configs.configure` returns for the other kinds. An
    attention's or gated MLP's roles may be swapped in ``layer.leaves`` (key for value, gate
    for up) to those that reproduce its values."""
    layouts = dict.fromkeys(layer.flipped, TRANSPOSED)
    local = {
        role: to_canonical(np.asarray(arrays[leaf]), layouts.get(role))
        for role, leaf in layer.leaves.items()
    }
    x, y = values[layer.start], values[layer.end]
    tol = TOLERANCE.get(dtype, 1e-4)
    if layer.kind == "embedding":
        config, note = _embedding(local["embedding"], x, y, tol)
        return config, "embedding", (*in_shape, local["embedding"].shape[1]), note, layouts
    x, y = x[:4], y[:4]  # a few examples tell the conventions apart
    if layer.kind == "attention":
        config, note = _attention(layer, local, x, y, tol)
    else:
        config, note = _gated_mlp(layer, local, x, y, tol)
    return config, layer.kind, in_shape, note, dict.fromkeys(layer.flipped, TRANSPOSED)


def _embedding(table: np.ndarray, ids: np.ndarray, y: np.ndarray, tol: float):
    rows = table[np.asarray(ids, dtype=np.int64)]
    if rel(rows, y) <= tol:
        return Embedding(*table.shape), None
    with np.errstate(all="ignore"):
        s = float(np.sum(rows * y) / np.sum(rows * rows))
    if not np.isfinite(s) or rel(rows * s, y) > tol:
        note = "gathers rows of its table and computes something xgrad's Embedding does not"
        return None, note
    dim = table.shape[1]
    for exact in (dim**0.5, dim**-0.5):  # Gemma's and T5's sqrt(dim), and its inverse
        if abs(s - exact) <= tol * exact:
            return Embedding(*table.shape, scale=exact), None
    return Embedding(*table.shape, scale=float(f"{s:.7g}")), None


def _matches(config, local: dict, x: np.ndarray, y: np.ndarray, tol: float) -> float:
    """Relative error of ``config``'s float64 forward on ``x`` against ``y`` (inf when it
    does not run: wrong shapes)."""
    weights = {f"b.{k}": v for k, v in local.items()}
    try:
        out = config.forward(weights, x, path="b").output
    except (SpecError, ValueError, IndexError):
        return np.inf
    return rel(out, y)


def _attention(layer, local: dict, x, y, tol: float):
    if "out_kernel" not in local:
        return None, "projects queries, keys and values but no output projection was read"
    heads, head_dim, dim = local["out_kernel"].shape
    use_bias = "out_bias" in local
    fused = "qkv_kernel" in local
    orders = [("query", "key", "value")] if fused else list(itertools.permutations(_QKV))
    best = np.inf
    for order, rope, causal, scale in itertools.product(
        orders, (None, "half", "interleaved"), (True, False), _scales(layer.constants)
    ):
        roles = dict(zip(_QKV, order, strict=True))  # canonical role -> read role
        mine = {_rename(k, roles): v for k, v in local.items()}
        kv = (mine["qkv_kernel"].shape[1] - heads) // 2 if fused else mine["key_kernel"].shape[1]
        for base in ROPE_BASES if rope else (10000.0,):
            try:
                config = Attention(
                    dim,
                    heads,
                    kv_heads=kv if kv > 0 else None,
                    head_dim=head_dim,
                    causal=causal,
                    use_bias=use_bias,
                    rope=rope,
                    rope_base=base,
                    qkv="fused" if fused else "separate",
                    scale=scale,
                )
            except SpecError:
                continue
            err = _matches(config, mine, x, y, tol)
            best = min(best, err)
            if err <= tol:
                layer.leaves = {_rename(k, roles): v for k, v in layer.leaves.items()}
                return config, None
    return None, (
        f"an attention of {heads} heads none of xgrad's conventions reproduces (closest "
        f"relative error {best:.2g}); its values are still compared"
    )


_QKV = ("query", "key", "value")


def _scales(constants: list[float]) -> list[float | None]:
    """Score scales to try: the default ``1/sqrt(hd)``, none, and each finite positive number
    the block's code multiplies (``s * 0.25``) or divides (``s / 8.0``) by."""
    out: list[float | None] = [None, 1.0]
    for c in constants:
        if np.isfinite(c) and c > 0 and c != 1:
            out += [c, 1 / c]
    return list(dict.fromkeys(out))


def _rename(role: str, roles: dict[str, str]) -> str:
    """``key_kernel`` -> ``value_kernel`` when the read ``key`` is the canonical ``value``."""
    head, _, part = role.partition("_")
    inverse = {read: canonical for canonical, read in roles.items()}
    return f"{inverse.get(head, head)}_{part}"


def _gated_mlp(layer, local: dict, x, y, tol: float):
    if "down_kernel" not in local:
        return None, "multiplies two projections but no down projection was read"
    dim, hidden = local["gate_kernel"].shape
    use_bias = "down_bias" in local
    best = np.inf
    for swap, name in itertools.product((False, True), [n for n in ACTIVATIONS if n != "linear"]):
        roles = {"gate": "up", "up": "gate"} if swap else {}
        mine = {_rename(k, roles): v for k, v in local.items()}
        config = GatedMLP(dim, hidden, activation=name, use_bias=use_bias)
        err = _matches(config, mine, x, y, tol)
        best = min(best, err)
        if err <= tol:
            layer.leaves = {_rename(k, roles): v for k, v in layer.leaves.items()}
            layer.flipped = [_rename(k, roles) for k in layer.flipped]
            return config, None
    return None, (
        f"a gated MLP none of xgrad's activations reproduces (closest relative error "
        f"{best:.2g}); its values are still compared"
    )
