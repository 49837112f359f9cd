"""``Dense``: a fully connected layer, ``activation(x @ kernel + bias)``.

Weights: ``kernel`` of shape ``(in, out)`` (Keras' and Flax's layout; PyTorch stores
``(out, in)``) and ``bias`` of shape ``(out,)`` unless ``use_bias=False``. Examples of any
rank are taken on their last axis (``(tokens, in) -> (tokens, out)``), the weight gradients
summed over every leading axis. The backward pass is the seed article's chain rule::

    delta     = grad_output * act'(z)        (softmax: its Jacobian-vector product)
    dW        = input.T @ delta               kernel (in, out)
    db        = sum(delta, axis=0)            bias (out,)
    grad_in   = delta @ W.T
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xgrad.activations import Activation, get_activation
from xgrad.errors import SpecError
from xgrad.layers.base import AbstractLayer, Shape, Step, check_bool, check_positive_int

__all__ = ["Dense"]


@dataclass(frozen=True)
class Dense(AbstractLayer):
    """A fully connected layer: ``activation(x @ kernel + bias)``.

    Args:
        units: the number of outputs, a positive integer.
        activation: an activation name (see :mod:`xgrad.activations`); stored in canonical
            form, so ``"leaky_relu"`` becomes ``"leaky_relu:0.2"`` and ``"swish"`` ``"silu"``.
        use_bias: whether the layer has a bias of shape ``(units,)``.

    Raises:
        SpecError: ``units`` is not a positive integer or the activation is unknown.

    Example:
        >>> Dense(4, "sigmoid")
        Dense(units=4, activation='sigmoid', use_bias=True)
    """

    kind = "dense"
    token_wise = True

    units: int
    activation: str = "linear"
    use_bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", check_positive_int(self.units, "Dense units"))
        object.__setattr__(self, "activation", get_activation(self.activation).name)
        object.__setattr__(self, "use_bias", check_bool(self.use_bias, "Dense use_bias"))

    @property
    def act(self) -> Activation:
        """The :class:`~xgrad.activations.Activation` object of this layer."""
        return get_activation(self.activation)  # cached by name

    def param_names(self) -> tuple[str, ...]:
        return ("kernel", "bias") if self.use_bias else ("kernel",)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise SpecError(f"Dense takes examples of shape (..., features), got {input_shape}")
        return (*input_shape[:-1], self.units)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        shapes = {"kernel": (input_shape[-1], self.units)}
        if self.use_bias:
            shapes["bias"] = (self.units,)
        return shapes

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Glorot-uniform kernel; bias uniform in [-bias_scale, bias_scale]."""
        n_in = input_shape[-1]
        limit = math.sqrt(6.0 / (n_in + self.units))
        out = {"kernel": rng.uniform(-limit, limit, size=(n_in, self.units))}
        if self.use_bias:
            out["bias"] = rng.uniform(-bias_scale, bias_scale, size=(self.units,))
        return out

    def describe(self) -> str:
        return f"{self.units}:{self.activation}" + ("" if self.use_bias else " (no bias)")

    def pre_activation(self, weights, x: np.ndarray, *, path: str) -> np.ndarray:
        """``z = x @ kernel + bias``."""
        z = x @ weights[f"{path}.kernel"]
        return z + weights[f"{path}.bias"] if self.use_bias else z

    def forward(self, weights, x, *, path):
        z = self.pre_activation(weights, x, path=path)
        return Step(path, self, x, self.act(z), cache=z)

    def linear_vjp(self, kernel: np.ndarray, x: np.ndarray, delta: np.ndarray):
        """The matmul's part of the VJP, given ``delta = dL/dz``: ``(dkernel, dbias or None,
        dL/dx)``, the weight gradients summed over every leading axis (batch, tokens).
        Diagnosis re-runs it with other activation derivatives."""
        x2, d2 = x.reshape(-1, x.shape[-1]), delta.reshape(-1, delta.shape[-1])
        return x2.T @ d2, (d2.sum(axis=0) if self.use_bias else None), delta @ kernel.T

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        delta = self.act.vjp(step.cache, step.output, grad_output)
        dk, db, dx = self.linear_vjp(weights[f"{step.path}.kernel"], step.input, delta)
        grads[f"{step.path}.kernel"] = dk
        if db is not None:
            grads[f"{step.path}.bias"] = db
        return dx
