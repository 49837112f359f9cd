"""``transformer_block``: one transformer block as a composition of existing kinds.

No kind of its own: the block is residual blocks of norms, :class:`~xgrad.Attention` and an
MLP, which every framework builds because it builds each of them. Users splat it into a
spec::

    xgrad.MLP((T,), [Embedding(V, D), *transformer_block(D, 4, 32), RMSNorm(), Dense(V)])

Pre-LN (GPT-2, LLaMA): ``x + attn(norm(x))``, then ``x + mlp(norm(x))``. Post-LN (the
original transformer, BERT): ``norm(x + attn(x))``, then ``norm(x + mlp(x))``.
"""

from __future__ import annotations

from xgrad.errors import SpecError
from xgrad.layers.attention import Attention
from xgrad.layers.base import AbstractLayer
from xgrad.layers.dense import Dense
from xgrad.layers.gated_mlp import GatedMLP
from xgrad.layers.layernorm import LayerNorm
from xgrad.layers.residual import Residual
from xgrad.layers.rmsnorm import RMSNorm

__all__ = ["MLP_FORMS", "NORMS", "transformer_block"]

NORMS = ("layernorm", "rmsnorm")
"""The norms a block uses."""

MLP_FORMS = ("gated", "dense")
"""``gated``: a :class:`~xgrad.GatedMLP`; ``dense``: ``Dense(hidden, act), Dense(dim)``."""


def _norm(norm: str, epsilon: float | None) -> AbstractLayer:
    cls = LayerNorm if norm == "layernorm" else RMSNorm
    return cls() if epsilon is None else cls(epsilon)


def transformer_block(
    dim: int,
    heads: int,
    hidden: int,
    *,
    kv_heads: int | None = None,
    norm: str = "layernorm",
    epsilon: float | None = None,
    pre_norm: bool = True,
    causal: bool = True,
    rope: str | None = None,
    rope_base: float = 10000.0,
    mlp: str = "gated",
    activation: str | None = None,
    use_bias: bool | None = None,
) -> tuple[AbstractLayer, ...]:
    """The layers of one transformer block on ``(tokens, dim)``.

    Args:
        dim: the model width.
        heads: query heads of the attention (see :class:`~xgrad.Attention`).
        hidden: the width of the MLP's hidden layer.
        kv_heads: key/value heads (grouped-query attention); ``None`` means ``heads``.
        norm: ``"layernorm"`` or ``"rmsnorm"``.
        epsilon: the norms' epsilon; ``None`` keeps the kind's default (LayerNorm 1e-3,
            RMSNorm 1e-6).
        pre_norm: pre-LN (norm inside each residual branch) or post-LN (after each sum).
        causal: a causal attention mask.
        rope: ``None``, ``"half"`` or ``"interleaved"`` rotary positions.
        rope_base: the RoPE base (theta).
        mlp: ``"gated"`` (:class:`~xgrad.GatedMLP`) or ``"dense"`` (two Dense layers).
        activation: the MLP's activation; ``None`` means ``silu`` for ``gated`` and ``gelu``
            for ``dense``.
        use_bias: biases in the attention and MLP projections; ``None`` means
            ``mlp == "dense"`` (GPT-2 has biases, LLaMA none).

    Returns:
        Pre-LN: ``(Residual([norm, attention]), Residual([norm, *mlp]))``; post-LN:
        ``(Residual([attention]), norm, Residual([*mlp]), norm)``.

    Raises:
        SpecError: an unknown ``norm`` or ``mlp``, or a bad attention/MLP setting.

    Example:
        >>> [layer.kind for layer in transformer_block(16, 4, 32, pre_norm=False)]
        ['residual', 'layernorm', 'residual', 'layernorm']
    """
    if norm not in NORMS:
        raise SpecError(f"transformer_block norm={norm!r} is unknown; use one of {list(NORMS)}")
    if mlp not in MLP_FORMS:
        raise SpecError(f"transformer_block mlp={mlp!r} is unknown; use one of {list(MLP_FORMS)}")
    bias = (mlp == "dense") if use_bias is None else use_bias
    attention = Attention(
        dim,
        heads,
        kv_heads=kv_heads,
        causal=causal,
        use_bias=bias,
        rope=rope,
        rope_base=rope_base,
    )
    if mlp == "gated":
        ffn: list[AbstractLayer] = [GatedMLP(dim, hidden, activation or "silu", use_bias=bias)]
    else:
        ffn = [Dense(hidden, activation or "gelu", use_bias=bias), Dense(dim, use_bias=bias)]
    if pre_norm:
        return (
            Residual([_norm(norm, epsilon), attention]),
            Residual([_norm(norm, epsilon), *ffn]),
        )
    return (
        Residual([attention]),
        _norm(norm, epsilon),
        Residual(ffn),
        _norm(norm, epsilon),
    )
