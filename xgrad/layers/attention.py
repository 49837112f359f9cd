"""``Attention``: multi-head self-attention with grouped-query heads and rotary positions.

Shapes (``B`` batch, ``T`` tokens, ``D = dim``, ``H = heads``, ``K = kv_heads``,
``hd = head_dim``, ``g = H // K``)::

    q = einsum(x, query_kernel (D, H, hd)) + query_bias (H, hd)      -> (B, T, H, hd)
    k = einsum(x, key_kernel   (D, K, hd)) + key_bias   (K, hd)      -> (B, T, K, hd)
    v = einsum(x, value_kernel (D, K, hd)) + value_bias (K, hd)      -> (B, T, K, hd)
    q, k = rope(q), rope(k)                       (when ``rope`` is set)
    k, v = repeat each kv head g times (head j serves query heads j*g .. j*g+g-1)
    s[b, h, i, j] = (q[b, i, h] . k[b, j, h]) * scale       (scale = 1/sqrt(hd) by default)
    s = -inf where j > i                          (causal); fill where mask[b, j] is False
    p = softmax_j(s)                              (max-shifted)
    o[b, i, h] = sum_j p[b, h, i, j] v[b, j, h]
    y = einsum(o, out_kernel (H, hd, D)) + out_bias (D,)

``qkv="fused"`` holds the three projections in one ``qkv_kernel (D, H + 2K, hd)`` (query
heads, then key heads, then value heads: torch's ``in_proj_weight`` and GPT-2's ``c_attn``
order) and ``qkv_bias (H + 2K, hd)``.

The VJP runs the same steps backward::

    do  = einsum(dy, out_kernel)               d out_kernel = einsum(o, dy), d out_bias = sum dy
    dp  = do . v,  dv = p^T . do               (then summed over the g copies of each kv head)
    ds  = p * (dp - sum_j p * dp)              (softmax; masked entries have p = 0)
    dq  = scale * ds . k,  dk = scale * ds^T . q
    dq, dk = rope^T(dq), rope^T(dk)            (the transpose of a rotation: the angle negated)
    d kernel = einsum(x, d projection), d bias = sum d projection, dx = sum of the three

RoPE rotates pairs of each head vector by ``pos * theta_m``, ``theta_m = base ** (-2m / hd)``,
``m = 0 .. hd/2 - 1``, positions ``0 .. T-1``: ``(a, b) -> (a cos - b sin, a sin + b cos)``.
``"half"`` pairs ``(x[m], x[m + hd/2])`` (LLaMA, GPT-NeoX, Hugging Face ``rotate_half``);
``"interleaved"`` pairs ``(x[2m], x[2m+1])`` (GPT-J, Meta's original complex multiply).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from xgrad.errors import InputError, SpecError
from xgrad.layers.base import AbstractLayer, Shape, Step, check_bool, check_float
from xgrad.layers.base import check_positive_int as _positive

__all__ = [
    "QKV_LAYOUTS",
    "ROPE_LAYOUTS",
    "Attention",
    "AttentionCache",
    "apply_rope",
    "attention_backward",
    "attention_forward",
    "rope_angles",
]

ROPE_LAYOUTS = ("half", "interleaved")
"""Which pairs of a head vector RoPE rotates together (see the module documentation)."""

QKV_LAYOUTS = ("separate", "fused")
"""Whether q, k and v have kernels of their own or share one fused kernel."""


# -- rotary position embeddings ----------------------------------------------------------------


def rope_angles(tokens: int, head_dim: int, base: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``(cos, sin)`` of the angles ``pos * base ** (-2m / head_dim)``, each ``(tokens,
    head_dim // 2)``, computed in float64 and cast to ``dtype``."""
    m = np.arange(head_dim // 2, dtype=np.float64)
    theta = float(base) ** (-2.0 * m / head_dim)
    angles = np.arange(tokens, dtype=np.float64)[:, None] * theta[None, :]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, layout: str) -> np.ndarray:
    """Rotate each pair of ``x (..., T, heads, hd)`` by the angles of ``cos, sin (T, hd/2)``.

    Its transpose (the VJP) is the rotation by the negated angles: ``apply_rope(g, cos,
    -sin, layout)``.
    """
    c, s = cos[:, None, :], sin[:, None, :]  # broadcast over heads
    half = x.shape[-1] // 2
    if layout == "half":
        a, b = x[..., :half], x[..., half:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)
    if layout == "interleaved":
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * c - b * s
        out[..., 1::2] = a * s + b * c
        return out
    raise SpecError(f"unknown rope layout {layout!r}; it needs to be one of {list(ROPE_LAYOUTS)}")


# -- the layer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attention(AbstractLayer):
    """Multi-head self-attention on examples ``(tokens, dim)``, output ``(tokens, dim)``.

    Args:
        dim: the width of the input and output.
        heads: the number of query heads ``H``.
        kv_heads: the number of key/value heads ``K`` (grouped-query attention); it must
            divide ``heads``. ``None`` means ``heads``; stored resolved (always an int).
        head_dim: the width of each head; ``None`` means ``dim // heads`` (``heads`` must then
            divide ``dim``); stored resolved.
        causal: token ``i`` attends to tokens ``j <= i`` only.
        use_bias: whether the projections have biases.
        rope: ``None``, ``"half"`` or ``"interleaved"`` (see the module documentation).
        rope_base: the RoPE frequency base (theta), > 0.
        qkv: ``"separate"`` kernels or one ``"fused"`` kernel.
        scale: the factor of the scores; ``None`` means ``1 / sqrt(head_dim)``.

    Raises:
        SpecError: a size that is not a positive integer, heads not dividing ``dim`` (without
            ``head_dim``), ``kv_heads`` not dividing ``heads``, an odd ``head_dim`` with RoPE,
            an unknown ``rope`` or ``qkv``.

    Example:
        >>> Attention(16, 4, kv_heads=2).weight_shapes((6, 16))["key_kernel"]
        (16, 2, 4)
    """

    kind = "attention"

    dim: int
    heads: int
    kv_heads: int | None = None
    head_dim: int | None = None
    causal: bool = False
    use_bias: bool = True
    rope: str | None = None
    rope_base: float = 10000.0
    qkv: str = "separate"
    scale: float | None = None

    def __post_init__(self) -> None:
        dim = _positive(self.dim, "Attention dim")
        heads = _positive(self.heads, "Attention heads")
        kv = heads if self.kv_heads is None else _positive(self.kv_heads, "Attention kv_heads")
        if heads % kv:
            raise SpecError(
                f"Attention kv_heads={kv} does not divide heads={heads}; each key/value head "
                f"serves heads // kv_heads query heads: pick a divisor of {heads}"
            )
        if self.head_dim is None:
            if dim % heads:
                raise SpecError(
                    f"Attention heads={heads} does not divide dim={dim}; pick heads dividing "
                    f"{dim} or give head_dim explicitly"
                )
            hd = dim // heads
        else:
            hd = _positive(self.head_dim, "Attention head_dim")
        if self.rope is not None and self.rope not in ROPE_LAYOUTS:
            raise SpecError(
                f"Attention rope={self.rope!r} is unknown; it needs to be one of "
                f"{[None, *ROPE_LAYOUTS]}"
            )
        if self.rope is not None and hd % 2:
            raise SpecError(
                f"Attention with rope={self.rope!r} needs an even head_dim (RoPE rotates pairs), "
                f"got head_dim={hd}; change dim, heads or head_dim"
            )
        if self.qkv not in QKV_LAYOUTS:
            raise SpecError(
                f"Attention qkv={self.qkv!r} is unknown; it needs to be one of {list(QKV_LAYOUTS)}"
            )
        for name, value in (("dim", dim), ("heads", heads), ("kv_heads", kv), ("head_dim", hd)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "causal", check_bool(self.causal, "Attention causal"))
        object.__setattr__(self, "use_bias", check_bool(self.use_bias, "Attention use_bias"))
        base = check_float(self.rope_base, "Attention rope_base")
        if base <= 0:
            raise SpecError(f"Attention rope_base must be > 0, got {self.rope_base!r}")
        object.__setattr__(self, "rope_base", base)
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, numbers.Real):
                raise SpecError(f"Attention scale must be a number or None, got {self.scale!r}")
            object.__setattr__(self, "scale", check_float(self.scale, "Attention scale"))

    # -- structure ---------------------------------------------------------------------------

    @property
    def groups(self) -> int:
        """``heads // kv_heads``: the query heads each key/value head serves."""
        return self.heads // self.kv_heads

    @property
    def score_scale(self) -> float:
        """The factor of the scores: ``scale``, or ``1 / sqrt(head_dim)``."""
        return 1.0 / math.sqrt(self.head_dim) if self.scale is None else self.scale

    def _projections(self) -> tuple[str, ...]:
        return ("qkv",) if self.qkv == "fused" else ("query", "key", "value")

    def param_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for proj in (*self._projections(), "out"):
            names.append(f"{proj}_kernel")
            if self.use_bias:
                names.append(f"{proj}_bias")
        return tuple(names)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 2 or input_shape[-1] != self.dim:
            raise SpecError(
                f"Attention(dim={self.dim}) takes examples of shape (tokens, {self.dim}), got "
                f"{tuple(input_shape)}; put an Embedding(vocab, {self.dim}) or a "
                f"Dense({self.dim}) before it"
            )
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        d, h, k, hd = self.dim, self.heads, self.kv_heads, self.head_dim
        rows = {"query": h, "key": k, "value": k, "qkv": h + 2 * k}
        shapes: dict[str, Shape] = {}
        for proj in self._projections():
            shapes[f"{proj}_kernel"] = (d, rows[proj], hd)
            if self.use_bias:
                shapes[f"{proj}_bias"] = (rows[proj], hd)
        shapes["out_kernel"] = (h, hd, d)
        if self.use_bias:
            shapes["out_bias"] = (d,)
        return shapes

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Glorot-uniform kernels (fans ``dim`` and ``heads * head_dim``); biases uniform in
        ``[-bias_scale, bias_scale]``."""
        limit = math.sqrt(6.0 / (self.dim + self.heads * self.head_dim))
        out = {}
        for name, shape in self.weight_shapes(input_shape).items():
            bound = limit if name.endswith("_kernel") else bias_scale
            out[name] = rng.uniform(-bound, bound, size=shape)
        return out

    def describe(self) -> str:
        parts = [str(self.dim), f"heads={self.heads}"]
        if self.kv_heads != self.heads:
            parts.append(f"kv_heads={self.kv_heads}")
        if self.head_dim * self.heads != self.dim:
            parts.append(f"head_dim={self.head_dim}")
        if self.causal:
            parts.append("causal")
        if self.rope is not None:
            base = "" if self.rope_base == 1e4 else f", rope_base={self.rope_base:g}"
            parts.append(f"rope={self.rope}{base}")
        if self.qkv != "separate":
            parts.append(f"qkv={self.qkv}")
        if self.scale is not None:
            parts.append(f"scale={self.scale:g}")
        if not self.use_bias:
            parts.append("no bias")
        return f"attention({', '.join(parts)})"

    # -- math --------------------------------------------------------------------------------

    def forward(self, weights, x, *, path):
        y, cache = attention_forward(self.local(weights, path), x, self)
        return Step(path, self, x, y, cache=cache)

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        local, dx = attention_backward(
            self.local(weights, step.path), step.cache, grad_output, self
        )
        for name, value in local.items():
            grads[f"{step.path}.{name}"] = value
        return dx


# -- the functional core -------------------------------------------------------------------------


@dataclass
class AttentionCache:
    """What :func:`attention_backward` needs from :func:`attention_forward`.

    Attributes:
        x: the input ``(B, T, D)``.
        q: queries after RoPE ``(B, T, H, hd)``.
        k, v: keys (after RoPE) and values repeated to ``H`` heads, ``(B, T, H, hd)``.
        p: the attention probabilities ``(B, H, T, T)`` (query, key).
        o: the attended values ``(B, T, H, hd)``.
        rope: ``(cos, sin)`` of :func:`rope_angles`, or ``None``.
    """

    x: np.ndarray
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    p: np.ndarray
    o: np.ndarray
    rope: tuple[np.ndarray, np.ndarray] | None


def _split_kernels(local, layer: Attention) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """``projection -> (kernel (D, heads, hd), bias (heads, hd) or None)`` for q, k, v."""
    if layer.qkv == "separate":
        return {
            p: (local[f"{p}_kernel"], local.get(f"{p}_bias")) for p in ("query", "key", "value")
        }
    h, k = layer.heads, layer.kv_heads
    cuts = {"query": slice(0, h), "key": slice(h, h + k), "value": slice(h + k, h + 2 * k)}
    bias = local.get("qkv_bias")
    return {
        p: (local["qkv_kernel"][:, c], None if bias is None else bias[c]) for p, c in cuts.items()
    }


def _check_mask(mask, x: np.ndarray) -> np.ndarray:
    arr = np.asarray(mask)
    want = x.shape[:2]
    if arr.shape != want or arr.dtype != np.bool_:
        raise InputError(
            f"attention mask must be a bool array of shape (batch, tokens) = {want} "
            f"(True = attend), got {arr.dtype} of shape {arr.shape}"
        )
    return arr


def attention_forward(
    local_weights, x: np.ndarray, layer: Attention, mask=None, *, fill: float = -np.inf
) -> tuple[np.ndarray, AttentionCache]:
    """Self-attention of ``x (B, T, D)`` in the dtype of ``x``; ``(y (B, T, D), cache)``.

    Args:
        local_weights: the layer's weights by local name (``query_kernel``, ...).
        x: the input.
        layer: the configuration.
        mask: an optional padding mask ``(B, T)`` bool, True = attend: scores of keys with
            False are set to ``fill`` before the softmax (a row with every key masked is NaN
            with ``fill=-inf``, as in the frameworks that fill with -inf).
        fill: the score of a masked key (``-inf``, or e.g. ``-1e9`` as some code writes it).
    """
    kernels = _split_kernels(local_weights, layer)
    proj = {}
    for name, (kernel, bias) in kernels.items():
        z = np.einsum("btd,dhk->bthk", x, kernel)
        proj[name] = z if bias is None else z + bias
    q, k, v = proj["query"], proj["key"], proj["value"]
    rope = None
    if layer.rope is not None:
        rope = rope_angles(x.shape[1], layer.head_dim, layer.rope_base, x.dtype)
        q, k = apply_rope(q, *rope, layer.rope), apply_rope(k, *rope, layer.rope)
    k = np.repeat(k, layer.groups, axis=2)
    v = np.repeat(v, layer.groups, axis=2)
    s = np.einsum("bihd,bjhd->bhij", q, k) * x.dtype.type(layer.score_scale)
    if mask is not None:
        s = np.where(_check_mask(mask, x)[:, None, None, :], s, x.dtype.type(fill))
    if layer.causal:
        tokens = x.shape[1]
        future = np.triu(np.ones((tokens, tokens), dtype=bool), k=1)
        s = np.where(future, x.dtype.type(-np.inf), s)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    o = np.einsum("bhij,bjhd->bihd", p, v)
    y = np.einsum("bihd,hdo->bio", o, local_weights["out_kernel"])
    if layer.use_bias:
        y = y + local_weights["out_bias"]
    return y, AttentionCache(x, q, k, v, p, o, rope)


def _unrepeat(g: np.ndarray, groups: int) -> np.ndarray:
    """Sum ``(B, T, H, hd)`` over the copies of each kv head: ``(B, T, H // groups, hd)``."""
    b, t, h, d = g.shape
    return g.reshape(b, t, h // groups, groups, d).sum(axis=3)


def attention_backward(
    local_weights, cache: AttentionCache, grad_output: np.ndarray, layer: Attention
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The VJP of :func:`attention_forward`: ``(dL/d weights by local name, dL/dx)``."""
    out_kernel = local_weights["out_kernel"]
    grads = {"out_kernel": np.einsum("bihd,bio->hdo", cache.o, grad_output)}
    if layer.use_bias:
        grads["out_bias"] = grad_output.sum(axis=(0, 1))
    do = np.einsum("bio,hdo->bihd", grad_output, out_kernel)
    p = cache.p
    dp = np.einsum("bihd,bjhd->bhij", do, cache.v)
    dv = np.einsum("bhij,bihd->bjhd", p, do)
    ds = p * (dp - (p * dp).sum(axis=-1, keepdims=True))
    ds = ds * cache.x.dtype.type(layer.score_scale)
    dq = np.einsum("bhij,bjhd->bihd", ds, cache.k)
    dk = np.einsum("bhij,bihd->bjhd", ds, cache.q)
    dk, dv = _unrepeat(dk, layer.groups), _unrepeat(dv, layer.groups)
    if cache.rope is not None:
        cos, sin = cache.rope
        dq, dk = apply_rope(dq, cos, -sin, layer.rope), apply_rope(dk, cos, -sin, layer.rope)
    x = cache.x
    kernels = _split_kernels(local_weights, layer)
    dx = np.zeros_like(x)
    parts = {}
    for name, dz in (("query", dq), ("key", dk), ("value", dv)):
        kernel = kernels[name][0]
        parts[name] = (np.einsum("btd,bthk->dhk", x, dz), dz.sum(axis=(0, 1)))
        dx = dx + np.einsum("bthk,dhk->btd", dz, kernel)
    if layer.qkv == "fused":
        order = ("query", "key", "value")
        grads["qkv_kernel"] = np.concatenate([parts[n][0] for n in order], axis=1)
        if layer.use_bias:
            grads["qkv_bias"] = np.concatenate([parts[n][1] for n in order], axis=0)
    else:
        for name, (dk_, db_) in parts.items():
            grads[f"{name}_kernel"] = dk_
            if layer.use_bias:
                grads[f"{name}_bias"] = db_
    return grads, dx
