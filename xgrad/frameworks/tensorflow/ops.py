"""xgrad's activations and losses in TensorFlow, and the quiet import of TensorFlow and Keras.

Keras' own activation functions are used wherever their value and their derivative at the
kinks are xgrad's definition (:mod:`xgrad.activations`). Two families are not, in float64,
because a Python constant reaches them as a float32 tensor first
(``math_ops.cast(python_float, float64)`` builds a float32 constant, then casts):

* ``keras.activations.leaky_relu`` multiplies by the slope rounded to float32 (0.2 becomes
  0.20000000298...);
* ``keras.activations.gelu`` calls ``tf.nn.gelu``, whose exact form scales by 1/sqrt(2)
  rounded to float32 and whose tanh form uses 0.044715 rounded to float32: a relative error
  of about 1e-8 in float64 GELU values and gradients.

Those are written here with every constant made directly in the input's dtype. The losses
are xgrad's formulas (:mod:`xgrad.losses`) written literally, without Keras' shortcuts.

Importing this module imports TensorFlow and Keras (about 7 s).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from xgrad.activations import GELU_TANH_COEFF
from xgrad.activations import Activation as ActivationFunction
from xgrad.errors import FrameworkError
from xgrad.losses import EPSILON, Loss

__all__ = [
    "XgradActivation",
    "check_backend",
    "keras",
    "own_traces",
    "tf",
    "tf_activation",
    "tf_loss",
]


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


def check_backend() -> None:
    """Raise :class:`FrameworkError` unless Keras runs on the TensorFlow backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise FrameworkError(
            f"Keras is set to the {backend!r} backend (KERAS_BACKEND or ~/.keras/keras.json); "
            "xgrad's tensorflow framework needs KERAS_BACKEND=tensorflow, set before Keras "
            "is first imported"
        )


class _DropRetracingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


@contextlib.contextmanager
def own_traces() -> Iterator[None]:
    """Drop TensorFlow's "excessive retracing" warning during xgrad's own calls.

    Each model traces its own ``tf.function`` once per loss and batch shape, so in a sweep of
    many models the warning is a false alarm. The filter is removed again in ``finally``.
    """
    logger = tf.get_logger()
    drop = _DropRetracingWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


# -- activations ------------------------------------------------------------------------------


def _leaky(slope: float) -> Callable:
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


_ACTIVATIONS: dict[str, Callable] = {
    "linear": keras.activations.linear,
    "relu": keras.activations.relu,
    "sigmoid": keras.activations.sigmoid,
    "tanh": keras.activations.tanh,
    "softmax": keras.activations.softmax,
    "log_softmax": keras.activations.log_softmax,
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "elu": keras.activations.elu,
    "selu": keras.activations.selu,
    "softplus": keras.activations.softplus,
    "silu": keras.activations.silu,
    "relu6": keras.activations.relu6,
    "hard_sigmoid": keras.activations.hard_sigmoid,
}


@keras.saving.register_keras_serializable(package="xgrad", name="Activation")
class XgradActivation:
    """One of xgrad's activations as a Keras activation that a ``.keras`` file can hold.

    Used where Keras has no activation of exactly xgrad's definition (GELU with float64
    constants, its tanh form, a leaky ReLU of any slope): ``Dense(activation=...)`` saves it
    as ``{"registered_name": "xgrad>Activation", "config": {"name": "leaky_relu:0.1"}}``, and
    the file loads, in safe mode too, wherever ``xgrad.frameworks.tensorflow.ops`` has been
    imported (the registration is the one change importing it makes to Keras).
    """

    def __init__(self, name: str) -> None:
        from xgrad.activations import get_activation

        act = get_activation(name)
        self.name = act.name
        self._fn = _leaky(act.slope) if act.kind == "leaky_relu" else _ACTIVATIONS[act.name]

    def __call__(self, x):
        return self._fn(x)

    def get_config(self) -> dict:
        return {"name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> XgradActivation:
        return cls(**config)

    def __repr__(self) -> str:
        return f"XgradActivation({self.name!r})"


_OWN = ("gelu", "gelu_tanh")


def tf_activation(act: ActivationFunction) -> Callable:
    """The function ``x -> a`` (tensors of one dtype) for an xgrad activation: Keras' own
    where it is xgrad's definition in every dtype, else an :class:`XgradActivation`."""
    if act.kind == "leaky_relu" or act.name in _OWN:
        return XgradActivation(act.name)
    return _ACTIVATIONS[act.name]


# -- losses -----------------------------------------------------------------------------------


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


_LOSSES: dict[str, Callable] = {
    "sum": lambda out, y: tf.reduce_sum(out),
    "projection": lambda out, y: tf.reduce_sum(out * y),
    "mean": lambda out, y: tf.reduce_sum(out) / _size(out),
    "mse": lambda out, y: tf.reduce_sum(tf.square(out - y)) / _size(out),
    "bce_logits": _bce_logits,
    "bce": _bce,
    "cce_logits": lambda out, y: -tf.reduce_sum(y * tf.nn.log_softmax(out, axis=-1)) / _batch(out),
    "cce": lambda out, y: -tf.reduce_sum(y * tf.math.log(_clip(out))) / _batch(out),
}


def tf_loss(loss: Loss) -> Callable:
    """The TensorFlow function ``(out, y) -> scalar`` of an xgrad :class:`~xgrad.losses.Loss`;
    ``out`` has shape ``(batch, units)`` and ``y`` the same (one-hot for the categorical
    losses) or is ignored."""
    return _LOSSES[loss.name]
