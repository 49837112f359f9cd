"""A fresh (unrelated) torch port of a Keras GRU/LSTM text model compared with
``transfer=True`` (issue 22): the values cannot show the gate order or the bias sum, so the
recurrent arrays pair through the frameworks' documented layouts (torch GRU r, z, n and two
biases; Keras z, r, h and a ``(2, 3u)`` bias; LSTM i, f, g, o = i, f, c, o, torch's two
biases summed) and a note says so. Expected arrays are derived by hand from Keras' weights
(column blocks reordered, transposed), not by xgrad. A torch port that copied Keras' blocks in
Keras' own order is still paired by its values and named lstm-gate-order. Tiny sizes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "tensorflow"} <= INSTALLED, reason="torch and tensorflow are needed"
)

V, D, U, T, B, C = 20, 8, 6, 5, 2, 3
KERAS_TO_TORCH = {"gru": (1, 0, 2), "lstm": (0, 1, 2, 3)}  # torch block i = Keras block o[i]


def _torch(cell: str):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.rnn = (nn.GRU if cell == "gru" else nn.LSTM)(D, U, batch_first=True)
            self.fc = nn.Linear(U, C)

        def forward(self, ids):
            out, _ = self.rnn(self.embed(ids))
            return self.fc(out[:, -1])

    torch.manual_seed(3)
    return Net()


def _keras(cell: str):
    from xgrad.frameworks.tensorflow.ops import keras

    layer = keras.layers.GRU if cell == "gru" else keras.layers.LSTM
    return keras.Sequential(
        [
            keras.Input((T,), dtype="int32"),
            keras.layers.Embedding(V, D),
            layer(U),
            keras.layers.Dense(C),
        ]
    )


def _cols(a, order):
    pieces = np.split(np.asarray(a), len(order), axis=-1)
    return np.concatenate([pieces[i] for i in order], axis=-1)


def _expected_torch(k, cell):
    """Keras' recurrent arrays as torch's, derived by hand."""
    kernel, recurrent, bias = k.layers[1].get_weights()
    order = KERAS_TO_TORCH[cell]
    out = {"weight_ih_l0": _cols(kernel, order).T, "weight_hh_l0": _cols(recurrent, order).T}
    if cell == "gru":  # (2, 3u): input row, recurrent row
        out["bias_ih_l0"], out["bias_hh_l0"] = _cols(bias[0], order), _cols(bias[1], order)
    else:  # one bias = bias_ih + bias_hh, written (bias, 0)
        out["bias_ih_l0"], out["bias_hh_l0"] = bias, np.zeros_like(bias)
    return out


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, V, size=(B, T)).astype(np.int32)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fresh_torch_port_transfers_through_the_documented_gate_order(cell, ids):
    import xgrad
    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.registry import capture_model
    from xgrad.pairing import pair_modules

    k, t = _keras(cell), _torch(cell)
    report = xgrad.compare_models(k, t, ids, transfer=True)
    assert report.ok, report.summary()
    assert not report.unpaired, report.unpaired
    assert any("documented gate orders" in n for n in report.notes), report.notes
    # the weights a transfer writes, bit for bit, in torch's order
    ref, cand = capture_model(k, as_batch(ids)), capture_model(t, as_batch(ids))
    written = pair_modules(ref, cand).to_candidate(ref.weights())
    for local, want in _expected_torch(k, cell).items():
        np.testing.assert_array_equal(np.asarray(written[f"rnn.{local}"]), want, err_msg=local)


def test_fresh_keras_port_of_a_torch_gru_is_ok_with_transfer(ids):
    import xgrad

    report = xgrad.compare_models(_torch("gru"), _keras("gru"), ids, transfer=True)
    assert report.ok, report.summary()
    assert not report.unpaired, report.unpaired


def test_a_port_copied_in_the_other_order_is_still_paired_by_its_values(ids):
    """Keras' GRU arrays copied into torch without reordering the gate blocks: the values
    decide (as they stand), so the slip is a mismatch named lstm-gate-order."""
    import torch

    import xgrad

    k, t = _keras("gru"), _torch("gru")
    kernel, recurrent, bias = k.layers[1].get_weights()
    with torch.no_grad():
        t.embed.weight.copy_(torch.from_numpy(k.layers[0].get_weights()[0]))
        t.rnn.weight_ih_l0.copy_(torch.from_numpy(kernel.T.copy()))
        t.rnn.weight_hh_l0.copy_(torch.from_numpy(recurrent.T.copy()))
        t.rnn.bias_ih_l0.copy_(torch.from_numpy(bias[0].copy()))
        t.rnn.bias_hh_l0.copy_(torch.from_numpy(bias[1].copy()))
        dense, dense_bias = k.layers[2].get_weights()
        t.fc.weight.copy_(torch.from_numpy(dense.T.copy()))
        t.fc.bias.copy_(torch.from_numpy(dense_bias))
    report = xgrad.compare_models(k, t, ids, transfer=False)
    assert not report.ok
    assert not any("documented gate orders" in n for n in report.notes), report.notes
    assert report.diagnoses and report.diagnoses[0].cause == "lstm-gate-order", report.diagnoses
