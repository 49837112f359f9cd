"""The form of one entry of the Keras kind table (:data:`.kinds.KINDS`): how Keras builds,
calls and reads one layer kind (:class:`KerasKind`), what reading a layer gives
(:class:`LayerRead`), and how a model calls a layer (:class:`KerasCall`).

Importing this module imports no framework.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from xgrad.frameworks.kinds import Layout
from xgrad.layers import AbstractLayer, Shape

__all__ = ["KerasCall", "KerasKind", "LayerRead", "call_layer", "keras_weight", "where"]


# -- the entry -------------------------------------------------------------------------------------


@dataclass
class LayerRead:
    """What one Keras layer is in xgrad's terms.

    Attributes:
        kind: a layer kind of :data:`.kinds.KINDS`.
        config: the xgrad layer it computes, ``None`` when its activation is unknown.
        params: the local names of its trainable weights, held by the Keras attributes its
            kind's entry names (:attr:`KerasKind.weights`).
        state: the local names of its state (no gradient), likewise.
        note: what the reader noticed (an activation identified by its values, ...).
        layouts: local name -> the layout this layer stores the weight in, where it is not
            the entry's (:attr:`KerasKind.layouts`): a ``DepthwiseConv2D`` kernel
            ``(kh, kw, C, 1)`` read as a grouped Conv's ``(kh, kw, 1, C)``.
        activation: the function the Keras layer applies at the end of its call, outside
            the kind (a ``Conv2D(activation="relu")``; ``None``: none): read as an
            Activation layer after it, the kind's call running the layer without it.
    """

    kind: str
    config: AbstractLayer | None
    params: tuple[str, ...] = ()
    state: tuple[str, ...] = ()
    note: str | None = None
    layouts: Mapping[str, Layout] | None = None
    activation: Callable | None = None


class KerasCall(NamedTuple):
    """One layer as :attr:`KerasKind.call` gets it.

    Attributes:
        keras_layer: the Keras layer computing its output (``None``: an activation written as
            code in a user's ``call``, or ``x + block(x)`` written as ``+``).
        layer: its xgrad configuration (``None`` when a reader could not name it).
        drawn: what :attr:`KerasKind.draw` drew for this evaluation (``None``: nothing).
        run: calls the layers nested in it (a residual block's) on a value, recording their
            outputs as every other layer's (for a layer without children: the identity).
    """

    keras_layer: object
    layer: AbstractLayer | None
    drawn: object = None
    run: Callable = lambda a: a


def call_layer(c: KerasCall, a):
    """The default :attr:`KerasKind.call`: ``keras_layer(a, training=...)``, in training mode
    only for a layer that updates its state (BatchNorm with ``training=True``: Keras then
    normalises by the batch statistics and assigns the new moving statistics)."""
    training = c.layer is not None and c.layer.updates_state
    return c.keras_layer(a, training=training)


@dataclass(frozen=True)
class KerasKind:
    """How Keras builds, calls and reads one layer kind: the kind's entry in
    :data:`.kinds.KINDS`.

    Attributes:
        build: ``(layer, name, dtype) -> keras.layers.Layer``: the Keras layer computing
            ``layer``, named ``name`` (``dense_2``), in ``dtype`` (weights are assigned once
            the model is built, so it need draw none). A layer with children (a residual
            block) builds the layer that joins them to its input (``Add``).
        weights: local name -> the attribute of the Keras layer holding that weight (a
            ``Dense``'s ``kernel``, a ``BatchNormalization``'s ``moving_variance``).
        layouts: local name -> the layout Keras stores it in, for those not canonical
            (:mod:`xgrad.frameworks.kinds`).
        call: ``(KerasCall, a) -> output`` where calling the Keras layer on ``a`` is not
            what xgrad's layer computes (an active Dropout multiplies by xgrad's mask); also
            how a layer with children is wired into a built model. Default:
            :func:`call_layer`.
        draw: ``(layer, path, shape, dtype) -> array or None``: values drawn once per
            evaluation, outside the traced step, for a batch of ``shape`` (an active
            Dropout's scaled mask); :attr:`KerasCall.drawn` holds them as a tensor.
        reads: Keras layer class (exact) -> ``(layer, x, out, dtype) -> LayerRead``: how a
            called layer of that class is read, from its input and output (tensors with the
            batch axis) in a model computing in ``dtype``.
        weights_of: Keras layer class (exact) -> its own ``weights`` mapping, for a class
            that holds the kind's weights elsewhere than the layer :attr:`build` makes (a
            ``MultiHeadAttention``'s ``query_kernel`` is ``_query_dense.kernel``).
        wire: ``(keras_layer, layer, h) -> output``: how a built Functional model calls the
            Keras layer on the symbolic value ``h`` when that is not ``keras_layer(h)``
            (attention: ``mha(h, h, use_causal_mask=...)``); a spec holding such a layer is
            built as a Functional model. ``None``: ``keras_layer(h)``.
        shaped: whether :attr:`build` takes a fourth argument, the shape of one example of
            the layer's input (a Conv builds ``Conv1D`` or ``Conv2D`` from its rank).
    """

    build: Callable[[AbstractLayer, str, str], object]
    weights: Mapping[str, str] = field(default_factory=dict)
    layouts: Mapping[str, Layout] = field(default_factory=dict)
    call: Callable = call_layer
    draw: Callable[[AbstractLayer, str, Shape, str], np.ndarray | None] | None = None
    reads: Mapping[type, Callable[..., LayerRead]] = field(default_factory=dict)
    weights_of: Mapping[type, Mapping[str, str]] = field(default_factory=dict)
    wire: Callable | None = None
    shaped: bool = False


def keras_weight(entry: KerasKind, keras_layer, local: str):
    """The Keras variable holding the weight ``local`` of ``keras_layer``, a layer of the kind
    of ``entry``: the attribute its class's mapping names (:attr:`KerasKind.weights_of`, else
    :attr:`KerasKind.weights`), a dotted path followed attribute by attribute
    (``_query_dense.kernel``); ``None`` when the mapping or the layer has no such name."""
    attribute = entry.weights_of.get(type(keras_layer), entry.weights).get(local)
    if attribute is None:
        return None
    value = keras_layer
    for part in attribute.split("."):
        value = getattr(value, part, None)
    return value


def where(layer) -> str:
    """``layer 'dense_1' (Dense)``: how error messages name a Keras layer."""
    return f"layer {layer.name!r} ({type(layer).__name__})"
