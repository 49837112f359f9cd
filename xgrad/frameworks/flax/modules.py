"""xgrad's small NNX modules, for the layer kinds Flax has no layer of its own for: an
activation, a flatten, an active dropout applying xgrad's mask, self-attention beyond what
``nnx.MultiHeadAttention`` computes, and a gated MLP; and the attention function xgrad gives
``nnx.MultiHeadAttention`` in float64.

Importing this module imports Flax.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.attention import dot_product_attention_weights

from xgrad.activations import get_activation
from xgrad.frameworks.jax.attention import attend, head_sizes
from xgrad.frameworks.jax.ops import jax_activation
from xgrad.layers import Attention, Dropout, GatedMLP

__all__ = [
    "ActivationLayer",
    "FlattenLayer",
    "GatedMLPLayer",
    "MaskedDropout",
    "SelfAttention",
    "weights_attention",
]


class ActivationLayer(nnx.Module):
    """An activation function as a layer (no weights)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, x):
        return jax_activation(get_activation(self.name))(x)


class FlattenLayer(nnx.Module):
    """``(batch, ...) -> (batch, features)``."""

    def __call__(self, x):
        return x.reshape(x.shape[0], -1)


class MaskedDropout(nnx.Module):
    """An active dropout applying xgrad's mask (the same in every framework)."""

    def __init__(self, layer: Dropout, path: str) -> None:
        self.layer = layer
        self.path = path

    def __call__(self, x):
        return x * jnp.asarray(self.layer.scaled_mask(self.path, x.shape, np.dtype(x.dtype)))


def weights_attention(query, key, value, *, mask=None, dtype=None, precision=None, **unused):
    """Flax's attention through its ``dot_product_attention_weights`` (in
    ``flax.nnx.nn.attention``; the softmax in the inputs' dtype), the ``attention_fn`` xgrad
    gives ``nnx.MultiHeadAttention`` in float64 and float16.

    Its default, ``nnx.dot_product_attention``, calls ``jax.nn.dot_product_attention`` when
    there is no dropout, and that computes the softmax in float32 whatever the dtype (a
    float64 model would hold float32 probabilities) and, in float16, asks for a matmul
    precision the CPU refuses when differentiated. ``query (B, T, H, hd)``, ``key`` and
    ``value (B, S, K, hd)``; each key/value head serves ``H // K`` consecutive query heads, as
    in Flax's own grouped-query path; ``unused``: the dropout arguments (no dropout here).
    """
    probs = dot_product_attention_weights(
        query, key, mask=mask, dtype=dtype, precision=precision, deterministic=True
    )  # (B, H, T, S)
    value = jnp.repeat(value, probs.shape[-3] // value.shape[-2], axis=-2)
    return jnp.einsum("...hqk,...khd->...qhd", probs, value, precision=precision)


class SelfAttention(nnx.Module):
    """Self-attention as a Flax user writes it when ``nnx.MultiHeadAttention`` does not fit
    (rotary positions, a fused q/k/v projection, a scale other than ``1/sqrt(head_dim)``):
    ``nnx.LinearGeneral`` projections holding the canonical shapes, then
    :func:`~xgrad.frameworks.jax.attention.attend`.

    Submodules (``H`` heads, ``K`` key/value heads of ``hd``): ``query``, ``key``, ``value``
    with kernels ``(dim, H or K, hd)`` and biases ``(H or K, hd)``, or one ``qkv`` with kernel
    ``(dim, H + 2K, hd)`` (query, key, value heads in that order); ``out`` with kernel
    ``(H, hd, dim)`` and bias ``(dim,)``: the names and shapes of ``nnx.MultiHeadAttention``.
    """

    def __init__(self, layer: Attention, *, dtype, rngs: nnx.Rngs) -> None:
        self.layer = layer
        heads, kv_heads, head_dim = head_sizes(layer)
        linear = functools.partial(
            nnx.LinearGeneral, use_bias=layer.use_bias, dtype=dtype, param_dtype=dtype, rngs=rngs
        )
        if layer.qkv == "fused":
            self.qkv = linear(layer.dim, (heads + 2 * kv_heads, head_dim))
        else:
            self.query = linear(layer.dim, (heads, head_dim))
            self.key = linear(layer.dim, (kv_heads, head_dim))
            self.value = linear(layer.dim, (kv_heads, head_dim))
        self.out = linear((heads, head_dim), layer.dim, axis=(-2, -1))

    def __call__(self, x):
        """``x (B, T, dim) -> (B, T, dim)``."""
        heads, kv_heads, _ = head_sizes(self.layer)
        if self.layer.qkv == "fused":
            q, k, v = jnp.split(self.qkv(x), [heads, heads + kv_heads], axis=-2)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        return self.out(attend(self.layer, q, k, v))


class GatedMLPLayer(nnx.Module):
    """``down(act(gate(x)) * up(x))``: three ``nnx.Linear`` (kernels ``(dim, hidden)``,
    ``(dim, hidden)``, ``(hidden, dim)``), LLaMA's ``w1``, ``w3``, ``w2``."""

    def __init__(self, layer: GatedMLP, *, dtype, rngs: nnx.Rngs) -> None:
        self.activation = layer.activation

        def linear(n_in, n_out):
            return nnx.Linear(
                n_in, n_out, use_bias=layer.use_bias, dtype=dtype, param_dtype=dtype, rngs=rngs
            )

        self.gate = linear(layer.dim, layer.hidden)
        self.up = linear(layer.dim, layer.hidden)
        self.down = linear(layer.hidden, layer.dim)

    def __call__(self, x):
        act = jax_activation(get_activation(self.activation))
        return self.down(act(self.gate(x)) * self.up(x))
