"""LSTM and GRU: the forward pass against PyTorch's nn.LSTM / nn.GRU (weights transposed
and gate blocks reordered from the canonical Keras layout) and Keras' layers, the VJP against
central finite differences, and bad fields refused by name."""

from __future__ import annotations

import numpy as np
import pytest

import xgrad
from xgrad import GRU, LSTM, MLP, Dense, Embedding
from xgrad.layers.text import parse_layers

TIME, FEATURES, UNITS, BATCH = 4, 3, 5, 2
LAYERS = {
    "lstm-last": LSTM(UNITS),
    "lstm-seq": LSTM(UNITS, return_sequences=True),
    "gru-last": GRU(UNITS),
    "gru-seq": GRU(UNITS, return_sequences=True),
    "gru-before-last": GRU(UNITS, reset_after=False),
    "gru-before-seq": GRU(UNITS, return_sequences=True, reset_after=False),
}


def _weights(layer, seed=0):
    rng = np.random.default_rng(seed)
    local = layer.init(rng, (TIME, FEATURES), bias_scale=0.5)
    x = rng.standard_normal((BATCH, TIME, FEATURES))
    return {f"r.{name}": value for name, value in local.items()}, x


def _forward(layer, weights, x):
    return layer.forward(weights, x, path="r").output


def _gate_blocks(a, order, gates):
    """The gate blocks of ``a``'s first axis, taken in ``order`` (indices into the blocks)."""
    blocks = np.split(a, gates, axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)


def _torch_run(module, names_values, x, return_sequences):
    import torch

    with torch.no_grad():
        for name, value in names_values.items():
            getattr(module, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        out, _ = module(torch.from_numpy(x))
    out = out.numpy()
    return out if return_sequences else out[:, -1]


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
def test_lstm_forward_matches_torch_with_two_biases_summing_to_ours(return_sequences):
    torch = pytest.importorskip("torch")
    layer = LSTM(UNITS, return_sequences=return_sequences)
    w, x = _weights(layer)
    split = np.random.default_rng(1).uniform(-1, 1, size=4 * UNITS)  # only the sum counts
    module = torch.nn.LSTM(FEATURES, UNITS, batch_first=True, dtype=torch.float64)
    expected = _torch_run(
        module,
        {  # torch's gates i, f, g, o are Keras' i, f, c, o: transposes only
            "weight_ih_l0": w["r.kernel"].T,
            "weight_hh_l0": w["r.recurrent_kernel"].T,
            "bias_ih_l0": w["r.bias"] - split,
            "bias_hh_l0": split,
        },
        x,
        return_sequences,
    )
    np.testing.assert_allclose(_forward(layer, w, x), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "seq"])
def test_gru_reset_after_matches_torch_with_gates_reordered(return_sequences):
    torch = pytest.importorskip("torch")
    layer = GRU(UNITS, return_sequences=return_sequences)
    w, x = _weights(layer)
    rzn = (1, 0, 2)  # torch's r, z, n from Keras' z, r, h
    module = torch.nn.GRU(FEATURES, UNITS, batch_first=True, dtype=torch.float64)
    expected = _torch_run(
        module,
        {
            "weight_ih_l0": _gate_blocks(w["r.kernel"].T, rzn, 3),
            "weight_hh_l0": _gate_blocks(w["r.recurrent_kernel"].T, rzn, 3),
            "bias_ih_l0": _gate_blocks(w["r.bias"][0], rzn, 3),
            "bias_hh_l0": _gate_blocks(w["r.bias"][1], rzn, 3),
        },
        x,
        return_sequences,
    )
    np.testing.assert_allclose(_forward(layer, w, x), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("key", ["lstm-seq", "gru-seq", "gru-before-seq", "gru-before-last"])
def test_forward_matches_keras_in_its_own_layout(key):
    keras = pytest.importorskip("keras")
    layer = LAYERS[key]
    w, x = _weights(layer)
    options = {"units": UNITS, "return_sequences": layer.return_sequences, "dtype": "float64"}
    if layer.kind == "gru":
        module = keras.layers.GRU(reset_after=layer.reset_after, **options)
    else:
        module = keras.layers.LSTM(**options)
    module.build((None, TIME, FEATURES))
    module.set_weights([w["r.kernel"], w["r.recurrent_kernel"], w["r.bias"]])
    expected = np.asarray(module(x))
    np.testing.assert_allclose(_forward(layer, w, x), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("key", list(LAYERS))
def test_vjp_matches_central_differences_for_every_weight_and_the_input(key):
    layer = LAYERS[key]
    w, x = _weights(layer)
    step = layer.forward(w, x, path="r")
    g = np.random.default_rng(2).standard_normal(step.output.shape)
    grads: dict[str, np.ndarray] = {}
    dx = layer.vjp(w, step, g, grads)
    assert set(grads) == {f"r.{n}" for n in layer.param_names()}
    h = 1e-6
    for name, analytic in [*grads.items(), ("input", dx)]:
        arr = x if name == "input" else w[name]
        numeric = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + h
            up = np.sum(_forward(layer, w, x) * g)
            arr[idx] = old - h
            down = np.sum(_forward(layer, w, x) * g)
            arr[idx] = old
            numeric[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_shapes_and_text_form():
    assert LSTM(UNITS).weight_shapes((TIME, FEATURES)) == {
        "kernel": (FEATURES, 4 * UNITS),
        "recurrent_kernel": (UNITS, 4 * UNITS),
        "bias": (4 * UNITS,),
    }
    assert GRU(UNITS, reset_after=False).weight_shapes((TIME, FEATURES))["bias"] == (3 * UNITS,)
    assert GRU(UNITS).weight_shapes((TIME, FEATURES))["bias"] == (2, 3 * UNITS)
    assert LSTM(UNITS).output_shape((TIME, FEATURES)) == (UNITS,)
    assert GRU(UNITS, True).output_shape((TIME, FEATURES)) == (TIME, UNITS)
    assert parse_layers("lstm(16, return_sequences),gru(8, reset_after=false)") == [
        LSTM(16, return_sequences=True),
        GRU(8, reset_after=False),
    ]


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: LSTM(0), "LSTM units must be a positive integer, got 0"),
        (lambda: GRU(4.5), "GRU units must be a positive integer"),
        (lambda: LSTM(4, return_sequences="yes"), "LSTM return_sequences must be True or False"),
        (lambda: GRU(4, reset_after=1), "GRU reset_after must be True or False"),
        (lambda: MLP(6, [LSTM(4)]), r"layers\[0\] \(lstm\(4\)\): LSTM takes examples of shape "),
        (lambda: MLP((2, 3, 4), [GRU(4)]), r"\(time, features\), got \(2, 3, 4\); give the"),
        (lambda: MLP((2, 3), [LSTM(4), GRU(4)]), r"layers\[1\].*set return_sequences=True on a"),
    ],
)
def test_bad_fields_raise_spec_error_naming_the_fix(make, pattern):
    with pytest.raises(xgrad.SpecError, match=pattern):
        make()


def test_an_embedding_lstm_classifier_evaluates_on_numpy():
    spec = MLP((6,), [Embedding(11, 4), LSTM(16), Dense(2)])
    ids = np.random.default_rng(3).integers(0, 11, size=(BATCH, 6))
    report = xgrad.compare(spec, ids, frameworks="numpy")
    assert {e.name for e in report.parameters} == set(spec.param_names)
    assert spec.param_shapes()["layers.1.recurrent_kernel"] == (16, 64)
