"""Every layer kind in JAX, in one table: the pure ``jax.numpy`` function computing it.

==============  ===================================================  ======================
kind            computed as                                          weights
==============  ===================================================  ======================
``dense``       ``act(x @ kernel + bias)``                           ``kernel (in, out)``,
                                                                     ``bias``
``activation``  ``act(x)`` (:func:`~.ops.jax_activation`)            -
``layernorm``   ``(x - mean) * rsqrt(mean square + eps)``, then      ``scale``, ``bias``
                scale and shift
``rmsnorm``     ``x * rsqrt(mean square + eps)``, then scale         ``scale``
``batchnorm``   batch statistics over the batch and every spatial    ``scale``, ``bias``;
                position (training; the new ``mean`` and ``var``     state ``mean``,
                returned as state) or the moving ones                ``var``
``dropout``     ``x`` (inactive), or ``x`` times xgrad's mask        -
``flatten``     ``x.reshape(batch, -1)``                             -
``residual``    ``x + block(x)``                                     its layers', under
                                                                     ``layers``
``embedding``   ``jnp.take(embedding, ids, axis=0) * scale``; the    ``embedding (vocab,
                padding row read through ``stop_gradient``           dim)``
``attention``   ``jnp.einsum`` projections, then                     ``query_kernel (dim,
                :func:`~.attention.attend` (RoPE, ``jnp.repeat``     H, hd)``, ... or
                of k/v heads, scale, causal ``-inf``, softmax)       ``qkv_kernel``;
                                                                     ``out_kernel (H, hd,
                                                                     dim)``, biases
``gated_mlp``   ``(act(x @ gate) * (x @ up)) @ down``                ``gate_kernel``,
                                                                     ``up_kernel (dim,
                                                                     hidden)``,
                                                                     ``down_kernel``, biases
``conv``, ...   :mod:`~xgrad.frameworks.jax.cnn` (``conv``,          see there
                ``maxpool``, ``avgpool``, ``global_avgpool``,
                ``groupnorm``) and :mod:`~xgrad.frameworks.jax.
                recurrent` (``lstm``, ``gru``)
==============  ===================================================  ======================

Every layer takes a batch with any number of axes before the features (``(batch, tokens,
d)`` for a transformer); an ``embedding`` takes integer ids ``(batch, tokens)``.

Each function is written from the layer's definition (:mod:`xgrad.layers`), as pure JAX code:
the model a user would write by hand. Weights are stored canonically (no layouts), each layer's
as a dict of its local names (:mod:`~xgrad.frameworks.jax.builder`), a residual block's layers
as a list under ``"layers"``.

A new kind is one more entry of :data:`KINDS` (:class:`JaxKind`); see docs/design.md.

Importing this module imports JAX.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.activations import get_activation
from xgrad.frameworks.jax import cnn, recurrent
from xgrad.frameworks.jax.attention import attend, head_sizes
from xgrad.frameworks.jax.ops import jax_activation
from xgrad.frameworks.kinds import KindTable
from xgrad.layers import (
    AbstractLayer,
    Attention,
    BatchNorm,
    Dense,
    Dropout,
    Embedding,
    GatedMLP,
    LayerNorm,
    RMSNorm,
)

__all__ = ["KINDS", "Block", "Forward", "JaxKind"]

Forward = Callable[[Mapping[str, jax.Array], jax.Array], tuple[jax.Array, dict]]
"""``(weights, x) -> (output, new_state)``: one layer on a batch ``x`` (batch axis first);
``weights`` by local name, ``new_state`` by local name (empty unless the layer updates its
state)."""

Block = Callable[[list, jax.Array], jax.Array]
"""``(weights, x) -> output``: the layer's nested layers (:attr:`AbstractLayer.children`) run
in order on ``x``, their weights the list of their dicts; given by the model, which captures
their values as it does any layer's."""


@dataclass(frozen=True)
class JaxKind:
    """How JAX computes one layer kind: the kind's entry in :data:`KINDS`.

    Attributes:
        forward: ``(layer, path, block) -> Forward``: the pure function of ``layer`` at
            ``path`` (:data:`Forward`); ``block`` runs its nested layers (:data:`Block`).
    """

    forward: Callable[[AbstractLayer, str, Block], Forward]


def _dense(layer: Dense, path: str, block: Block) -> Forward:
    act = jax_activation(layer.act)

    def dense(w, x):
        z = x @ w["kernel"]
        return act(z + w["bias"] if layer.use_bias else z), {}

    return dense


def _activation(layer, path: str, block: Block) -> Forward:
    act = jax_activation(layer.act)
    return lambda w, x: (act(x), {})


def _scaled(y, w):
    """``y * scale + bias``, for those of the two the layer has."""
    y = y * w["scale"] if "scale" in w else y
    return y + w["bias"] if "bias" in w else y


def _norm(layer: LayerNorm | RMSNorm, path: str, block: Block) -> Forward:
    centred = layer.kind == "layernorm"

    def norm(w, x):
        if centred:
            x = x - jnp.mean(x, axis=-1, keepdims=True)
        ms = jnp.mean(x * x, axis=-1, keepdims=True)
        return _scaled(x * jax.lax.rsqrt(ms + jnp.asarray(layer.epsilon, x.dtype)), w), {}

    return norm


def _batchnorm(layer: BatchNorm, path: str, block: Block) -> Forward:
    def batchnorm(w, x):
        eps = jnp.asarray(layer.epsilon, x.dtype)
        state = {}
        if layer.training:
            axes = tuple(range(x.ndim - 1))  # the batch and every spatial position
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            m = jnp.asarray(layer.momentum, x.dtype)
            state = {"mean": m * w["mean"] + (1 - m) * mean, "var": m * w["var"] + (1 - m) * var}
        else:
            mean, var = w["mean"], w["var"]
        return _scaled((x - mean) * jax.lax.rsqrt(var + eps), w), state

    return batchnorm


def _dropout(layer: Dropout, path: str, block: Block) -> Forward:
    def dropout(w, x):
        if not layer.active:
            return x, {}
        return x * jnp.asarray(layer.scaled_mask(path, x.shape, np.dtype(x.dtype))), {}

    return dropout


def _flatten(layer, path: str, block: Block) -> Forward:
    return lambda w, x: (x.reshape(x.shape[0], -1), {})


def _residual(layer, path: str, block: Block) -> Forward:
    # the block's weights are the list under "layers"; its layers' state goes to the model
    return lambda w, x: (x + block(w["layers"], x), {})


def _embedding(layer: Embedding, path: str, block: Block) -> Forward:
    def embedding(w, ids):
        table = w["embedding"]
        if layer.padding_idx is not None:
            # torch's padding_idx: the row is read as it is, and no gradient reaches it
            row = layer.padding_idx
            table = table.at[row].set(jax.lax.stop_gradient(table[row]))
        y = jnp.take(table, ids, axis=0)
        return (y if layer.scale is None else y * jnp.asarray(layer.scale, y.dtype)), {}

    return embedding


def _attention(layer: Attention, path: str, block: Block) -> Forward:
    heads, kv_heads, _ = head_sizes(layer)

    def project(w, x, name):
        # x (B, T, dim) . kernel (dim, N, hd) -> (B, T, N, hd)
        z = jnp.einsum("btd,dnh->btnh", x, w[f"{name}_kernel"])
        return z + w[f"{name}_bias"] if layer.use_bias else z

    def attention(w, x):
        if layer.qkv == "fused":  # query heads, then key heads, then value heads
            q, k, v = jnp.split(project(w, x, "qkv"), [heads, heads + kv_heads], axis=2)
        else:
            q, k, v = (project(w, x, name) for name in ("query", "key", "value"))
        y = jnp.einsum("bthd,hdo->bto", attend(layer, q, k, v), w["out_kernel"])
        return (y + w["out_bias"] if layer.use_bias else y), {}

    return attention


def _gated_mlp(layer: GatedMLP, path: str, block: Block) -> Forward:
    act = jax_activation(get_activation(layer.activation))

    def gated_mlp(w, x):
        def dense(name, a):
            z = a @ w[f"{name}_kernel"]
            return z + w[f"{name}_bias"] if layer.use_bias else z

        return dense("down", act(dense("gate", x)) * dense("up", x)), {}

    return gated_mlp


KINDS: KindTable[JaxKind] = KindTable(
    "jax",
    {
        "dense": JaxKind(_dense),
        "activation": JaxKind(_activation),
        "layernorm": JaxKind(_norm),
        "rmsnorm": JaxKind(_norm),
        "batchnorm": JaxKind(_batchnorm),
        "dropout": JaxKind(_dropout),
        "flatten": JaxKind(_flatten),
        "residual": JaxKind(_residual),
        "embedding": JaxKind(_embedding),
        "attention": JaxKind(_attention),
        "gated_mlp": JaxKind(_gated_mlp),
        "conv": JaxKind(cnn.conv),
        "maxpool": JaxKind(cnn.maxpool),
        "avgpool": JaxKind(cnn.avgpool),
        "global_avgpool": JaxKind(cnn.global_avgpool),
        "groupnorm": JaxKind(cnn.groupnorm),
        "lstm": JaxKind(recurrent.lstm),
        "gru": JaxKind(recurrent.gru),
    },
    entry_type=JaxKind,
)
"""Layer kind -> its :class:`JaxKind`: the one place JAX's form of each kind lives."""
