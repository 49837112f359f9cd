"""Specs and inputs shared by tests/frameworks/test_jax_cnn_rnn.py and
test_flax_cnn_rnn.py (issue 22's kinds), and the check of a read model against the NumPy
reference from its read weights."""

from __future__ import annotations

import numpy as np
from conftest import rel_norm

import xgrad
from xgrad import (
    GRU,
    LSTM,
    MLP,
    Activation,
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    MaxPool,
)

RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(2, 8, 8, 3))
IDS = RNG.integers(0, 10, size=(2, 4))

CNN = MLP(
    (8, 8, 3),
    [
        Conv(4, 2, strides=2, padding="same"),  # even kernel, stride 2: the odd zero last
        Activation("tanh"),
        Conv(4, 3, padding="same", dilation=2, groups=2),
        GroupNorm(2, epsilon=1e-3),
        MaxPool(2, strides=1, padding="same"),
        AvgPool(2, strides=1, padding=((1, 0), (0, 1)), count_include_pad=True),
        AvgPool(2, padding=((1, 1), (1, 0)), count_include_pad=False),
        BatchNorm(training=True),
        Flatten(),
        Dense(3),
    ],
)
CNN_1D = MLP((7, 3), [Conv(4, 3, strides=2, padding=1), Activation("relu"), GlobalAvgPool()])


def recurrent_spec(layer):
    tail = [Flatten()] if layer.return_sequences else []
    return MLP((4,), [Embedding(10, 3), layer, *tail, Dense(2)])


RECURRENT = {
    "lstm": LSTM(5),
    "lstm-seq": LSTM(5, return_sequences=True),
    "gru": GRU(5),
    "gru-seq-reset-before": GRU(5, return_sequences=True, reset_after=False),
}


def agrees(model, x, tol=1e-5):
    spec = model.spec()
    weights = {k: np.asarray(v, np.float64) for k, v in model.weights().items()}
    y = RNG.normal(size=(x.shape[0], spec.output_dim))
    want = xgrad.get_framework("numpy").build(spec, weights, dtype="float64")
    want = want.evaluate(x, y, loss="projection", capture=True)
    got = model.evaluate(x, y, loss="projection", capture=True)
    for name, value in want.params.items():
        assert rel_norm(got.params[name], value) <= tol, name
    assert rel_norm(got.input, want.input) <= tol
    for path, value in want.activations.items():
        assert rel_norm(got.activations[path], value) <= tol, path
