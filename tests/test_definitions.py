"""The NumPy definitions themselves: derivatives against central finite differences, and
the documented values at the kinks."""

import math

import numpy as np
import pytest

from xgrad.activations import ACTIVATIONS, SELU_SCALE, get_activation
from xgrad.losses import LOSSES

ELEMENTWISE = [n for n in ACTIVATIONS if n not in ("softmax", "log_softmax")] + ["leaky_relu:0.01"]


def _away_from_kinks(act, z, margin=1e-3):
    for k in act.kinks:
        z = np.where(np.abs(z - k) < margin, z + 3 * margin, z)
    return z


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_derivative_matches_central_differences(name, rng):
    act = get_activation(name)
    z = _away_from_kinks(act, rng.uniform(-8, 8, size=400))
    h = 1e-6
    fd = (act(z + h) - act(z - h)) / (2 * h)
    np.testing.assert_allclose(act.derivative(z), fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_vjp_matches_central_differences(name, rng):
    act = get_activation(name)
    z = rng.normal(size=(3, 5))
    g = rng.normal(size=(3, 5))
    h = 1e-6
    fd = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        e = np.zeros_like(z)
        e[idx] = h
        fd[idx] = (np.sum(g * act(z + e)) - np.sum(g * act(z - e))) / (2 * h)
    np.testing.assert_allclose(act.vjp(z, act(z), g), fd, rtol=1e-6, atol=1e-9)


# The kink conventions, written out by hand (TensorFlow's gradient kernels).
KINKS = [
    ("relu", 0.0, 0.0),
    ("leaky_relu", 0.0, 0.2),
    ("leaky_relu:0.01", 0.0, 0.01),
    ("relu6", 0.0, 0.0),
    ("relu6", 6.0, 0.0),
    ("hard_sigmoid", -3.0, 0.0),
    ("hard_sigmoid", 3.0, 0.0),
    ("selu", 0.0, SELU_SCALE),
    ("elu", 0.0, 1.0),
]


@pytest.mark.parametrize(("name", "at", "expected"), KINKS, ids=[f"{n}@{a}" for n, a, _ in KINKS])
def test_kink_conventions_of_the_definition(name, at, expected):
    act = get_activation(name)
    assert at in act.kinks
    assert act.derivative(np.array([at]))[0] == pytest.approx(expected, rel=1e-15)


def test_gelu_forms_differ_as_documented():
    z = np.linspace(-4, 4, 8001)
    gap = np.abs(get_activation("gelu")(z) - get_activation("gelu_tanh")(z))
    # PITFALLS: the forms differ by up to about 4.7e-4 near |x| = 2.7 (both computed here).
    assert 4e-4 < gap.max() < 5e-4
    assert abs(abs(z[gap.argmax()]) - 2.7) < 0.2


def test_hard_sigmoid_is_keras3_form():
    act = get_activation("hard_sigmoid")
    np.testing.assert_allclose(act(np.array([-3.0, 0.0, 1.5, 3.0])), [0, 0.5, 0.75, 1.0])


def _target(name, rng, shape):
    if name in ("bce", "bce_logits"):
        return rng.uniform(0.05, 0.95, size=shape)
    if name in ("cce", "cce_logits"):
        return np.eye(shape[1])[rng.integers(0, shape[1], size=shape[0])]
    return rng.normal(size=shape)


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_gradient_matches_central_differences(name, rng):
    loss = LOSSES[name]
    shape = (3, 4)
    out = rng.uniform(0.1, 0.9, size=shape) if name in ("bce", "cce") else rng.normal(size=shape)
    y = _target(name, rng, shape) if loss.needs_target else None
    _, grad = loss.value_and_grad(out, y)
    h = 1e-6
    fd = np.zeros_like(out)
    for idx in np.ndindex(shape):
        e = np.zeros_like(out)
        e[idx] = h
        up, down = loss.value_and_grad(out + e, y)[0], loss.value_and_grad(out - e, y)[0]
        fd[idx] = (up - down) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-10)


def test_loss_values_by_hand():
    out = np.array([[0.25, 0.75]])
    y = np.array([[0.0, 1.0]])
    assert LOSSES["sum"].value_and_grad(out, None)[0] == 1.0
    assert LOSSES["mean"].value_and_grad(out, None)[0] == 0.5
    assert LOSSES["mse"].value_and_grad(out, y)[0] == pytest.approx((0.25**2 + 0.25**2) / 2)
    assert LOSSES["bce"].value_and_grad(out, y)[0] == pytest.approx(-math.log(0.75))
    assert LOSSES["cce"].value_and_grad(out, y)[0] == pytest.approx(-math.log(0.75))


def test_probability_losses_clip_and_stop_the_gradient_outside():
    out = np.array([[0.0, 1.0]])
    y = np.array([[1.0, 0.0]])
    value, grad = LOSSES["bce"].value_and_grad(out, y)
    assert value == pytest.approx(-math.log(1e-7), rel=1e-6)
    np.testing.assert_array_equal(grad, 0.0)
