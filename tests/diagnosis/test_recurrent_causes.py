"""The recurrent causes (xgrad/diagnosis/recurrent.py) on ports a user writes: PyTorch's GRU
(reset after the recurrent matmul, as cuDNN and Keras' default) ported to Keras with
``reset_after=False``, and PyTorch's two LSTM biases both given a Keras LSTM's one bias (added
twice). Each is named at the recurrent module and confirmed by re-running the reference's
layer with its own weights and input in NumPy float64. The LSTM classifier's ports (gate
order, a dropped ``bias_hh``) are in tests/scenarios/test_lstm_classifier.py. Tiny sizes: 4
features, 6 units, 5 steps, batch 2."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

F, U, T, B = 4, 6, 5, 2

pytestmark = pytest.mark.skipif(
    not {"torch", "tensorflow"} <= INSTALLED, reason="torch and tensorflow are needed"
)

if {"torch", "tensorflow"} <= INSTALLED:
    import torch
    from torch import nn

    import xgrad
    from xgrad.frameworks.tensorflow.ops import keras


def _keras_gru(reset_after: bool):
    return keras.Sequential(
        [
            keras.Input((T, F)),
            keras.layers.GRU(U, reset_after=reset_after),
            keras.layers.Dense(2),
        ]
    )


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(B, T, F)).astype(np.float32)


class TorchGRU(nn.Module if {"torch"} <= INSTALLED else object):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(F, U, batch_first=True)
        self.fc = nn.Linear(U, 2)

    def forward(self, x):
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


def _zrh(a):
    """torch's gate blocks r, z, n (rows) as Keras' z, r, h (columns)."""
    r, z, n = np.split(a, 3, axis=0)
    return np.concatenate([z, r, n], axis=0).T


def test_gru_reset_after_is_named_at_the_gru(x):
    """PyTorch's GRU (reset after the recurrent matmul) ported to Keras with
    ``reset_after=False``, its two biases added into the one."""
    torch.manual_seed(0)
    ref = TorchGRU()
    g = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    port = keras.Sequential(
        [keras.Input((T, F)), keras.layers.GRU(U, reset_after=False), keras.layers.Dense(2)]
    )
    bias = _zrh(g["gru.bias_ih_l0"] + g["gru.bias_hh_l0"])
    port.layers[0].set_weights([_zrh(g["gru.weight_ih_l0"]), _zrh(g["gru.weight_hh_l0"]), bias])
    port.layers[1].set_weights([g["fc.weight"].T, g["fc.bias"]])
    report = xgrad.compare_models(ref, port, x, transfer=False)
    assert not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.where) == ("gru-reset-after", True, "forward"), d.text()
    assert d.layer == "gru"
    assert d.residual <= report.tolerance < d.before
    assert "applies the reset gate before the recurrent matmul" in d.detail


class TorchLSTM(nn.Module if {"torch"} <= INSTALLED else object):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(F, U, batch_first=True)
        self.fc = nn.Linear(U, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


@pytest.mark.exhaustive
def test_one_bias_written_into_both_of_torchs_is_lstm_bias(x):
    ref = keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(U), keras.layers.Dense(2)])
    kernel, recurrent, bias = ref.layers[0].get_weights()
    bias = np.random.default_rng(2).uniform(-0.5, 0.5, size=bias.shape).astype(np.float32)
    ref.layers[0].set_weights([kernel, recurrent, bias])
    port = TorchLSTM()
    dense, dense_bias = ref.layers[1].get_weights()
    state = {
        "lstm.weight_ih_l0": kernel.T,
        "lstm.weight_hh_l0": recurrent.T,
        "lstm.bias_ih_l0": bias,  # the slip: the one bias into both
        "lstm.bias_hh_l0": bias,
        "fc.weight": dense.T,
        "fc.bias": dense_bias,
    }
    port.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in state.items()})
    report = xgrad.compare_models(ref, port, x, transfer=False)
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed) == ("lstm-bias", True), d.text()
    assert "adds the reference's bias twice" in d.detail
