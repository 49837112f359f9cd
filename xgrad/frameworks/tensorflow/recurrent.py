"""The recurrent kinds in Keras: the ``lstm`` and ``gru`` entries of
:data:`~xgrad.frameworks.tensorflow.kinds.KINDS`.

========  =========================================  ========================================
kind      built as / read from                       weights (Keras attributes)
========  =========================================  ========================================
``lstm``  ``keras.layers.LSTM(units,                 ``cell.kernel`` ``(features, 4u)``,
          return_sequences)``                        ``cell.recurrent_kernel`` ``(u, 4u)``,
                                                     ``cell.bias`` ``(4u,)``; gates i, f, c, o
``gru``   ``keras.layers.GRU(units,                  ``cell.kernel`` ``(features, 3u)``,
          return_sequences, reset_after)``           ``cell.recurrent_kernel`` ``(u, 3u)``,
                                                     ``cell.bias`` ``(2, 3u)`` (row 0 input,
                                                     row 1 recurrent) with ``reset_after``,
                                                     else ``(3u,)``; gates z, r, h
========  =========================================  ========================================

Keras' layouts and gate orders are xgrad's canonical ones (verified in Keras 3.15's
``keras/src/layers/rnn/lstm.py`` and ``gru.py``: ``GRUCell.call`` splits ``bias`` into the
input row and the recurrent row, and ``z, r, h`` along the last axis), so no weight is
permuted. The input is batch-first ``(batch, time, features)``, the initial state zeros, the
activation ``tanh`` and the recurrent activation ``sigmoid`` (the logistic: Keras 3's
default). Initializers (``unit_forget_bias`` included) play no part: the weights are written.

Reading refuses, by name, what would compute otherwise than the kind: ``return_state``,
``go_backwards``, ``stateful``, ``use_bias=False``, another ``activation`` or
``recurrent_activation``, and ``dropout`` / ``recurrent_dropout`` above 0 (active in
training). ``unroll``, ``implementation`` and ``use_cudnn`` change how Keras computes, not
what: they are read as they are. ``Bidirectional`` wrappers are not read.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

from xgrad.errors import AlignmentError
from xgrad.frameworks.tensorflow.entry import KerasKind, LayerRead, where
from xgrad.frameworks.tensorflow.ops import keras
from xgrad.layers import GRU, LSTM

__all__ = ["RECURRENT_KINDS"]

_ZEROS = {
    "kernel_initializer": "zeros",  # assigned next: no random draw
    "recurrent_initializer": "zeros",
    "bias_initializer": "zeros",
}


def _build_lstm(layer: LSTM, name: str, dtype: str):
    return keras.layers.LSTM(
        layer.units,
        activation="tanh",
        recurrent_activation="sigmoid",
        return_sequences=layer.return_sequences,
        unit_forget_bias=False,
        name=name,
        dtype=dtype,
        **_ZEROS,
    )


def _build_gru(layer: GRU, name: str, dtype: str):
    return keras.layers.GRU(
        layer.units,
        activation="tanh",
        recurrent_activation="sigmoid",
        return_sequences=layer.return_sequences,
        reset_after=layer.reset_after,
        name=name,
        dtype=dtype,
        **_ZEROS,
    )


def _check_recurrent(layer, x) -> None:
    """Refuse a configuration that computes otherwise than xgrad's LSTM / GRU."""
    if len(x.shape) != 3:
        raise AlignmentError(
            f"{where(layer)} is applied to examples of shape {tuple(x.shape[1:])}; xgrad reads "
            "recurrent layers over (batch, time, features)"
        )
    flags = {
        "return_state": "returns its states too (a list)",
        "go_backwards": "runs the sequence backwards",
        "stateful": "carries its state from batch to batch",
    }
    for attribute, what in flags.items():
        if getattr(layer, attribute, False):
            raise AlignmentError(
                f"{where(layer)} has {attribute}=True: it {what}; xgrad reads "
                f"{type(layer).__name__}({attribute}=False)"
            )
    if not layer.cell.use_bias:
        raise AlignmentError(
            f"{where(layer)} has use_bias=False; xgrad's {type(layer).__name__} has a bias "
            "(read use_bias=True with a zero bias)"
        )
    for attribute, want in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        fn = getattr(layer.cell, attribute)
        if fn is not getattr(keras.activations, want):
            label = getattr(fn, "__name__", type(fn).__name__)
            raise AlignmentError(
                f"{where(layer)} has {attribute}={label}; xgrad reads {attribute}={want!r}"
            )
    for attribute in ("dropout", "recurrent_dropout"):
        rate = float(getattr(layer.cell, attribute))
        if rate > 0:
            raise AlignmentError(
                f"{where(layer)} has {attribute}={rate}, a random mask inside the recurrence "
                f"in training, which xgrad does not compute; read it with {attribute}=0"
            )


def _read_lstm(layer, x, out, dtype) -> LayerRead:
    _check_recurrent(layer, x)
    config = LSTM(layer.units, return_sequences=layer.return_sequences)
    return LayerRead("lstm", config, config.param_names())


def _read_gru(layer, x, out, dtype) -> LayerRead:
    _check_recurrent(layer, x)
    config = GRU(
        layer.units, return_sequences=layer.return_sequences, reset_after=layer.reset_after
    )
    return LayerRead("gru", config, config.param_names())


_CELL_WEIGHTS = {name: f"cell.{name}" for name in ("kernel", "recurrent_kernel", "bias")}

RECURRENT_KINDS: dict[str, KerasKind] = {
    "lstm": KerasKind(_build_lstm, weights=_CELL_WEIGHTS, reads={keras.layers.LSTM: _read_lstm}),
    "gru": KerasKind(_build_gru, weights=_CELL_WEIGHTS, reads={keras.layers.GRU: _read_gru}),
}
"""The entries of the recurrent kinds, merged into :data:`.kinds.KINDS`."""
