"""An LSTM text classifier (Embedding + LSTM + Dense on token ids), written the way each
framework's docs write it, ported across PyTorch, Keras and Flax NNX (issue 22, item 4):

* torch: ``nn.Embedding``, ``nn.LSTM(batch_first=True)``, ``nn.Linear`` on the last step;
* Keras: ``Sequential([Embedding, LSTM, Dense])`` (the LSTM returns its last state);
* Flax NNX: ``nnx.Embed``, ``nnx.RNN(nnx.OptimizedLSTMCell)``, ``nnx.Linear`` on the last step.

Ports copy the weights by hand, as a user does: kernels transposed from torch's
``(4u, in)`` rows, torch's two biases added into the one bias (``bias_ih + bias_hh``), gate
order unchanged (all three use i, f, g, o). A correct port is ok with every parameter paired
(torch's two biases pair as a sum with the one, by their values); each planted convention
(gate blocks in another order, torch's ``bias_hh`` dropped) is named at the LSTM. Tiny
sizes: vocabulary 20, width 8, 6 units, 5 tokens, batch 2.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax", "tensorflow"} <= INSTALLED, reason="torch, flax and tensorflow are needed"
)

V, D, U, T, B, C = 20, 8, 6, 5, 2, 3
SWAPPED = (0, 1, 3, 2)  # the port's blocks hold i, f, o, g

if {"torch", "flax", "tensorflow"} <= INSTALLED:
    import torch
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.frameworks.tensorflow.ops import keras

    class TorchClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.lstm = nn.LSTM(D, U, batch_first=True)
            self.fc = nn.Linear(U, C)

        def forward(self, ids):
            out, _ = self.lstm(self.embed(ids))
            return self.fc(out[:, -1])

    class NnxClassifier(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(V, D, rngs=rngs)
            self.lstm = nnx.RNN(nnx.OptimizedLSTMCell(D, U, rngs=rngs))
            self.fc = nnx.Linear(U, C, rngs=rngs)

        def __call__(self, ids):
            return self.fc(self.lstm(self.embed(ids))[:, -1])


def _keras_classifier():
    return keras.Sequential(
        [
            keras.Input((T,), dtype="int32"),
            keras.layers.Embedding(V, D),
            keras.layers.LSTM(U),
            keras.layers.Dense(C),
        ]
    )


def _blocks(a, order):
    pieces = np.split(a, 4, axis=-1)
    return np.concatenate([pieces[i] for i in order], axis=-1)


def _canonical(model) -> dict:
    """A model's weights as ``embed, kernel (D, 4u), recurrent (u, 4u), bias (4u,), dense
    kernel (u, C), dense bias``, gates i, f, g, o; torch's biases as their sum."""
    if isinstance(model, nn.Module):
        g = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        return {
            "embed": g["embed.weight"],
            "kernel": g["lstm.weight_ih_l0"].T,
            "recurrent": g["lstm.weight_hh_l0"].T,
            "bias": g["lstm.bias_ih_l0"] + g["lstm.bias_hh_l0"],
            "bias_ih": g["lstm.bias_ih_l0"],
            "dense": g["fc.weight"].T,
            "dense_bias": g["fc.bias"],
        }
    embed, lstm, dense = model.layers
    kernel, recurrent, bias = lstm.get_weights()
    return {
        "embed": embed.get_weights()[0],
        "kernel": kernel,
        "recurrent": recurrent,
        "bias": bias,
        "dense": dense.get_weights()[0],
        "dense_bias": dense.get_weights()[1],
    }


def _planted(w: dict, plant: str | None) -> dict:
    w = dict(w)
    if plant == "gate-order":
        for k in ("kernel", "recurrent", "bias"):
            w[k] = _blocks(w[k], SWAPPED)
    elif plant == "bias-ih-only":
        w["bias"] = w["bias_ih"]
    return w


def to_keras(source, plant=None):
    w = _planted(_canonical(source), plant)
    k = _keras_classifier()
    k.layers[0].set_weights([w["embed"]])
    k.layers[1].set_weights([w["kernel"], w["recurrent"], w["bias"]])
    k.layers[2].set_weights([w["dense"], w["dense_bias"]])
    return k


def to_nnx(source, plant=None):
    w = {k: np.asarray(v, np.float32) for k, v in _planted(_canonical(source), plant).items()}
    f = NnxClassifier(nnx.Rngs(1))
    f.embed.embedding.value = w["embed"]
    cell = f.lstm.cell
    cell.dense_i.kernel.value, cell.dense_h.kernel.value = w["kernel"], w["recurrent"]
    cell.dense_h.bias.value = w["bias"]
    f.fc.kernel.value, f.fc.bias.value = w["dense"], w["dense_bias"]
    return f


def to_torch(source, plant=None):
    w = _planted(_canonical(source), plant)
    torch.manual_seed(3)
    t = TorchClassifier()
    state = {
        "embed.weight": w["embed"],
        "lstm.weight_ih_l0": w["kernel"].T,
        "lstm.weight_hh_l0": w["recurrent"].T,
        "lstm.bias_ih_l0": w["bias"],  # PyTorch's two biases written (bias, 0)
        "lstm.bias_hh_l0": np.zeros_like(w["bias"]),
        "fc.weight": w["dense"].T,
        "fc.bias": w["dense_bias"],
    }
    t.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in state.items()})
    return t


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    t = TorchClassifier()
    with torch.no_grad():  # torch starts both biases uniform: make the second one count
        t.lstm.bias_hh_l0.uniform_(-0.3, 0.3)
    return t


@pytest.fixture(scope="module")
def keras_model(torch_model):
    return to_keras(torch_model)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, V, size=(B, T)).astype(np.int32)


PAIRS = {
    "torch-keras": ("torch", to_keras),
    "torch-nnx": ("torch", to_nnx),
    "keras-nnx": ("keras", to_nnx),
    "keras-torch": ("keras", to_torch),
}


def _reference(name, torch_model, keras_model):
    return torch_model if name == "torch" else keras_model


@pytest.mark.parametrize(
    "pair",
    [
        "torch-keras",
        pytest.param("torch-nnx", marks=pytest.mark.exhaustive),
        pytest.param("keras-nnx", marks=pytest.mark.exhaustive),
        pytest.param("keras-torch", marks=pytest.mark.exhaustive),
    ],
)
def test_correct_port_is_ok_with_every_parameter_paired(torch_model, keras_model, ids, pair):
    source, port = PAIRS[pair]
    ref = _reference(source, torch_model, keras_model)
    report = xgrad.compare_models(ref, port(ref), ids, transfer=False)
    assert report.ok, report.summary()
    assert not report.unpaired
    names = {e.name for e in report.parameters}
    if source == "torch":  # both of torch's biases compared, with the port's one bias
        assert {"lstm.bias_ih_l0", "lstm.bias_hh_l0"} <= names
        entry = next(e for e in report.parameters if e.name == "lstm.bias_hh_l0")
        assert any("holds the sum" in label for label in entry.native.values())
    assert len(names) == (7 if source == "torch" else 6)


@pytest.mark.parametrize(
    ("pair", "plant", "cause"),
    [
        ("torch-keras", "gate-order", "lstm-gate-order"),
        ("torch-keras", "bias-ih-only", "lstm-bias"),
        # NNX's scan compiles for ~12 s: its cases run in make fuzz
        pytest.param("torch-nnx", "bias-ih-only", "lstm-bias", marks=pytest.mark.exhaustive),
        pytest.param("torch-nnx", "gate-order", "lstm-gate-order", marks=pytest.mark.exhaustive),
        pytest.param("keras-nnx", "gate-order", "lstm-gate-order", marks=pytest.mark.exhaustive),
        pytest.param("keras-torch", "gate-order", "lstm-gate-order", marks=pytest.mark.exhaustive),
    ],
)
def test_planted_convention_is_named_at_the_lstm(torch_model, keras_model, ids, pair, plant, cause):
    source, port = PAIRS[pair]
    ref = _reference(source, torch_model, keras_model)
    report = xgrad.compare_models(ref, port(ref, plant), ids, transfer=False)
    assert not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.where) == (cause, True, "forward"), d.text()
    # the LSTM module, as the reference names it (Keras numbers its auto-names per process)
    names = {"lstm"} if source == "torch" else {ref.layers[1].name}
    assert d.layer in names, d.text()
    assert d.residual <= report.tolerance < d.before
    if cause == "lstm-gate-order":
        assert "hold the reference's i, f, o, g" in d.detail
    else:
        assert "bias_hh_l0 was dropped" in d.detail
