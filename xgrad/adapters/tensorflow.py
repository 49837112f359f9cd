"""The model as a Keras 3 ``Sequential`` of named ``Dense`` layers, differentiated by
``tf.GradientTape`` as in the seed article.

Layers are named ``dense_{i}`` inside a model named ``sequential``, so native names are Keras
variable paths such as ``sequential/dense_0/kernel``; Keras stores the kernel ``(in, out)``
like the canonical layout. float64 is set per layer (``dtype="float64"``), never through the
global ``keras.config.floatx``. The gradient step runs in a ``tf.function`` kept per model.

Keras' own activation functions are used wherever their value and kink derivative are
xgrad's definition. Three are not, in float64, because a constant is rounded to float32 on
the way in (``math_ops.cast(python_float, float64)`` first makes a float32 tensor):

* ``keras.activations.leaky_relu`` multiplies by the slope as float32 (0.2 becomes
  0.20000000298...);
* ``keras.activations.gelu`` calls ``tf.nn.gelu``, whose exact form scales by 1/sqrt(2)
  rounded to float32 and whose tanh form uses 0.044715 rounded to float32: a relative error
  of about 1e-8 in float64 GELU values and gradients.

Those three are written here with every constant made directly in the input's dtype.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence C++ log lines written to file descriptor 2 while TensorFlow loads.

    TensorFlow 2.21 prints oneDNN and CUDA notices before its logging is configured, so
    ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them. Python exceptions are unaffected; the
    descriptor is restored in ``finally``. Set ``TF_CPP_MIN_LOG_LEVEL=0`` to see them.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's INFO and WARNING lines
with _quiet_native_stderr():
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()  # device discovery logs its CUDA notice here, silenced

from xgrad.activations import GELU_TANH_COEFF, Activation  # noqa: E402
from xgrad.adapters.base import (  # noqa: E402
    AbstractAdapter,
    AbstractModel,
    Gradients,
    LayerValues,
)
from xgrad.errors import FrameworkError  # noqa: E402
from xgrad.losses import EPSILON, Loss  # noqa: E402
from xgrad.params import Params  # noqa: E402
from xgrad.spec import MLP  # noqa: E402

__all__ = [
    "TensorflowAdapter",
    "TensorflowModel",
    "build_keras_model",
    "keras_activation",
    "tf_loss",
]

MODEL_NAME = "sequential"


class _DropRetracingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def _own_traces() -> Iterator[None]:
    """Each built model traces its own ``tf.function`` once, so TensorFlow's "excessive
    retracing" warning is a false alarm in a sweep; drop that one message during our calls
    (the filter is removed again in ``finally``)."""
    logger = tf.get_logger()
    drop = _DropRetracingWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _leaky(slope: float):
    def leaky_relu(x):
        return tf.where(x > 0, x, tf.constant(slope, dtype=x.dtype) * x)

    return leaky_relu


def _gelu(x):
    c = tf.constant(0.7071067811865476, dtype=x.dtype)  # 1 / sqrt(2)
    return 0.5 * x * (1 + tf.math.erf(x * c))


def _gelu_tanh(x):
    c = tf.constant(0.7978845608028654, dtype=x.dtype)  # sqrt(2 / pi)
    k = tf.constant(GELU_TANH_COEFF, dtype=x.dtype)
    return 0.5 * x * (1 + tf.tanh(c * (x + k * x * x * x)))


_ACTIVATIONS = {
    "linear": keras.activations.linear,
    "relu": keras.activations.relu,
    "sigmoid": keras.activations.sigmoid,
    "tanh": keras.activations.tanh,
    "softmax": keras.activations.softmax,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "elu": keras.activations.elu,
    "selu": keras.activations.selu,
    "softplus": keras.activations.softplus,
    "silu": keras.activations.silu,
    "relu6": keras.activations.relu6,
    "hard_sigmoid": keras.activations.hard_sigmoid,
}


def keras_activation(act: Activation):
    """The Keras-side function for an :class:`~xgrad.activations.Activation`."""
    if act.kind == "leaky_relu":
        return _leaky(act.slope)
    return _ACTIVATIONS[act.name]


def _clip(p):
    lo = tf.constant(EPSILON, dtype=p.dtype)
    hi = tf.constant(1 - EPSILON, dtype=p.dtype)
    return tf.where(p < lo, lo, tf.where(p > hi, hi, p))


def _size(out):
    return tf.cast(tf.size(out), out.dtype)


def _batch(out):
    return tf.cast(tf.shape(out)[0], out.dtype)


def _bce(out, y):
    p = _clip(out)
    return -tf.reduce_sum(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p)) / _size(out)


def _bce_logits(out, y):
    terms = tf.maximum(out, 0) - out * y + tf.math.log1p(tf.exp(-tf.abs(out)))
    return tf.reduce_sum(terms) / _size(out)


_LOSSES = {
    "sum": lambda out, y: tf.reduce_sum(out),
    "mean": lambda out, y: tf.reduce_sum(out) / _size(out),
    "mse": lambda out, y: tf.reduce_sum(tf.square(out - y)) / _size(out),
    "bce_logits": _bce_logits,
    "bce": _bce,
    "cce_logits": lambda out, y: -tf.reduce_sum(y * tf.nn.log_softmax(out, axis=-1)) / _batch(out),
    "cce": lambda out, y: -tf.reduce_sum(y * tf.math.log(_clip(out))) / _batch(out),
}


def tf_loss(loss: Loss):
    """The TensorFlow function ``(out, y) -> scalar`` for a :class:`~xgrad.losses.Loss`."""
    return _LOSSES[loss.name]


def _given(value: np.ndarray):
    """A Keras initializer that returns ``value`` (already in the layer's dtype)."""

    def initializer(shape, dtype=None):
        return tf.constant(value, dtype=dtype)

    return initializer


def build_keras_model(spec: MLP, params: Params, dtype: str) -> keras.Model:
    """A ``keras.Sequential`` for ``spec`` with ``params`` (canonical) loaded, in ``dtype``.

    The weights are the layers' initializers, so no random initialisation is drawn and
    nothing is assigned twice.
    """
    layers = [keras.Input((spec.input_dim,), dtype=dtype, name="input")]
    for i, layer in enumerate(spec.layers):
        bias = params.get(f"layers.{i}.bias")
        layers.append(
            keras.layers.Dense(
                layer.units,
                activation=keras_activation(layer.act),
                use_bias=layer.use_bias,
                kernel_initializer=_given(params[f"layers.{i}.kernel"].astype(dtype)),
                bias_initializer=_given(bias.astype(dtype)) if bias is not None else "zeros",
                name=f"dense_{i}",
                dtype=dtype,
            )
        )
    return keras.Sequential(layers, name=MODEL_NAME)


class TensorflowModel(AbstractModel):
    """A Keras ``Sequential`` holding the canonical params."""

    def __init__(self, spec: MLP, params: Params, dtype: str) -> None:
        super().__init__(spec, dtype)
        self._model = build_keras_model(spec, params, dtype)
        self._variables = {}
        for i, layer in enumerate(spec.layers):
            dense = self._model.get_layer(f"dense_{i}")
            self._variables[f"layers.{i}.kernel"] = dense.kernel
            if layer.use_bias:
                self._variables[f"layers.{i}.bias"] = dense.bias
        self._names = list(self._variables)
        self._grad_fns: dict[str, tf.types.experimental.GenericFunction] = {}
        self._no_target = tf.zeros((0,), dtype=dtype)  # stands for y in losses without one
        self._vjp_fn = None

    @property
    def native(self) -> keras.Model:
        return self._model

    @property
    def native_names(self) -> dict[str, str]:
        return {name: var.path for name, var in self._variables.items()}

    def export_params(self) -> Params:
        return {name: np.array(var.numpy()) for name, var in self._variables.items()}

    def _grad_fn(self, loss: Loss):
        if loss.name not in self._grad_fns:
            loss_fn = _LOSSES[loss.name]
            variables = list(self._variables.values())
            model = self._model

            @tf.function
            def step(x, y):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    out = model(x, training=False)
                    value = loss_fn(out, y)
                grad_vars, grad_x = tape.gradient(value, (variables, x))
                return value, out, grad_vars, grad_x

            self._grad_fns[loss.name] = step
        return self._grad_fns[loss.name]

    def _pack(self, value, out, grad_vars, grad_x) -> Gradients:
        grads = {name: g.numpy() for name, g in zip(self._names, grad_vars, strict=True)}
        return Gradients(
            loss=None if value is None else float(value),
            params=grads,
            input=grad_x.numpy(),
            output=out.numpy(),
        )

    def _value_and_grad(self, x, y, loss: Loss) -> Gradients:
        y_t = self._no_target if y is None else tf.constant(y)
        with _own_traces():
            return self._pack(*self._grad_fn(loss)(tf.constant(x), y_t))

    def _vjp(self, x, cotangent) -> Gradients:
        if self._vjp_fn is None:
            variables = list(self._variables.values())
            model = self._model

            @tf.function
            def pullback(x, cot):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    out = model(x, training=False)
                grad_vars, grad_x = tape.gradient(out, (variables, x), output_gradients=cot)
                return out, grad_vars, grad_x

            self._vjp_fn = pullback
        with _own_traces():
            out, grad_vars, grad_x = self._vjp_fn(tf.constant(x), tf.constant(cotangent))
        return self._pack(None, out, grad_vars, grad_x)

    def _layer_values(self, x) -> list[LayerValues]:
        # Dense fuses the activation, so z is recomputed from the layer's own variables and
        # activation, the way Dense.call does: matmul, add bias, activation.
        values = []
        a = tf.constant(x)
        for i in range(len(self.spec.layers)):
            dense = self._model.get_layer(f"dense_{i}")
            z = keras.ops.matmul(a, dense.kernel)
            if dense.use_bias:
                z = keras.ops.add(z, dense.bias)
            a = dense.activation(z)
            values.append(LayerValues(z=np.asarray(z), a=np.asarray(a)))
        return values


class TensorflowAdapter(AbstractAdapter):
    """Keras 3 ``Dense`` layers on the TensorFlow backend; ``tf.GradientTape`` gradients."""

    name = "tensorflow"
    requires = ("tensorflow",)
    extra = "tensorflow"

    def _build(self, spec: MLP, params: Params, dtype: str) -> TensorflowModel:
        if keras.backend.backend() != "tensorflow":
            raise FrameworkError(
                f"Keras is set to the {keras.backend.backend()!r} backend (KERAS_BACKEND or "
                "~/.keras/keras.json); the tensorflow adapter needs KERAS_BACKEND=tensorflow"
            )
        return TensorflowModel(spec, params, dtype)
