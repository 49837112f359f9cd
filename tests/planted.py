"""Frameworks with one planted mistake each: the NumPy model, wrong in exactly one place.

Each is a real :class:`~xgrad.frameworks.AbstractFramework`, compared like any other, so a
test can check that the mistake is flagged on exactly the entries it reaches and diagnosed.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import xgrad
from xgrad.frameworks.numpy import NumpyFramework, NumpyModel
from xgrad.layers import Dense, forward_sequence
from xgrad.spec import MLP


class _Changed(NumpyModel):
    """A NumPy model whose results pass through ``change(model, grads, x, y, loss)``."""

    change = None
    swap = None

    def __init__(self, spec, weights, dtype):
        super().__init__(spec, weights, dtype)
        if self.swap is not None:
            self._computed = MLP(spec.input_dim, [self.swap(layer) for layer in spec.layers])
        else:
            self._computed = spec

    def _evaluate(self, x, y, loss, cotangent, capture):
        spec, self._spec = self._spec, self._computed
        try:
            grads = super()._evaluate(x, y, loss, cotangent, capture)
        finally:
            self._spec = spec
        return grads if self.change is None else self.change(grads, x, y, loss)


def planted(name: str, *, change=None, swap=None) -> NumpyFramework:
    """A framework called ``name``: NumPy, with ``swap`` applied to each layer's config
    (computing another layer in its place) or ``change`` applied to its results."""
    model_cls = type(
        f"Planted_{name}",
        (_Changed,),
        {
            "change": staticmethod(change) if change else None,
            "swap": staticmethod(swap) if swap else None,
        },
    )

    class Framework(NumpyFramework):
        def _build(self, spec, params, dtype):
            return model_cls(spec, params, dtype)

    fw = Framework()
    fw.name = name
    return fw


def tanh_gelu() -> NumpyFramework:
    """Uses the tanh GELU wherever the spec says the exact one."""

    def swap(layer):
        if isinstance(layer, Dense) and layer.activation == "gelu":
            return dataclasses.replace(layer, activation="gelu_tanh")
        return layer

    return planted("tanh-gelu", swap=swap)


def nan_gradient() -> NumpyFramework:
    """Puts a NaN into one element of dL/d layers.0.kernel."""

    def change(grads, x, y, loss):
        kernel = grads.params["layers.0.kernel"].copy()
        kernel[1, 2] = np.nan
        return dataclasses.replace(grads, params={**grads.params, "layers.0.kernel": kernel})

    return planted("nan", change=change)


def scaled(factor: float, name: str = "scaled") -> NumpyFramework:
    """Every gradient times ``factor`` (a loss reduction), outputs unchanged."""

    def change(grads, x, y, loss):
        return dataclasses.replace(
            grads,
            params={k: v * factor for k, v in grads.params.items()},
            input=grads.input * factor,
            activation_grads=None
            if grads.activation_grads is None
            else {k: v * factor for k, v in grads.activation_grads.items()},
        )

    return planted(name, change=change)


def no_transpose() -> NumpyFramework:
    """Forgets the transpose in dL/dinput = delta . W^T of the first (square) Dense layer."""

    class Model(NumpyModel):
        def _evaluate(self, x, y, loss, cotangent, capture):
            good = super()._evaluate(x, y, loss, cotangent, True)
            layer = self._spec.layers[0]
            _, steps = forward_sequence(self._spec.layers[:1], self._weights, x)
            g = good.activation_grads["layers.0"]
            delta = layer.act.vjp(steps[0].cache, steps[0].output, g)
            wrong = delta @ self._weights["layers.0.kernel"]  # should be .T
            out = dataclasses.replace(good, input=wrong)
            if not capture:
                out = dataclasses.replace(out, activations=None, activation_grads=None)
            return out

    class Framework(NumpyFramework):
        def _build(self, spec, params, dtype):
            return Model(spec, params, dtype)

    fw = Framework()
    fw.name = "no-transpose"
    return fw


__all__ = ["nan_gradient", "no_transpose", "planted", "scaled", "tanh_gelu", "xgrad"]
