"""The model contract, checked in every framework: finite differences, agreement with the
NumPy float64 reference (every layer kind, per-layer capture, updated state), kinks,
cotangents, weights in and out, native names."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from _util import ACTIVATION_NAMES, EVERY_LAYER, LOSS_NAMES, case, finite_differences
from conftest import ALL_FRAMEWORKS, INSTALLED, framework_param, rel_norm

import xgrad

CASES = [("activation", n) for n in ACTIVATION_NAMES] + [("loss", n) for n in LOSS_NAMES]
CASE_IDS = [f"{k}={n}" for k, n in CASES]


@functools.cache
def _fd(kind, name):
    spec, params, x, y, loss = case(kind, name)
    return finite_differences(spec, params, x, y, loss)


@pytest.mark.parametrize("framework", [framework_param("numpy"), framework_param("jax")])
@pytest.mark.parametrize(("kind", "name"), CASES, ids=CASE_IDS)
def test_gradients_match_finite_differences(framework, kind, name):
    """The NumPy reference (hand-written backprop) and one autodiff framework against
    central differences; every other framework is held to the reference below."""
    spec, params, x, y, loss = case(kind, name)
    fd_params, fd_x = _fd(kind, name)
    got = (
        xgrad.get_framework(framework)
        .build(spec, params, dtype="float64")
        .gradients(x, y, loss=loss)
    )
    for pname, expected in fd_params.items():
        assert rel_norm(got.params[pname], expected) <= 1e-6, pname
    assert rel_norm(got.input, fd_x) <= 1e-6


@functools.cache
def _reference(kind, name):
    spec, params, x, y, loss = case(kind, name)
    model = xgrad.get_framework("numpy").build(spec, params, dtype="float64")
    return model.evaluate(x, y, loss=loss, capture=True)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
@pytest.mark.parametrize(("kind", "name"), CASES, ids=CASE_IDS)
def test_adapters_agree_with_the_numpy_reference(framework, kind, name, dtype):
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    spec, params, x, y, loss = case(kind, name)
    ref = _reference(kind, name)
    model = xgrad.get_framework(framework).build(spec, params, dtype=dtype)
    got = model.evaluate(x, y, loss=loss, capture=True)
    assert got.input.dtype == np.dtype(dtype)
    for pname in ref.params:
        assert got.params[pname].dtype == np.dtype(dtype)
        assert got.params[pname].shape == ref.params[pname].shape
        assert rel_norm(got.params[pname], ref.params[pname]) <= tol, pname
    assert rel_norm(got.input, ref.input) <= tol
    assert rel_norm(got.output, ref.output) <= tol
    assert abs(got.loss - ref.loss) <= tol * max(1.0, abs(ref.loss))
    assert list(got.activations) == list(ref.activations)
    for path, value in ref.activations.items():
        assert rel_norm(got.activations[path], value) <= tol, f"{path} output"
        assert rel_norm(got.activation_grads[path], ref.activation_grads[path]) <= tol, path


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
def test_every_layer_kind_agrees_with_the_numpy_reference(framework, dtype):
    """Flatten, Dense, LayerNorm, a residual block with BatchNorm in training mode, active
    and inactive Dropout, RMSNorm, BatchNorm in inference mode, an Activation layer."""
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    spec = EVERY_LAYER
    params = xgrad.init_params(spec, seed=2)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 2, 3))
    y = rng.normal(size=(6, 3))
    ref = (
        xgrad.get_framework("numpy")
        .build(spec, params, dtype="float64")
        .evaluate(x, y, loss="mse", capture=True)
    )
    model = xgrad.get_framework(framework).build(spec, params, dtype=dtype)
    for _ in range(2):  # the same answer twice: evaluating changes nothing in the model
        got = model.evaluate(x, y, loss="mse", capture=True)
        assert list(got.params) == list(spec.param_names)
        for name, value in ref.params.items():
            assert rel_norm(got.params[name], value) <= tol, name
        assert rel_norm(got.input, ref.input) <= tol
        assert rel_norm(got.output, ref.output) <= tol
        assert (
            sorted(got.state)
            == sorted(ref.state)
            == [
                "layers.3.layers.1.mean",
                "layers.3.layers.1.var",
            ]
        )
        for name, value in ref.state.items():
            if framework == "torch" and name.endswith(".var"):
                # PyTorch updates the running variance with the unbiased batch variance
                # (divided by N - 1): a real convention difference, predicted here by hand.
                m, n = 0.99, x.shape[0]
                value = value + (value - m * params[name]) / (n - 1)
            assert rel_norm(got.state[name], value) <= tol, name
        for path, value in ref.activations.items():
            assert rel_norm(got.activations[path], value) <= tol, path
            assert rel_norm(got.activation_grads[path], ref.activation_grads[path]) <= tol, path
    kept = model.weights()
    for name, value in params.items():
        np.testing.assert_array_equal(kept[name], value.astype(dtype), err_msg=name)


@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
def test_vjp_equals_the_chain_rule_of_the_loss(framework, rng):
    """Back-propagating dL/dout by vjp gives the loss gradients (mse: dL/dout = 2(out-y)/N)."""
    spec, params, x, y, loss = case("activation", "tanh")
    model = xgrad.get_framework(framework).build(spec, params, dtype="float64")
    by_loss = model.gradients(x, y, loss="mse")
    cot = 2 * (by_loss.output - y) / y.size
    by_vjp = model.vjp(x, cot)
    assert by_vjp.loss is None
    for pname in by_loss.params:
        assert rel_norm(by_vjp.params[pname], by_loss.params[pname]) <= 1e-12
    assert rel_norm(by_vjp.input, by_loss.input) <= 1e-12
    # A random cotangent: every adapter agrees with the hand-written reference.
    cot = rng.normal(size=by_loss.output.shape)
    ref = xgrad.get_framework("numpy").build(spec, params, dtype="float64").vjp(x, cot)
    got = model.vjp(x, cot)
    for pname in ref.params:
        assert rel_norm(got.params[pname], ref.params[pname]) <= 1e-12


# relu-family kinks: a one-unit layer with kernel 1 and bias 0 fed exactly the kink input,
# loss = sum, so dL/dinput = act'(kink). Expected values written out by hand.
KINKS = [
    ("relu", 0.0, 0.0),
    ("leaky_relu", 0.0, 0.2),
    ("leaky_relu:0.01", 0.0, 0.01),
    ("relu6", 0.0, 0.0),
    ("relu6", 6.0, 0.0),
    ("hard_sigmoid", -3.0, 0.0),
    ("hard_sigmoid", 3.0, 0.0),
    ("selu", 0.0, 1.0507009873554805),
    ("elu", 0.0, 1.0),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
@pytest.mark.parametrize(("act", "at", "expected"), KINKS, ids=[f"{a}@{v}" for a, v, _ in KINKS])
def test_kink_conventions_hold_in_every_adapter(framework, act, at, expected, dtype):
    spec = xgrad.MLP(1, [xgrad.Dense(1, act)])
    params = {"layers.0.kernel": np.ones((1, 1)), "layers.0.bias": np.zeros(1)}
    model = xgrad.get_framework(framework).build(spec, params, dtype=dtype)
    got = model.gradients(np.array([[at]]))
    rel = 1e-15 if dtype == "float64" else 1e-7
    assert got.input[0, 0] == pytest.approx(expected, rel=rel, abs=0)
    assert got.params["layers.0.bias"][0] == pytest.approx(expected, rel=rel, abs=0)


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
def test_canonical_native_canonical_round_trip_is_bit_exact(framework, dtype, use_bias):
    spec = xgrad.MLP(6, [xgrad.Dense(4, "relu", use_bias=use_bias), xgrad.Dense(3, "gelu")])
    params = xgrad.init_params(spec, seed=11)
    model = xgrad.get_framework(framework).build(spec, params, dtype=dtype)
    exported = model.weights()
    assert list(exported) == list(spec.param_shapes())
    for name, value in params.items():
        assert exported[name].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(exported[name], value.astype(dtype))
    assert list(model.native_names()) == list(spec.param_shapes())
    other = xgrad.init_params(spec, seed=12)
    moved = model.with_weights(other)
    for name, value in other.items():
        np.testing.assert_array_equal(moved.weights()[name], value.astype(dtype))
        np.testing.assert_array_equal(model.weights()[name], params[name].astype(dtype))


NATIVE_NAMES = {
    "numpy": ("layers.0.kernel", "layers.1.bias", "layers.2.mean"),
    "jax": ("[0]['kernel']", "[1]['bias']", "[2]['mean']"),
    "flax": ("layers/0/kernel", "layers/1/bias", "layers/2/mean"),
    "tensorflow": (
        "sequential/dense_0/kernel",
        "sequential/layernorm_1/beta",
        "sequential/batchnorm_2/moving_mean",
    ),
    "torch": ("0.0.weight", "1.bias", "2.running_mean"),
}


@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
def test_native_names_are_the_frameworks_own(framework):
    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.LayerNorm(), xgrad.BatchNorm()])
    names = xgrad.get_framework(framework).build(spec).native_names()
    got = (names["layers.0.kernel"], names["layers.1.bias"], names["layers.2.mean"])
    assert got == NATIVE_NAMES[framework]


@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")
def test_flax_native_module_holds_the_params():
    from flax import nnx

    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec)
    module = xgrad.get_framework("flax").build(spec, params, dtype="float32").native
    assert isinstance(module, nnx.Module)
    np.testing.assert_array_equal(
        np.asarray(module.layers[0].kernel[...]), params["layers.0.kernel"].astype(np.float32)
    )


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="tensorflow is not installed")
def test_keras_native_model_holds_the_params_and_runs():
    import keras

    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2, "sigmoid")])
    params = xgrad.init_params(spec)
    model = xgrad.get_framework("tensorflow").build(spec, params, dtype="float64").native
    assert isinstance(model, keras.Model)
    assert [v.path for v in model.trainable_variables] == [
        "sequential/dense_0/kernel",
        "sequential/dense_0/bias",
        "sequential/dense_1/kernel",
        "sequential/dense_1/bias",
    ]
    assert keras.config.floatx() == "float32"  # float64 is per layer, not global
    x = np.ones((2, 3))
    ref = xgrad.get_framework("numpy").build(spec, params, dtype="float64").gradients(x).output
    np.testing.assert_allclose(np.asarray(model(x)), ref, rtol=1e-14)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", ["bce", "cce"])
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
def test_saturated_probabilities_are_clipped_alike(framework, loss, dtype):
    """Outputs pushed to exactly 0 and 1: every adapter clips at the same epsilon.

    Compared within the dtype: in float32, 1 - 1e-7 rounds to 1 - 1.19e-7, so a saturated
    float32 loss differs from float64 by the definition itself (log(1.19e-7) vs log(1e-7)).
    """
    spec = xgrad.MLP(2, [xgrad.Dense(3, "sigmoid" if loss == "bce" else "softmax")])
    params = {
        "layers.0.kernel": np.array([[60.0, -60.0, 0.5], [0.1, 0.2, -0.3]]),
        "layers.0.bias": np.array([0.0, 0.0, 0.1]),
    }
    x = np.array([[1.0, 0.5], [-1.0, 2.0]])
    y = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    tol = {"float64": 1e-12, "float32": 1e-5}[dtype]
    ref = xgrad.get_framework("numpy").build(spec, params, dtype=dtype).gradients(x, y, loss=loss)
    got = xgrad.get_framework(framework).build(spec, params, dtype=dtype).gradients(x, y, loss=loss)
    assert ref.loss > 10  # saturated: clipped terms dominate
    assert abs(got.loss - ref.loss) <= tol * abs(ref.loss)
    for name in ref.params:
        assert rel_norm(got.params[name], ref.params[name]) <= tol, name
