"""The channels-last kinds in Keras: the ``conv``, ``maxpool``, ``avgpool``,
``global_avgpool`` and ``groupnorm`` entries of :data:`~xgrad.frameworks.tensorflow.kinds.KINDS`.

================  ============================================  ===============================
kind              built as / read from                          weights (Keras attributes)
================  ============================================  ===============================
``conv``          ``Conv1D`` / ``Conv2D(features, kernel,       ``kernel`` ``(*k, C/G, F)``,
                  strides, padding, dilation_rate, groups,      ``bias`` ``(F,)``; a
                  use_bias)``; read also from                   ``DepthwiseConv*D`` kernel
                  ``DepthwiseConv1D/2D(depth_multiplier=1)``    ``(*k, C, 1)`` read with the
                  (``groups = C``)                              last two axes swapped
``maxpool``       ``MaxPooling1D/2D(pool, strides, padding)``   -
``avgpool``       ``AveragePooling1D/2D(pool, strides,          -
                  padding)``
``global_         ``GlobalAveragePooling1D/2D()``               -
avgpool``
``groupnorm``     ``GroupNormalization(groups, epsilon,         ``gamma``, ``beta``
                  center, scale)``
================  ============================================  ===============================

Padding. Keras' convolutions and poolings pad ``"valid"`` (none) or ``"same"`` only, and
their ``"same"`` is xgrad's (:func:`~xgrad.layers.conv.conv_padding`: TensorFlow's ``SAME``,
the odd zero after). Other paddings are zeros added first, as a Keras model writes them:

* ``Conv`` with an int or explicit padding: ``ZeroPadding1D/2D(pads)``, then the convolution
  with ``padding="valid"``.
* ``AvgPool(count_include_pad=True)`` with any padding (``"same"`` too): ``ZeroPadding``,
  then ``AveragePooling(padding="valid")``, which divides every window by its size, padded
  zeros included: exactly the canonical ``count_include_pad=True``.
* ``AvgPool(count_include_pad=False)``: Keras' ``"same"`` divides by the real cells of each
  window (TensorFlow's ``AvgPool`` with ``SAME``); an explicit padding is built as
  ``"same"`` where it equals the ``"same"`` padding of the input, and refused otherwise.
* ``MaxPool``: Keras' ``"same"`` never lets a padded cell win (xgrad pads with ``-inf``); an
  explicit padding is built as ``"same"`` where it equals it, and refused otherwise (zeros
  from a ``ZeroPadding`` would win over negative inputs).

In a built model the ``ZeroPadding`` layer stands before its layer in the Functional graph
(:attr:`~.entry.KerasKind.wire`); evaluating, the kind's call pads with ``keras.ops.pad``
(the same zeros) and calls the layer. Reading, a ``ZeroPadding1D/2D`` directly before a
convolution or an average pooling with ``padding="valid"`` is read into it (:func:`absorb`).

Keras refuses ``strides > 1`` together with ``dilation_rate > 1``; such a Conv is refused
by name. ``GroupNormalization`` defaults to ``epsilon=1e-3``; the entry passes the layer's.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

import dataclasses

from xgrad.errors import AlignmentError, FrameworkError
from xgrad.frameworks.tensorflow.calls import activation_apart, call_apart
from xgrad.frameworks.tensorflow.entry import KerasCall, KerasKind, LayerRead, where
from xgrad.frameworks.tensorflow.ops import keras
from xgrad.layers import AvgPool, Conv, GlobalAvgPool, GroupNorm, MaxPool, Shape
from xgrad.layers.conv import conv_padding

__all__ = ["SPATIAL_KINDS", "ZERO_PADDING", "absorb", "padding_of"]

L = keras.layers

ZERO_PADDING = (L.ZeroPadding1D, L.ZeroPadding2D)
"""Keras' zero-padding layers, read into the convolution or pooling after them."""

_CONV = {1: L.Conv1D, 2: L.Conv2D}
_DEPTHWISE = {1: L.DepthwiseConv1D, 2: L.DepthwiseConv2D}
_MAX = {1: L.MaxPooling1D, 2: L.MaxPooling2D}
_AVG = {1: L.AveragePooling1D, 2: L.AveragePooling2D}
_GLOBAL = {1: L.GlobalAveragePooling1D, 2: L.GlobalAveragePooling2D}
_PAD = {1: L.ZeroPadding1D, 2: L.ZeroPadding2D}

Pads = tuple[tuple[int, int], ...]


def _spatial_rank(layer, name: str, shape: Shape) -> int:
    if len(shape) not in (2, 3):
        raise FrameworkError(
            f"layer {name} ({layer.describe()}): examples of shape {shape} are neither "
            "(length, channels) nor (height, width, channels)"
        )
    return len(shape) - 1


def _zero(pads: Pads) -> bool:
    return not any(lo or hi for lo, hi in pads)


def extra_pads(keras_layer, layer, shape: Shape) -> Pads | None:
    """The zeros to add before calling ``keras_layer`` so that it computes ``layer`` on
    examples ``shape``: ``layer``'s padding where the Keras layer pads ``"valid"`` (a
    ``ZeroPadding`` in front), ``None`` where it pads itself (``"same"``, ``"causal"``) or
    there is nothing to add."""
    if keras_layer is None or getattr(keras_layer, "padding", "valid") != "valid":
        return None
    pads = layer.window(tuple(shape)).pads
    return None if _zero(pads) else pads


def _call_windowed(c: KerasCall, a):
    """Pad ``a`` as :func:`extra_pads` says, then call the layer without the activation it
    may apply at the end of its call (read as an Activation layer after it)."""
    pads = extra_pads(c.keras_layer, c.layer, tuple(a.shape[1:]))
    if pads is not None:
        a = keras.ops.pad(a, [(0, 0), *pads, (0, 0)])
    return call_apart(c.keras_layer, c.keras_layer, (a,), {"training": False})[0]


def _wire_windowed(keras_layer, layer, h):
    """A built Functional model: ``ZeroPadding`` first where the layer pads otherwise than
    Keras does, then the layer."""
    pads = extra_pads(keras_layer, layer, tuple(h.shape[1:]))
    if pads is not None:
        pad = _PAD[len(pads)](pads[0] if len(pads) == 1 else pads, name=f"{keras_layer.name}_pad")
        h = pad(h)
    return keras_layer(h)


def _keras_padding(layer, name: str, shape: Shape, what: str) -> str:
    """``"valid"`` or ``"same"`` for a pooling whose padding Keras computes itself, else a
    FrameworkError naming the layer."""
    win = layer.window(shape)
    if _zero(win.pads):
        return "valid"
    same = conv_padding("same", shape[:-1], win.kernel, win.strides)
    if layer.padding == "same" or win.pads == same:
        return "same"
    raise FrameworkError(
        f"layer {name} ({layer.describe()}): Keras' {what} pads only 'valid' or 'same' "
        f"({same} on input {shape}), not {win.pads}; a ZeroPadding in front would {{}}. Use "
        "padding='same' or 'valid' for tensorflow".format(
            "let its zeros win over negative inputs"
            if isinstance(layer, MaxPool)
            else "count its zeros in the average (count_include_pad=True)"
        )
    )


# -- building -------------------------------------------------------------------------------------


def _build_conv(layer: Conv, name: str, dtype: str, shape: Shape):
    rank = _spatial_rank(layer, name, shape)
    win = layer.window(shape)
    if max(win.strides) > 1 and max(win.dilation) > 1:
        raise FrameworkError(
            f"layer {name} ({layer.describe()}): Keras' Conv{rank}D refuses strides > 1 "
            "together with dilation_rate > 1; use one of them per Conv for tensorflow"
        )
    return _CONV[rank](
        layer.features,
        win.kernel,
        strides=win.strides,
        padding="same" if layer.padding == "same" else "valid",
        dilation_rate=win.dilation,
        groups=layer.groups,
        use_bias=layer.use_bias,
        kernel_initializer="zeros",  # assigned next: no random draw
        name=name,
        dtype=dtype,
    )


def _build_maxpool(layer: MaxPool, name: str, dtype: str, shape: Shape):
    rank = _spatial_rank(layer, name, shape)
    padding = _keras_padding(layer, name, shape, f"MaxPooling{rank}D")
    win = layer.window(shape)
    return _MAX[rank](win.kernel, win.strides, padding, name=name, dtype=dtype)


def _build_avgpool(layer: AvgPool, name: str, dtype: str, shape: Shape):
    rank = _spatial_rank(layer, name, shape)
    win = layer.window(shape)
    if layer.count_include_pad:  # zeros first (wired / called), then every window / its size
        padding = "valid"
    else:
        padding = _keras_padding(layer, name, shape, f"AveragePooling{rank}D")
    return _AVG[rank](win.kernel, win.strides, padding, name=name, dtype=dtype)


def _build_global(layer: GlobalAvgPool, name: str, dtype: str, shape: Shape):
    return _GLOBAL[_spatial_rank(layer, name, shape)](name=name, dtype=dtype)


def _build_groupnorm(layer: GroupNorm, name: str, dtype: str, shape: Shape):
    return L.GroupNormalization(
        layer.groups,
        axis=-1,
        epsilon=layer.epsilon,
        center=layer.use_bias,
        scale=layer.use_scale,
        name=name,
        dtype=dtype,
    )


# -- reading --------------------------------------------------------------------------------------


def _channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise AlignmentError(
            f"{where(layer)} has data_format={layer.data_format!r}; xgrad reads channels_last "
            "layers (Keras' default): build the model channels_last and pass layout= to "
            "compare it against a channels-first one"
        )


def _read_conv(layer, x, out, dtype) -> LayerRead:
    _channels_last(layer)
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        raise AlignmentError(
            f"{where(layer)} is quantized or has LoRA enabled; xgrad reads a "
            "plain kernel (merge the LoRA weights into it first)"
        )
    padding = layer.padding
    if padding == "causal":  # Conv1D: d * (k - 1) zeros before, none after
        padding = ((layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0),)
    config = Conv(
        layer.filters,
        tuple(layer.kernel_size),
        tuple(layer.strides),
        padding,
        tuple(layer.dilation_rate),
        layer.groups,
        layer.use_bias,
    )
    return LayerRead(
        "conv", _squeeze(config), config.param_names(), activation=activation_apart(layer)
    )


def _squeeze(config: Conv) -> Conv:
    """Sizes equal on every axis given as one int, as a spec writes them."""
    fields = {}
    for f in ("kernel", "strides", "dilation"):
        value = getattr(config, f)
        if isinstance(value, tuple) and len(set(value)) == 1:
            fields[f] = value[0]
    return dataclasses.replace(config, **fields)


def _read_depthwise(layer, x, out, dtype) -> LayerRead:
    _channels_last(layer)
    if layer.depth_multiplier != 1:
        raise AlignmentError(
            f"{where(layer)} has depth_multiplier={layer.depth_multiplier}; xgrad reads "
            "DepthwiseConv with depth_multiplier=1 (a Conv with groups = channels)"
        )
    channels = int(x.shape[-1])
    rank = len(layer.kernel_size)
    config = Conv(
        channels,
        tuple(layer.kernel_size),
        tuple(layer.strides),
        layer.padding,
        tuple(layer.dilation_rate),
        channels,
        layer.use_bias,
    )
    # Keras (*k, C, 1) is the canonical (*k, 1, C) with its last two axes swapped
    layout = (*range(rank), rank + 1, rank)
    return LayerRead(
        "conv",
        _squeeze(config),
        config.param_names(),
        layouts={"kernel": layout},
        activation=activation_apart(layer),
    )


def _pool_fields(layer) -> tuple:
    _channels_last(layer)
    return tuple(layer.pool_size), tuple(layer.strides), layer.padding


def _read_maxpool(layer, x, out, dtype) -> LayerRead:
    pool, strides, padding = _pool_fields(layer)
    return LayerRead("maxpool", _squeeze_pool(MaxPool(pool, strides, padding)))


def _read_avgpool(layer, x, out, dtype) -> LayerRead:
    pool, strides, padding = _pool_fields(layer)
    return LayerRead("avgpool", _squeeze_pool(AvgPool(pool, strides, padding)))


def _squeeze_pool(config):
    fields = {}
    for f in ("pool", "strides"):
        value = getattr(config, f)
        if isinstance(value, tuple) and len(set(value)) == 1:
            fields[f] = value[0]
    return dataclasses.replace(config, **fields)


def _read_global(layer, x, out, dtype) -> LayerRead:
    _channels_last(layer)
    if layer.keepdims:
        raise AlignmentError(
            f"{where(layer)} has keepdims=True; xgrad reads GlobalAveragePooling with "
            "keepdims=False (output (channels,))"
        )
    return LayerRead("global_avgpool", GlobalAvgPool())


def _read_groupnorm(layer, x, out, dtype) -> LayerRead:
    if layer.axis not in (-1, len(x.shape) - 1):
        raise AlignmentError(
            f"{where(layer)} normalises axis {layer.axis}; xgrad reads GroupNormalization "
            "over the channels, the last axis (axis=-1)"
        )
    groups = int(x.shape[-1]) if layer.groups == -1 else layer.groups
    config = GroupNorm(groups, layer.epsilon, use_scale=layer.scale, use_bias=layer.center)
    return LayerRead("groupnorm", config, config.param_names())


def padding_of(layer) -> Pads | None:
    """The ``(lo, hi)`` zeros per spatial axis a ``ZeroPadding1D/2D`` adds (refusing
    channels_first), ``None`` for another layer."""
    if type(layer) not in ZERO_PADDING:
        return None
    _channels_last(layer)
    pads = layer.padding
    if type(layer) is L.ZeroPadding1D:
        return ((int(pads[0]), int(pads[1])),)
    return tuple((int(lo), int(hi)) for lo, hi in pads)


def absorb(pad_layer, read: LayerRead, layer) -> LayerRead:
    """``read`` (of ``layer``, called on the output of ``pad_layer``, a ``ZeroPadding``) with
    the padding read into it: a convolution's explicit padding; an average pooling's, with
    ``count_include_pad=True`` (its zeros are averaged).

    Raises:
        AlignmentError: the layer after the padding is neither, or pads itself.
    """
    pads = padding_of(pad_layer)
    if read.kind in ("conv", "avgpool") and getattr(layer, "padding", None) == "valid":
        fields = {"padding": pads}
        if read.kind == "avgpool":
            fields["count_include_pad"] = True
        return dataclasses.replace(read, config=dataclasses.replace(read.config, **fields))
    raise AlignmentError(
        f"{where(pad_layer)} pads the input of {where(layer)}; xgrad reads a ZeroPadding1D/2D "
        "only directly before a Conv, DepthwiseConv or AveragePooling with padding='valid' "
        "(read as its explicit padding)"
    )


# -- the table ------------------------------------------------------------------------------------

SPATIAL_KINDS: dict[str, KerasKind] = {
    "conv": KerasKind(
        _build_conv,
        weights={"kernel": "kernel", "bias": "bias"},
        call=_call_windowed,
        wire=_wire_windowed,
        shaped=True,
        reads={
            **dict.fromkeys(_CONV.values(), _read_conv),
            **dict.fromkeys(_DEPTHWISE.values(), _read_depthwise),
        },
    ),
    "maxpool": KerasKind(
        _build_maxpool,
        call=_call_windowed,
        wire=_wire_windowed,
        shaped=True,
        reads=dict.fromkeys(_MAX.values(), _read_maxpool),
    ),
    "avgpool": KerasKind(
        _build_avgpool,
        call=_call_windowed,
        wire=_wire_windowed,
        shaped=True,
        reads=dict.fromkeys(_AVG.values(), _read_avgpool),
    ),
    "global_avgpool": KerasKind(
        _build_global, shaped=True, reads=dict.fromkeys(_GLOBAL.values(), _read_global)
    ),
    "groupnorm": KerasKind(
        _build_groupnorm,
        weights={"scale": "gamma", "bias": "beta"},
        shaped=True,
        reads={L.GroupNormalization: _read_groupnorm},
    ),
}
"""The entries of the channels-last kinds, merged into :data:`.kinds.KINDS`."""
