"""xgrad's activations and losses in ``jax.numpy``, shared by the JAX and Flax packages (the
layers are in :mod:`~xgrad.frameworks.jax.kinds`).

Library functions (``jax.nn``) are used wherever their value *and* their derivative at the
kinks are xgrad's definition (:mod:`xgrad.activations`). Two are not, and are written here:

* ``leaky_relu``: ``jax.nn.leaky_relu`` selects ``x >= 0``, so its derivative at 0 is 1;
  xgrad's (and TensorFlow's) is the slope.
* ``selu``: ``jax.nn.selu`` gives ``selu'(0) = scale * alpha = 1.758``; xgrad's (and
  TensorFlow's) is ``scale = 1.0507``.

Importing this module imports JAX (not Flax).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import jax
import jax.numpy as jnp

from xgrad.activations import SELU_ALPHA, SELU_SCALE
from xgrad.activations import Activation as ActivationFunction
from xgrad.losses import EPSILON, Loss

__all__ = ["jax_activation", "jax_loss", "key_path_parts", "x64"]


@contextlib.contextmanager
def x64(dtype: str) -> Iterator[None]:
    """Enable JAX float64 for the block when ``dtype`` is float64; restored on exit."""
    if dtype == "float64":
        with jax.enable_x64(True):
            yield
    else:
        yield


def _leaky(slope: float) -> Callable:
    def leaky_relu(x):
        return jnp.where(x > 0, x, slope * x)

    return leaky_relu


def _selu(x):
    neg = SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0))
    return SELU_SCALE * jnp.where(x >= 0, x, neg)


_ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda x: x,
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "softmax": lambda x: jax.nn.softmax(x, axis=-1),
    "log_softmax": lambda x: jax.nn.log_softmax(x, axis=-1),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "elu": jax.nn.elu,
    "selu": _selu,
    "softplus": jax.nn.softplus,
    "silu": jax.nn.silu,
    "relu6": jax.nn.relu6,
    "hard_sigmoid": jax.nn.hard_sigmoid,
}


def jax_activation(act: ActivationFunction) -> Callable:
    """The ``jax.numpy`` function for an :class:`~xgrad.activations.Activation`."""
    if act.kind == "leaky_relu":
        return _leaky(act.slope)
    return _ACTIVATIONS[act.name]


def _clip(p):
    lo, hi = EPSILON, 1 - EPSILON
    return jnp.where(p < lo, lo, jnp.where(p > hi, hi, p)).astype(p.dtype)


def _bce(out, y):
    p = _clip(out)
    return -jnp.sum(y * jnp.log(p) + (1 - y) * jnp.log(1 - p)) / out.size


def _bce_logits(out, y):
    return jnp.sum(jnp.maximum(out, 0) - out * y + jnp.log1p(jnp.exp(-jnp.abs(out)))) / out.size


_LOSSES: dict[str, Callable] = {
    "sum": lambda out, y: jnp.sum(out),
    "projection": lambda out, y: jnp.sum(out * y),
    "mean": lambda out, y: jnp.mean(out),
    "mse": lambda out, y: jnp.sum((out - y) ** 2) / out.size,
    "bce_logits": _bce_logits,
    "bce": _bce,
    "cce_logits": lambda out, y: -jnp.sum(y * jax.nn.log_softmax(out, axis=-1)) / out.shape[0],
    "cce": lambda out, y: -jnp.sum(y * jnp.log(_clip(out))) / out.shape[0],
}


def jax_loss(loss: Loss) -> Callable:
    """The ``jax.numpy`` function ``(out, y) -> scalar`` for a :class:`~xgrad.losses.Loss`."""
    return _LOSSES[loss.name]


def key_path_parts(path) -> list[str]:
    """A pytree key path as plain parts: dict keys, list indices and attribute names, without
    the ``value`` attribute that NNX variables add. ``("layers", "0", "kernel")``."""
    parts = []
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            if key.name != "value":
                parts.append(key.name)
        else:
            parts.append(str(key))
    return parts
