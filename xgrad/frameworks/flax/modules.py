"""xgrad's small NNX modules, for the layer kinds Flax has no layer of its own for: an
activation, a flatten, and an active dropout applying xgrad's mask.

Importing this module imports Flax.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from xgrad.activations import get_activation
from xgrad.frameworks.jax.ops import jax_activation
from xgrad.layers import Dropout

__all__ = ["ActivationLayer", "FlattenLayer", "MaskedDropout"]


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
