"""Hand-written forward and backward passes in NumPy; in float64 also xgrad's reference.

No autodiff: backward is the seed article's chain rule, layer by layer from the output::

    delta     = grad_output * act'(z)         (softmax: its Jacobian-vector product)
    dW        = input.T @ delta                kernel (in, out)
    db        = sum(delta, axis=0)             bias (out,)
    grad_prev = delta @ W.T                    dL/dinput of this layer

Native names are the canonical names: the native layout *is* the canonical one.
"""

from __future__ import annotations

import numpy as np

from xgrad.adapters.base import AbstractAdapter, AbstractModel, Gradients, LayerValues
from xgrad.losses import Loss
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["NumpyAdapter", "NumpyModel", "backward", "forward"]


def forward(spec: MLP, params: Params, x: np.ndarray) -> list[LayerValues]:
    """``z`` and ``a`` of every layer, computed in the dtype of ``x`` and ``params``."""
    values = []
    a = x
    for i, layer in enumerate(spec.layers):
        z = a @ params[f"layers.{i}.kernel"]
        if layer.use_bias:
            z = z + params[f"layers.{i}.bias"]
        a = layer.act(z)
        values.append(LayerValues(z=z, a=a))
    return values


def backward(
    spec: MLP,
    params: Params,
    x: np.ndarray,
    values: list[LayerValues],
    grad_output: np.ndarray,
    layer_grads: list[np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Back-propagate ``grad_output = dL/d(output)``; returns ``(dL/dparams, dL/dinput)``.

    Args:
        spec: the model.
        params: canonical params in the computation dtype.
        x: the inputs the forward pass saw.
        values: :func:`forward`'s result for ``x``.
        grad_output: ``dL/d(output)``, shape ``(batch, units)``.
        layer_grads: if a list is given, ``dL/d a_i`` of every layer is put in it, in
            layer order.
    """
    grads: dict[str, np.ndarray] = {}
    grad_a = grad_output
    seen = []
    for i in range(len(spec.layers) - 1, -1, -1):
        seen.append(grad_a)
        layer = spec.layers[i]
        a_prev = values[i - 1].a if i > 0 else x
        delta = layer.act.vjp(values[i].z, values[i].a, grad_a)
        kernel = params[f"layers.{i}.kernel"]
        grads[f"layers.{i}.kernel"] = a_prev.T @ delta
        if layer.use_bias:
            grads[f"layers.{i}.bias"] = delta.sum(axis=0)
        grad_a = delta @ kernel.T
    if layer_grads is not None:
        layer_grads.extend(reversed(seen))
    ordered = {name: grads[name] for name in spec.param_names}
    return ordered, grad_a


class NumpyModel(AbstractModel):
    """The spec evaluated with plain NumPy; params held as canonical arrays."""

    def __init__(self, spec: MLP, params: Params, dtype: str) -> None:
        super().__init__(spec, dtype)
        self._params = {k: v.astype(dtype) for k, v in params.items()}

    @property
    def native(self) -> dict[str, np.ndarray]:
        return self._params

    @property
    def native_names(self) -> dict[str, str]:
        return {name: name for name in self._params}

    def export_params(self) -> Params:
        return {k: v.copy() for k, v in self._params.items()}

    # Overflow and NaN are results to report (status "nonfinite"), not warnings to print;
    # np.errstate restores the caller's settings on exit.

    def _value_and_grad(self, x, y, loss: Loss) -> Gradients:
        with np.errstate(all="ignore"):
            values = forward(self.spec, self._params, x)
            out = values[-1].a
            value, grad_out = loss.value_and_grad(out, y)
            grads, grad_x = backward(self.spec, self._params, x, values, grad_out)
        return Gradients(loss=float(value), params=grads, input=grad_x, output=out)

    def _vjp(self, x, cotangent) -> Gradients:
        with np.errstate(all="ignore"):
            values = forward(self.spec, self._params, x)
            grads, grad_x = backward(self.spec, self._params, x, values, cotangent)
        return Gradients(loss=None, params=grads, input=grad_x, output=values[-1].a)

    def _layer_values(self, x) -> list[LayerValues]:
        with np.errstate(all="ignore"):
            return forward(self.spec, self._params, x)


class NumpyAdapter(AbstractAdapter):
    """Hand-written NumPy backprop (float32 and float64); the reference in float64."""

    name = "numpy"

    def _build(self, spec: MLP, params: Params, dtype: str) -> NumpyModel:
        return NumpyModel(spec, params, dtype)
