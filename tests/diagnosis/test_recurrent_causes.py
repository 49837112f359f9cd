"""The recurrent causes (xgrad/diagnosis/recurrent.py) on ports a user writes: PyTorch's GRU
(reset after the recurrent matmul, as cuDNN and Keras' default) ported to Keras with
``reset_after=False``, and PyTorch's two LSTM biases both given a Keras LSTM's one bias (added
twice), and each in the other direction: the reference holds the slip (a Keras LSTM that
dropped torch's ``bias_hh``, a torch LSTM holding one bias in both, a Keras GRU with
``reset_after=False`` or torch's gate order) and the candidate is right; and torch's GRU
ported to Flax's ``nnx.GRUCell`` (no recurrent bias inside the reset product). Each is named
at the recurrent module and confirmed by re-running the reference's layer with its own
weights and input in NumPy float64. The LSTM classifier's ports (gate order, a dropped
``bias_hh``) are in tests/scenarios/test_lstm_classifier.py. Tiny sizes: 4 features, 6
units, 5 steps, batch 2."""

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

GRU_TORCH = ("gru.weight_ih_l0", "gru.weight_hh_l0")


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


def _named(report, cause: str, layer: str):
    """The report's first diagnosis, checked to be ``cause``, confirmed, at ``layer``."""
    assert not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.where) == (cause, True, "forward"), d.text()
    assert d.layer.split("_")[0] == layer, d.text()  # Keras numbers its layers: lstm_1
    assert d.residual <= report.tolerance < d.before
    return d


@pytest.fixture(scope="module")
def torch_lstm():
    torch.manual_seed(0)
    t = TorchLSTM()
    with torch.no_grad():  # torch starts both biases uniform: make the second one count
        t.lstm.bias_hh_l0.uniform_(-0.3, 0.3)
    return t


def _torch_arrays(model) -> dict:
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def _keras_lstm(g: dict, kernel, recurrent, bias):
    model = keras.Sequential([keras.Input((T, F)), keras.layers.LSTM(U), keras.layers.Dense(2)])
    model.layers[0].set_weights([kernel, recurrent, bias])
    model.layers[1].set_weights([g["fc.weight"].T, g["fc.bias"]])
    return model


def _gates(a, order, axis=-1):
    pieces = np.split(a, len(order), axis=axis)
    return np.concatenate([pieces[i] for i in order], axis=axis)


def test_a_keras_reference_that_dropped_bias_hh_is_lstm_bias(torch_lstm, x):
    # the reference holds the slip: its one bias is torch's bias_ih_l0 alone
    g = _torch_arrays(torch_lstm)
    ref = _keras_lstm(g, g["lstm.weight_ih_l0"].T, g["lstm.weight_hh_l0"].T, g["lstm.bias_ih_l0"])
    report = xgrad.compare_models(ref, torch_lstm, x, transfer=False)
    d = _named(report, "lstm-bias", "lstm")
    assert "the reference dropped PyTorch's bias_hh_l0" in d.detail


@pytest.mark.exhaustive
def test_a_torch_reference_with_one_bias_in_both_is_lstm_bias(torch_lstm, x):
    g = _torch_arrays(torch_lstm)
    bias = g["lstm.bias_ih_l0"] + g["lstm.bias_hh_l0"]
    ref = TorchLSTM()
    ref.load_state_dict(
        {
            **torch_lstm.state_dict(),
            "lstm.bias_ih_l0": torch.tensor(bias),  # the slip: the one bias into both
            "lstm.bias_hh_l0": torch.tensor(bias),
        }
    )
    port = _keras_lstm(g, g["lstm.weight_ih_l0"].T, g["lstm.weight_hh_l0"].T, bias)
    report = xgrad.compare_models(ref, port, x, transfer=False)
    d = _named(report, "lstm-bias", "lstm")
    assert "the reference's PyTorch LSTM holds one bias in both" in d.detail


@pytest.mark.exhaustive
def test_lstm_gate_blocks_reordered_in_the_reference_are_named(torch_lstm, x):
    g = _torch_arrays(torch_lstm)
    o = (0, 1, 3, 2)  # the Keras reference holds i, f, o, g; the torch candidate is right
    bias = g["lstm.bias_ih_l0"] + g["lstm.bias_hh_l0"]
    kernel, recurrent = g["lstm.weight_ih_l0"].T, g["lstm.weight_hh_l0"].T
    ref = _keras_lstm(g, _gates(kernel, o), _gates(recurrent, o), _gates(bias, o))
    report = xgrad.compare_models(ref, torch_lstm, x, transfer=False)
    d = _named(report, "lstm-gate-order", "lstm")
    assert "hold the reference's i, f, o, g" in d.detail


# -- GRU: the reference holds the slip ------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_gru():
    torch.manual_seed(0)
    return TorchGRU()


def _keras_gru_from(g: dict, order, *, reset_after: bool, split: bool = True):
    """A Keras GRU holding torch GRU ``g``'s arrays, torch's row blocks taken in ``order``;
    ``reset_after=False``: torch's two biases added into the one."""
    kernel, recurrent = (_gates(g[k], order, axis=0).T for k in GRU_TORCH)
    b_ih, b_hh = (_gates(g[k], order) for k in ("gru.bias_ih_l0", "gru.bias_hh_l0"))
    model = _keras_gru(reset_after)
    bias = np.stack([b_ih, b_hh]) if reset_after else b_ih + b_hh
    model.layers[0].set_weights([kernel, recurrent, bias])
    model.layers[1].set_weights([g["fc.weight"].T, g["fc.bias"]])
    return model


def test_a_keras_reset_before_reference_against_torch_is_gru_reset_after(torch_gru, x):
    # the Keras reference (reset_after=False, torch's biases summed) holds the slip
    ref = _keras_gru_from(_torch_arrays(torch_gru), (1, 0, 2), reset_after=False)
    report = xgrad.compare_models(ref, torch_gru, x, transfer=False)
    d = _named(report, "gru-reset-after", "gru")
    assert "the candidate's GRU applies the reset gate after the recurrent matmul" in d.detail
    assert "the sum of the candidate's bias_ih_l0 and bias_hh_l0" in d.detail


@pytest.mark.exhaustive
def test_a_keras_reset_before_gru_ported_to_torch_with_zero_bias_hh(x):
    # the reference is right (Keras reset_after=False); its torch port writes (bias, 0)
    ref = _keras_gru(False)
    kernel, recurrent, bias = ref.layers[0].get_weights()
    bias = np.random.default_rng(3).uniform(-0.5, 0.5, size=bias.shape).astype(np.float32)
    ref.layers[0].set_weights([kernel, recurrent, bias])
    dense, dense_bias = ref.layers[1].get_weights()
    port = TorchGRU()
    state = {
        "gru.weight_ih_l0": _gates(kernel, (1, 0, 2)).T,
        "gru.weight_hh_l0": _gates(recurrent, (1, 0, 2)).T,
        "gru.bias_ih_l0": _gates(bias, (1, 0, 2)),
        "gru.bias_hh_l0": np.zeros_like(bias),
        "fc.weight": dense.T,
        "fc.bias": dense_bias,
    }
    port.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in state.items()})
    report = xgrad.compare_models(ref, port, x, transfer=False)
    d = _named(report, "gru-reset-after", "gru")
    assert "where the reference's applies it before" in d.detail


def test_gru_gate_blocks_in_torchs_order_in_the_reference_are_named(torch_gru, x):
    # the Keras reference holds torch's blocks r, z, n as they stand; torch is the candidate
    ref = _keras_gru_from(_torch_arrays(torch_gru), (0, 1, 2), reset_after=True)
    report = xgrad.compare_models(ref, torch_gru, x, transfer=False)
    d = _named(report, "lstm-gate-order", "gru")
    assert "hold the reference's r, z, h (PyTorch's order r, z, n)" in d.detail


# -- GRU: Flax's nnx.GRUCell has no recurrent bias inside the reset product -----------------------

if {"torch", "tensorflow", "flax"} <= INSTALLED:
    import jax.numpy as jnp
    from flax import nnx

    class NnxGRU(nnx.Module):
        def __init__(self):
            self.gru = nnx.RNN(nnx.GRUCell(F, U, rngs=nnx.Rngs(0)))
            self.fc = nnx.Linear(U, 2, rngs=nnx.Rngs(1))

        def __call__(self, x):
            return self.fc(self.gru(x)[:, -1])


@pytest.mark.exhaustive  # nnx.RNN's scan compiles for a second or two
@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is needed")
@pytest.mark.parametrize(("b_hn", "words"), [("dropped", "b_hn was dropped"), ("moved", "outside")])
def test_torch_gru_ported_to_nnx_grucell_is_gru_reset_after(torch_gru, x, b_hn, words):
    """torch's GRU (b_hn non-zero: torch starts every bias uniform) ported to Flax's
    ``nnx.GRUCell``, whose ``dense_h`` has no bias: the port folds ``b_hr, b_hz`` into
    ``dense_i.bias`` and drops ``b_hn`` or adds it there too (outside the reset product)."""
    g = _torch_arrays(torch_gru)
    assert np.abs(g["gru.bias_hh_l0"][2 * U :]).min() > 0
    port = NnxGRU()
    cell = port.gru.cell
    cell.dense_i.kernel.value = jnp.asarray(g["gru.weight_ih_l0"].T)  # Flax's order r, z, n
    cell.dense_h.kernel.value = jnp.asarray(g["gru.weight_hh_l0"].T)
    folded = g["gru.bias_hh_l0"].copy()
    if b_hn == "dropped":
        folded[2 * U :] = 0
    cell.dense_i.bias.value = jnp.asarray(g["gru.bias_ih_l0"] + folded)
    port.fc.kernel.value, port.fc.bias.value = jnp.asarray(g["fc.weight"].T), g["fc.bias"]
    report = xgrad.compare_models(torch_gru, port, x, transfer=False)
    d = _named(report, "gru-reset-after", "gru")
    assert "no recurrent bias inside the reset product" in d.detail and words in d.detail
