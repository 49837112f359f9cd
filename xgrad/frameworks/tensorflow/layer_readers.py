"""One Keras layer in xgrad's terms: its kind, its configuration and its weights.

Each Keras class xgrad reads has a small reader here (:data:`READERS`), keyed by the exact
class (a subclass may compute something else). Configuration comes from the layer's own
attributes (epsilon, momentum, center, scale, the ReLU family's slopes); an activation given
as one of Keras' functions is named by :func:`keras_activation_name`, one given as a Python
function is identified from its recorded values (:func:`xgrad.identify.fit_activation`), or
left unknown (``config=None``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.errors import AlignmentError
from xgrad.frameworks.tensorflow.ops import XgradActivation, keras
from xgrad.identify import fit_activation
from xgrad.layers import (
    AbstractLayer,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    RMSNorm,
    Shape,
)

__all__ = [
    "READERS",
    "SUPPORTED_LAYERS",
    "LayerRead",
    "keras_activation_name",
    "read_layer",
    "where",
]

SUPPORTED_LAYERS = (
    "Dense",
    "Activation",
    "ReLU",
    "LeakyReLU",
    "Softmax",
    "ELU",
    "LayerNormalization",
    "RMSNormalization",
    "BatchNormalization",
    "Dropout",
    "Flatten",
    "Add",
    "InputLayer",
)
"""The Keras layer classes xgrad reads (exactly these classes, not subclasses of them)."""

# Keras activation names whose definition is xgrad's. Keras' own float64 leaky_relu and gelu
# round a constant to float32 (see .ops): the name still says which function is computed.
_KERAS_TO_XGRAD = {
    "linear": "linear",
    "relu": "relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "softmax": "softmax",
    "log_softmax": "log_softmax",
    "gelu": "gelu",
    "elu": "elu",
    "selu": "selu",
    "softplus": "softplus",
    "silu": "silu",
    "swish": "silu",
    "leaky_relu": "leaky_relu:0.2",
    "relu6": "relu6",
    "hard_sigmoid": "hard_sigmoid",
}


def keras_activation_name(fn) -> str | None:
    """xgrad's name of one of Keras' own activation functions, else ``None`` (a user's
    function, a lambda, a ``functools.partial``, or an activation xgrad does not define);
    xgrad's own :class:`~xgrad.frameworks.tensorflow.ops.XgradActivation` by its name."""
    if isinstance(fn, XgradActivation):
        return fn.name
    if not (getattr(fn, "__module__", None) or "").startswith("keras"):
        return None
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return None
    return _KERAS_TO_XGRAD.get(name) if isinstance(name, str) else None


# -- one layer ----------------------------------------------------------------------------------


@dataclass
class LayerRead:
    """What one Keras layer is in xgrad's terms.

    Attributes:
        kind: a layer kind of :data:`xgrad.layers.LAYERS`.
        config: the xgrad layer it computes, ``None`` when its activation is unknown.
        weights: its local weight names (held by the Keras attributes of
            :data:`~xgrad.frameworks.tensorflow.model.KERAS_WEIGHTS`).
        note: what the reader noticed (an activation identified by its values, ...).
    """

    kind: str
    config: AbstractLayer | None
    weights: tuple[str, ...] = ()
    note: str | None = None


def where(layer) -> str:
    """``layer 'dense_1' (Dense)``: how error messages name a Keras layer."""
    return f"layer {layer.name!r} ({type(layer).__name__})"


def _vector_axis(layer, shape: Shape) -> None:
    """Refuse a normalisation over another axis than the features of vector examples."""
    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    if axes not in ([-1], [len(shape)]) or len(shape) != 1:
        raise AlignmentError(
            f"{where(layer)} normalises axis {layer.axis} of examples of shape {shape}; xgrad "
            "reads normalisations over the features of vector examples (axis=-1; put a "
            "Flatten before it)"
        )


def _activation(fn, z: np.ndarray, a: np.ndarray, dtype: str) -> tuple[str | None, str | None]:
    """``(xgrad name or None, note)`` of an activation function applied as ``a = fn(z)``."""
    name = keras_activation_name(fn)
    if name is not None:
        return name, None
    label = getattr(fn, "__name__", type(fn).__name__)
    fitted, err = fit_activation(z, a, dtype)
    if fitted is not None:
        return fitted, f"activation {label} identified from its values as {fitted}"
    return None, (
        f"activation {label} is none of xgrad's activations (closest relative error "
        f"{err:.1e}); compared as computed"
    )


def _dense(layer, x, out, dtype) -> LayerRead:
    shape = tuple(x.shape[1:])
    if len(shape) != 1:
        raise AlignmentError(
            f"{where(layer)} is applied to examples of shape {shape}; xgrad's Dense takes "
            "vectors (put a Flatten before it)"
        )
    z = np.asarray(x).astype(np.float64) @ np.asarray(layer.kernel).astype(np.float64)
    if layer.use_bias:
        z = z + np.asarray(layer.bias).astype(np.float64)
    name, note = _activation(layer.activation, z, np.asarray(out), dtype)
    config = None if name is None else Dense(layer.units, name, layer.use_bias)
    return LayerRead("dense", config, ("kernel", "bias") if layer.use_bias else ("kernel",), note)


def _activation_layer(layer, x, out, dtype) -> LayerRead:
    name, note = _activation(layer.activation, np.asarray(x), np.asarray(out), dtype)
    return LayerRead("activation", None if name is None else Activation(name), note=note)


def _relu(layer, x, out, dtype) -> LayerRead:
    slope, top, threshold = layer.negative_slope, layer.max_value, layer.threshold
    if threshold == 0 and top is None:
        name = "relu" if slope == 0 else f"leaky_relu:{float(slope)!r}"
    elif threshold == 0 and top == 6 and slope == 0:
        name = "relu6"
    else:
        raise AlignmentError(
            f"{where(layer)} has max_value={top}, negative_slope={slope}, "
            f"threshold={threshold}; xgrad reads ReLU with threshold 0 and max_value None "
            "(relu, leaky_relu) or 6 with slope 0 (relu6)"
        )
    return LayerRead("activation", Activation(name))


def _leaky_relu(layer, x, out, dtype) -> LayerRead:
    return LayerRead("activation", Activation(f"leaky_relu:{float(layer.negative_slope)!r}"))


def _softmax(layer, x, out, dtype) -> LayerRead:
    if layer.axis not in (-1, [-1], len(x.shape) - 1):
        raise AlignmentError(
            f"{where(layer)} has axis {layer.axis}; xgrad's softmax is over the last axis"
        )
    return LayerRead("activation", Activation("softmax"))


def _elu(layer, x, out, dtype) -> LayerRead:
    if float(layer.alpha) != 1.0:
        raise AlignmentError(f"{where(layer)} has alpha={layer.alpha}; xgrad's elu has alpha 1")
    return LayerRead("activation", Activation("elu"))


def _layernorm(layer, x, out, dtype) -> LayerRead:
    _vector_axis(layer, tuple(x.shape[1:]))
    if layer.rms_scaling:
        raise AlignmentError(
            f"{where(layer)} has rms_scaling=True, which divides by the root of the variance "
            "without centring; that is neither xgrad's LayerNorm nor its RMSNorm (use "
            "keras.layers.RMSNormalization)"
        )
    config = LayerNorm(layer.epsilon, layer.center, layer.scale)
    return LayerRead("layernorm", config, config.param_names())


def _rmsnorm(layer, x, out, dtype) -> LayerRead:
    _vector_axis(layer, tuple(x.shape[1:]))
    return LayerRead("rmsnorm", RMSNorm(layer.epsilon), ("scale",))


def _batchnorm(layer, x, out, dtype) -> LayerRead:
    _vector_axis(layer, tuple(x.shape[1:]))
    if layer.renorm:
        raise AlignmentError(
            f"{where(layer)} uses batch renormalisation, which xgrad does not read"
        )
    # read in inference mode (moving statistics): how the model computes when called
    config = BatchNorm(layer.epsilon, layer.momentum, False, layer.center, layer.scale)
    return LayerRead("batchnorm", config, (*config.param_names(), *config.state_names()))


def _dropout(layer, x, out, dtype) -> LayerRead:
    return LayerRead("dropout", Dropout(float(layer.rate)))  # inference mode: the identity


def _flatten(layer, x, out, dtype) -> LayerRead:
    if layer.data_format == "channels_first" and len(x.shape) > 2:
        raise AlignmentError(f"{where(layer)} flattens channels_first; xgrad reads channels_last")
    return LayerRead("flatten", Flatten())


READERS = {
    keras.layers.Dense: _dense,
    keras.layers.Activation: _activation_layer,
    keras.layers.ReLU: _relu,
    keras.layers.LeakyReLU: _leaky_relu,
    keras.layers.Softmax: _softmax,
    keras.layers.ELU: _elu,
    keras.layers.LayerNormalization: _layernorm,
    keras.layers.BatchNormalization: _batchnorm,
    keras.layers.Dropout: _dropout,
    keras.layers.Flatten: _flatten,
}
"""Keras layer class -> ``(layer, input, output, dtype) -> LayerRead`` (exact classes: a
subclass may compute something else)."""
if hasattr(keras.layers, "RMSNormalization"):  # Keras >= 3.9
    READERS[keras.layers.RMSNormalization] = _rmsnorm

_REFUSED = {
    keras.layers.PReLU: "has a learned slope, which xgrad does not support; a fixed slope is "
    "keras.layers.LeakyReLU(negative_slope)",
}


def read_layer(layer, x, out, dtype: str) -> LayerRead:
    """Read one called Keras layer from its input ``x`` and output ``out`` (tensors with the
    batch axis) in a model computing in ``dtype``.

    Raises:
        AlignmentError: a class or a configuration xgrad does not read (named, with the fix).
    """
    reader = READERS.get(type(layer))
    if reader is None:
        why = _REFUSED.get(type(layer)) or (
            f"is not a layer xgrad reads; it reads Keras' {', '.join(SUPPORTED_LAYERS)} layers"
        )
        raise AlignmentError(f"{where(layer)} {why}")
    return reader(layer, x, out, dtype)
