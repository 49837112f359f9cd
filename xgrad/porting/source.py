"""Model sources: a user's own model, wrapped so that xgrad can read and compare it.

A :class:`ModelSource` wraps a Keras model, a Flax NNX module, a ``(linen module,
variables)`` pair, a pure-JAX ``(apply_fn, params)`` pair or an ``(xgrad.MLP, params)``
pair. It lists the model's dense layers in call order (:class:`DenseLayer`), exports and
accepts their weights in canonical form, and computes gradients and per-layer values
with the model's own framework, on the user's own model (or a copy with transferred
weights; the user's object is never changed).

Within a source, canonical names are indexed by the source's own dense layers:
``layers.{i}.kernel`` is the kernel of its ``i``-th dense layer in ``(in, out)`` layout,
whatever the native layout.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from xgrad.adapters.base import Gradients
from xgrad.errors import InputError
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = ["DenseLayer", "LayerCapture", "ModelSource", "XgradSource", "model_source"]


@dataclass(frozen=True)
class DenseLayer:
    """One dense layer of a model, in call order.

    Attributes:
        name: the framework's name of the layer (``dense_1``, ``layers/0``, ...).
        kernel: native name of the kernel.
        bias: native name of the bias, or ``None`` for a layer without one.
        in_dim, out_dim: widths; the canonical kernel has shape ``(in_dim, out_dim)``.
        transposed: the native kernel is stored ``(out, in)`` (``x @ W.T``).
        activation: xgrad's name of the activation that follows, when the framework
            states it (Keras); ``None`` when it is code that xgrad does not name.
    """

    name: str
    kernel: str
    bias: str | None
    in_dim: int
    out_dim: int
    transposed: bool = False
    activation: str | None = None

    @property
    def kernel_shape(self) -> tuple[int, int]:
        """The native kernel shape."""
        return (self.out_dim, self.in_dim) if self.transposed else (self.in_dim, self.out_dim)


@dataclass(frozen=True)
class LayerCapture:
    """Every dense layer's activation ``a_i`` and ``dL/d a_i`` for one batch."""

    activations: list[np.ndarray]
    gradients: list[np.ndarray]


class ModelSource(abc.ABC):
    """A user's model, readable by xgrad.

    Attributes:
        framework: ``keras``, ``flax.nnx``, ``flax.linen``, ``jax`` or ``xgrad``.
        description: a short text naming the model.
        dtype: the dtype it computes in.
        layers: its dense layers in call order.
    """

    framework: str
    description: str
    dtype: str
    layers: tuple[DenseLayer, ...]

    @property
    def input_dim(self) -> int:
        return self.layers[0].in_dim

    @abc.abstractmethod
    def native_params(self) -> Params:
        """The model's weights, canonical names of its own layers, ``(in, out)`` layout."""

    @abc.abstractmethod
    def with_params(self, params: Params) -> ModelSource:
        """A new source whose model holds ``params`` (canonical); ``self`` is unchanged."""

    @abc.abstractmethod
    def gradients(self, x: np.ndarray, y: np.ndarray | None, loss, cotangent) -> Gradients:
        """Loss, dL/dparams (canonical names), dL/dinput and output, with its framework.

        ``x``, ``y`` and ``cotangent`` are checked float64 arrays; the source casts them
        to its dtype. ``loss`` is an :class:`~xgrad.losses.Loss` or ``None`` with a
        cotangent.
        """

    @abc.abstractmethod
    def capture(self, x: np.ndarray, y: np.ndarray | None, loss, cotangent) -> LayerCapture:
        """Every dense layer's activation and ``dL/d activation``, with its framework."""

    @abc.abstractmethod
    def native_model(self) -> object:
        """The framework's own object holding this source's weights."""

    def native_names(self) -> dict[str, str]:
        """Canonical name -> native name, for every parameter."""
        names = {}
        for i, layer in enumerate(self.layers):
            names[f"layers.{i}.kernel"] = layer.kernel
            if layer.bias is not None:
                names[f"layers.{i}.bias"] = layer.bias
        return names

    def spec(self) -> MLP | None:
        """The equivalent :class:`~xgrad.MLP` when every activation is known, else None."""
        from xgrad.spec import Dense

        if any(layer.activation is None for layer in self.layers):
            return None
        return MLP(
            self.input_dim,
            [
                Dense(layer.out_dim, layer.activation, use_bias=layer.bias is not None)
                for layer in self.layers
            ],
        )

    def __repr__(self) -> str:
        return f"<{self.framework} model source: {self.description}>"


class XgradSource(ModelSource):
    """An ``(xgrad.MLP, canonical params)`` pair, evaluated by the NumPy adapter."""

    framework = "xgrad"

    def __init__(self, spec: MLP, params, dtype: str | None = None) -> None:
        from xgrad.adapters.numpy import NumpyAdapter

        raw = dict(params)
        self._spec = spec
        self.dtype = dtype or _float_dtype(raw)
        self._params = check_params(spec, raw)
        self._model = NumpyAdapter().build(spec, self._params, dtype=self.dtype)
        self.description = f"xgrad.MLP {spec.describe()}"
        self.layers = tuple(
            DenseLayer(
                name=f"layers.{i}",
                kernel=f"layers.{i}.kernel",
                bias=f"layers.{i}.bias" if layer.use_bias else None,
                in_dim=n_in,
                out_dim=n_out,
                activation=layer.activation,
            )
            for i, (layer, (n_in, n_out)) in enumerate(
                zip(spec.layers, spec.layer_dims(), strict=True)
            )
        )

    def native_params(self) -> Params:
        return {k: v.copy() for k, v in self._params.items()}

    def with_params(self, params: Params) -> XgradSource:
        return XgradSource(self._spec, params, self.dtype)

    def native_model(self):
        return (self._spec, self.native_params())

    def gradients(self, x, y, loss, cotangent) -> Gradients:
        if cotangent is not None:
            return self._model.vjp(x, cotangent)
        return self._model.gradients(x, y, loss=loss.name)

    def capture(self, x, y, loss, cotangent) -> LayerCapture:
        from xgrad.adapters.numpy import backward, forward

        params = self._model.native
        xs = x.astype(self.dtype)
        with np.errstate(all="ignore"):
            values = forward(self._spec, params, xs)
            if cotangent is not None:
                grad_out = cotangent.astype(self.dtype)
            else:
                y_cast = None if y is None else y.astype(self.dtype)
                grad_out = loss.value_and_grad(values[-1].a, y_cast)[1]
            grads: list[np.ndarray] = []
            backward(self._spec, params, xs, values, grad_out, layer_grads=grads)
        return LayerCapture([v.a for v in values], grads)


def _float_dtype(params) -> str:
    dtypes = {np.asarray(v).dtype for v in params.values()}
    if dtypes <= {np.dtype(np.float32)}:
        return "float32"
    return "float64"


def _module_of(obj) -> list[str]:
    return [c.__module__ or "" for c in type(obj).__mro__]


def _is(obj, prefix: str) -> bool:
    return any(m == prefix or m.startswith(prefix + ".") for m in _module_of(obj))


SUPPORTED = (
    "a keras.Model (Sequential or Functional), a flax.nnx.Module, a "
    "(flax.linen.Module, variables) pair, a pure-JAX (apply_fn, params) pair or an "
    "(xgrad.MLP, params) pair"
)


def model_source(model, *, input_dim: int | None = None) -> ModelSource:
    """Wrap a user's model as a :class:`ModelSource` (frameworks imported only as needed).

    Args:
        model: see :data:`SUPPORTED`; a :class:`ModelSource` is returned as it is.
        input_dim: the input width, needed to trace JAX functions (taken from the data
            when comparing).

    Raises:
        InputError: the object is none of the supported kinds.
        AlignmentError: the model holds layers xgrad cannot port.
    """
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, tuple) and len(model) == 2:
        first, second = model
        if isinstance(first, MLP):
            return XgradSource(first, second)
        if _is(first, "flax.linen"):
            from xgrad.porting.jax_source import linen_source

            return linen_source(first, second, input_dim=input_dim)
        if callable(first):
            from xgrad.porting.jax_source import function_source

            return function_source(first, second, input_dim=input_dim)
    elif _is(model, "keras"):
        from xgrad.porting.keras_source import KerasSource

        return KerasSource(model)
    elif _is(model, "flax.nnx"):
        from xgrad.porting.jax_source import nnx_source

        return nnx_source(model, input_dim=input_dim)
    raise InputError(f"cannot read a model of type {type(model).__name__}; pass {SUPPORTED}")
