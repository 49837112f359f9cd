"""NumPy: the spec evaluated by each layer's own forward and VJP (no autodiff).

In float64 this is xgrad's reference. Backward is the seed article's chain rule, layer by
layer from the output (see :mod:`xgrad.layers`). Native names are the canonical names and
the native layout is the canonical one. An ``(xgrad.MLP, params)`` pair is read as a NumPy
model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from xgrad.frameworks.base import (
    AbstractFramework,
    AbstractModel,
    Gradients,
    check_cotangent,
    check_input,
    prepare_loss,
    spec_layers,
)
from xgrad.layers import forward_sequence, vjp_sequence
from xgrad.layers.base import Step, steps_by_path
from xgrad.losses import Loss
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = ["FRAMEWORK", "NumpyFramework", "NumpyModel", "spec_layers"]

NUMPY_DTYPES = ("float16", "float32", "float64")


class NumpyModel(AbstractModel):
    """A spec evaluated with plain NumPy; weights held as canonical arrays."""

    framework = "numpy"

    def __init__(self, spec: MLP, weights: Params, dtype: str) -> None:
        self._spec = spec
        self.dtype = dtype
        self.description = f"xgrad.MLP {spec.describe()}"
        self.input_shape = spec.input_shape
        self.output_shape = spec.output_shape
        self.layers = spec_layers(spec)
        self._weights = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}

    @property
    def native(self) -> tuple[MLP, dict[str, np.ndarray]]:
        return self._spec, self._weights

    def weights(self) -> Params:
        return {k: v.copy() for k, v in self._weights.items()}

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> NumpyModel:
        merged = {**self._weights, **{k: np.asarray(v) for k, v in weights.items()}}
        return NumpyModel(self._spec, check_params(self._spec, merged), self.dtype)

    def spec(self) -> MLP:
        return self._spec

    def evaluate_traced(
        self, x, y=None, *, loss="sum", cotangent=None, capture: bool = False
    ) -> tuple[Gradients, list[Step]]:
        """:meth:`evaluate`, and the forward steps it made (each layer's input, output and
        cache: pre-activations, normalised values), so that a caller re-running part of the
        model in NumPy need not run the forward pass again. The steps' arrays belong to the
        caller; the model keeps none of them."""
        vocab = self.vocab
        xs = check_input(self.input_shape, x, vocab=vocab)
        xc = xs if vocab is not None else self._cast(xs)  # token ids stay integers
        if cotangent is not None:
            cot = check_cotangent(self.output_shape, cotangent, xs.shape[0])
            return self._run(xc, None, None, self._cast(cot), capture)
        loss_fn, ys = prepare_loss(loss, y, xs.shape[0], self.output_shape)
        if ys is not None and isinstance(loss_fn, Loss):
            ys = self._cast(ys)
        return self._run(xc, ys, loss_fn, None, capture)

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        return self._run(x, y, loss, cotangent, capture)[0]

    def _run(self, x, y, loss, cotangent, capture) -> tuple[Gradients, list[Step]]:
        # Overflow and NaN are results to report (status "nonfinite"), not warnings to print;
        # np.errstate restores the caller's settings on exit.
        weights = self._weights
        with np.errstate(all="ignore"):
            out, steps = forward_sequence(self._spec.layers, weights, x)
            value = None
            if cotangent is not None:
                grad_out = cotangent
            elif isinstance(loss, Loss):
                value, grad_out = loss.value_and_grad(out, y)
                value = float(value)
            else:
                from xgrad.errors import InputError

                raise InputError(
                    "a NumPy model takes a loss name; a loss function is for models of a "
                    "framework with automatic differentiation"
                )
            grads: dict[str, np.ndarray] = {}
            output_grads = {} if capture else None
            grad_x = vjp_sequence(weights, steps, grad_out, grads, output_grads)
        state = {k: v for step in steps for k, v in step.state.items()}
        activations = None
        if capture:
            activations = {path: step.output for path, step in steps_by_path(steps).items()}
        gradients = Gradients(
            loss=value,
            params={name: grads[name] for name in self._spec.param_names},
            input=grad_x,
            output=out,
            state=state,
            activations=activations,
            activation_grads=output_grads,
        )
        return gradients, steps


class NumpyFramework(AbstractFramework):
    """Hand-written NumPy backprop (float16, float32, float64); the reference in float64.

    It builds every registered layer kind (the default :meth:`AbstractFramework.kinds`): a
    NumPy model runs each layer's own forward and VJP."""

    name = "numpy"
    aliases = ("np",)
    dtypes = NUMPY_DTYPES

    def _build(self, spec: MLP, params: Params, dtype: str) -> NumpyModel:
        return NumpyModel(spec, params, dtype)

    @classmethod
    def claims(cls, obj) -> bool:
        return isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[0], MLP)

    def read(self, obj, *, input_shape=None) -> NumpyModel:
        """An ``(xgrad.MLP, params)`` pair; it computes in the params' dtype (float32 when
        every array is float32, else float64)."""
        spec, params = obj
        raw = dict(params)
        dtypes = {np.asarray(v).dtype for v in raw.values()}
        dtype = "float32" if dtypes <= {np.dtype(np.float32)} else "float64"
        return NumpyModel(spec, check_params(spec, raw), dtype)

    @classmethod
    def claims_optimizer(cls, obj) -> bool:
        """An xgrad rule (``xgrad.training.Adam(1e-3)``): xgrad's NumPy optimizer."""
        from xgrad.optim import Rule

        return isinstance(obj, Rule)

    def read_optimizer(self, obj, *, side: str = "reference"):
        """The rule as xgrad's NumPy optimizer, computing in the model's dtype."""
        from xgrad.optim import NumpyOptimizer

        return NumpyOptimizer(obj)

    def native_optimizer(self, spec):
        """xgrad's rule for ``spec`` (optax's defaults; learning rate 1e-3 when not given)."""
        return spec.rule()


FRAMEWORK = NumpyFramework()
