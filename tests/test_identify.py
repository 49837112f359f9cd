"""Numeric identification (xgrad/identify.py) on plain NumPy arrays, no framework: every
activation and normalisation is named from values computed here by hand-written formulas
(never by the code under test), and unrelated functions are refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xgrad.activations import ACTIVATIONS
from xgrad.identify import EPSILONS, FIT, fit_activation, fit_norm, leaky_slope, rel
from xgrad.layers import BatchNorm, LayerNorm, RMSNorm

# Inputs crossing every kink and clipping bound (relu6 at 6, hard_sigmoid at -3 and 3), as a
# batch of 4 examples of 12 features (softmax is over the last axis), no input exactly 0.
Z = np.linspace(-7.3, 8.1, 48).reshape(4, 12)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


_ERF = np.vectorize(math.erf)

FORMULAS = {
    "linear": lambda z: z,
    "relu": lambda z: np.where(z > 0, z, 0.0),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "log_softmax": lambda z: np.log(_softmax(z)),
    "gelu": lambda z: z * 0.5 * (1 + _ERF(z / math.sqrt(2))),
    "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z**3))),
    "elu": lambda z: np.where(z > 0, z, np.exp(z) - 1),
    "selu": lambda z: 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * np.expm1(z)),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "silu": lambda z: z * _sigmoid(z),
    "relu6": lambda z: np.minimum(np.maximum(z, 0.0), 6.0),
    "hard_sigmoid": lambda z: np.minimum(np.maximum(z + 3, 0.0), 6.0) / 6,  # Keras 3
}
"""Each activation of xgrad, written out from its textbook definition."""


def test_the_formulas_cover_every_activation():
    assert set(FORMULAS) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_fit_activation_names_each_activation_from_its_values(name):
    a = FORMULAS[name](Z)
    found, err = fit_activation(Z, a)
    assert found == name and err <= FIT["float64"]


@pytest.mark.parametrize("name", ["sigmoid", "gelu", "gelu_tanh", "silu", "softmax", "selu"])
def test_float32_values_are_named_at_the_float32_fit(name):
    z32 = Z.astype(np.float32)
    a32 = FORMULAS[name](z32.astype(np.float64)).astype(np.float32)  # rounded as a framework
    assert fit_activation(z32, a32, dtype="float64")[0] is None  # too far for float64's fit
    found, err = fit_activation(z32, a32, dtype="float32")
    assert found == name and 0 < err <= FIT["float32"]


@pytest.mark.parametrize(
    "unrelated",
    [np.sin, np.square, lambda z: 2 * np.maximum(z, 0), lambda z: np.tanh(z) + 1e-6],
    ids=["sin", "square", "twice-relu", "shifted-tanh"],
)
def test_fit_activation_refuses_an_unrelated_function(unrelated):
    found, err = fit_activation(Z, unrelated(Z))
    assert found is None and err > FIT["float64"]


@pytest.mark.parametrize(
    ("slope", "name"),
    [
        (0.01, "leaky_relu:0.01"),
        (0.2, "leaky_relu:0.2"),
        (0.3, "leaky_relu:0.3"),
        (0.15, "leaky_relu:0.15"),
    ],
)
def test_leaky_slopes_are_read_and_named(slope, name):
    a = np.where(Z > 0, Z, slope * Z)
    assert leaky_slope(Z, a) == slope
    found, err = fit_activation(Z, a)
    assert found == name and err <= FIT["float64"]


def test_a_float32_slope_snaps_to_the_frameworks_default():
    z32 = Z.astype(np.float32)
    a32 = np.where(z32 > 0, z32, np.float32(0.01) * z32)  # 0.0099999998 in float32
    assert leaky_slope(z32, a32) == 0.01
    assert fit_activation(z32, a32, dtype="float32")[0] == "leaky_relu:0.01"


def test_leaky_slope_needs_one_slope_and_negative_inputs():
    uneven = np.where(Z > 0, Z, np.where(Z < -3, 0.1 * Z, 0.2 * Z))
    assert leaky_slope(Z, uneven) is None
    positive = np.abs(Z) + 1
    assert leaky_slope(positive, positive) is None
    # inputs near 0 against the largest are left out: their rounding makes a / z noisy
    z = np.array([-1e-9, -2.0, 3.0])
    assert leaky_slope(z, np.array([5e-9, -0.02, 3.0])) == 0.01


def test_rel_is_the_normwise_relative_error():
    assert rel([3.0, 4.0], [0.0, 0.0]) == math.inf
    assert rel([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert rel([1.0, 1.0], [1.0, 0.0]) == 1.0
    assert rel([3.0, 5.0], [3.0, 4.0]) == pytest.approx(1 / 5)
    assert rel([np.nan, 1.0], [1.0, 1.0]) == math.inf


# -- normalisations ----------------------------------------------------------------------

RNG = np.random.default_rng(7)
X = RNG.normal(loc=0.7, scale=1.5, size=(6, 10))  # rows with a clear mean of their own
SCALE = RNG.uniform(0.5, 1.5, size=10)
BIAS = RNG.uniform(-0.1, 0.1, size=10)
MEAN = RNG.normal(size=10)
VAR = RNG.uniform(0.5, 2.0, size=10)


def layer_norm(x, eps, scale=SCALE, bias=BIAS):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def rms_norm(x, eps, scale=SCALE):
    return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps) * scale


def batch_norm(x, eps, mean, var):
    return (x - mean) / np.sqrt(var + eps) * SCALE + BIAS


@pytest.mark.parametrize("eps", [1e-3, 1e-5, 1e-6])
def test_fit_norm_names_a_layer_norm_and_its_epsilon(eps):
    layer, err = fit_norm(X, layer_norm(X, eps), {"scale": SCALE, "bias": BIAS})
    assert layer == LayerNorm(eps, center=True, scale=True) and err <= FIT["float64"]


def test_fit_norm_names_a_layer_norm_without_bias():
    layer, _ = fit_norm(X, layer_norm(X, 1e-5, bias=0.0), {"scale": SCALE})
    assert layer == LayerNorm(1e-5, center=False, scale=True)


@pytest.mark.parametrize("eps", [1e-6, float(np.finfo(np.float32).eps)])
def test_fit_norm_names_an_rms_norm_and_its_epsilon(eps):
    layer, err = fit_norm(X, rms_norm(X, eps), {"scale": SCALE})
    assert layer == RMSNorm(eps, scale=True) and err <= FIT["float64"]


def test_fit_norm_names_an_inference_batch_norm_by_its_moving_statistics():
    y = batch_norm(X, 1e-3, MEAN, VAR)
    weights = {"scale": SCALE, "bias": BIAS, "mean": MEAN, "var": VAR}
    layer, err = fit_norm(X, y, weights)
    assert layer == BatchNorm(1e-3, training=False) and err <= FIT["float64"]


def test_fit_norm_names_a_training_batch_norm_by_the_batch_statistics():
    y = batch_norm(X, 1e-5, X.mean(axis=0), X.var(axis=0))  # biased variance
    layer, err = fit_norm(X, y, {"scale": SCALE, "bias": BIAS}, training=True)
    assert layer == BatchNorm(1e-5, training=True) and err <= FIT["float64"]


def test_an_epsilon_read_from_float32_code_is_tried_as_written():
    assert 3e-5 not in EPSILONS
    y = layer_norm(X, 3e-5)
    assert fit_norm(X, y, {"scale": SCALE, "bias": BIAS})[0] is None  # not a default
    eps32 = float(np.float32(3e-5))  # 2.99999992e-05, as a float32 constant reads
    layer, _ = fit_norm(X, y, {"scale": SCALE, "bias": BIAS}, epsilons=[eps32])
    assert layer == LayerNorm(3e-5)


def test_float32_norm_values_are_named_at_the_float32_fit():
    y32 = layer_norm(X, 1e-5).astype(np.float32)
    assert fit_norm(X, y32, {"scale": SCALE, "bias": BIAS})[0] is None
    layer, err = fit_norm(X, y32, {"scale": SCALE, "bias": BIAS}, dtype="float32")
    assert layer == LayerNorm(1e-5) and 0 < err <= FIT["float32"]


@pytest.mark.parametrize(
    "unrelated",
    [
        np.tanh,
        lambda x: layer_norm(x, 1e-5) * 1.01,
        lambda x: batch_norm(x, 1e-5, x.mean(axis=0), x.var(axis=0)),  # training=False
    ],
    ids=["tanh", "scaled-layer-norm", "batch-statistics-not-asked-for"],
)
def test_fit_norm_refuses_an_unrelated_function(unrelated):
    layer, err = fit_norm(X, unrelated(X), {"scale": SCALE, "bias": BIAS})
    assert layer is None and err > FIT["float64"]


def test_a_function_is_named_by_its_values_on_a_probe_not_by_its_name():
    from xgrad.activations import get_activation
    from xgrad.identify import probe_activation

    def gelu(z):  # one name, the tanh form: what keras.ops.gelu computes by default
        return 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z**3)))

    assert probe_activation(gelu) == "gelu_tanh"
    assert probe_activation(get_activation("gelu")) == "gelu"
    assert probe_activation(lambda z: np.where(z > 0, z, 0.01 * z)) == "leaky_relu:0.01"
    assert probe_activation(lambda z: np.sin(z)) is None
    assert probe_activation(lambda z: z[:, :3]) is None  # not elementwise
