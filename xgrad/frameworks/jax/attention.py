"""Self-attention's core as pure ``jax.numpy`` functions: rotary positions, grouped-query
heads, the scale, the causal mask and the softmax (:class:`~xgrad.layers.Attention`).

Shared by the JAX kind (:mod:`~xgrad.frameworks.jax.kinds`, which projects with
``jnp.einsum``) and xgrad's own Flax attention module (:mod:`~xgrad.frameworks.flax.modules`,
which projects with ``nnx.LinearGeneral``). Layouts, ``B`` examples of ``T`` tokens, ``H``
query heads, ``K`` key/value heads of ``hd`` features:

* ``q (B, T, H, hd)``, ``k`` and ``v (B, T, K, hd)`` in, ``o (B, T, H, hd)`` out;
* scores ``s (B, H, T, T)``: ``s[b, h, i, j] = q[b, i, h] . k[b, j, kv(h)] * scale``, with
  ``kv(h) = h // (H // K)`` (``jnp.repeat`` on the head axis, LLaMA's ``repeat_kv``).

Importing this module imports JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.layers import AbstractLayer

__all__ = ["attend", "head_sizes", "rope_tables", "rotate"]


def head_sizes(layer: AbstractLayer) -> tuple[int, int, int]:
    """``(H, K, hd)``: query heads, key/value heads and head size of an Attention layer
    (``kv_heads`` defaults to ``heads``, ``head_dim`` to ``dim // heads``)."""
    heads = layer.heads
    kv_heads = layer.kv_heads if layer.kv_heads is not None else heads
    head_dim = layer.head_dim if layer.head_dim is not None else layer.dim // heads
    return heads, kv_heads, head_dim


def rope_tables(tokens: int, head_dim: int, base: float, dtype) -> tuple[jax.Array, jax.Array]:
    """``(cos, sin)`` of the angles ``pos * base ** (-2m / head_dim)``, each ``(tokens,
    head_dim // 2)``: positions ``0 .. tokens - 1``, pair ``m``. Computed in float64 on the
    host (constants of the traced function), then cast to ``dtype``."""
    inv_freq = float(base) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(tokens, dtype=np.float64)[:, None] * inv_freq[None, :]
    return jnp.asarray(np.cos(angles), dtype=dtype), jnp.asarray(np.sin(angles), dtype=dtype)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array, mode: str) -> jax.Array:
    """Rotary positions on ``x (B, T, N, hd)``; ``cos``, ``sin`` ``(T, hd // 2)``.

    ``"half"`` (LLaMA, GPT-NeoX, ``rotate_half``) pairs ``x[m]`` with ``x[m + hd/2]``;
    ``"interleaved"`` (GPT-J, Meta's complex multiply) pairs ``x[2m]`` with ``x[2m + 1]``.
    Each pair ``(a, b)`` becomes ``(a cos - b sin, a sin + b cos)``.
    """
    c, s = cos[:, None, :], sin[:, None, :]
    if mode == "half":
        a, b = jnp.split(x, 2, axis=-1)
        return jnp.concatenate([a * c - b * s, a * s + b * c], axis=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    return jnp.stack([a * c - b * s, a * s + b * c], axis=-1).reshape(x.shape)


def attend(layer: AbstractLayer, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """The attention of ``layer`` on projected ``q (B, T, H, hd)``, ``k``, ``v (B, T, K, hd)``:
    rotary positions (``layer.rope``), key/value heads repeated to ``H``, scores scaled
    (``layer.scale``, else ``1/sqrt(hd)``), keys after the query filled with ``-inf``
    (``layer.causal``), softmax over keys; returns ``o (B, T, H, hd)``."""
    heads, kv_heads, head_dim = head_sizes(layer)
    tokens = q.shape[1]
    if layer.rope is not None:
        cos, sin = rope_tables(tokens, head_dim, layer.rope_base, q.dtype)
        q, k = rotate(q, cos, sin, layer.rope), rotate(k, cos, sin, layer.rope)
    if kv_heads != heads:
        k = jnp.repeat(k, heads // kv_heads, axis=2)
        v = jnp.repeat(v, heads // kv_heads, axis=2)
    scale = layer.scale if layer.scale is not None else 1 / np.sqrt(head_dim)
    scores = jnp.einsum("bihd,bjhd->bhij", q, k) * jnp.asarray(scale, q.dtype)
    if layer.causal:
        keep = jnp.tril(jnp.ones((tokens, tokens), dtype=bool))
        scores = jnp.where(keep, scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1)
    return jnp.einsum("bhij,bjhd->bihd", probs, v)
