"""Backward and whole-model causes: kink conventions and rounding, crossentropy clipping,
loss reduction (only factors a reduction produces), a missing transpose, weights copied
transposed or into the wrong layer, and what may never be claimed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from _ports import one, reference, x
from conftest import INSTALLED
from planted import no_transpose, planted, scaled

import xgrad

needs_jax = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
if "jax" in INSTALLED:
    import jax
    import jax.numpy as jnp


@needs_jax
def test_kink_convention_of_a_hand_written_relu():
    spec, params = reference([xgrad.Dense(6, "relu"), xgrad.Dense(3)], 4)
    params["layers.0.bias"][:] = 0  # zero bias, so rows of zeros sit exactly at the kink

    def port(p, x):
        return jnp.maximum(x @ p["w0"] + p["b0"], 0) @ p["w1"] + p["b1"]

    shapes = {"w0": (4, 6), "b0": (6,), "w1": (6, 3), "b1": (3,)}
    xs = x(4)
    xs[::2] = 0.0
    report = xgrad.compare_models(
        (spec, params), (port, {k: jnp.zeros(s) for k, s in shapes.items()}), xs
    )
    assert [layer.forward["jax"].status for layer in report.layers] == ["match", "match"]
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("kink-convention", "layers.0", "backward")
    assert (
        "24 pre-activation(s) are exactly at relu's kink 0; the candidate's derivative "
        "there is 0.5" in d.detail
    )


def test_kink_rounding_one_preactivation_on_the_other_side():
    """A pre-activation 5e-14 above relu's kink, and a candidate whose rounding puts it
    5e-14 below: the forward agrees to 1e-13, the gradients differ at 1e-2."""
    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec, seed=3)
    xs = x(3, rows=5).astype(np.float64)
    params["layers.0.bias"][0] = 5e-14 - xs[0] @ params["layers.0.kernel"][:, 0]
    assert 0 < (xs @ params["layers.0.kernel"] + params["layers.0.bias"])[0, 0] < 1e-13

    class Shifted(xgrad.frameworks.numpy.NumpyFramework):
        def _build(self, spec, weights, dtype):
            shifted = dict(weights)
            shifted["layers.0.bias"] = weights["layers.0.bias"] - np.array([1e-13, 0, 0, 0])
            return super()._build(spec, shifted, dtype)

    fw = Shifted()
    fw.name = "rounds-the-other-way"
    report = xgrad.compare(spec, xs, params=params, frameworks=[fw], dtype="float64")
    assert report.output.results["rounds-the-other-way"].status == "match"
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("kink-rounding", "layers.0", "backward")
    assert d.detail.startswith("1 pre-activation(s) lie within rounding of relu's kink")
    assert d.residual <= 1e-10 < d.before


def test_loss_reduction_reports_the_factor_and_only_a_reduction_factor():
    spec = xgrad.MLP(4, [xgrad.Dense(5, "tanh"), xgrad.Dense(3)])
    xs = x(4, rows=2).astype(np.float64)
    d = one(xgrad.compare(spec, xs, frameworks=[scaled(1 / 6)], dtype="float64"))
    assert (d.cause, d.layer, d.framework) == ("loss-reduction", None, "scaled")
    assert "times 0.166667 (factor 1/6 = 1/(batch 2 x units 3)" in d.detail
    # 1.01, not 1.001: a factor within 1e-3 of 1 is not tested as a reduction at all, and
    # 1.001 sits on that bound, where the CPU's rounding decided the branch
    d = one(xgrad.compare(spec, xs, frameworks=[scaled(1.01)], dtype="float64"))
    assert (d.cause, d.confirmed) == ("unexplained", False)  # no reduction gives 1.01
    assert "a factor no loss reduction produces" in d.detail


def test_crossentropy_clipping():
    spec = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2, "sigmoid")])
    params = xgrad.init_params(spec, seed=0)
    params["layers.1.kernel"] = params["layers.1.kernel"] * 40  # saturate some outputs
    xs = x(3, rows=6).astype(np.float64)
    y = np.random.default_rng(1).integers(0, 2, size=(6, 2)).astype(float)

    def logits_form(grads, xx, yy, loss):
        """dL/d output as the logits form gives it, back-propagated by hand."""
        p = params
        a0 = np.tanh(xx @ p["layers.0.kernel"] + p["layers.0.bias"])
        out = grads.output
        delta1 = (out - yy) / out.size
        delta0 = (delta1 @ p["layers.1.kernel"].T) * (1 - a0**2)
        g = {
            "layers.0.kernel": xx.T @ delta0,
            "layers.0.bias": delta0.sum(0),
            "layers.1.kernel": a0.T @ delta1,
            "layers.1.bias": delta1.sum(0),
        }
        grad_a = None
        if grads.activation_grads is not None:
            grad_a = {
                "layers.0": delta1 @ p["layers.1.kernel"].T,
                "layers.1": grads.activation_grads["layers.1"],
            }
        return dataclasses.replace(
            grads, params=g, input=delta0 @ p["layers.0.kernel"].T, activation_grads=grad_a
        )

    report = xgrad.compare(
        spec,
        xs,
        y,
        loss="bce",
        params=params,
        dtype="float64",
        frameworks=[planted("logits-bce", change=logits_form)],
    )
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("crossentropy-clipping", "layers.1", "backward")
    assert "output(s) are saturated" in d.detail and d.residual <= 1e-10


@pytest.mark.skipif({"tensorflow", "torch"} - INSTALLED, reason="needs keras and torch")
def test_from_logits_false_on_logits_is_named_in_both_directions():
    """A classifier that outputs logits, ported from PyTorch to Keras: the port's
    CategoricalCrossentropy() (from_logits=False, the default) reads the logits as
    probabilities. Named whichever side makes the slip, with the side that misreads."""
    import keras
    import torch
    import torch.nn.functional as F
    from torch import nn

    xs = x(5, rows=6)
    rng = np.random.default_rng(1)
    y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=6)]
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    port = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)]
    )

    def keras_loss(loss):
        return lambda out, yy: loss(yy, out)  # Keras losses take (y_true, y_pred)

    def torch_cce(out, yy):
        return F.cross_entropy(out, yy)

    right = keras_loss(keras.losses.CategoricalCrossentropy(from_logits=True))
    wrong = keras_loss(keras.losses.CategoricalCrossentropy())
    assert xgrad.compare_models(ref, port, xs, y, loss=(torch_cce, right)).ok
    for first, second, losses, mistaken in (
        (ref, port, (torch_cce, wrong), "candidate"),
        (port, ref, (wrong, torch_cce), "reference"),
    ):
        report = xgrad.compare_models(first, second, xs, y, loss=losses)
        d = report.diagnoses[0]
        assert (d.cause, d.layer, d.where, d.confirmed) == (
            "crossentropy-form",
            "layers.1",
            "backward",
            True,
        ), d.text()
        assert "divided by their sum (Keras' from_logits=False)" in d.detail
        assert f"so the {mistaken}'s loss misreads it: pass from_logits=True" in d.detail
        assert d.residual <= report.tolerance < d.before

    yb = rng.integers(0, 2, size=(6, 3)).astype(np.float32)

    def torch_bce(out, yy):
        return F.binary_cross_entropy_with_logits(out, yy)

    report = xgrad.compare_models(
        ref, port, xs, yb, loss=(torch_bce, keras_loss(keras.losses.BinaryCrossentropy()))
    )
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.confirmed) == ("crossentropy-form", "layers.1", True)
    assert "the candidate's from probabilities; the output is not a probability" in d.detail


def test_missing_transpose_in_dinput():
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    d = one(xgrad.compare(spec, x(4).astype(float), frameworks=[no_transpose()], dtype="float64"))
    assert (d.cause, d.layer, d.where) == ("weight-layout", "layers.0", "backward")
    assert "delta @ W instead of delta @ W.T" in d.detail


@needs_jax
def test_weight_layout_transposed_and_reordered():
    spec, w = reference([xgrad.Dense(5, "tanh"), xgrad.Dense(5, "tanh"), xgrad.Dense(3)], 5)

    def port(p, x):
        x = jnp.tanh(x @ p["w0"] + p["b0"])
        x = jnp.tanh(x @ p["w1"] + p["b1"])
        return x @ p["w2"] + p["b2"]

    own = {
        f"{k}{i}": w[f"layers.{i}.{name}"]
        for i in range(3)
        for k, name in (("w", "kernel"), ("b", "bias"))
    }
    transposed = {**own, "w1": own["w1"].T}
    d = one(xgrad.compare_models((spec, w), (port, transposed), x(5), transfer=False))
    assert (d.cause, d.layer, d.where) == ("weight-layout", "layers.1", "forward")
    assert "kernel is the reference's transposed" in d.detail
    swapped = {**own, "w0": own["w1"], "w1": own["w0"]}
    report = xgrad.compare_models((spec, w), (port, swapped), x(5), transfer=False)
    # each of the two layers holds the other's kernel: both diverge in their own right
    assert [(d.cause, d.layer) for d in report.diagnoses] == [
        ("weight-layout", "layers.0"),
        ("weight-layout", "layers.1"),
    ]
    d = report.diagnoses[0]
    assert (
        "holds the reference's layer layers.1 kernel: layers paired in the wrong order" in d.detail
    )


def test_dtype_of_a_framework_that_computes_in_float32():
    def float32_inside(grads, xx, yy, loss):
        def f(a):
            return None if a is None else a.astype(np.float32).astype(np.float64)

        return dataclasses.replace(
            grads,
            params={k: f(v) for k, v in grads.params.items()},
            input=f(grads.input),
            output=f(grads.output),
            activations=None
            if grads.activations is None
            else {k: f(v) for k, v in grads.activations.items()},
        )

    class Float32Inside(xgrad.frameworks.numpy.NumpyFramework):
        def _build(self, spec, weights, dtype):
            inner = super()._build(spec, weights, "float32")
            outer = super()._build(spec, weights, dtype)

            def evaluate(x, y, loss, cotangent, capture):
                g = inner._evaluate(
                    x.astype(np.float32),
                    None if y is None else y.astype(np.float32),
                    loss,
                    cotangent,
                    capture,
                )
                return float32_inside(g, x, y, loss)

            outer._evaluate = evaluate
            return outer

    fw = Float32Inside()
    fw.name = "secretly-float32"
    spec = xgrad.MLP(4, [xgrad.Dense(5, "sigmoid"), xgrad.Dense(3)])
    d = one(xgrad.compare(spec, x(4).astype(float), frameworks=[fw], dtype="float64"))
    assert (d.cause, d.layer) == ("dtype", "layers.0")
    assert "returns values that are all float32 numbers" in d.detail


@needs_jax
def test_matmul_precision_emulated_on_the_cpu():
    spec, params = reference([xgrad.Dense(8, "tanh"), xgrad.Dense(3)], 6)

    def tf32(t):
        return jax.lax.reduce_precision(t, exponent_bits=8, mantissa_bits=10)

    def port(p, x):  # what a GPU with TF32 matmuls computes
        x = jnp.tanh(tf32(x) @ tf32(p["w0"]) + p["b0"])
        return tf32(x) @ tf32(p["w1"]) + p["b1"]

    shapes = {"w0": (6, 8), "b0": (8,), "w1": (8, 3), "b1": (3,)}
    report = xgrad.compare_models(
        (spec, params), (port, {k: jnp.zeros(s) for k, s in shapes.items()}), x(6)
    )
    # every matmul of the port reads TF32: each layer diverges in its own right
    assert [(d.cause, d.layer) for d in report.diagnoses] == [
        ("matmul-precision", "layers.0"),
        ("matmul-precision", "layers.1"),
    ]
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.where) == ("matmul-precision", "layers.0", "forward")
    assert "TF32" in d.detail and d.residual < 1e-6 < d.before


def test_round_mantissa_is_tf32_and_bf16():
    from xgrad.diagnosis import round_mantissa

    v = np.array([1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, -2.5], dtype=np.float32)
    # ties round to even: 1 + 2^-11 -> 1, 1 + 3 * 2^-11 -> 1 + 2^-9
    np.testing.assert_array_equal(round_mantissa(v, 10), [1.0, 1 + 2**-9, 1 + 2**-8, -2.5])
    np.testing.assert_array_equal(round_mantissa(v, 7)[:3], [1.0, 1.0, 1.0])


# -- where nothing may be claimed ------------------------------------------------------------


@needs_jax
def test_an_exact_port_gets_no_diagnosis():
    ref = reference([xgrad.Dense(8, "gelu"), xgrad.Dense(3, "softmax")], 6)

    def port(p, x):
        x = jax.nn.gelu(x @ p["w0"] + p["b0"], approximate=False)
        return jax.nn.softmax(x @ p["w1"] + p["b1"])

    zeros = {
        "w0": jnp.zeros((6, 8)),
        "b0": jnp.zeros(8),
        "w1": jnp.zeros((8, 3)),
        "b1": jnp.zeros(3),
    }
    report = xgrad.compare_models(
        ref, (port, zeros), x(6), [0, 1, 2] * 2 + [0, 1], loss="cce", explain=True
    )
    assert report.ok and report.diagnoses == ()
    assert json.loads(report.to_json())["diagnoses"] == []


@needs_jax
def test_randomly_corrupted_weights_are_unexplained():
    ref = reference([xgrad.Dense(8, "relu"), xgrad.Dense(3)], 6)

    def port(p, x):
        return jax.nn.relu(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]

    rng = np.random.default_rng(7)
    shapes = {"w0": (6, 8), "b0": (8,), "w1": (8, 3), "b1": (3,)}
    random = {k: jnp.asarray(rng.normal(size=s), dtype=jnp.float32) for k, s in shapes.items()}
    report = xgrad.compare_models(ref, (port, random), x(6), transfer=False)
    # every layer's weights differ: each diverges in its own right, none is explained
    assert [(d.cause, d.confirmed, d.layer) for d in report.diagnoses] == [
        ("unexplained", False, "layers.0"),
        ("unexplained", False, "layers.1"),
    ]


def test_unknown_corruption_of_gradients_is_unexplained():
    def noisy(grads, xx, yy, loss):
        noise = np.random.default_rng(0).normal(size=grads.params["layers.0.kernel"].shape)
        kernel = grads.params["layers.0.kernel"] + 0.1 * noise
        return dataclasses.replace(grads, params={**grads.params, "layers.0.kernel": kernel})

    spec = xgrad.MLP(4, [xgrad.Dense(5, "tanh"), xgrad.Dense(3)])
    d = one(
        xgrad.compare(
            spec, x(4).astype(float), frameworks=[planted("noisy", change=noisy)], dtype="float64"
        )
    )
    assert (d.cause, d.where, d.layer) == ("unexplained", "backward", "layers.0")


def test_diagnosis_shows_in_every_format():
    spec = xgrad.MLP(4, [xgrad.Dense(5, "tanh"), xgrad.Dense(3)])
    xs = x(4, rows=2).astype(float)
    report = xgrad.compare(spec, xs, frameworks=[scaled(1 / 6)], dtype="float64")
    assert "confirmed cause: loss-reduction" in report.to_text(width=250)
    assert "confirmed cause: loss-reduction" in report.to_markdown()
    assert "confirmed cause: loss-reduction" in report.mismatch_message()
    data = json.loads(report.to_json())
    assert data["diagnoses"][0]["cause"] == "loss-reduction"
    assert set(data["diagnoses"][0]) >= {"cause", "layer", "detail", "confirmed", "residual"}
    assert xgrad.compare(spec, xs, frameworks=[scaled(2)], explain=False).diagnoses == ()
