"""The model spec: an immutable, validated description of a dense model.

A spec says what the model computes; it holds no weights. Layer ``i`` computes
``a_i = act_i(a_{i-1} @ kernel_i + bias_i)`` with ``a_0 = x``, kernel of shape ``(in, out)``
and bias of shape ``(out,)``.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

from xgrad.activations import Activation, get_activation
from xgrad.errors import SpecError

__all__ = ["MLP", "Dense"]


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{what} must be a positive integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise SpecError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Dense:
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

    units: int
    activation: str = "linear"
    use_bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", _check_positive_int(self.units, "Dense units"))
        object.__setattr__(self, "activation", get_activation(self.activation).name)
        if not isinstance(self.use_bias, bool):
            raise SpecError(f"Dense use_bias must be True or False, got {self.use_bias!r}")

    @property
    def act(self) -> Activation:
        """The :class:`~xgrad.activations.Activation` object of this layer."""
        return get_activation(self.activation)  # cached by name


@dataclass(frozen=True)
class MLP:
    """A stack of :class:`Dense` layers applied to inputs of width ``input_dim``.

    Args:
        input_dim: the number of input features, a positive integer.
        layers: one or more :class:`Dense` layers (any iterable; stored as a tuple).

    Raises:
        SpecError: ``input_dim`` is not a positive integer, ``layers`` is empty, or an item
            is not a :class:`Dense`.

    Example:
        >>> spec = MLP(10, [Dense(8, "relu"), Dense(5, "sigmoid")])
        >>> spec.param_shapes()
        {'layers.0.kernel': (10, 8), 'layers.0.bias': (8,), 'layers.1.kernel': (8, 5), 'layers.1.bias': (5,)}
    """  # noqa: E501

    input_dim: int
    layers: tuple[Dense, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_dim", _check_positive_int(self.input_dim, "input_dim"))
        if isinstance(self.layers, Dense):
            raise SpecError("layers must be a list of Dense layers; wrap it: layers=[Dense(...)]")
        if not isinstance(self.layers, Iterable) or isinstance(self.layers, str | bytes):
            raise SpecError(f"layers must be a list of Dense layers, got {self.layers!r}")
        layers = tuple(self.layers)
        if not layers:
            raise SpecError("an MLP needs at least one Dense layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Dense):
                raise SpecError(
                    f"layers[{i}] must be an xgrad.Dense, got {type(layer).__name__} {layer!r}"
                )
        object.__setattr__(self, "layers", layers)

    @property
    def output_dim(self) -> int:
        """The number of outputs of the last layer."""
        return self.layers[-1].units

    def layer_dims(self) -> list[tuple[int, int]]:
        """``(in, out)`` of every layer, in order."""
        dims = [self.input_dim, *(layer.units for layer in self.layers)]
        return list(zip(dims[:-1], dims[1:], strict=True))

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical parameter names and shapes, in canonical order.

        ``layers.{i}.kernel`` has shape ``(in, out)`` and ``layers.{i}.bias`` shape ``(out,)``;
        layers built with ``use_bias=False`` have no bias entry.
        """
        return dict(self._shapes)

    @functools.cached_property
    def param_names(self) -> tuple[str, ...]:
        """The canonical parameter names, in canonical order (computed once per spec)."""
        return tuple(self._shapes)

    @functools.cached_property
    def _shapes(self) -> dict[str, tuple[int, ...]]:
        # computed once per spec (specs are immutable); param_shapes hands out copies
        shapes: dict[str, tuple[int, ...]] = {}
        for i, (layer, (n_in, n_out)) in enumerate(
            zip(self.layers, self.layer_dims(), strict=True)
        ):
            shapes[f"layers.{i}.kernel"] = (n_in, n_out)
            if layer.use_bias:
                shapes[f"layers.{i}.bias"] = (n_out,)
        return shapes

    def n_params(self) -> int:
        """The total number of scalar parameters."""
        total = 0
        for shape in self.param_shapes().values():
            size = 1
            for d in shape:
                size *= d
            total += size
        return total

    def describe(self) -> str:
        """A short text form, e.g. ``"10 -> 8:relu -> 5:sigmoid"``."""
        parts = [str(self.input_dim)]
        for layer in self.layers:
            bias = "" if layer.use_bias else " (no bias)"
            parts.append(f"{layer.units}:{layer.activation}{bias}")
        return " -> ".join(parts)
