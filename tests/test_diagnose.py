"""Diagnosis: each known cause, planted, is confirmed at the right layer with the error
before and after; exact ports claim nothing; random corruption is `unexplained`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.adapters.numpy import NumpyAdapter, NumpyModel, backward, forward
from xgrad.diagnose import round_mantissa

needs_all = pytest.mark.skipif(
    {"jax", "flax", "tensorflow"} - INSTALLED, reason="needs jax, flax and tensorflow"
)

if not {"jax", "flax", "tensorflow"} - INSTALLED:
    import jax
    import jax.numpy as jnp
    import keras
    from flax import nnx

    import xgrad.adapters.tensorflow  # noqa: F401 - quiet TensorFlow import


def _one(report):
    assert report.diagnoses is not None and len(report.diagnoses) == 1, report.diagnoses
    return report.diagnoses[0]


def _keras(dims, acts, name="s"):
    layers = [keras.Input((dims[0],))]
    layers += [
        keras.layers.Dense(
            w,
            activation=a,
            name=f"l{i}",
            kernel_initializer=keras.initializers.GlorotUniform(seed=i),
        )
        for i, (w, a) in enumerate(zip(dims[1:], acts, strict=True))
    ]
    return keras.Sequential(layers, name=name)


def _zeros(dims, bias=True):
    p = {}
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        p[f"w{i}"] = jnp.zeros((a, b))
        if bias:
            p[f"b{i}"] = jnp.zeros(b)
    return p


def _x(n_in, rows=8, seed=0):
    return np.random.default_rng(seed).normal(size=(rows, n_in))


# -- forward causes, on ports ---------------------------------------------------------------


@needs_all
def test_gelu_approximation():
    dims = [6, 8, 5, 3]
    ref = _keras(dims, ["relu", "gelu", "linear"])

    def port(p, x):
        x = jax.nn.relu(x @ p["w0"] + p["b0"])
        x = jax.nn.gelu(x @ p["w1"] + p["b1"])  # JAX's default: the tanh form
        return x @ p["w2"] + p["b2"]

    report = xgrad.compare_models(ref, (port, _zeros(dims)), 2 * _x(6))
    d = _one(report)
    assert (d.cause, d.layer, d.where, d.confirmed) == ("gelu-approximation", 1, "forward", True)
    assert d.residual <= report.tolerance < d.before
    assert "reference uses the exact erf GELU, candidate the tanh form" in d.detail
    line = report.diagnosis_lines()[0]
    assert line.startswith(
        "diagnosis: layer 1 (s/l1 <-> w1) [jax]: forward diverges; "
        "confirmed cause: gelu-approximation"
    )
    assert "the error drops from" in line


@needs_all
def test_leaky_relu_slope():
    dims = [6, 8, 3]
    ref = _keras(dims, ["leaky_relu", "linear"])  # Keras: slope 0.2

    def port(p, x):
        return jax.nn.leaky_relu(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]  # JAX: 0.01

    d = _one(xgrad.compare_models(ref, (port, _zeros(dims)), _x(6)))
    assert (d.cause, d.layer) == ("leaky-relu-slope", 0)
    assert "reference slope 0.2, candidate slope 0.01" in d.detail


@needs_all
def test_activation_mismatch_names_the_function_that_fits():
    dims = [6, 8, 8, 3]
    ref = _keras(dims, ["tanh", "relu", "linear"])

    def port(p, x):
        x = jnp.tanh(x @ p["w0"] + p["b0"])
        x = jax.nn.elu(x @ p["w1"] + p["b1"])
        return x @ p["w2"] + p["b2"]

    d = _one(xgrad.compare_models(ref, (port, _zeros(dims)), _x(6)))
    assert (d.cause, d.layer, d.where) == ("activation-mismatch", 1, "forward")
    assert "reference computes relu, candidate elu" in d.detail


@needs_all
def test_matmul_precision_emulated_on_the_cpu():
    dims = [6, 8, 3]
    ref = _keras(dims, ["tanh", "linear"])

    def tf32(t):
        return jax.lax.reduce_precision(t, exponent_bits=8, mantissa_bits=10)

    def port(p, x):  # what a GPU with TF32 matmuls computes
        x = jnp.tanh(tf32(x) @ tf32(p["w0"]) + p["b0"])
        return tf32(x) @ tf32(p["w1"]) + p["b1"]

    d = _one(xgrad.compare_models(ref, (port, _zeros(dims)), _x(6)))
    assert (d.cause, d.layer, d.where) == ("matmul-precision", 0, "forward")
    assert "TF32" in d.detail and d.residual < 1e-6 < d.before


def test_round_mantissa_is_tf32_and_bf16():
    x = np.array([1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, -2.5], dtype=np.float32)
    # ties round to even: 1 + 2^-11 -> 1, 1 + 3 * 2^-11 -> 1 + 2^-9
    np.testing.assert_array_equal(round_mantissa(x, 10), [1.0, 1 + 2**-9, 1 + 2**-8, -2.5])
    np.testing.assert_array_equal(round_mantissa(x, 7)[:3], [1.0, 1.0, 1.0])


@needs_all
def test_dtype_a_float32_port_of_a_float64_model():
    spec = xgrad.MLP(5, [xgrad.Dense(7, "tanh"), xgrad.Dense(3)])
    ref = (spec, xgrad.init_params(spec, seed=1))  # float64

    class Port(nnx.Module):  # JAX without x64: float32
        def __init__(self):
            self.a = nnx.Linear(5, 7, rngs=nnx.Rngs(0))
            self.b = nnx.Linear(7, 3, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.b(jnp.tanh(self.a(x)))

    report = xgrad.compare_models(ref, Port(), _x(5))
    assert report.dtype == "float64" and not report.ok
    d = _one(report)
    assert (d.cause, d.layer) == ("dtype", 0)
    assert (
        "float64 was asked, but the candidate computes in float32 (it declares float32)" in d.detail
    )


@needs_all
def test_weight_layout_transposed_and_reordered():
    dims = [5, 5, 5, 3]
    ref = _keras(dims, ["tanh", "tanh", "linear"])
    w = [v.numpy() for v in ref.weights]

    def port(p, x):
        x = jnp.tanh(x @ p["w0"] + p["b0"])
        x = jnp.tanh(x @ p["w1"] + p["b1"])
        return x @ p["w2"] + p["b2"]

    own = {"w0": w[0], "b0": w[1], "w1": w[2], "b1": w[3], "w2": w[4], "b2": w[5]}
    transposed = {**own, "w1": w[2].T}
    d = _one(xgrad.compare_models(ref, (port, transposed), _x(5), transfer=False))
    assert (d.cause, d.layer, d.where) == ("weight-layout", 1, "forward")
    assert "kernel is the reference's transposed" in d.detail
    swapped = {**own, "w0": w[2], "w1": w[0]}
    d = _one(xgrad.compare_models(ref, (port, swapped), _x(5), transfer=False))
    assert (d.cause, d.layer) == ("weight-layout", 0)
    assert "holds the reference's layer 1 kernel: layers paired in the wrong order" in d.detail


# -- backward causes -------------------------------------------------------------------------


@needs_all
def test_kink_convention_of_a_hand_written_relu():
    dims = [4, 6, 3]
    ref = _keras(dims, ["relu", "linear"])  # Keras biases start at zero

    def port(p, x):
        return jnp.maximum(x @ p["w0"] + p["b0"], 0) @ p["w1"] + p["b1"]

    x = _x(4)
    x[::2] = 0.0  # rows of zeros: z = 0 exactly, at relu's kink
    report = xgrad.compare_models(ref, (port, _zeros(dims)), x)
    assert [layer.forward.status for layer in report.layers] == ["match", "match"]
    d = _one(report)
    assert (d.cause, d.layer, d.where) == ("kink-convention", 0, "backward")
    assert (
        "24 pre-activation(s) are exactly at relu's kink 0; the candidate's derivative "
        "there is 0.5" in d.detail
    )


class _ScaledModel(NumpyModel):
    """Reports mean-reduced gradients when asked for loss='sum'."""

    def _value_and_grad(self, x, y, loss):
        g = super()._value_and_grad(x, y, loss)
        n = g.output.size
        return xgrad.Gradients(
            g.loss, {k: v / n for k, v in g.params.items()}, g.input / n, g.output
        )


class ScaledAdapter(NumpyAdapter):
    name = "mean-not-sum"

    def _build(self, spec, params, dtype):
        return _ScaledModel(spec, params, dtype)


def test_loss_reduction_reports_the_factor():
    spec = xgrad.MLP(4, [xgrad.Dense(5, "tanh"), xgrad.Dense(3)])
    report = xgrad.compare(spec, _x(4, rows=2), frameworks=[ScaledAdapter()], dtype="float64")
    d = _one(report)
    assert (d.cause, d.layer, d.framework) == ("loss-reduction", None, "mean-not-sum")
    assert "times 0.166667 (factor 1/6 = 1/(batch 2 x units 3)" in d.detail


class _LogitsBceModel(NumpyModel):
    """Binary crossentropy through the logits form (no clipping), for a tanh -> sigmoid net,
    back-propagated by hand from dL/dz of the last layer."""

    def _value_and_grad(self, x, y, loss):
        p = self._params
        z0 = x @ p["layers.0.kernel"] + p["layers.0.bias"]
        a0 = np.tanh(z0)
        z1 = a0 @ p["layers.1.kernel"] + p["layers.1.bias"]
        out = 1 / (1 + np.exp(-z1))
        delta1 = (out - y) / out.size  # dL/dz1, logits form
        delta0 = (delta1 @ p["layers.1.kernel"].T) * (1 - a0**2)
        grads = {
            "layers.0.kernel": x.T @ delta0,
            "layers.0.bias": delta0.sum(0),
            "layers.1.kernel": a0.T @ delta1,
            "layers.1.bias": delta1.sum(0),
        }
        value = loss.value_and_grad(out, y)[0]
        return xgrad.Gradients(float(value), grads, delta0 @ p["layers.0.kernel"].T, out)


class LogitsBceAdapter(NumpyAdapter):
    name = "logits-bce"

    def _build(self, spec, params, dtype):
        return _LogitsBceModel(spec, params, dtype)


def test_crossentropy_clipping():
    spec = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2, "sigmoid")])
    params = xgrad.init_params(spec, seed=0)
    params["layers.1.kernel"] = params["layers.1.kernel"] * 40  # saturate some outputs
    x = _x(3, rows=6)
    y = np.random.default_rng(1).integers(0, 2, size=(6, 2)).astype(float)
    with np.errstate(all="ignore"):
        report = xgrad.compare(
            spec, x, y, loss="bce", params=params, dtype="float64", frameworks=[LogitsBceAdapter()]
        )
    d = _one(report)
    assert (d.cause, d.layer, d.where) == ("crossentropy-clipping", 1, "backward")
    assert "output(s) are saturated" in d.detail and d.residual <= 1e-10


class _NoTranspose(NumpyModel):
    def _value_and_grad(self, x, y, loss):
        g = super()._value_and_grad(x, y, loss)
        values = forward(self.spec, self._params, x)
        grads_a: list = []
        backward(
            self.spec,
            self._params,
            x,
            values,
            loss.value_and_grad(values[-1].a, y)[1],
            layer_grads=grads_a,
        )
        delta0 = self.spec.layers[0].act.vjp(values[0].z, values[0].a, grads_a[0])
        return xgrad.Gradients(g.loss, g.params, delta0 @ self._params["layers.0.kernel"], g.output)


class NoTransposeAdapter(NumpyAdapter):
    name = "no-transpose"

    def _build(self, spec, params, dtype):
        return _NoTranspose(spec, params, dtype)


def test_missing_transpose_in_dinput():
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    d = _one(xgrad.compare(spec, _x(4), frameworks=[NoTransposeAdapter()], dtype="float64"))
    assert (d.cause, d.layer, d.where) == ("weight-layout", 0, "backward")
    assert "delta @ W instead of delta @ W.T" in d.detail


class _Float32Inside(NumpyModel):
    """Asked for float64, computes in float32, returns float64 arrays."""

    def __init__(self, spec, params, dtype):
        super().__init__(spec, params, dtype)
        self._inner = NumpyModel(spec, params, "float32")

    def _value_and_grad(self, x, y, loss):
        g = self._inner._value_and_grad(
            x.astype(np.float32), None if y is None else y.astype(np.float32), loss
        )
        return xgrad.Gradients(
            g.loss,
            {k: v.astype(np.float64) for k, v in g.params.items()},
            g.input.astype(np.float64),
            g.output.astype(np.float64),
        )

    def _layer_values(self, x):
        values = self._inner._layer_values(x.astype(np.float32))
        return [xgrad.LayerValues(v.z.astype(np.float64), v.a.astype(np.float64)) for v in values]


class Float32InsideAdapter(NumpyAdapter):
    name = "secretly-float32"

    def _build(self, spec, params, dtype):
        return _Float32Inside(spec, params, dtype)


def test_dtype_of_an_adapter_that_computes_in_float32():
    spec = xgrad.MLP(4, [xgrad.Dense(5, "sigmoid"), xgrad.Dense(3)])
    d = _one(xgrad.compare(spec, _x(4), frameworks=[Float32InsideAdapter()], dtype="float64"))
    assert (d.cause, d.layer) == ("dtype", 0)
    assert "returns values that are all float32 numbers" in d.detail


# -- where nothing may be claimed ------------------------------------------------------------


@needs_all
def test_an_exact_port_gets_no_diagnosis():
    dims = [6, 8, 3]
    ref = _keras(dims, ["gelu", "softmax"])

    def port(p, x):
        x = jax.nn.gelu(x @ p["w0"] + p["b0"], approximate=False)
        return jax.nn.softmax(x @ p["w1"] + p["b1"])

    report = xgrad.compare_models(
        ref, (port, _zeros(dims)), _x(6), [0, 1, 2] * 2 + [0, 1], loss="cce", explain=True
    )
    assert report.ok and report.diagnoses == ()
    assert json.loads(report.to_json())["diagnoses"] == []
    quiet = xgrad.compare_models(ref, (port, _zeros(dims)), _x(6))
    assert quiet.diagnoses is None  # explanation runs only on a mismatch by default


@needs_all
def test_randomly_corrupted_weights_are_unexplained():
    dims = [6, 8, 3]
    ref = _keras(dims, ["relu", "linear"])

    def port(p, x):
        return jax.nn.relu(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]

    rng = np.random.default_rng(7)
    random = {
        k: jnp.asarray(rng.normal(size=v.shape), dtype=jnp.float32) for k, v in _zeros(dims).items()
    }
    d = _one(xgrad.compare_models(ref, (port, random), _x(6), transfer=False))
    assert (d.cause, d.confirmed, d.layer) == ("unexplained", False, 0)


def test_unknown_corruption_of_gradients_is_unexplained():
    class Noisy(NumpyModel):
        def _value_and_grad(self, x, y, loss):
            g = super()._value_and_grad(x, y, loss)
            noise = np.random.default_rng(0).normal(size=g.params["layers.0.kernel"].shape)
            return xgrad.Gradients(
                g.loss,
                {**g.params, "layers.0.kernel": g.params["layers.0.kernel"] + 0.1 * noise},
                g.input,
                g.output,
            )

    class NoisyAdapter(NumpyAdapter):
        name = "noisy"

        def _build(self, spec, params, dtype):
            return Noisy(spec, params, dtype)

    spec = xgrad.MLP(4, [xgrad.Dense(5, "tanh"), xgrad.Dense(3)])
    d = _one(xgrad.compare(spec, _x(4), frameworks=[NoisyAdapter()], dtype="float64"))
    assert (d.cause, d.where, d.layer) == ("unexplained", "backward", 0)


def test_diagnosis_shows_in_every_format():
    spec = xgrad.MLP(4, [xgrad.Dense(5, "tanh"), xgrad.Dense(3)])
    report = xgrad.compare(spec, _x(4, rows=2), frameworks=[ScaledAdapter()], dtype="float64")
    assert "confirmed cause: loss-reduction" in report.to_text(width=250)
    assert "confirmed cause: loss-reduction" in report.to_markdown()
    assert "confirmed cause: loss-reduction" in report.mismatch_message()
    data = json.loads(report.to_json())
    assert data["diagnoses"][0]["cause"] == "loss-reduction"
    assert set(data["diagnoses"][0]) >= {"cause", "layer", "detail", "confirmed", "residual"}
    assert xgrad.compare(spec, _x(4), frameworks=[ScaledAdapter()], explain=False).diagnoses is None


def test_cli_explain_flag(capsys):
    from xgrad.cli import main

    code = main(
        [
            "compare",
            "--input-dim",
            "4",
            "--layers",
            "3:tanh",
            "--frameworks",
            "numpy",
            "--explain",
            "--quiet",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "diagnosis" not in out


def test_kink_rounding_one_preactivation_on_the_other_side():
    """A pre-activation 5e-14 above relu's kink, and a candidate whose rounding puts it
    5e-14 below: the forward agrees to 1e-13, the gradients differ at 1e-2."""
    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec, seed=3)
    x = _x(3, rows=5)
    params["layers.0.bias"][0] = 5e-14 - x[0] @ params["layers.0.kernel"][:, 0]
    assert 0 < (x @ params["layers.0.kernel"] + params["layers.0.bias"])[0, 0] < 1e-13

    class Shifted(NumpyAdapter):
        name = "rounds-the-other-way"

        def _build(self, spec, params, dtype):
            shifted = dict(params)
            shifted["layers.0.bias"] = params["layers.0.bias"] - np.array([1e-13, 0, 0, 0])
            return NumpyModel(spec, shifted, dtype)

    report = xgrad.compare(spec, x, params=params, frameworks=[Shifted()], dtype="float64")
    assert report.output.results["rounds-the-other-way"].status == "match"
    d = _one(report)
    assert (d.cause, d.layer, d.where) == ("kink-rounding", 0, "backward")
    assert d.detail.startswith("1 pre-activation(s) lie within rounding of relu's kink")
    assert d.residual <= 1e-10 < d.before
