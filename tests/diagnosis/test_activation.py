"""Activation causes: another GELU form, another leaky slope, another function, and a
backward pass that uses another activation's derivative."""

from __future__ import annotations

import numpy as np
import pytest
from _ports import one, reference, x
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")

if "jax" in INSTALLED:
    import jax
    import jax.numpy as jnp


def _zeros(shapes):
    return {k: jnp.zeros(s, jnp.float32) for k, s in shapes.items()}


DENSE3 = {"w0": (6, 8), "b0": (8,), "w1": (8, 5), "b1": (5,), "w2": (5, 3), "b2": (3,)}


def test_gelu_approximation_is_named_at_its_layer():
    ref = reference([xgrad.Dense(8, "relu"), xgrad.Dense(5, "gelu"), xgrad.Dense(3)], 6)

    def port(p, x):
        x = jax.nn.relu(x @ p["w0"] + p["b0"])
        x = jax.nn.gelu(x @ p["w1"] + p["b1"])  # JAX's default: the tanh form
        return x @ p["w2"] + p["b2"]

    report = xgrad.compare_models(ref, (port, _zeros(DENSE3)), x(6, scale=2))
    d = one(report)
    assert (d.cause, d.layer, d.where, d.confirmed) == (
        "gelu-approximation",
        "layers.1",
        "forward",
        True,
    )
    assert d.residual <= report.tolerance < d.before
    assert "reference uses the exact erf GELU, candidate the tanh form" in d.detail
    line = report.diagnosis_lines()[0]
    assert line.startswith(
        "diagnosis: layers.1 dense (layers.1 <-> w1) [jax]: forward diverges; "
        "confirmed cause: gelu-approximation"
    )


def test_leaky_relu_slope():
    ref = reference([xgrad.Dense(8, "leaky_relu"), xgrad.Dense(3)], 6)  # slope 0.2 (Keras)

    def port(p, x):
        return jax.nn.leaky_relu(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]  # JAX: 0.01

    shapes = {"w0": (6, 8), "b0": (8,), "w1": (8, 3), "b1": (3,)}
    d = one(xgrad.compare_models(ref, (port, _zeros(shapes)), x(6)))
    assert (d.cause, d.layer) == ("leaky-relu-slope", "layers.0")
    assert "reference slope 0.2, candidate slope 0.01" in d.detail


def test_another_activation_is_named_by_the_function_that_fits():
    ref = reference([xgrad.Dense(8, "tanh"), xgrad.Dense(5, "relu"), xgrad.Dense(3)], 6)

    def port(p, x):
        x = jnp.tanh(x @ p["w0"] + p["b0"])
        x = jax.nn.elu(x @ p["w1"] + p["b1"])
        return x @ p["w2"] + p["b2"]

    d = one(xgrad.compare_models(ref, (port, _zeros(DENSE3)), x(6)))
    assert (d.cause, d.layer, d.where) == ("activation-mismatch", "layers.1", "forward")
    assert "reference computes relu, candidate elu" in d.detail


def test_a_wrong_derivative_is_found_backward_at_its_layer():
    ref = reference([xgrad.Dense(8, "tanh"), xgrad.Dense(5, "sigmoid"), xgrad.Dense(3)], 6)

    @jax.custom_jvp
    def sigmoid_with_tanh_derivative(z):
        return jax.nn.sigmoid(z)

    @sigmoid_with_tanh_derivative.defjvp
    def _(primals, tangents):
        (z,), (dz,) = primals, tangents
        return jax.nn.sigmoid(z), (1 - jnp.tanh(z) ** 2) * dz

    def port(p, x):
        x = jnp.tanh(x @ p["w0"] + p["b0"])
        x = sigmoid_with_tanh_derivative(x @ p["w1"] + p["b1"])
        return x @ p["w2"] + p["b2"]

    report = xgrad.compare_models(ref, (port, _zeros(DENSE3)), x(6))
    assert report.first_divergence == {
        "framework": "jax",
        "path": "layers.1",
        "where": "backward",
        "names": {"reference": "layers.1", "jax": "w1"},
    }
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("activation-mismatch", "layers.1", "backward")
    assert "derivative of tanh" in d.detail and np.isfinite(d.before)


@pytest.mark.parametrize(
    ("act", "jax_act", "cause", "says"),
    [
        ("leaky_relu:0.01", lambda z: jax.nn.leaky_relu(z, 0.2), "leaky-relu-slope",
         "reference slope 0.01, candidate slope 0.2"),
        ("gelu", jax.nn.gelu if "jax" in INSTALLED else None, "gelu-approximation",
         "reference uses the exact erf GELU, candidate the tanh form"),
    ],
)  # fmt: skip
def test_an_activation_right_after_a_residual_add_is_named(act, jax_act, cause, says):
    # the activation takes the block's own output x + f(x), not a dense pre-activation
    layers = [
        xgrad.Dense(8, "linear"),
        xgrad.Residual([xgrad.Dense(8, "tanh")]),
        xgrad.Activation(act),
        xgrad.Dense(3),
    ]
    ref = reference(layers, 6)

    def port(p, x):
        h = x @ p["w0"] + p["b0"]
        h = jax_act(h + jnp.tanh(h @ p["w1"] + p["b1"]))
        return h @ p["w2"] + p["b2"]

    shapes = {"w0": (6, 8), "b0": (8,), "w1": (8, 8), "b1": (8,), "w2": (8, 3), "b2": (3,)}
    d = one(xgrad.compare_models(ref, (port, _zeros(shapes)), x(6, scale=2)))
    assert (d.cause, d.layer, d.where, d.confirmed) == (cause, "layers.1", "forward", True)
    assert says in d.detail
