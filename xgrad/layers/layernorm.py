"""``LayerNorm``: normalise each example over its features, then scale and shift.

``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` with the mean and the (biased)
variance taken over the last axis of each example. Defaults are Keras'
``LayerNormalization`` (epsilon 1e-3); Flax uses 1e-6 and PyTorch 1e-5, the usual cause of
a ``layernorm-epsilon`` difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.errors import SpecError
from xgrad.layers.base import (
    AbstractLayer,
    Shape,
    Step,
    check_bool,
    check_float,
    sum_leading_axes,
)

__all__ = ["LayerNorm", "normalise_backward"]


def normalise_backward(dxhat: np.ndarray, xhat: np.ndarray, inv: np.ndarray, axis: int):
    """``dL/dx`` of ``xhat = (x - mean(x)) * inv`` with mean and variance over ``axis``,
    given ``dL/dxhat`` (shared by LayerNorm over features and BatchNorm over the batch)."""
    mean_d = dxhat.mean(axis=axis, keepdims=True)
    mean_dx = (dxhat * xhat).mean(axis=axis, keepdims=True)
    return inv * (dxhat - mean_d - xhat * mean_dx)


@dataclass(frozen=True)
class LayerNorm(AbstractLayer):
    """Layer normalisation over the features of each example.

    Args:
        epsilon: added to the variance, > 0 (Keras 1e-3, Flax 1e-6, PyTorch 1e-5).
        center: whether there is a ``bias`` (Keras ``beta``) of shape ``(features,)``.
        scale: whether there is a ``scale`` (Keras ``gamma``) of shape ``(features,)``.

    Example:
        >>> LayerNorm().param_names()
        ('scale', 'bias')
    """

    kind = "layernorm"
    token_wise = True

    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_float(self.epsilon, "LayerNorm epsilon", low=0))
        object.__setattr__(self, "center", check_bool(self.center, "LayerNorm center"))
        object.__setattr__(self, "scale", check_bool(self.scale, "LayerNorm scale"))

    def param_names(self) -> tuple[str, ...]:
        return (("scale",) if self.scale else ()) + (("bias",) if self.center else ())

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise SpecError(f"LayerNorm takes examples of shape (..., features), got {input_shape}")
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {name: (input_shape[-1],) for name in self.param_names()}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """``scale`` uniform in [0.5, 1.5] and ``bias`` in [-bias_scale, bias_scale], so that
        neither is the identity."""
        out = {}
        if self.scale:
            out["scale"] = rng.uniform(0.5, 1.5, size=(input_shape[-1],))
        if self.center:
            out["bias"] = rng.uniform(-bias_scale, bias_scale, size=(input_shape[-1],))
        return out

    def describe(self) -> str:
        flags = (
            "" if (self.center and self.scale) else f", center={self.center}, scale={self.scale}"
        )
        return f"layernorm(eps={self.epsilon:g}{flags})"

    def forward(self, weights, x, *, path):
        eps = x.dtype.type(self.epsilon)
        centred = x - x.mean(axis=-1, keepdims=True)
        inv = 1 / np.sqrt((centred * centred).mean(axis=-1, keepdims=True) + eps)
        xhat = centred * inv
        y = xhat * weights[f"{path}.scale"] if self.scale else xhat
        if self.center:
            y = y + weights[f"{path}.bias"]
        return Step(path, self, x, y, cache=(xhat, inv))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        xhat, inv = step.cache
        if self.scale:
            grads[f"{step.path}.scale"] = sum_leading_axes(grad_output * xhat)
        if self.center:
            grads[f"{step.path}.bias"] = sum_leading_axes(grad_output)
        dxhat = grad_output * weights[f"{step.path}.scale"] if self.scale else grad_output
        return normalise_backward(dxhat, xhat, inv, axis=-1)
