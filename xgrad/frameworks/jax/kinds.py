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
``batchnorm``   batch statistics (training; the new ``mean`` and     ``scale``, ``bias``;
                ``var`` returned as state) or the moving ones        state ``mean``,
                                                                     ``var``
``dropout``     ``x`` (inactive), or ``x`` times xgrad's mask        -
``flatten``     ``x.reshape(batch, -1)``                             -
``residual``    ``x + block(x)``                                     its layers', under
                                                                     ``layers``
==============  ===================================================  ======================

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

from xgrad.frameworks.jax.ops import jax_activation
from xgrad.frameworks.kinds import KindTable
from xgrad.layers import AbstractLayer, BatchNorm, Dense, Dropout, LayerNorm, RMSNorm

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
            mean = jnp.mean(x, axis=0)
            var = jnp.mean(jnp.square(x - mean), axis=0)
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
    },
    entry_type=JaxKind,
)
"""Layer kind -> its :class:`JaxKind`: the one place JAX's form of each kind lives."""
