"""The layer interface, stated once, and the sequence runner every model kind shares.

A layer is an immutable configuration (a frozen dataclass) that knows

* its weights: local names and shapes (``kernel (in, out)``, ``scale (features,)``, ...),
  trainable parameters apart from state (BatchNorm's moving statistics);
* its math in NumPy: :meth:`AbstractLayer.forward` and :meth:`AbstractLayer.vjp`, in the
  dtype of the arrays it is given (float64 for xgrad's reference).

Weights travel as one flat dict of canonical names: layer ``i`` of a model owns
``layers.{i}.{local}``, a layer nested in a :class:`~xgrad.layers.Residual` block
``layers.{i}.layers.{j}.{local}``. Shapes never include the batch axis.

Layers say nothing about frameworks: each framework package builds and reads them
(``xgrad/frameworks/<name>/``).
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from xgrad.errors import SpecError

__all__ = [
    "AbstractLayer",
    "Shape",
    "Step",
    "Weights",
    "check_positive_int",
    "forward_sequence",
    "steps_by_path",
    "sum_leading_axes",
    "vjp_sequence",
]

Shape = tuple[int, ...]  # the shape of one example, batch axis excluded
Weights = Mapping[str, np.ndarray]  # canonical name -> array (any float dtype)


def check_positive_int(value, what: str) -> int:
    """``value`` as an ``int``; :class:`SpecError` naming ``what`` unless it is one > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SpecError(f"{what} must be a positive integer, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise SpecError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def sum_leading_axes(a: np.ndarray) -> np.ndarray:
    """``a (..., n)`` summed over every axis but the last: the gradient of a weight of shape
    ``(n,)`` that a token-wise layer applies to each vector of the last axis."""
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


def check_float(value, what: str, *, low: float | None = None, high: float | None = None) -> float:
    """``value`` as a finite ``float`` in ``[low, high]``, else :class:`SpecError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise SpecError(f"{what} must be a finite number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise SpecError(f"{what} must be {bounds}, got {value!r}")
    return float(value)


def check_bool(value, what: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise SpecError(f"{what} must be True or False, got {value!r}")
    return bool(value)


@dataclass
class Step:
    """What one layer's forward pass leaves behind, for its VJP and for capture.

    Attributes:
        path: the layer's canonical path, e.g. ``layers.2`` or ``layers.3.layers.0``.
        layer: the layer.
        input: the value entering the layer, shape ``(batch, *input_shape)``.
        output: the value leaving it.
        cache: whatever the layer's VJP needs (pre-activations, normalised values, ...).
        state: updated state by canonical name (BatchNorm in training mode), else empty.
        children: the steps of nested layers (a residual block's).
    """

    path: str
    layer: AbstractLayer
    input: np.ndarray
    output: np.ndarray
    cache: object = None
    state: dict[str, np.ndarray] = field(default_factory=dict)
    children: list[Step] = field(default_factory=list)


class AbstractLayer(abc.ABC):
    """One layer kind. Subclasses are frozen dataclasses holding only configuration.

    Attributes:
        kind: the kind's name (``dense``, ``layernorm``, ...), used in reports and registries.
        token_wise: whether the layer computes each vector of the last axis on its own (a
            Dense, a LayerNorm, an activation): applied to ``(batch, tokens, d)`` it is the
            same layer on ``(batch * tokens, d)``, its weight gradients summed over both.
            Diagnosis re-runs such a layer on its values seen that way (the NumPy math takes
            ``(batch, features)``). ``False`` for a layer whose statistics or shape span
            other axes (BatchNorm, Flatten, a residual block).
    """

    kind: ClassVar[str]
    token_wise: ClassVar[bool] = False

    # -- structure -------------------------------------------------------------------------

    def param_names(self) -> tuple[str, ...]:
        """Local names of the trainable parameters, in canonical order."""
        return ()

    def state_names(self) -> tuple[str, ...]:
        """Local names of the non-trainable state (no gradient), in canonical order."""
        return ()

    @property
    def children(self) -> tuple[AbstractLayer, ...]:
        """Nested layers (a residual block's); empty for a plain layer."""
        return ()

    @abc.abstractmethod
    def output_shape(self, input_shape: Shape) -> Shape:
        """The shape of one output example; :class:`SpecError` if the input does not fit."""

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        """Local name -> shape of every parameter and state array, parameters first."""
        return {}

    def init(
        self, rng: np.random.Generator, input_shape: Shape, *, bias_scale: float = 0.1
    ) -> dict[str, np.ndarray]:
        """Deterministic float64 weights (local names) drawn from ``rng``; every ``bias`` is
        uniform in ``[-bias_scale, bias_scale]``."""
        return {}

    def describe(self) -> str:
        """A short text form for model descriptions, e.g. ``8:relu`` or ``layernorm``."""
        return self.kind

    @property
    def updates_state(self) -> bool:
        """Whether :meth:`forward` returns updated state (BatchNorm in training mode): the
        frameworks then report the state their own layer updated."""
        return False

    # -- math (NumPy, in the dtype of x) ---------------------------------------------------

    @abc.abstractmethod
    def forward(self, weights: Weights, x: np.ndarray, *, path: str) -> Step:
        """Apply the layer to a batch ``x``; ``weights`` is the model's flat canonical dict."""

    @abc.abstractmethod
    def vjp(
        self,
        weights: Weights,
        step: Step,
        grad_output: np.ndarray,
        grads: dict[str, np.ndarray],
        output_grads: dict[str, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Back-propagate ``dL/d output``: put ``dL/d param`` in ``grads`` (canonical names)
        and return ``dL/d input``. Nested layers record ``dL/d output`` in ``output_grads``."""

    # -- helpers for subclasses ------------------------------------------------------------

    def local(self, weights: Weights, path: str) -> dict[str, np.ndarray]:
        """This layer's parameters and state from the flat dict, by local name."""
        return {
            name: weights[f"{path}.{name}"] for name in (*self.param_names(), *self.state_names())
        }


def forward_sequence(
    layers: Sequence[AbstractLayer], weights: Weights, x: np.ndarray, *, prefix: str = "layers"
) -> tuple[np.ndarray, list[Step]]:
    """Run ``layers`` one after another; layer ``i`` has path ``{prefix}.{i}``."""
    steps = []
    a = x
    for i, layer in enumerate(layers):
        step = layer.forward(weights, a, path=f"{prefix}.{i}")
        steps.append(step)
        a = step.output
    return a, steps


def vjp_sequence(
    weights: Weights,
    steps: Sequence[Step],
    grad_output: np.ndarray,
    grads: dict[str, np.ndarray],
    output_grads: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Back-propagate through the steps of :func:`forward_sequence`, last layer first."""
    g = grad_output
    for step in reversed(steps):
        if output_grads is not None:
            output_grads[step.path] = g
        g = step.layer.vjp(weights, step, g, grads, output_grads)
    return g


def steps_by_path(steps: Sequence[Step]) -> dict[str, Step]:
    """Every step, nested ones included, by path, in call order."""
    out: dict[str, Step] = {}
    for step in steps:
        out[step.path] = step
        out.update(steps_by_path(step.children))
    return out
