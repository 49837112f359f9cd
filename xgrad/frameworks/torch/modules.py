"""xgrad's own small ``torch.nn`` modules, for where torch has none or torch's differs from
xgrad's definition (:mod:`xgrad.activations`), and :func:`activation_module`.

torch's own modules are used wherever their value *and* their derivative (kinks included)
are xgrad's: ``nn.ReLU``, ``nn.LeakyReLU`` (derivative at 0 = slope), ``nn.ReLU6``
(0 at 0 and 6), ``nn.ELU``, ``nn.GELU`` (``approximate="none"`` / ``"tanh"``),
``nn.Sigmoid``, ``nn.Tanh``, ``nn.SiLU``, ``nn.Softmax(dim=-1)``,
``nn.LogSoftmax(dim=-1)``. Three are not:

* :class:`Selu`: ``torch.selu``'s derivative at 0 is ``scale * alpha = 1.7581``; xgrad's
  (and TensorFlow's) is ``scale = 1.0507``.
* :class:`Softplus`: ``nn.Softplus`` returns ``x`` itself above ``threshold=20``: its value
  there is off by up to 2e-9 (absolute) from ``log(1 + exp(x))`` and its derivative, 1, by up
  to 2e-9 from ``sigmoid(x)``.
* :class:`HardSigmoid`: ``nn.Hardsigmoid``'s backward multiplies by ``1/6`` rounded to
  float32 even in float64 (a relative error of 3e-8 there).

The transformer kinds: :class:`ScaledEmbedding` (``nn.Embedding`` times a constant, for
``Embedding(scale=...)``), :class:`SelfAttention` (parameters in xgrad's canonical shapes,
einsum projections around ``F.scaled_dot_product_attention``) and :class:`GatedMLP` (three
``nn.Linear``, LLaMA's ``gate_proj`` / ``up_proj`` / ``down_proj``).

Importing this module imports torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xgrad.activations import SELU_ALPHA, SELU_SCALE, get_activation
from xgrad.errors import SpecError
from xgrad.layers import Dropout

__all__ = [
    "GatedMLP",
    "HardSigmoid",
    "MaskedDropout",
    "Residual",
    "ScaledEmbedding",
    "SelfAttention",
    "Selu",
    "Softplus",
    "activation_module",
    "apply_rope",
    "embedding_module",
    "numpy_dtype",
    "rope_cos_sin",
]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def numpy_dtype(dtype: torch.dtype) -> type:
    """The NumPy dtype of a torch float dtype (float32, float64)."""
    return _NUMPY_DTYPES[dtype]


class Selu(nn.Module):
    """``scale * (x if x > 0 else alpha * (exp(x) - 1))`` with ``selu'(0) = scale``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negative = SELU_ALPHA * torch.expm1(torch.clamp(x, max=0))
        return SELU_SCALE * torch.where(x >= 0, x, negative)


class Softplus(nn.Module):
    """``log(1 + exp(x))`` everywhere (no threshold), as ``max(x, 0) + log1p(exp(-|x|))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(x, torch.zeros_like(x))


class HardSigmoid(nn.Module):
    """``relu6(x + 3) / 6``; derivative ``1/6`` in the dtype of ``x``, 0 at -3 and 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x + 3, 0.0, 6.0) / 6


class MaskedDropout(nn.Module):
    """An active :class:`~xgrad.layers.Dropout`: multiplies by the mask xgrad draws for
    ``(layer.seed, path, x.shape)`` divided by ``1 - rate``, never by torch's random one.

    Args:
        layer: the xgrad dropout layer (``active=True``).
        path: its canonical path in the model, e.g. ``layers.2``.
    """

    def __init__(self, layer: Dropout, path: str) -> None:
        super().__init__()
        self.layer = layer
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.layer.scaled_mask(self.path, tuple(x.shape), numpy_dtype(x.dtype))
        return x * torch.from_numpy(factor).to(x.device)

    def extra_repr(self) -> str:
        return f"rate={self.layer.rate:g}, seed={self.layer.seed}, path={self.path!r}"


class Residual(nn.Sequential):
    """``x + block(x)``, the block's modules as the items of this ``nn.Sequential``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def activation_module(name: str) -> nn.Module:
    """The module computing the xgrad activation ``name`` (``"relu"``, ``"leaky_relu:0.01"``).

    Example:
        >>> activation_module("gelu_tanh")
        GELU(approximate='tanh')
    """
    act = get_activation(name)
    if act.kind == "leaky_relu":
        return nn.LeakyReLU(act.slope)
    factories = {
        "linear": nn.Identity,
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "softmax": lambda: nn.Softmax(dim=-1),
        "log_softmax": lambda: nn.LogSoftmax(dim=-1),
        "gelu": lambda: nn.GELU(approximate="none"),
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "elu": nn.ELU,
        "selu": Selu,
        "softplus": Softplus,
        "silu": nn.SiLU,
        "relu6": nn.ReLU6,
        "hard_sigmoid": HardSigmoid,
    }
    if act.name not in factories:  # an activation added to xgrad without a torch form yet
        raise SpecError(f"activation {act.name!r} has no torch module in xgrad yet")
    return factories[act.name]()


# -- transformer kinds ----------------------------------------------------------------------------


class ScaledEmbedding(nn.Embedding):
    """``nn.Embedding`` whose rows are multiplied by ``scale`` (Gemma's and T5-style
    ``sqrt(dim)``): ``weight[ids] * scale``. The weight, ``(vocab, dim)``, and ``padding_idx``
    (its row gets no gradient) are ``nn.Embedding``'s own."""

    def __init__(
        self, vocab: int, dim: int, *, padding_idx: int | None, scale: float, dtype
    ) -> None:
        super().__init__(vocab, dim, padding_idx=padding_idx, dtype=dtype)
        self.scale = float(scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale:g}"


def embedding_module(layer, dtype) -> nn.Embedding:
    """The module of an xgrad ``Embedding`` layer: torch's own ``nn.Embedding(vocab, dim,
    padding_idx=...)``, or a :class:`ScaledEmbedding` when the layer has a ``scale``."""
    if layer.scale is None:
        return nn.Embedding(layer.vocab, layer.dim, padding_idx=layer.padding_idx, dtype=dtype)
    return ScaledEmbedding(
        layer.vocab, layer.dim, padding_idx=layer.padding_idx, scale=layer.scale, dtype=dtype
    )


def rope_cos_sin(tokens: int, head_dim: int, base: float, like: torch.Tensor):
    """``(cos, sin)`` of the rotary angles ``pos * base ** (-2m / head_dim)``, each of shape
    ``(tokens, head_dim // 2)`` in ``like``'s dtype and device (computed in float64)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.float64, device=like.device) / head_dim
    inv_freq = 1.0 / (base**exponents)
    positions = torch.arange(tokens, dtype=torch.float64, device=like.device)
    angles = torch.outer(positions, inv_freq)
    return angles.cos().to(like.dtype), angles.sin().to(like.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    # Hugging Face LLaMA / GPT-NeoX: pairs (x[m], x[m + hd/2])
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    # GPT-J (Meta's complex multiply, written in reals): pairs (x[2m], x[2m + 1])
    x1, x2 = x[..., ::2], x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str) -> torch.Tensor:
    """Rotary positions on ``x`` of shape ``(..., tokens, head_dim)``: each pair ``(a, b)``
    becomes ``(a cos - b sin, a sin + b cos)``; ``layout`` ``"half"`` pairs ``x[m]`` with
    ``x[m + head_dim/2]`` (``rotate_half``), ``"interleaved"`` ``x[2m]`` with ``x[2m+1]``.

    Args:
        x: queries or keys, ``(..., tokens, head_dim)``.
        cos, sin: :func:`rope_cos_sin`, ``(tokens, head_dim // 2)``.
        layout: ``"half"`` or ``"interleaved"``.
    """
    if layout == "half":
        cos, sin = torch.cat((cos, cos), dim=-1), torch.cat((sin, sin), dim=-1)
        return x * cos + _rotate_half(x) * sin
    cos, sin = cos.repeat_interleave(2, dim=-1), sin.repeat_interleave(2, dim=-1)
    return x * cos + _rotate_every_two(x) * sin


class SelfAttention(nn.Module):
    """xgrad's ``Attention`` kind in torch, its parameters in the canonical shapes
    (``H`` query heads, ``K`` key/value heads, head width ``hd``): ``query_kernel (dim, H,
    hd)``, ``key_kernel`` / ``value_kernel (dim, K, hd)`` and biases ``(H, hd)`` / ``(K,
    hd)``, or fused ``qkv_kernel (dim, H + 2K, hd)`` and ``qkv_bias (H + 2K, hd)`` (query
    heads, then key heads, then value heads); ``out_kernel (H, hd, dim)``, ``out_bias (dim,)``.

    Forward on ``x`` of shape ``(batch, tokens, dim)``: einsum projections, rotary positions
    on queries and keys (:func:`apply_rope`), each key/value head repeated for its ``H // K``
    query heads with ``repeat_interleave`` (LLaMA's ``repeat_kv``), then
    ``F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)``.

    Args:
        dim: the model width.
        heads, kv_heads, head_dim: ``H``, ``K`` and ``hd``.
        causal: mask keys after each query.
        use_bias: biases on the projections.
        rope: ``None``, ``"half"`` or ``"interleaved"``; ``rope_base``: its ``base``.
        qkv: ``"separate"`` or ``"fused"`` projections.
        scale: the score scale, ``1 / sqrt(head_dim)`` when ``None``.
        dtype: the parameters' torch dtype.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int,
        head_dim: int,
        *,
        causal: bool,
        use_bias: bool,
        rope: str | None,
        rope_base: float,
        qkv: str,
        scale: float | None,
        dtype,
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.causal, self.rope, self.rope_base, self.qkv = causal, rope, float(rope_base), qkv
        self.scale = head_dim**-0.5 if scale is None else float(scale)
        shapes = {}  # registered in the canonical order: query, key, value, then out
        if qkv == "fused":
            shapes["qkv_kernel"] = (dim, heads + 2 * kv_heads, head_dim)
            if use_bias:
                shapes["qkv_bias"] = (heads + 2 * kv_heads, head_dim)
        else:
            for name, n in (("query", heads), ("key", kv_heads), ("value", kv_heads)):
                shapes[f"{name}_kernel"] = (dim, n, head_dim)
                if use_bias:
                    shapes[f"{name}_bias"] = (n, head_dim)
        shapes["out_kernel"] = (heads, head_dim, dim)
        if use_bias:
            shapes["out_bias"] = (dim,)
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape, dtype=dtype)))
        self.use_bias = use_bias

    @classmethod
    def of(cls, layer, dim: int, dtype) -> SelfAttention:
        """The module of an xgrad ``Attention`` layer on examples ``(tokens, dim)``."""
        return cls(
            dim,
            layer.heads,
            layer.kv_heads,
            layer.head_dim,
            causal=layer.causal,
            use_bias=layer.use_bias,
            rope=layer.rope,
            rope_base=layer.rope_base,
            qkv=layer.qkv,
            scale=layer.scale,
            dtype=dtype,
        )

    def _project(self, x: torch.Tensor):
        """``q (batch, tokens, H, hd)``, ``k`` and ``v (batch, tokens, K, hd)``."""
        if self.qkv == "fused":
            qkv = torch.einsum("btd,dnh->btnh", x, self.qkv_kernel)
            if self.use_bias:
                qkv = qkv + self.qkv_bias
            return qkv.split([self.heads, self.kv_heads, self.kv_heads], dim=2)
        out = []
        for name in ("query", "key", "value"):
            t = torch.einsum("btd,dnh->btnh", x, getattr(self, f"{name}_kernel"))
            out.append(t + getattr(self, f"{name}_bias") if self.use_bias else t)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (t.transpose(1, 2) for t in self._project(x))  # (batch, heads, tokens, hd)
        if self.rope is not None:
            cos, sin = rope_cos_sin(x.shape[1], self.head_dim, self.rope_base, q)
            q, k = apply_rope(q, cos, sin, self.rope), apply_rope(k, cos, sin, self.rope)
        groups = self.heads // self.kv_heads
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=self.scale)
        y = torch.einsum("bhte,hed->btd", o, self.out_kernel)
        return y + self.out_bias if self.use_bias else y

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
            f"causal={self.causal}, rope={self.rope!r}, qkv={self.qkv!r}, scale={self.scale:g}"
        )


class GatedMLP(nn.Module):
    """``down_proj(act(gate_proj(x)) * up_proj(x))``: three ``nn.Linear`` (Hugging Face
    LLaMA's names; Meta's ``w1``, ``w3``, ``w2``), weights ``(out, in)``.

    Args:
        dim, hidden: the model width and the hidden width.
        activation: an xgrad activation name (``"silu"``: SwiGLU, ``"gelu"``: GeGLU).
        use_bias: biases on the three projections.
        dtype: the parameters' torch dtype.
    """

    def __init__(self, dim: int, hidden: int, activation: str, use_bias: bool, dtype) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=use_bias, dtype=dtype)
        self.up_proj = nn.Linear(dim, hidden, bias=use_bias, dtype=dtype)
        self.down_proj = nn.Linear(hidden, dim, bias=use_bias, dtype=dtype)
        self.act_fn = activation_module(activation)

    @classmethod
    def of(cls, layer, dim: int, dtype) -> GatedMLP:
        """The module of an xgrad ``GatedMLP`` layer on examples ``(..., dim)``."""
        return cls(dim, layer.hidden, layer.activation, layer.use_bias, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
