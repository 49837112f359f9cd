"""``Flatten``: examples of any rank become vectors, ``(batch, 28, 28) -> (batch, 784)``."""

from __future__ import annotations

import math
from dataclasses import dataclass

from xgrad.layers.base import AbstractLayer, Shape, Step

__all__ = ["Flatten"]


@dataclass(frozen=True)
class Flatten(AbstractLayer):
    """Reshape each example to one axis, in C (row-major) order as every framework does."""

    kind = "flatten"

    def output_shape(self, input_shape: Shape) -> Shape:
        return (math.prod(input_shape),)

    def forward(self, weights, x, *, path):
        return Step(path, self, x, x.reshape(x.shape[0], -1))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        return grad_output.reshape(step.input.shape)
