"""Every layer kind in Keras, in one table: how Keras builds it, where its weights live, how
the runner calls it, and which of Keras' layer classes are read back as it.

==============  ============================================  ==================================
kind            built as / read from                          weights (Keras attributes)
==============  ============================================  ==================================
``dense``       ``Dense(units, activation, use_bias)``        ``kernel`` ``(in, out)``,
                                                              ``bias``
``activation``  ``Activation(activation)`` / and ``ReLU``,    -
                ``LeakyReLU``, ``Softmax``, ``ELU``
``layernorm``   ``LayerNormalization(epsilon, center,         ``gamma``, ``beta``
                scale)``
``rmsnorm``     ``RMSNormalization(epsilon)``                 ``scale``
``batchnorm``   ``BatchNormalization(epsilon, momentum,       ``gamma``, ``beta``; state
                ...)``                                        ``moving_mean``,
                                                              ``moving_variance``
``dropout``     ``Dropout(rate)`` (xgrad applies its own      -
                mask)
``flatten``     ``Flatten()``                                 -
``residual``    its layers, then ``Add()([x, block(x)])``     those of its layers
``embedding``   ``Embedding(vocab, dim)``, or xgrad's own     ``embeddings`` ``(vocab, dim)``
                (:mod:`.transformer`)
``attention``   ``MultiHeadAttention`` /                      kernels ``(dim, heads, hd)``,
                ``GroupQueryAttention``, or xgrad's own       ``(heads, hd, dim)``
``gated_mlp``   xgrad's own ``XgradGatedMLP``                 canonical names
``conv``        ``Conv1D/2D`` (explicit padding:              ``kernel`` ``(*k, C/G, F)``,
                ``ZeroPadding`` first); read also from        ``bias``
                ``DepthwiseConv1D/2D``
``maxpool``,    ``MaxPooling1D/2D``, ``AveragePooling1D/2D``  -
``avgpool``     (``count_include_pad=True``: ``ZeroPadding``
                first)
``global_       ``GlobalAveragePooling1D/2D``                 -
avgpool``
``groupnorm``   ``GroupNormalization(groups, epsilon)``       ``gamma``, ``beta``
``lstm``,       ``LSTM(units)``, ``GRU(units, reset_after)``  ``cell.kernel``,
``gru``                                                       ``cell.recurrent_kernel``,
                                                              ``cell.bias``
==============  ============================================  ==================================

The transformer kinds' entries live in :mod:`.transformer` (which Keras layer computes which
configuration, and why), the channels-last kinds' in :mod:`.spatial` (which paddings Keras
computes, and how the others are built or refused), the recurrent kinds' in :mod:`.recurrent`,
xgrad's own Keras layers in :mod:`.keras_layers`, the entry types in :mod:`.entry`.

Keras stores every weight in xgrad's canonical layout (a ``Dense`` kernel is ``(in, out)``),
so no entry states a :data:`~xgrad.frameworks.kinds.Layout`; a kind whose Keras layer keeps a
weight in another axis order says so in its entry's ``layouts``, and the models permute it.

Reading: each Keras class is read by its entry's reader, keyed by the exact class (a subclass
may compute something else). Configuration comes from the layer's own attributes (epsilon,
momentum, center, scale, the ReLU family's slopes); an activation given as one of Keras'
functions is named by :func:`keras_activation_name`, one given as a Python function is
identified from its recorded values (:func:`xgrad.identify.fit_activation`), or left unknown
(``config=None``). ``Add`` layers close residual blocks, which the reader finds from values
(:mod:`.reader`).

A new kind is one more entry of :data:`KINDS` (:class:`KerasKind`); see docs/design.md.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

import numpy as np

from xgrad.errors import AlignmentError, FrameworkError
from xgrad.frameworks.kinds import KindTable
from xgrad.frameworks.tensorflow.entry import (
    KerasCall,
    KerasKind,
    LayerRead,
    call_layer,
    keras_weight,
    where,
)
from xgrad.frameworks.tensorflow.ops import XgradActivation, keras, tf_activation
from xgrad.frameworks.tensorflow.recurrent import RECURRENT_KINDS
from xgrad.frameworks.tensorflow.spatial import SPATIAL_KINDS, ZERO_PADDING
from xgrad.frameworks.tensorflow.transformer import TRANSFORMER_KINDS
from xgrad.identify import fit_activation, probe_activation
from xgrad.layers import (
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
    "KINDS",
    "KerasCall",
    "BATCHNORM_NOTE",
    "DROPOUT_NOTE",
    "KerasKind",
    "LayerRead",
    "call_layer",
    "keras_weight",
    "keras_activation_name",
    "name_activation",
    "read_layer",
    "reading_kind",
    "supported_layers",
    "where",
]


# -- activations ----------------------------------------------------------------------------------

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


# Keras names that stand for several forms: keras.ops.gelu computes the tanh form by default,
# keras.activations.gelu the exact one, and both serialize as "gelu". Such a function is named
# from its values on a probe (xgrad.identify.probe_activation), never from the name.
_PROBED = {"gelu": ("gelu", "gelu_tanh")}


def keras_activation_name(fn) -> str | None:
    """xgrad's name of one of Keras' own activation functions, else ``None`` (a user's
    function, a lambda, a ``functools.partial``, or an activation xgrad does not define);
    xgrad's own :class:`~xgrad.frameworks.tensorflow.ops.XgradActivation` by its name. A
    name that stands for several forms (``gelu``) is settled by the function's values."""
    if isinstance(fn, XgradActivation):
        return fn.name
    if not (getattr(fn, "__module__", None) or "").startswith("keras"):
        return None
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return None
    name = _KERAS_TO_XGRAD.get(name) if isinstance(name, str) else None
    if name in _PROBED:
        probed = probe_activation(fn)
        return probed if probed in _PROBED[name] else None
    return name


def name_activation(fn, z: np.ndarray, a: np.ndarray, dtype: str) -> tuple[str | None, str | None]:
    """``(xgrad name or None, note)`` of an activation function applied as ``a = fn(z)``:
    by its Keras name, else from its values."""
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


def _call_activation(c: KerasCall, a):
    if c.keras_layer is None:  # an activation function called in a user's call()
        return tf_activation(c.layer.act)(a)
    return call_layer(c, a)


def _read_activation_layer(layer, x, out, dtype) -> LayerRead:
    name, note = name_activation(layer.activation, np.asarray(x), np.asarray(out), dtype)
    return LayerRead("activation", None if name is None else Activation(name), note=note)


def _read_relu(layer, x, out, dtype) -> LayerRead:
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


def _read_leaky_relu(layer, x, out, dtype) -> LayerRead:
    return LayerRead("activation", Activation(f"leaky_relu:{float(layer.negative_slope)!r}"))


def _read_softmax(layer, x, out, dtype) -> LayerRead:
    if layer.axis not in (-1, [-1], len(x.shape) - 1):
        raise AlignmentError(
            f"{where(layer)} has axis {layer.axis}; xgrad's softmax is over the last axis"
        )
    return LayerRead("activation", Activation("softmax"))


def _read_elu(layer, x, out, dtype) -> LayerRead:
    if float(layer.alpha) != 1.0:
        raise AlignmentError(f"{where(layer)} has alpha={layer.alpha}; xgrad's elu has alpha 1")
    return LayerRead("activation", Activation("elu"))


# -- dense ----------------------------------------------------------------------------------------


def _build_dense(layer: Dense, name: str, dtype: str):
    return keras.layers.Dense(
        layer.units,
        activation=tf_activation(layer.act),
        use_bias=layer.use_bias,
        kernel_initializer="zeros",  # assigned next: no random draw
        name=name,
        dtype=dtype,
    )


def _read_dense(layer, x, out, dtype) -> LayerRead:
    # token-wise: examples (tokens, d) read as the vectors of their last axis
    x = np.asarray(x).astype(np.float64)
    z = x.reshape(-1, x.shape[-1]) @ np.asarray(layer.kernel).astype(np.float64)
    if layer.use_bias:
        z = z + np.asarray(layer.bias).astype(np.float64)
    out = np.asarray(out)
    name, note = name_activation(layer.activation, z, out.reshape(-1, out.shape[-1]), dtype)
    config = None if name is None else Dense(layer.units, name, layer.use_bias)
    params = ("kernel", "bias") if layer.use_bias else ("kernel",)
    return LayerRead("dense", config, params, note=note)


# -- norms ----------------------------------------------------------------------------------------


def _last_axis(layer, shape: Shape) -> None:
    """Refuse a normalisation over another axis than the last (the features or channels)."""
    axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
    if axes not in ([-1], [len(shape)]):
        raise AlignmentError(
            f"{where(layer)} normalises axis {layer.axis} of examples of shape {shape}; xgrad "
            "reads normalisations over the last axis of examples (axis=-1: channels last)"
        )


def _build_layernorm(layer: LayerNorm, name: str, dtype: str):
    return keras.layers.LayerNormalization(
        epsilon=layer.epsilon, center=layer.center, scale=layer.scale, name=name, dtype=dtype
    )


def _read_layernorm(layer, x, out, dtype) -> LayerRead:
    _last_axis(layer, tuple(x.shape[1:]))
    if layer.rms_scaling:
        raise AlignmentError(
            f"{where(layer)} has rms_scaling=True, which divides by the root of the variance "
            "without centring; that is neither xgrad's LayerNorm nor its RMSNorm (use "
            "keras.layers.RMSNormalization)"
        )
    config = LayerNorm(layer.epsilon, layer.center, layer.scale)
    return LayerRead("layernorm", config, config.param_names())


def _build_rmsnorm(layer: RMSNorm, name: str, dtype: str):
    if not layer.scale:
        raise FrameworkError(
            f"layer {name} ({layer.describe()}): Keras' RMSNormalization always has a "
            "learned scale; xgrad cannot build RMSNorm(scale=False) in tensorflow "
            "(use RMSNorm(scale=True) with a scale of ones)"
        )
    if not hasattr(keras.layers, "RMSNormalization"):
        raise FrameworkError(
            f"layer {name} ({layer.describe()}): Keras {keras.__version__} has no "
            "RMSNormalization layer; upgrade Keras (3.9 or later)"
        )
    return keras.layers.RMSNormalization(epsilon=layer.epsilon, name=name, dtype=dtype)


def _read_rmsnorm(layer, x, out, dtype) -> LayerRead:
    _last_axis(layer, tuple(x.shape[1:]))
    return LayerRead("rmsnorm", RMSNorm(layer.epsilon), ("scale",))


def _build_batchnorm(layer: BatchNorm, name: str, dtype: str):
    return keras.layers.BatchNormalization(
        epsilon=layer.epsilon,
        momentum=layer.momentum,
        center=layer.center,
        scale=layer.scale,
        name=name,
        dtype=dtype,
    )


def _read_batchnorm(layer, x, out, dtype) -> LayerRead:
    # channels last: statistics over the batch and every other axis, as the kind's
    _last_axis(layer, tuple(x.shape[1:]))
    if layer.renorm:
        raise AlignmentError(
            f"{where(layer)} uses batch renormalisation, which xgrad does not read"
        )
    # read in inference mode (moving statistics): how the model computes when called
    config = BatchNorm(layer.epsilon, layer.momentum, False, layer.center, layer.scale)
    return LayerRead("batchnorm", config, config.param_names(), config.state_names())


# -- dropout, flatten, residual -------------------------------------------------------------------


def _draw_dropout(layer: Dropout, path: str, shape: Shape, dtype: str) -> np.ndarray | None:
    return layer.scaled_mask(path, shape, dtype) if layer.active else None


def _call_dropout(c: KerasCall, a):
    # xgrad's mask, never a Keras random one; inactive (nothing drawn): the identity
    return a if c.drawn is None else a * c.drawn


def _read_dropout(layer, x, out, dtype) -> LayerRead:
    return LayerRead("dropout", Dropout(float(layer.rate)))  # inference mode: the identity


def _read_flatten(layer, x, out, dtype) -> LayerRead:
    if layer.data_format == "channels_first" and len(x.shape) > 2:
        raise AlignmentError(f"{where(layer)} flattens channels_first; xgrad reads channels_last")
    return LayerRead("flatten", Flatten())


def _call_residual(c: KerasCall, a):
    inner = c.run(a)
    return a + inner if c.keras_layer is None else c.keras_layer([a, inner])


# -- the table ------------------------------------------------------------------------------------

_NORM_WEIGHTS = {"scale": "gamma", "bias": "beta"}

KINDS: KindTable[KerasKind] = KindTable(
    "tensorflow",
    {
        "dense": KerasKind(
            _build_dense,
            weights={"kernel": "kernel", "bias": "bias"},
            reads={keras.layers.Dense: _read_dense},
        ),
        "activation": KerasKind(
            lambda layer, name, dtype: keras.layers.Activation(
                tf_activation(layer.act), name=name, dtype=dtype
            ),
            call=_call_activation,
            reads={
                keras.layers.Activation: _read_activation_layer,
                keras.layers.ReLU: _read_relu,
                keras.layers.LeakyReLU: _read_leaky_relu,
                keras.layers.Softmax: _read_softmax,
                keras.layers.ELU: _read_elu,
            },
        ),
        "layernorm": KerasKind(
            _build_layernorm,
            weights=_NORM_WEIGHTS,
            reads={keras.layers.LayerNormalization: _read_layernorm},
        ),
        "rmsnorm": KerasKind(
            _build_rmsnorm,
            weights={"scale": "scale"},
            reads=(
                {keras.layers.RMSNormalization: _read_rmsnorm}
                if hasattr(keras.layers, "RMSNormalization")  # Keras >= 3.9
                else {}
            ),
        ),
        "batchnorm": KerasKind(
            _build_batchnorm,
            weights={**_NORM_WEIGHTS, "mean": "moving_mean", "var": "moving_variance"},
            reads={keras.layers.BatchNormalization: _read_batchnorm},
        ),
        "dropout": KerasKind(
            lambda layer, name, dtype: keras.layers.Dropout(layer.rate, name=name, dtype=dtype),
            call=_call_dropout,
            draw=_draw_dropout,
            reads={keras.layers.Dropout: _read_dropout},
        ),
        "flatten": KerasKind(
            lambda layer, name, dtype: keras.layers.Flatten(name=name, dtype=dtype),
            reads={keras.layers.Flatten: _read_flatten},
        ),
        "residual": KerasKind(
            lambda layer, name, dtype: keras.layers.Add(name=name, dtype=dtype),
            call=_call_residual,
        ),
        **TRANSFORMER_KINDS,
        **SPATIAL_KINDS,
        **RECURRENT_KINDS,
    },
    entry_type=KerasKind,
)
"""Layer kind -> its :class:`KerasKind`: the one place Keras' form of each kind lives."""


# -- reading --------------------------------------------------------------------------------------

DROPOUT_NOTE = (
    "training mode: this Dropout zeroes a new random set of units on every call, so nothing "
    "compares; call the model with training=False (and pass no training=True to the layer "
    "in call) before comparing"
)
"""The note on a ``Dropout`` called with ``training=True`` (a model read module by module)."""

BATCHNORM_NOTE = (
    "training mode: normalises by the batch statistics and updates moving_mean and "
    "moving_variance; call the model with training=False (and pass no training=True to the "
    "layer in call) to use the moving statistics"
)
"""The note on a ``BatchNormalization`` called with ``training=True``."""

_REFUSED = {
    keras.layers.PReLU: "has a learned slope, which xgrad does not support; a fixed slope is "
    "keras.layers.LeakyReLU(negative_slope)",
}


def supported_layers() -> tuple[str, ...]:
    """The names of the Keras layer classes xgrad reads (exactly these classes, not
    subclasses of them): those of :data:`KINDS`' readers, ``Add``, ``InputLayer`` and
    ``ZeroPadding1D/2D`` (read into the convolution or pooling after it)."""
    names = [cls.__name__ for _, entry in KINDS.items() for cls in entry.reads]
    return (*names, "Add", "InputLayer", *(cls.__name__ for cls in ZERO_PADDING))


def reading_kind(layer) -> str | None:
    """The kind whose entry reads ``layer``'s exact class (:attr:`KerasKind.reads`), else
    ``None``."""
    for kind, entry in KINDS.items():
        if type(layer) in entry.reads:
            return kind
    return None


def read_layer(layer, x, out, dtype: str) -> LayerRead:
    """Read one called Keras layer from its input ``x`` and output ``out`` (tensors with the
    batch axis) in a model computing in ``dtype``, by the reader of its exact class in
    :data:`KINDS`.

    Raises:
        AlignmentError: a class or a configuration xgrad does not read (named, with the fix).
    """
    for _, entry in KINDS.items():
        reader = entry.reads.get(type(layer))
        if reader is not None:
            return reader(layer, x, out, dtype)
    why = _REFUSED.get(type(layer)) or (
        f"is not a layer xgrad reads; it reads Keras' {', '.join(supported_layers())} layers"
    )
    raise AlignmentError(f"{where(layer)} {why}")
