"""``RMSNorm``: divide each example by the root mean square of its features, then scale.

``y = x / sqrt(mean(x**2) + epsilon) * scale``, the mean over the last axis. Keras'
``RMSNormalization`` and Flax's ``RMSNorm`` default to epsilon 1e-6; PyTorch's
``nn.RMSNorm(eps=None)`` uses the machine epsilon of the input's dtype (1.2e-7 in float32).
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

__all__ = ["RMSNorm"]


@dataclass(frozen=True)
class RMSNorm(AbstractLayer):
    """Root-mean-square normalisation over the features of each example.

    Args:
        epsilon: added to the mean square, > 0 (Keras and Flax 1e-6).
        scale: whether there is a ``scale`` of shape ``(features,)``.
    """

    kind = "rmsnorm"
    token_wise = True

    epsilon: float = 1e-6
    scale: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_float(self.epsilon, "RMSNorm epsilon", low=0))
        object.__setattr__(self, "scale", check_bool(self.scale, "RMSNorm scale"))

    def param_names(self) -> tuple[str, ...]:
        return ("scale",) if self.scale else ()

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise SpecError(f"RMSNorm takes examples of shape (..., features), got {input_shape}")
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {name: (input_shape[-1],) for name in self.param_names()}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        return {"scale": rng.uniform(0.5, 1.5, size=(input_shape[-1],))} if self.scale else {}

    def describe(self) -> str:
        return f"rmsnorm(eps={self.epsilon:g}{'' if self.scale else ', scale=False'})"

    def forward(self, weights, x, *, path):
        eps = x.dtype.type(self.epsilon)
        inv = 1 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
        xhat = x * inv
        y = xhat * weights[f"{path}.scale"] if self.scale else xhat
        return Step(path, self, x, y, cache=(xhat, inv))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        xhat, inv = step.cache
        if self.scale:
            grads[f"{step.path}.scale"] = sum_leading_axes(grad_output * xhat)
        d = grad_output * weights[f"{step.path}.scale"] if self.scale else grad_output
        # y = x * r with r = (mean(x^2) + eps)^-1/2:  dx = r * d - x * r^3 * mean(d * x)
        return inv * (d - xhat * (d * xhat).mean(axis=-1, keepdims=True))
