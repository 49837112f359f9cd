"""Naming a captured module's transformer kind from its values: an attention, an embedding
table, an RMSNorm of another form.

A module xgrad reads as no kind (Hugging Face's ``LlamaAttention``, a user's
``SelfAttention``, GPT-2's ``Conv1D`` projections, Gemma's ``RMSNorm``) is known only by
what it was called with, what it returned and the parameters it holds. Its kind is
identified by behaviour, never by the shape of its code (DECISIONS.md, "Known kinds in
third-party code"): its parameters are mapped to the canonical weights of the kind, and the
kind's configuration that reproduces its captured output from its captured input within
:data:`xgrad.identify.FIT` for its dtype is kept.

* :class:`AttentionWeights`: the canonical attention weights as flat matrices, kernels
  ``(in, out)``: ``q (D, H*hd)``, ``k``, ``v (D, K*hd)`` or a fused ``qkv (D, (H+2K)*hd)``,
  ``o (H*hd, D)``, biases ``(out,)``.
* :class:`Convention`: every convention an attention can be written in (heads, RoPE layout
  and base, causal mask and its offset, score scale, the split of a fused projection and
  the order of its q, k and v parts, the order of the head axes, how grouped key/value
  heads are repeated, the masked score, the precision of the softmax); :func:`attend`
  computes an attention under one.
* :func:`fit_attention`, :func:`fit_rmsnorm`, :func:`embedding_table`: the fits.

Everything here is NumPy in float64; no framework is imported.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np

from xgrad.diagnosis.precision import as_dtype
from xgrad.identify import EPSILONS, FIT, rel
from xgrad.layers.attention import Attention, apply_rope, rope_angles

__all__ = [
    "BASES",
    "ORDERS",
    "AttentionWeights",
    "Convention",
    "RMSForm",
    "attend",
    "attention_weights",
    "convention_of",
    "embedding_table",
    "fit_attention",
    "fit_rmsnorm",
    "fit_scale",
    "ids_of",
    "rmsnorm",
    "stacked",
]

BASES = (10000.0, 500000.0, 1000000.0, 100000.0, 50000.0)
"""RoPE bases (theta) tried: 1e4 (the default of Hugging Face's LLaMA, Mistral and GPT-NeoX
configs), then values released checkpoints set in their configs, and other round ones."""

ORDERS = ("qkv", "kqv", "qvk", "kvq", "vqk", "vkq")
"""The orders a fused projection's q, k and v parts can be split in; ``qkv`` is every code
base's (GPT-2's ``c_attn``, torch's ``in_proj_weight``, a q/k/v stack paired with separate
projections)."""

SOFTMAX = ("float", "bfloat16", "bfloat16-steps", "bfloat16-fused")
"""Where a softmax rounds: ``float`` (the input's precision, or upcast to float32 as Hugging
Face's ``softmax(..., dtype=torch.float32)``), ``bfloat16`` (scores rounded to bfloat16, the
softmax computed wider and its output rounded: torch's CPU kernel), ``bfloat16-steps``
(every step rounded to bfloat16: ``jax.nn.softmax`` on a bfloat16 array, run eagerly) or
``bfloat16-fused`` (the scores, their max-shifted differences, the exponentials and their
sum rounded to bfloat16, the exponentials summed and the division done in float32, the
output not rounded: the program XLA compiles on CPU for ``jax.nn.softmax`` on bfloat16
scores under ``jax.jit`` when its result is cast back to float32, read from its HLO with
JAX 0.10)."""


# -- the weights ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionWeights:
    """An attention's weights as flat matrices, kernels ``(in, out)``, biases ``(out,)`` or
    ``None``; ``qkv`` set (and ``q``, ``k``, ``v`` not) for a fused projection.

    Attributes:
        names: role (``q``, ``k``, ``v``, ``qkv``, ``o``) -> the parameter's local name.
    """

    q: np.ndarray | None
    k: np.ndarray | None
    v: np.ndarray | None
    qkv: np.ndarray | None
    o: np.ndarray
    bq: np.ndarray | None = None
    bk: np.ndarray | None = None
    bv: np.ndarray | None = None
    bqkv: np.ndarray | None = None
    bo: np.ndarray | None = None
    names: tuple[tuple[str, str], ...] = ()

    @property
    def fused(self) -> bool:
        return self.qkv is not None

    @property
    def dim(self) -> int:
        return int((self.qkv if self.fused else self.q).shape[0])

    @property
    def width(self) -> int:
        """``H * hd``: the width of the attended values (the output projection's input)."""
        return int(self.o.shape[0])


_ROLES = {
    "q": re.compile(r"(^|[._/])(q|wq|query|q_proj|to_q)([._/]|$)"),
    "k": re.compile(r"(^|[._/])(k|wk|key|k_proj|to_k)([._/]|$)"),
    "v": re.compile(r"(^|[._/])(v|wv|value|v_proj|to_v)([._/]|$)"),
    # a bare "proj" (timm's attn.proj) only after a dot or slash: "q_proj" is no output
    "o": re.compile(
        r"(^|[._/])(o|wo|out|o_proj|out_proj|c_proj|dense|to_out)([._/]|$)|(^|[./])proj([._/]|$)"
    ),
}
"""Role hints from parameter names: they only order the trials; the fit decides."""

KERNEL_NAMES = ("kernel", "weight", "w")
BIAS_NAMES = ("bias", "b")


def _groups(tree: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Parameters by owner (``q_proj.kernel`` -> ``q_proj``: ``kernel``), in order; a name
    that is no kernel or bias (``in_proj_weight``) is its own owner's kernel."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, value in tree.items():
        owner, _, leaf = name.rpartition(".")
        if leaf in KERNEL_NAMES or leaf.endswith(("_weight", "_kernel")):
            slot = "kernel"
            owner = owner or leaf.rsplit("_", 1)[0]
        elif leaf in BIAS_NAMES or leaf.endswith("_bias"):
            slot = "bias"
            owner = owner or leaf.rsplit("_", 1)[0]
        else:
            continue
        out.setdefault(owner, {})[slot] = np.asarray(value, np.float64)
    return {k: v for k, v in out.items() if "kernel" in v}


def _flat_in(kernel: np.ndarray, dim: int) -> list[np.ndarray]:
    """The readings of a projection's kernel as ``(dim, out)``: a ``(dim, heads, hd)``
    DenseGeneral kernel flattened; a 2-D one as stored or transposed (torch's ``(out, in)``)."""
    if kernel.ndim == 3 and kernel.shape[0] == dim:
        return [kernel.reshape(dim, -1)]
    if kernel.ndim != 2:
        return []
    out = [kernel] if kernel.shape[0] == dim else []
    if kernel.shape[1] == dim and kernel.shape[0] != kernel.shape[1]:
        out.append(kernel.T)
    elif kernel.shape == (dim, dim):
        out.append(kernel.T)
    return out


def _flat_out(kernel: np.ndarray, dim: int) -> list[np.ndarray]:
    """The readings of an output projection's kernel as ``(width, dim)``."""
    if kernel.ndim == 3 and kernel.shape[-1] == dim:
        return [kernel.reshape(-1, dim)]
    if kernel.ndim != 2:
        return []
    out = [kernel] if kernel.shape[1] == dim else []
    if kernel.shape[0] == dim and kernel.shape != (dim, dim):
        out.append(kernel.T)
    elif kernel.shape == (dim, dim):
        out.append(kernel.T)
    return out


def _bias(group: dict, width: int) -> np.ndarray | None:
    b = group.get("bias")
    return None if b is None or b.size != width else b.reshape(-1)


def _hinted(owners: list[str], role: str) -> list[str]:
    return [o for o in owners if _ROLES[role].search(o.lower())]


def attention_weights(tree: Mapping[str, np.ndarray], dim: int) -> list[AttentionWeights]:
    """The ways ``tree`` (a module's parameters by local name, e.g. ``q_proj.kernel``,
    ``in_proj.kernel``, ``c_attn.weight``, ``query.kernel (D, H, hd)``) reads as an
    attention on inputs of width ``dim``: four projections (q, k, v, o) or a fused one and an
    output one. The orders named by the parameters (``q``, ``query``, ``wq``, ...) come
    first, then the order they were defined in, then the other orders of q, k and v; empty
    when the parameters are not an attention's."""
    groups = _groups(tree)
    owners = list(groups)
    found: list[AttentionWeights] = []
    if len(owners) == 2:
        for fused_owner, out_owner in (owners, owners[::-1]):
            for qkv in _flat_in(groups[fused_owner]["kernel"], dim):
                for o in _flat_out(groups[out_owner]["kernel"], dim):
                    if qkv.shape[1] <= o.shape[0]:
                        continue
                    found.append(
                        AttentionWeights(
                            None,
                            None,
                            None,
                            qkv,
                            o,
                            bqkv=_bias(groups[fused_owner], qkv.shape[1]),
                            bo=_bias(groups[out_owner], dim),
                            names=(("qkv", fused_owner), ("o", out_owner)),
                        )  # fmt: skip
                    )
        return found
    if len(owners) != 4:
        return []
    orders: list[tuple[str, ...]] = []
    hinted = [_hinted(owners, r) for r in "qkvo"]
    if all(len(h) == 1 for h in hinted) and len({h[0] for h in hinted}) == 4:
        orders.append(tuple(h[0] for h in hinted))
    outs = [o for o in (hinted[3] or owners[-1:]) if o in owners]
    for out in dict.fromkeys([*outs, owners[-1]]):
        rest = [o for o in owners if o != out]
        orders += [(*p, out) for p in itertools.permutations(rest)]
    for order in dict.fromkeys(orders):
        g = [groups[o] for o in order]
        for q, k, v in itertools.product(*(_flat_in(x["kernel"], dim) for x in g[:3])):
            if k.shape != v.shape:
                continue
            for o in _flat_out(g[3]["kernel"], dim):
                if o.shape[0] != q.shape[1]:
                    continue
                found.append(
                    AttentionWeights(
                        q,
                        k,
                        v,
                        None,
                        o,
                        bq=_bias(g[0], q.shape[1]),
                        bk=_bias(g[1], k.shape[1]),
                        bv=_bias(g[2], v.shape[1]),
                        bo=_bias(g[3], dim),
                        names=tuple(zip(("q", "k", "v", "o"), order, strict=True)),
                    )  # fmt: skip
                )
    return found


def canonical_weights(local: Mapping[str, np.ndarray], layer: Attention) -> AttentionWeights:
    """The flat weights of an :class:`~xgrad.layers.Attention`'s canonical ones
    (``query_kernel (D, H, hd)`` ... ``out_kernel (H, hd, D)``)."""
    d = layer.dim

    def flat(name, shape):
        a = local.get(name)
        return None if a is None else np.asarray(a, np.float64).reshape(shape)

    o = flat("out_kernel", (-1, d))
    bo = flat("out_bias", (-1,))
    if layer.qkv == "fused":
        return AttentionWeights(
            None, None, None, flat("qkv_kernel", (d, -1)), o,
            bqkv=flat("qkv_bias", (-1,)), bo=bo, names=(("qkv", "qkv_kernel"), ("o", "out_kernel")),
        )  # fmt: skip
    return AttentionWeights(
        flat("query_kernel", (d, -1)), flat("key_kernel", (d, -1)), flat("value_kernel", (d, -1)),
        None, o, flat("query_bias", (-1,)), flat("key_bias", (-1,)), flat("value_bias", (-1,)),
        bo=bo, names=(("q", "query_kernel"), ("k", "key_kernel"), ("v", "value_kernel"),
                      ("o", "out_kernel")),
    )  # fmt: skip


# -- the conventions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Convention:
    """How an attention is written, beside its weights.

    Attributes:
        heads, kv_heads, head_dim: ``H``, ``K`` and ``hd``.
        rope: ``None``, ``"half"`` (LLaMA, GPT-NeoX, HF ``rotate_half``) or ``"interleaved"``
            (GPT-J ``rotate_every_two``, Meta's complex multiply); positions ``0 .. T-1``.
        rope_base: theta.
        causal: token ``i`` sees keys ``j <= i + causal_offset`` only.
        causal_offset: 0 (the mask), -1 (the diagonal masked too: the first token sees
            nothing) or 1 (one future token seen).
        scale: the factor of the scores, ``None`` for ``1 / sqrt(head_dim)``.
        split: a fused projection's columns as ``"blocks"`` ``(3, H, hd)`` (GPT-2's
            ``c_attn``, torch's ``in_proj_weight``) or ``"per-head"`` ``(H, 3, hd)``
            (GPT-NeoX's and Megatron's ``query_key_value``).
        order: the order of the q, k and v parts of a fused projection (one of
            :data:`ORDERS`: ``"kqv"`` reads its first ``K`` heads as keys). Separate q, k
            and v projections are read as their stack in the order q, k, v (how a fused
            projection paired with them holds them) when it is not ``"qkv"``.
        head_axes: the q, k and v projections' columns as ``(H, hd)`` (``"heads-first"``,
            every code base) or ``(hd, H)`` (``"dim-first"``: a reshape in the other order);
            the attended values enter the output projection as ``(H, hd)`` either way.
        gqa: key/value head ``j`` serves query heads ``j*g .. j*g+g-1`` (``"interleave"``:
            ``repeat_interleave``, LLaMA's ``repeat_kv``) or ``j, j+K, ...`` (``"tile"``).
        fill: the score of a masked key (``-inf``; ``-1e9`` or ``finfo.min`` in much code):
            a row with every key masked is NaN with ``-inf``, uniform otherwise.
        softmax: one of :data:`SOFTMAX`.
    """

    heads: int
    kv_heads: int
    head_dim: int
    rope: str | None = None
    rope_base: float = 10000.0
    causal: bool = False
    causal_offset: int = 0
    scale: float | None = None
    split: str = "blocks"
    order: str = "qkv"
    head_axes: str = "heads-first"
    gqa: str = "interleave"
    fill: float = -math.inf
    softmax: str = "float"

    @property
    def score_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim) if self.scale is None else self.scale


def convention_of(layer: Attention) -> Convention:
    """The convention of an :class:`~xgrad.layers.Attention` (xgrad's own definitions)."""
    return Convention(
        layer.heads, layer.kv_heads, layer.head_dim, layer.rope, layer.rope_base,
        layer.causal, 0, layer.scale,
    )  # fmt: skip


def _heads(z: np.ndarray, n: int, hd: int, axes: str) -> np.ndarray:
    """``(B, T, n * hd)`` as ``(B, T, n, hd)`` under ``axes``."""
    b, t, _ = z.shape
    if axes == "heads-first":
        return z.reshape(b, t, n, hd)
    return z.reshape(b, t, hd, n).transpose(0, 1, 3, 2)


def _affine(x, kernel, bias):
    z = x @ kernel
    return z if bias is None else z + bias


def stacked(w: AttentionWeights) -> tuple[np.ndarray, np.ndarray | None]:
    """The fused projection ``(kernel (D, (H+2K)*hd), bias or None)``: the weights' own, or
    separate q, k and v stacked in that order (a missing bias as zeros)."""
    if w.fused:
        return w.qkv, w.bqkv
    kernels, biases = (w.q, w.k, w.v), (w.bq, w.bk, w.bv)
    kernel = np.concatenate(kernels, axis=1)
    if all(b is None for b in biases):
        return kernel, None
    parts = [np.zeros(k.shape[1]) if b is None else b for k, b in zip(kernels, biases, strict=True)]
    return kernel, np.concatenate(parts)


def project(w: AttentionWeights, c: Convention, x: np.ndarray):
    """``(q (B, T, H, hd), k, v (B, T, K, hd))`` before RoPE."""
    h, kv, hd = c.heads, c.kv_heads, c.head_dim
    if not w.fused and c.order == "qkv":
        return (
            _heads(_affine(x, w.q, w.bq), h, hd, c.head_axes),
            _heads(_affine(x, w.k, w.bk), kv, hd, c.head_axes),
            _heads(_affine(x, w.v, w.bv), kv, hd, c.head_axes),
        )
    z = _affine(x, *stacked(w))
    if c.split == "per-head":
        b, t, _ = z.shape
        z = z.reshape(b, t, h, 3, hd)
        return tuple(z[..., c.order.index(part), :] for part in "qkv")
    widths = {"q": h * hd, "k": kv * hd, "v": kv * hd}
    cuts = np.cumsum([widths[part] for part in c.order[:2]])
    pieces = dict(zip(c.order, np.split(z, cuts, axis=-1), strict=True))
    return (
        _heads(pieces["q"], h, hd, c.head_axes),
        _heads(pieces["k"], kv, hd, c.head_axes),
        _heads(pieces["v"], kv, hd, c.head_axes),
    )


def _softmax(s: np.ndarray, mode: str) -> np.ndarray:
    def soft(a):
        e = np.exp(a - a.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    if mode == "float":
        return soft(s)

    def r(a):
        return as_dtype(a, "bfloat16")

    if mode == "bfloat16":
        return r(soft(r(s)))
    if mode == "bfloat16-fused":
        s = r(s)
        e = np.exp(r(s - s.max(axis=-1, keepdims=True)))
        return r(e) / r(e.sum(axis=-1, keepdims=True))
    s = r(s)
    e = r(np.exp(r(s - s.max(axis=-1, keepdims=True))))
    return r(e / r(e.sum(axis=-1, keepdims=True)))


def attend(
    w: AttentionWeights, c: Convention, x: np.ndarray, keep: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Self-attention of ``x (B, T, D)`` under ``c``: ``(y (B, T, D), o (B, T, H, hd))``, ``o``
    the attended values of each head before the output projection.

    Args:
        keep: ``(B, T)`` bool, True = a key to attend to (a padding mask), or ``None``.
    """
    q, k, v = project(w, c, x)
    t = x.shape[1]
    if c.rope is not None:
        cos, sin = rope_angles(t, c.head_dim, c.rope_base, np.float64)
        q, k = apply_rope(q, cos, sin, c.rope), apply_rope(k, cos, sin, c.rope)
    g = c.heads // c.kv_heads
    if c.gqa == "interleave":
        k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    else:
        k, v = np.tile(k, (1, 1, g, 1)), np.tile(v, (1, 1, g, 1))
    with np.errstate(all="ignore"):
        s = np.einsum("bihd,bjhd->bhij", q, k) * c.score_scale
        masked = np.zeros((1, 1, t, t), dtype=bool)
        if c.causal:
            masked = masked | np.triu(np.ones((t, t), dtype=bool), k=1 + c.causal_offset)
        if keep is not None:
            masked = masked | ~keep[:, None, None, :]
        s = np.where(masked, c.fill, s)
        p = _softmax(s, c.softmax)
        o = np.einsum("bhij,bjhd->bihd", p, v)
    y = _affine(o.reshape(x.shape[0], t, -1), w.o, w.bo)
    return y, o


# -- fitting an attention --------------------------------------------------------------------------


def _shapes(w: AttentionWeights) -> Iterator[tuple[int, int, int]]:
    """``(H, K, hd)`` the weights' widths allow, head widths from the largest down."""
    width = w.width
    kv_width = (w.qkv.shape[1] - width) // 2 if w.fused else w.k.shape[1]
    if w.fused and w.qkv.shape[1] != width + 2 * kv_width:
        return
    for hd in sorted((d for d in range(1, width + 1) if width % d == 0), reverse=True):
        h = width // hd
        if kv_width % hd == 0 and h % (kv_width // hd) == 0:
            yield h, kv_width // hd, hd


def alternatives(c: Convention, w: AttentionWeights) -> Iterator[Convention]:
    """Every convention one choice away from ``c`` (the alternatives the causes try)."""
    hd = c.head_dim
    for rope in (None, "half", "interleaved"):
        if rope != c.rope and (rope is None or hd % 2 == 0):
            yield replace(c, rope=rope)
    if c.rope is not None:
        for base in BASES:
            if base != c.rope_base:
                yield replace(c, rope_base=base)
    # the causal mask is one choice of four: none, or keys j <= i + offset for -1, 0, 1
    if c.causal:
        yield replace(c, causal=False, causal_offset=0)
    for offset in (0, -1, 1):
        if not c.causal or offset != c.causal_offset:
            yield replace(c, causal=True, causal_offset=offset)
    for scale in scales(c, w.dim):
        yield replace(c, scale=scale)
    if c.kv_heads < c.heads:
        yield replace(c, gqa="tile" if c.gqa == "interleave" else "interleave")
    yield replace(c, head_axes="dim-first" if c.head_axes == "heads-first" else "heads-first")
    if w.fused and c.heads == c.kv_heads:
        yield replace(c, split="per-head" if c.split == "blocks" else "blocks")
    for order in ORDERS:
        if order != c.order:
            yield replace(c, order=order)


def scales(c: Convention, dim: int) -> list[float | None]:
    """The score scales other than ``c``'s: ``1 / sqrt(hd)``, none (1), applied twice
    (``1 / hd``), ``1 / sqrt(dim)`` (the model's width for the head's), ``sqrt(hd)``."""
    hd = c.head_dim
    out = [None, 1.0, 1.0 / hd, 1.0 / math.sqrt(dim), math.sqrt(hd)]
    own = c.score_scale
    kept: list[float | None] = []
    seen = {round(own, 12)}
    for s in out:
        value = 1.0 / math.sqrt(hd) if s is None else s
        if round(value, 12) not in seen:
            seen.add(round(value, 12))
            kept.append(s)
    return kept


SHAPES_TRIED = 3
"""How many head shapes (weights read one way, heads, kv heads, head size) get the second pass
of :func:`fit_attention` around their three closest first-pass conventions (those whose closest
came closest); every other shape gets it around its closest one only."""


def distance_to(y: np.ndarray):
    """``rel(a, y)`` as a function of ``a``; where ``y`` holds NaN or inf (a fully masked row
    filled with -inf), ``inf`` unless ``a`` is not finite at exactly those places, else
    ``rel`` of the finite rest."""
    bad = ~np.isfinite(y)
    if not bad.any():
        return lambda a: rel(a, y)
    ok = ~bad

    def distance(a: np.ndarray) -> float:
        if not np.array_equal(~np.isfinite(a), bad):
            return math.inf
        return rel(a[ok], y[ok]) if ok.any() else 0.0

    return distance


def _first_pass(
    shape: tuple[int, int, int], keep: np.ndarray | None, axes: str
) -> Iterator[Convention]:
    """Every first-pass convention of one head shape ``(heads, kv_heads, head_dim)``:
    RoPE none, halves or interleaved (base 1e4), causal or not, the ``1 / sqrt(hd)`` scale,
    key/value heads repeated or tiled, masked scores -inf or finite, head axes ``axes``."""
    h, kv, hd = shape
    gqas = ("interleave", "tile") if kv < h else ("interleave",)
    fills = (-math.inf, -1e9) if keep is not None else (-math.inf,)
    for rope, causal, gqa, fill in itertools.product(
        (None, "half", "interleaved"), (False, True), gqas, fills
    ):
        if rope is not None and hd % 2:
            continue
        c = Convention(h, kv, hd, rope=rope, causal=causal, gqa=gqa, fill=fill, head_axes=axes)
        yield c


def fit_attention(
    options: list[AttentionWeights],
    x: np.ndarray,
    y: np.ndarray,
    dtype: str,
    keep: np.ndarray | None = None,
) -> tuple[AttentionWeights, Convention, float] | None:
    """The weights and convention that reproduce ``y (B, T, D)`` from ``x`` within
    :data:`~xgrad.identify.FIT` for ``dtype``, or ``None``.

    Tried first for every head count the widths allow: RoPE none, halves or interleaved
    (base 1e4), causal or not, the ``1 / sqrt(hd)`` scale (key/value heads repeated or tiled,
    masked scores -inf or finite); then, around the closest of those of each head shape (the
    three closest in the :data:`SHAPES_TRIED` shapes that came closest), each convention one
    choice away (:func:`alternatives`): another base, scale, causal mask or offset, GQA
    repeat, head axis order, fused split or order of q, k and v, or a softmax in bfloat16;
    last, the first pass again with the projections' columns read as ``(head_dim, heads)``
    (a port's head axes swapped together with RoPE or a mask of its own is two choices away
    from every first-pass convention); at the very last, a score scale of any value, fitted
    around the closest conventions (:func:`fit_scale`).
    """
    if x.ndim != 3 or y.shape != x.shape[:2] + (y.shape[-1],):
        return None
    fit, error = FIT.get(dtype, 1e-5), distance_to(y)
    shapes = [
        (w, shape)
        for w in options
        if w.dim == x.shape[-1] and w.o.shape[1] == y.shape[-1]
        for shape in _shapes(w)
    ]
    groups = []  # per weights and head shape: its first conventions, closest first
    for w, shape in shapes:
        first = []
        for c in _first_pass(shape, keep, "heads-first"):
            err = error(attend(w, c, x, keep)[0])
            if err <= fit:
                return w, c, err
            first.append((err, c))
        first.sort(key=lambda e: e[0])
        if first:
            groups.append((first[0][0], w, first))
    # each convention one choice away from the closest, in the head shapes that came closest
    # (every shape's alternatives cost as much as the whole first pass, many times over)
    groups.sort(key=lambda g: g[0])
    for rank, (_, w, first) in enumerate(groups):
        for _, c0 in first[: 3 if rank < SHAPES_TRIED else 1]:
            softmax = (replace(c0, softmax=m) for m in SOFTMAX if m != c0.softmax)
            for c in itertools.chain(alternatives(c0, w), softmax):
                err = error(attend(w, c, x, keep)[0])
                if err <= fit:
                    return w, c, err
    for w, shape in shapes:
        if shape[0] == 1 or shape[2] == 1:  # (head_dim, heads) reads as (heads, head_dim)
            continue
        for c in _first_pass(shape, keep, "dim-first"):
            err = error(attend(w, c, x, keep)[0])
            if err <= fit:
                return w, c, err
    # last, a score scale none of the above names (GPT-2's scale_attn_by_inverse_layer_idx:
    # 1 / (sqrt(hd) * (layer + 1))), fitted around the closest conventions
    for rank, (_, w, first) in enumerate(groups[:SHAPES_TRIED]):
        for _, c0 in first[: 3 if rank == 0 else 1]:
            found = fit_scale(w, c0, x, error, fit, keep)
            if found is not None:
                return w, *found
    return None


def _scale_error(w, c: Convention, x, error, keep):
    """The error of ``c`` with its scores scaled by ``2**u / sqrt(hd)``, as a function of
    ``u``."""
    base = 1.0 / math.sqrt(c.head_dim)
    return lambda u: error(attend(w, replace(c, scale=base * 2.0**u), x, keep)[0])


def fit_scale(
    w: AttentionWeights,
    c: Convention,
    x: np.ndarray,
    error,
    fit: float,
    keep: np.ndarray | None = None,
) -> tuple[Convention, float] | None:
    """``(c with the score scale that reproduces the output, its error)``, or ``None``.

    A one-parameter fit: the scale ``2**u / sqrt(hd)`` is searched on a grid of ``u`` from
    -6 to 6 (steps of a quarter), then refined by golden section around the grid's best. A
    simple value within 1% of the fitted one (``1 / (k sqrt(hd))``, ``k / sqrt(hd)``,
    ``1 / k``, ``k`` for ``k`` up to 64, ``1 / sqrt(dim)``) is kept when it reproduces the
    output too, else the fitted value; either is confirmed by re-running ``attend`` with it
    (its error within ``fit``).

    Args:
        error: ``distance_to(y)``: the distance of an output to the captured one.
        fit: the distance within which the output counts as reproduced.
    """
    f = _scale_error(w, c, x, error, keep)
    grid = np.arange(-24, 25) / 4.0
    errs = [f(u) for u in grid]
    i = int(np.argmin(errs))
    if not math.isfinite(errs[i]):
        return None
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = f(a), f(b)
    for _ in range(100):  # to the precision of float64 (a V-shaped error: no quadratic fit)
        if hi - lo <= 1e-14:
            break
        if fa <= fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = f(b)
    fitted = 2.0 ** ((lo + hi) / 2.0) / math.sqrt(c.head_dim)
    root, ks = math.sqrt(c.head_dim), range(1, 65)
    simple = [1 / (k * root) for k in ks] + [k / root for k in ks] + [1 / k for k in ks]
    simple += [float(k) for k in ks] + [1 / math.sqrt(w.dim)]
    near = sorted((v for v in simple if abs(v / fitted - 1) < 1e-2), key=lambda v: abs(v - fitted))
    for scale in [*near, fitted]:
        if math.isclose(scale, 1 / root, rel_tol=1e-12):
            continue  # the first pass's own
        alt = replace(c, scale=scale)
        err = error(attend(w, alt, x, keep)[0])
        if err <= fit:
            return alt, err
    return None


def differing_heads(o_ref: np.ndarray, o_alt: np.ndarray, tol: float) -> list[int]:
    """The heads whose attended values ``(B, T, H, hd)`` differ beyond ``tol``."""
    return [h for h in range(o_ref.shape[2]) if rel(o_alt[:, :, h], o_ref[:, :, h]) > tol]


# -- RMSNorm forms ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RMSForm:
    """An RMSNorm as written: ``x / sqrt(mean(x**2) + eps)`` (``outside=False``) or
    ``x / (sqrt(mean(x**2)) + eps)``, times ``w`` or ``1 + w`` (``offset``, Gemma)."""

    epsilon: float
    outside: bool = False
    offset: bool = False

    def words(self) -> str:
        root = "sqrt(mean(x**2)) + eps" if self.outside else "sqrt(mean(x**2) + eps)"
        return f"x / ({root}) * ({'1 + w' if self.offset else 'w'}), eps {self.epsilon:g}"


def rmsnorm(x: np.ndarray, w: np.ndarray | None, form: RMSForm) -> np.ndarray:
    """An RMSNorm of ``x (..., d)`` over its last axis in ``form``; ``w (d,)`` or ``None``."""
    ms = np.mean(x * x, axis=-1, keepdims=True)
    with np.errstate(all="ignore"):
        if form.outside:
            n = x / (np.sqrt(ms) + form.epsilon)
        else:
            n = x / np.sqrt(ms + form.epsilon)
    if w is None:
        return n
    return n * (1.0 + w if form.offset else w)


def fit_rmsnorm(
    x: np.ndarray, y: np.ndarray, w: np.ndarray | None, dtype: str
) -> tuple[RMSForm, float] | None:
    """The form (epsilon inside or outside the root, ``w`` or ``1 + w``) and epsilon of
    :data:`~xgrad.identify.EPSILONS` that maps ``x`` to ``y``, or ``None``."""
    if x.shape != y.shape or (w is not None and w.shape != (x.shape[-1],)):
        return None
    fit = FIT.get(dtype, 1e-5)
    best = None
    for outside, offset in itertools.product((False, True), (False, True)):
        if offset and w is None:
            continue
        for eps in EPSILONS:
            form = RMSForm(eps, outside, offset)
            err = rel(rmsnorm(x, w, form), y)
            if best is None or err < best[1]:
                best = (form, err)
    return best if best is not None and best[1] <= fit else None


# -- embedding tables -----------------------------------------------------------------------------


def ids_of(x: np.ndarray | None, vocab: int) -> np.ndarray | None:
    """``x`` as integer token ids in ``[0, vocab)``, or ``None`` when it holds other
    values."""
    if x is None or x.size == 0:
        return None
    a = np.asarray(x)
    if a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or not np.all(a == np.round(a))):
        return None
    ids = a.astype(np.int64)
    return ids if ids.min() >= 0 and ids.max() < vocab else None


def embedding_table(
    tree: Mapping[str, np.ndarray], output_dim: int
) -> tuple[str, np.ndarray] | None:
    """``(local name, table (vocab, dim))`` when ``tree`` holds exactly one array and it is
    a 2-D table whose rows are as wide as the output, else ``None``."""
    if len(tree) != 1:
        return None
    ((name, table),) = tree.items()
    table = np.asarray(table, np.float64)
    if table.ndim != 2 or table.shape[1] != output_dim:
        return None
    return name, table
