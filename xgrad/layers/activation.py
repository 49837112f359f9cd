"""``Activation``: an activation function as a layer of its own (Keras ``Activation``,
PyTorch ``nn.ReLU``), for where one follows a layer other than :class:`~xgrad.Dense`.

``Dense(8)`` then ``Activation("relu")`` and ``Dense(8, "relu")`` compute the same thing, and
compare as the same: alignment pairs a layer with weights together with the weight-free
layers after it (:mod:`xgrad.align`), however each framework's reader splits them.
"""

from __future__ import annotations

from dataclasses import dataclass

from xgrad.activations import Activation as ActivationFunction
from xgrad.activations import get_activation
from xgrad.layers.base import AbstractLayer, Shape, Step

__all__ = ["Activation"]


@dataclass(frozen=True)
class Activation(AbstractLayer):
    """``activation(x)``, elementwise (softmax: over the last axis). No weights.

    Example:
        >>> Activation("leaky_relu").name
        'leaky_relu:0.2'
    """

    kind = "activation"
    token_wise = True

    name: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", get_activation(self.name).name)

    @property
    def act(self) -> ActivationFunction:
        return get_activation(self.name)

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def describe(self) -> str:
        return self.name

    def forward(self, weights, x, *, path):
        return Step(path, self, x, self.act(x), cache=x)

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        return self.act.vjp(step.cache, step.output, grad_output)
