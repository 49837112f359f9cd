"""The model spec: an immutable, validated description of a model, without weights.

``MLP(input_dim, layers)`` runs ``layers`` (see :mod:`xgrad.layers`) one after another on
inputs of shape ``(batch, input_dim)`` (or ``(batch, *input_dim)`` when ``input_dim`` is a
tuple: a :class:`~xgrad.Flatten` first, or a transformer's ``(tokens, dim)``). A spec whose
first layer is an :class:`~xgrad.Embedding` takes integer token ids ``(batch, tokens)``:
``MLP((tokens,), [Embedding(vocab, dim), *transformer_block(dim, 4, 32), Dense(vocab)])``.
Layer ``i`` owns the weights ``layers.{i}.{local}``; a layer inside a residual block at
``i`` owns ``layers.{i}.layers.{j}.{local}``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from xgrad.errors import SpecError
from xgrad.layers import LAYERS, AbstractLayer, Dense, Shape
from xgrad.layers.base import check_positive_int

__all__ = ["MLP", "Dense", "walk"]


def walk(layers, prefix: str = "layers") -> Iterator[tuple[str, AbstractLayer]]:
    """``(path, layer)`` for every layer, nested ones right after their block, in call order."""
    for i, layer in enumerate(layers):
        path = f"{prefix}.{i}"
        yield path, layer
        if layer.children:
            yield from walk(layer.children, f"{path}.layers")


@dataclass(frozen=True)
class MLP:
    """A sequence of layers applied to inputs of shape ``(batch, input_dim)``.

    Args:
        input_dim: the number of input features, a positive integer; or the shape of one
            example, a tuple such as ``(28, 28)``, when the first layer is a ``Flatten``.
        layers: one or more layers (any iterable; stored as a tuple): :class:`~xgrad.Dense`,
            :class:`~xgrad.LayerNorm`, :class:`~xgrad.RMSNorm`, :class:`~xgrad.BatchNorm`,
            :class:`~xgrad.Dropout`, :class:`~xgrad.Activation`, :class:`~xgrad.Flatten`,
            :class:`~xgrad.Residual`, :class:`~xgrad.Embedding` (first only),
            :class:`~xgrad.Attention`, :class:`~xgrad.GatedMLP`.

    Raises:
        SpecError: a bad ``input_dim``, an empty ``layers``, an item that is not a layer, or
            a layer whose input shape does not fit (named, with the fix).

    Example:
        >>> spec = MLP(10, [Dense(8, "relu"), Dense(5, "sigmoid")])
        >>> spec.param_shapes()
        {'layers.0.kernel': (10, 8), 'layers.0.bias': (8,), 'layers.1.kernel': (8, 5), 'layers.1.bias': (5,)}
    """  # noqa: E501

    input_dim: int | tuple[int, ...]
    layers: tuple[AbstractLayer, ...]

    def __post_init__(self) -> None:
        if isinstance(self.input_dim, tuple | list):
            if not self.input_dim:
                raise SpecError("input_dim must be a positive integer or a non-empty tuple")
            dims = tuple(check_positive_int(d, "input_dim") for d in self.input_dim)
            object.__setattr__(self, "input_dim", dims[0] if len(dims) == 1 else dims)
        else:
            object.__setattr__(self, "input_dim", check_positive_int(self.input_dim, "input_dim"))
        if isinstance(self.layers, AbstractLayer):
            raise SpecError("layers must be a list of layers; wrap it: layers=[Dense(...)]")
        if not isinstance(self.layers, Iterable) or isinstance(self.layers, str | bytes):
            raise SpecError(f"layers must be a list of layers, got {self.layers!r}")
        layers = tuple(self.layers)
        if not layers:
            raise SpecError("a model needs at least one layer, got an empty list")
        for i, layer in enumerate(layers):
            if not isinstance(layer, AbstractLayer):
                raise SpecError(
                    f"layers[{i}] must be an xgrad layer (xgrad.Dense, xgrad.LayerNorm, ...), "
                    f"got {type(layer).__name__} {layer!r}"
                )
        object.__setattr__(self, "layers", layers)
        for path, layer in walk(layers):
            known = LAYERS.get(layer.kind)
            if known is None or not isinstance(layer, known):
                raise SpecError(
                    f"{path} ({type(layer).__name__}) is of layer kind {layer.kind!r}, which is "
                    f"not registered; register it first: "
                    f"xgrad.layers.register_layer({type(layer).__name__})"
                )
        for path, layer in walk(layers):
            if layer.kind == "embedding" and path != "layers.0":
                raise SpecError(
                    f"{path} ({layer.describe()}): an Embedding takes integer token ids, so it "
                    "can only be the first layer of a spec; move it to layers[0]"
                )
        shape = self.input_shape
        for i, layer in enumerate(layers):
            try:
                shape = layer.output_shape(shape)
            except SpecError as exc:
                raise SpecError(f"layers[{i}] ({layer.describe()}): {exc}") from None

    # -- shapes ----------------------------------------------------------------------------

    @property
    def input_shape(self) -> Shape:
        """The shape of one input example, e.g. ``(10,)`` or ``(28, 28)``."""
        return self.input_dim if isinstance(self.input_dim, tuple) else (self.input_dim,)

    @functools.cached_property
    def _shapes(self) -> tuple[dict[str, Shape], dict[str, Shape], dict[str, Shape]]:
        # (params, state, layer input shapes by path): computed once (specs are immutable)
        params: dict[str, Shape] = {}
        state: dict[str, Shape] = {}
        inputs: dict[str, Shape] = {}

        def visit(layers, prefix, shape):
            for i, layer in enumerate(layers):
                path = f"{prefix}.{i}"
                inputs[path] = shape
                local = layer.weight_shapes(shape)
                for name in layer.param_names():
                    params[f"{path}.{name}"] = local[name]
                for name in layer.state_names():
                    state[f"{path}.{name}"] = local[name]
                if layer.children:
                    visit(layer.children, f"{path}.layers", shape)
                shape = layer.output_shape(shape)
            return shape

        visit(self.layers, "layers", self.input_shape)
        return params, state, inputs

    @property
    def output_shape(self) -> Shape:
        """The shape of one output example."""
        shape = self.input_shape
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    @property
    def output_dim(self) -> int:
        """The number of outputs (the last axis of the output)."""
        return self.output_shape[-1]

    def layer_input_shapes(self) -> dict[str, Shape]:
        """The input shape of every layer, by path (nested layers included)."""
        return dict(self._shapes[2])

    def param_shapes(self) -> dict[str, Shape]:
        """Canonical names and shapes of the trainable parameters, in canonical order.

        ``layers.{i}.kernel`` has shape ``(in, out)`` and ``layers.{i}.bias`` shape ``(out,)``;
        layers built with ``use_bias=False`` have no bias entry.
        """
        return dict(self._shapes[0])

    def state_shapes(self) -> dict[str, Shape]:
        """Canonical names and shapes of the non-trainable state (BatchNorm's ``mean``/``var``)."""
        return dict(self._shapes[1])

    def weight_shapes(self) -> dict[str, Shape]:
        """Parameters and state together, in the order of the layers."""
        order = {path: n for n, (path, _) in enumerate(walk(self.layers))}
        both = {**self._shapes[0], **self._shapes[1]}
        return dict(sorted(both.items(), key=lambda kv: (order[kv[0].rsplit(".", 1)[0]], 0)))

    @functools.cached_property
    def param_names(self) -> tuple[str, ...]:
        """The canonical parameter names, in canonical order (computed once per spec)."""
        return tuple(self._shapes[0])

    @functools.cached_property
    def state_names(self) -> tuple[str, ...]:
        """The canonical state names (BatchNorm moving statistics), in order."""
        return tuple(self._shapes[1])

    def n_params(self) -> int:
        """The total number of scalar trainable parameters."""
        return sum(math.prod(shape) for shape in self._shapes[0].values())

    def walk(self) -> Iterator[tuple[str, AbstractLayer]]:
        """``(path, layer)`` for every layer in call order, nested ones included."""
        return walk(self.layers)

    # -- text ------------------------------------------------------------------------------

    def layer_dims(self) -> list[tuple[int, int]]:
        """``(in, out)`` features of every top-level Dense layer, in order (dense-only specs)."""
        shapes = self._shapes[2]
        return [
            (shapes[f"layers.{i}"][-1], layer.units)
            for i, layer in enumerate(self.layers)
            if isinstance(layer, Dense)
        ]

    def describe(self) -> str:
        """A short text form, e.g. ``"10 -> 8:relu -> layernorm(eps=0.001) -> 5:sigmoid"``."""
        dims = (
            self.input_dim
            if isinstance(self.input_dim, int)
            else "x".join(map(str, self.input_dim))
        )
        return " -> ".join([str(dims), *(layer.describe() for layer in self.layers)])
