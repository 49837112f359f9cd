"""The seed article's formulas, evaluated by hand in plain Python, and its three examples
through every adapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import ALL_FRAMEWORKS, rel_norm

import xgrad
from xgrad.examples import SEED_EXAMPLES


def _by_hand_one_layer(x, w, b, act, act_prime):
    """dW = input^T . delta, db = sum delta, dinput = delta . W^T with
    delta = grad_output * act'(z), grad_output = 1 for loss = sum(outputs): plain loops."""
    n, n_in, n_out = len(x), len(w), len(w[0])
    z = [
        [sum(x[r][i] * w[i][j] for i in range(n_in)) + b[j] for j in range(n_out)] for r in range(n)
    ]
    delta = [[1.0 * act_prime(z[r][j]) for j in range(n_out)] for r in range(n)]
    dw = [[sum(x[r][i] * delta[r][j] for r in range(n)) for j in range(n_out)] for i in range(n_in)]
    db = [sum(delta[r][j] for r in range(n)) for j in range(n_out)]
    dx = [[sum(delta[r][j] * w[i][j] for j in range(n_out)) for i in range(n_in)] for r in range(n)]
    loss = sum(act(z[r][j]) for r in range(n) for j in range(n_out))
    return loss, dw, db, dx


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


def _hand(example, params):
    w = params["layers.0.kernel"].tolist()
    b = params["layers.0.bias"].tolist()
    x = example.x.tolist()
    if example.name == "seed-1":
        return _by_hand_one_layer(x, w, b, _sigmoid, lambda v: _sigmoid(v) * (1 - _sigmoid(v)))
    return _by_hand_one_layer(x, w, b, lambda v: max(v, 0.0), lambda v: 1.0 if v > 0 else 0.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
@pytest.mark.parametrize("example", SEED_EXAMPLES[:2], ids=lambda e: e.name)
def test_one_layer_examples_match_the_formulas_by_hand(example, framework, dtype):
    params = xgrad.init_params(example.spec, seed=0)
    loss, dw, db, dx = _hand(example, params)
    got = (
        xgrad.get_framework(framework)
        .build(example.spec, params, dtype=dtype)
        .gradients(example.x, loss="sum")
    )
    tol = 1e-13 if dtype == "float64" else 2e-6
    assert got.params["layers.0.kernel"].shape == (example.spec.input_dim, example.spec.output_dim)
    assert got.params["layers.0.bias"].shape == (example.spec.output_dim,)
    assert got.input.shape == example.x.shape
    assert rel_norm(got.params["layers.0.kernel"], dw) <= tol
    assert rel_norm(got.params["layers.0.bias"], db) <= tol
    assert rel_norm(got.input, dx) <= tol
    assert got.loss == pytest.approx(loss, rel=tol)


def test_example_three_by_hand_two_layers():
    """Example 3: the chain rule through two layers, by hand, against the NumPy adapter."""
    ex = SEED_EXAMPLES[2]
    p = xgrad.init_params(ex.spec, seed=0)
    w1, b1, w2, b2 = (
        p[k] for k in ("layers.0.kernel", "layers.0.bias", "layers.1.kernel", "layers.1.bias")
    )
    z1 = ex.x @ w1 + b1
    a1 = np.maximum(z1, 0)
    z2 = a1 @ w2 + b2
    s = 1 / (1 + np.exp(-z2))
    delta2 = 1.0 * s * (1 - s)  # grad_output = 1 for loss = sum
    delta1 = (delta2 @ w2.T) * (z1 > 0)  # dinput of layer 2 is grad_output of layer 1
    expected = {
        "layers.1.kernel": a1.T @ delta2,
        "layers.1.bias": delta2.sum(0),
        "layers.0.kernel": ex.x.T @ delta1,
        "layers.0.bias": delta1.sum(0),
    }
    got = xgrad.get_framework("numpy").build(ex.spec, p, dtype="float64").gradients(ex.x)
    for name, value in expected.items():
        np.testing.assert_allclose(got.params[name], value, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(got.input, delta1 @ w1.T, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
@pytest.mark.parametrize("example", SEED_EXAMPLES, ids=lambda e: e.name)
def test_seed_examples_agree_across_frameworks(example, framework):
    params = xgrad.init_params(example.spec, seed=0)
    ref = (
        xgrad.get_framework("numpy")
        .build(example.spec, params, dtype="float64")
        .gradients(example.x)
    )
    got = (
        xgrad.get_framework(framework)
        .build(example.spec, params, dtype="float32")
        .gradients(example.x)
    )
    assert set(got.params) == set(example.spec.param_shapes())
    for name, shape in example.spec.param_shapes().items():
        assert got.params[name].shape == shape
        assert rel_norm(got.params[name], ref.params[name]) <= 1e-5
    assert rel_norm(got.input, ref.input) <= 1e-5


def test_seed_example_inputs_are_the_articles():
    assert SEED_EXAMPLES[0].x.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert SEED_EXAMPLES[1].x.tolist() == [[1, 2, 3, 4, 5]]
    assert SEED_EXAMPLES[2].x.shape == (2, 10)
    assert [ex.spec.describe() for ex in SEED_EXAMPLES] == [
        "3 -> 4:sigmoid",
        "5 -> 3:relu",
        "10 -> 8:relu -> 5:sigmoid",
    ]
