"""``Residual``: a skip connection around a block of layers, ``x + block(x)``.

The block's layers are named under the residual's path: the kernel of the first layer of a
residual at position 2 is ``layers.2.layers.0.kernel``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from xgrad.errors import SpecError
from xgrad.layers.base import (
    AbstractLayer,
    Shape,
    Step,
    forward_sequence,
    vjp_sequence,
)

__all__ = ["Residual"]


@dataclass(frozen=True)
class Residual(AbstractLayer):
    """``x + block(x)`` where ``block`` runs ``layers`` in order; it must keep the shape.

    Example:
        >>> from xgrad.layers import Dense
        >>> Residual([Dense(8, "relu"), Dense(8)]).describe()
        'residual(8:relu -> 8:linear)'
    """

    kind = "residual"

    layers: tuple[AbstractLayer, ...]

    def __post_init__(self) -> None:
        if isinstance(self.layers, AbstractLayer):
            raise SpecError("Residual takes a list of layers; wrap it: Residual([Dense(...)])")
        if not isinstance(self.layers, Iterable) or isinstance(self.layers, str | bytes):
            raise SpecError(f"Residual takes a list of layers, got {self.layers!r}")
        layers = tuple(self.layers)
        if not layers:
            raise SpecError("a Residual block needs at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, AbstractLayer):
                raise SpecError(
                    f"Residual layers[{i}] must be an xgrad layer (Dense, LayerNorm, ...), "
                    f"got {type(layer).__name__} {layer!r}"
                )
        object.__setattr__(self, "layers", layers)

    @property
    def children(self) -> tuple[AbstractLayer, ...]:
        return self.layers

    def output_shape(self, input_shape: Shape) -> Shape:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        if shape != tuple(input_shape):
            raise SpecError(
                f"a Residual block must keep the shape of its input: it takes {tuple(input_shape)} "
                f"but its layers ({' -> '.join(layer.describe() for layer in self.layers)}) "
                f"give {shape}; make the last one {tuple(input_shape)[-1]} wide"
            )
        return shape

    def describe(self) -> str:
        return "residual(" + " -> ".join(layer.describe() for layer in self.layers) + ")"

    def forward(self, weights, x, *, path):
        inner, children = forward_sequence(self.layers, weights, x, prefix=f"{path}.layers")
        state = {k: v for child in children for k, v in child.state.items()}
        return Step(path, self, x, x + inner, state=state, children=children)

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        through = vjp_sequence(weights, step.children, grad_output, grads, output_grads)
        return grad_output + through
