"""The tensorflow framework: Keras models of specs and users' Keras models, against xgrad's
definitions (the float64 NumPy model, xgrad's activation and loss formulas)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import ALL_FRAMEWORKS, rel_norm

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.errors import AlignmentError, FrameworkError, InputError, ModelFileError, ParamsError
from xgrad.frameworks.kinds import KindNotSupportedError
from xgrad.frameworks.numpy import FRAMEWORK as NUMPY
from xgrad.frameworks.registry import get_framework
from xgrad.frameworks.tensorflow import FRAMEWORK, load_keras_file
from xgrad.frameworks.tensorflow.ops import keras, tf, tf_activation, tf_loss
from xgrad.layers import (
    LAYERS,
    AbstractLayer,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    Residual,
    RMSNorm,
)
from xgrad.layers.base import Step
from xgrad.losses import LOSSES
from xgrad.params import init_params
from xgrad.spec import MLP

TOL = {"float64": 1e-12, "float32": 1e-5}

SPEC = MLP(
    (4, 3),
    [
        Flatten(),
        Dense(8, "gelu"),
        LayerNorm(),
        Residual([Dense(8, "leaky_relu"), RMSNorm(), Dropout(0.25, active=True)]),
        BatchNorm(momentum=0.9, training=True),
        Dense(6, "tanh"),
        Dropout(0.5),
        BatchNorm(epsilon=1e-2),
        Activation("sigmoid"),
        Dense(4, "selu"),
        Dense(3, "softmax"),
    ],
)
"""Every layer kind: BatchNorm in both modes, Dropout active and inactive, a residual block."""

X = np.random.default_rng(0).standard_normal((6, 4, 3))
Y = np.random.default_rng(1).standard_normal((6, 3))


def assert_close(actual: dict, expected: dict, tol: float, what: str) -> None:
    """Every array within ``tol`` of the expected one, relative to its norm."""
    __tracebackhide__ = True
    assert actual.keys() == expected.keys(), f"{what}: names {list(actual)} vs {list(expected)}"
    shapes = {k: (np.shape(actual[k]), np.shape(v)) for k, v in expected.items()}
    assert all(a == b for a, b in shapes.values()), f"{what}: shapes {shapes}"
    bad = {k: rel_norm(actual[k], expected[k]) for k in expected}
    bad = {k: v for k, v in bad.items() if v > tol}
    assert not bad, f"{what} differ beyond {tol:g} (relative norm): {bad}"


def assert_grads_close(g, ref, tol: float) -> None:
    __tracebackhide__ = True
    assert_close(g.params, ref.params, tol, "dL/dparams")
    assert_close(g.state, ref.state, tol, "updated state")
    assert_close(
        {"input": g.input, "output": g.output},
        {"input": ref.input, "output": ref.output},
        tol,
        "values",
    )
    if ref.loss is not None:
        assert abs(g.loss - ref.loss) <= tol * abs(ref.loss)
    if ref.activations is not None:
        assert_close(g.activations, ref.activations, tol, "layer outputs")
        assert_close(g.activation_grads, ref.activation_grads, tol, "dL/d layer outputs")


@pytest.fixture(scope="module", params=["float64", "float32"])
def built(request):
    """``(dtype, tensorflow model of SPEC, float64 NumPy model of SPEC)``, built once."""
    params = init_params(SPEC, seed=3)
    model = FRAMEWORK.build(SPEC, params, dtype=request.param)
    return request.param, model, NUMPY.build(SPEC, params, dtype="float64")


# -- the framework ----------------------------------------------------------------------------


def test_importing_the_package_imports_no_framework():
    code = (
        "import sys, xgrad.frameworks.tensorflow as t; "
        "print(t.FRAMEWORK.name, 'tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["tensorflow", "False"]


def test_framework_names_and_claims():
    assert get_framework("keras") is FRAMEWORK and get_framework("tf") is FRAMEWORK
    assert FRAMEWORK.dtypes == ("float32", "float64", "bfloat16", "float16")
    assert FRAMEWORK.claims(keras.Sequential([keras.layers.Dense(2)]))
    assert not FRAMEWORK.claims(np.ones(3)) and not FRAMEWORK.claims((SPEC, {}))


def test_another_keras_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(FrameworkError, match="needs KERAS_BACKEND=tensorflow"):
        FRAMEWORK.build(MLP(2, [Dense(1)]))


# -- xgrad's definitions in TensorFlow ----------------------------------------------------------


@pytest.mark.parametrize("name", [*ACTIVATIONS, "leaky_relu:0.01"])
def test_activation_values_and_derivatives_are_xgrads_in_float64(name):
    act = get_activation(name)
    kinks = [-3.0, 0.0, 3.0, 6.0]
    z = np.concatenate([kinks, np.random.default_rng(2).uniform(-8, 8, 28)]).reshape(4, 8)
    cot = np.random.default_rng(3).standard_normal(z.shape)
    zt = tf.constant(z)
    with tf.GradientTape() as tape:
        tape.watch(zt)
        a = tf_activation(act)(zt)
    grad = tape.gradient(a, zt, output_gradients=tf.constant(cot)).numpy()
    want, want_grad = act(z), act.vjp(z, act(z), cot)
    # relative to each array's scale: in GELU's far tail both erfs round differently
    np.testing.assert_allclose(a.numpy(), want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-12 * np.abs(want_grad).max())


@pytest.mark.parametrize("name", list(LOSSES))
def test_loss_values_and_gradients_are_xgrads_in_float64(name):
    rng = np.random.default_rng(4)
    out = rng.uniform(0.01, 0.99, (5, 3))
    out[0, 0], out[1, 1] = 1e-9, 1 - 1e-9  # clipped probabilities: gradient 0 there
    y = rng.uniform(0, 1, (5, 3)) if name.startswith("bce") else np.eye(3)[rng.integers(0, 3, 5)]
    loss = LOSSES[name]
    ot = tf.constant(out)
    with tf.GradientTape() as tape:
        tape.watch(ot)
        value = tf_loss(loss)(ot, tf.constant(y))
    want_value, want_grad = loss.value_and_grad(out, y)
    assert abs(float(value) - want_value) <= 1e-12 * abs(want_value)
    np.testing.assert_allclose(tape.gradient(value, ot).numpy(), want_grad, rtol=1e-12, atol=1e-15)


# -- a spec as a Keras model ----------------------------------------------------------------------


def test_spec_model_matches_the_numpy_reference(built):
    dtype, model, ref = built
    g = model.evaluate(X, Y, loss="mse", capture=True)
    assert g.output.dtype == dtype and g.params["layers.1.kernel"].dtype == dtype
    assert_grads_close(g, ref.evaluate(X, Y, loss="mse", capture=True), TOL[dtype])


def test_spec_model_back_propagates_a_cotangent(built):
    dtype, model, ref = built
    cot = np.random.default_rng(5).standard_normal((6, 3))
    assert_grads_close(model.vjp(X, cot), ref.vjp(X, cot), TOL[dtype])


def test_a_loss_function_of_tensors(built):
    dtype, model, ref = built
    g = model.evaluate(X, loss=lambda out, y: tf.reduce_sum(out * out))
    out = ref.evaluate(X).output
    want = ref.vjp(X, 2 * out)  # d/dout sum(out**2) = 2 out
    assert abs(g.loss - float((out * out).sum())) <= TOL[dtype] * float((out * out).sum())
    assert_close(g.params, want.params, TOL[dtype], "dL/dparams")
    with pytest.raises(InputError, match=re.escape("must return a scalar TensorFlow tensor")):
        model.evaluate(X, loss=lambda out, y: out)


def test_evaluating_twice_gives_the_same_and_changes_no_variable(built):
    _, model, _ = built
    before = model.weights()
    first = model.evaluate(X, Y, loss="mse", capture=True)
    second = model.evaluate(X, Y, loss="mse", capture=True)
    for name, value in before.items():
        assert np.array_equal(model.weights()[name], value), name
    for name in first.params:
        assert np.array_equal(first.params[name], second.params[name]), name
    for name in first.state:
        assert np.array_equal(first.state[name], second.state[name]), name
        assert not np.array_equal(first.state[name], before[name]), f"{name} was not updated"


def test_spec_model_layers_and_native_names(built):
    dtype, model, _ = built
    assert [info.name for info in model.walk()] == [
        "flatten_0",
        "dense_1",
        "layernorm_2",
        "residual_3",
        "dense_3_0",
        "rmsnorm_3_1",
        "dropout_3_2",
        "batchnorm_4",
        "dense_5",
        "dropout_6",
        "batchnorm_7",
        "activation_8",
        "dense_9",
        "dense_10",
    ]
    names = model.native_names()
    assert names["layers.3.layers.0.kernel"] == "dense_3_0/kernel"
    assert names["layers.4.var"] == "batchnorm_4/moving_variance"
    assert model.native.get_layer("dense_3_0").kernel.dtype == dtype
    small = FRAMEWORK.build(MLP(3, [Dense(4, "relu"), BatchNorm(), Dense(2)]))
    assert type(small.native) is keras.Sequential
    assert small.native_names() == {
        "layers.0.kernel": "sequential/dense_0/kernel",
        "layers.0.bias": "sequential/dense_0/bias",
        "layers.1.scale": "sequential/batchnorm_1/gamma",
        "layers.1.bias": "sequential/batchnorm_1/beta",
        "layers.1.mean": "sequential/batchnorm_1/moving_mean",
        "layers.1.var": "sequential/batchnorm_1/moving_variance",
        "layers.2.kernel": "sequential/dense_2/kernel",
        "layers.2.bias": "sequential/dense_2/bias",
    }


def test_weights_round_trip_bit_exact_and_leave_the_original(built):
    dtype, model, _ = built
    before = model.weights()
    new = init_params(SPEC, seed=9)
    other = model.with_weights(new)
    assert other.native is not model.native
    for name, value in new.items():
        assert np.array_equal(other.weights()[name], value.astype(dtype)), name
        assert np.array_equal(model.weights()[name], before[name]), name
    again = other.with_weights(other.weights())
    assert all(np.array_equal(again.weights()[k], v) for k, v in other.weights().items())


def test_a_spec_model_read_back_gives_the_spec_and_its_names():
    spec = MLP(
        (2, 3),
        [
            Flatten(),
            Dense(5, "gelu"),
            LayerNorm(epsilon=1e-5),
            Residual([Dense(5, "leaky_relu"), Residual([RMSNorm()])]),
            BatchNorm(center=False),
            Dropout(0.1),
            Activation("elu"),
            Dense(3, "softmax", use_bias=False),
        ],
    )
    built = FRAMEWORK.build(spec, dtype="float64")
    model = FRAMEWORK.read(built.native)
    assert model.spec() == spec and model.dtype == "float64"
    assert model.native_names() == built.native_names()
    assert [i.name for i in model.walk()] == [i.name for i in built.walk()]
    x = np.random.default_rng(10).standard_normal((3, 2, 3))
    assert_grads_close(model.evaluate(x, capture=True), built.evaluate(x, capture=True), 1e-15)


def test_rmsnorm_without_scale_is_refused_naming_the_layer():
    with pytest.raises(
        FrameworkError, match=re.escape("layer rmsnorm_1 (rmsnorm(eps=1e-06, scale=False))")
    ):
        FRAMEWORK.build(MLP(3, [Dense(3), RMSNorm(scale=False)]))


# -- layer kinds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Toy(AbstractLayer):
    """A layer kind that no framework has an entry for (the identity)."""

    kind = "toy"

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, weights, x, *, path):
        return Step(path, self, x, x)

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        return grad_output


def test_a_kind_missing_from_the_table_is_refused_naming_kind_and_framework(monkeypatch):
    monkeypatch.setitem(LAYERS, "toy", _Toy)
    spec = MLP(3, [Dense(2), Residual([_Toy()])])
    message = re.escape("layer layers.1.layers.0: xgrad cannot build a toy layer in tensorflow")
    with pytest.raises(KindNotSupportedError, match=message):
        FRAMEWORK.build(spec)
    with pytest.raises(KindNotSupportedError, match=message):  # the runner's way in
        FRAMEWORK._build(spec, init_params(spec), "float32")


@pytest.mark.parametrize("other", [p for p in ALL_FRAMEWORKS if p.values != ("tensorflow",)])
def test_the_table_has_every_kind_another_framework_builds(other):
    missing = set(get_framework(other).kinds()) - set(FRAMEWORK.kinds())
    assert not missing, f"{other} builds {sorted(missing)}, which tensorflow's KINDS lacks"
    assert set(FRAMEWORK.kinds()) == set(LAYERS)


# -- reading users' Keras models ----------------------------------------------------------------


def _read_and_compare(keras_model, spec, x, tol):
    """Read ``keras_model``, check it reads as ``spec``, give it fresh weights, and compare
    with the float64 NumPy model of ``spec`` holding them."""
    model = FRAMEWORK.read(keras_model)
    assert model.spec() == spec
    weights = init_params(spec, seed=7)
    copy = model.with_weights(weights)
    g = copy.evaluate(x, loss="sum", capture=True)
    assert_grads_close(
        g, NUMPY.build(spec, weights, dtype="float64").evaluate(x, capture=True), tol
    )
    return model


class _GuideModel(keras.Model):
    """Written as the Keras guides write a subclassed model: no **kwargs, no get_config."""

    def __init__(self):
        super().__init__()
        self.dense1 = keras.layers.Dense(6, activation="tanh")
        self.dense2 = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense2(self.dense1(inputs))


def test_a_subclassed_model_without_kwargs_takes_other_weights():
    # Keras' clone passes name= to the constructor, which this one refuses: the copy is made
    # by its own constructor and built by a call
    user = _GuideModel()
    user(np.zeros((1, 4), np.float32))
    before = [w.copy() for w in user.get_weights()]
    spec = MLP(4, [Dense(6, "tanh"), Dense(2)])
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    _read_and_compare(user, spec, x, 1e-5)
    assert all(np.array_equal(a, b) for a, b in zip(before, user.get_weights(), strict=True))


def test_reading_a_sequential_model():
    seq = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.LayerNormalization(),
            keras.layers.Dropout(0.2),
            keras.layers.BatchNormalization(),
            keras.layers.LeakyReLU(),
            keras.layers.Dense(3),
        ],
        name="docs_model",
    )
    before = [w.copy() for w in seq.get_weights()]
    layers = [
        Dense(8, "relu"),
        LayerNorm(),
        Dropout(0.2),
        BatchNorm(),
        Activation("leaky_relu:0.3"),
    ]
    spec = MLP(5, [*layers, Dense(3)])
    x = np.random.default_rng(6).standard_normal((4, 5)).astype(np.float32)
    model = _read_and_compare(seq, spec, x, TOL["float32"])
    assert [info.name for info in model.layers] == [layer.name for layer in seq.layers]
    assert model.native_names()["layers.3.mean"] == f"docs_model/{seq.layers[3].name}/moving_mean"
    assert model.layers[3].note is None  # read in inference mode, as the model computes
    np.testing.assert_allclose(model.evaluate(x).output, seq(x, training=False), rtol=1e-6)
    assert all(np.array_equal(a, b) for a, b in zip(seq.get_weights(), before, strict=True))
    assert not any("call" in vars(layer) for layer in seq.layers)


def test_reading_a_functional_residual_model_in_float64():
    def my_tanh(t):  # a user's function: identified by its values, kept through copies
        return tf.tanh(t)

    # (Keras' float64 gelu and leaky_relu round a constant to float32: see ops.py)
    inputs = keras.Input((6,), dtype="float64")
    h = keras.layers.Dense(6, activation=my_tanh, dtype="float64")(inputs)
    r = keras.layers.Dense(6, activation="silu", dtype="float64")(h)
    r = keras.layers.RMSNormalization(dtype="float64")(r)
    add = keras.layers.Add(dtype="float64")
    h = add([h, r])
    h = keras.layers.ReLU(dtype="float64")(h)
    outputs = keras.layers.Dense(2, dtype="float64")(h)
    functional = keras.Model(inputs, outputs)
    spec = MLP(
        6,
        [Dense(6, "tanh"), Residual([Dense(6, "silu"), RMSNorm()]), Activation("relu"), Dense(2)],
    )
    x = np.random.default_rng(7).standard_normal((3, 6))
    model = _read_and_compare(functional, spec, x, TOL["float64"])
    assert (model.layers[1].kind, model.layers[1].name) == ("residual", add.name)


def test_reading_a_subclassed_model_with_a_residual_written_as_plus():
    class Block(keras.Model):
        def __init__(self, width=4, **kwargs):
            super().__init__(**kwargs)
            self.hidden = keras.layers.Dense(width, activation="silu")
            self.back = keras.layers.Dense(width)
            self.head = keras.layers.Dense(2, activation="sigmoid")

        def call(self, x):
            x = x + self.back(self.hidden(x))
            return self.head(x)

    net = Block()
    x = np.random.default_rng(8).standard_normal((3, 4)).astype(np.float32)
    net(x)
    spec = MLP(4, [Residual([Dense(4, "silu"), Dense(4)]), Dense(2, "sigmoid")])
    model = _read_and_compare(net, spec, x, TOL["float32"])
    assert model.layers[0].name == "layers.0" and [c.name for c in model.layers[0].children] == [
        net.hidden.name,
        net.back.name,
    ]


def test_dense_with_a_python_function_as_activation_is_read_by_its_values():
    def my_relu(t):
        return tf.maximum(t, 0.0)

    def cube(t):
        return t * t * t

    seq = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation=my_relu), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(9).standard_normal((5, 3)).astype(np.float32)
    model = _read_and_compare(seq, MLP(3, [Dense(4, "relu"), Dense(2)]), x, TOL["float32"])
    assert "my_relu identified from its values as relu" in model.layers[0].note
    unknown = FRAMEWORK.read(
        keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation=cube)])
    )
    assert unknown.layers[0].kind == "dense" and unknown.layers[0].layer is None
    assert "cube is none of xgrad's activations" in unknown.layers[0].note
    assert unknown.spec() is None
    g = unknown.evaluate(x, capture=True)
    assert set(g.activations) == {"layers.0"} and g.params["layers.0.kernel"].shape == (3, 2)


# -- activation functions called in a subclassed model's call -------------------------------


class _FunctionBetween(keras.Model):
    """The way Keras guides write a model: ``fc2(fn(fc1(x)))``, ``fn`` a function, no layer."""

    def __init__(self, fn, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.fn = fn
        self.fc1 = keras.layers.Dense(16, dtype=dtype)
        self.fc2 = keras.layers.Dense(3, dtype=dtype)

    def call(self, inputs):
        return self.fc2(self.fn(self.fc1(inputs)))


def _leaky_02(t):
    return keras.activations.leaky_relu(t, negative_slope=0.2)


XF = np.random.default_rng(10).standard_normal((5, 8)).astype(np.float32)
PROJECT = np.random.default_rng(11).standard_normal((5, 3)).astype(np.float32)


def _tape_grads(net, x, w):
    """dL/dweights of the user's own model, L = sum(net(x) * w), by tf.GradientTape: the
    independent reference, by Keras variable path."""
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(net(x) * w)
    grads = tape.gradient(value, net.trainable_variables)
    return {v.path: np.asarray(g) for v, g in zip(net.trainable_variables, grads, strict=True)}


def _assert_grads_of_own_model(net, x, dtype="float32"):
    """The read model's parameter gradients are those of the user's own ``call``."""
    model = FRAMEWORK.read(net)
    w = PROJECT.astype(dtype)
    g = model.evaluate(x, w, loss="projection")
    expected = _tape_grads(net, x, w)
    native = model.native_names()
    assert set(g.params) == {n for n in native if native[n] in expected}
    for name, grad in g.params.items():
        assert rel_norm(grad, expected[native[name]]) < TOL[dtype], name
    return model


@pytest.mark.parametrize(
    ("fn", "name", "layers"),
    [
        (keras.activations.gelu, "gelu", [keras.layers.Dense(16, activation="gelu")]),
        (keras.ops.relu, "relu", [keras.layers.Dense(16, activation="relu")]),
        (keras.ops.tanh, "tanh", [keras.layers.Dense(16), keras.layers.Activation("tanh")]),
        (
            _leaky_02,
            "leaky_relu:0.2",
            [keras.layers.Dense(16), keras.layers.LeakyReLU(negative_slope=0.2)],
        ),
    ],
    ids=["gelu", "relu", "tanh", "leaky_relu_0.2"],
)
def test_an_activation_function_called_between_layers_is_read_and_applied(fn, name, layers):
    import xgrad

    net = _FunctionBetween(fn)
    net(XF)
    model = _assert_grads_of_own_model(net, XF)
    assert xgrad.read_model(net).spec().describe() == f"8 -> 16:linear -> {name} -> 3:linear"
    assert model.layers[1].kind == "activation" and model.layers[1].name == "layers.1"
    assert "identified from its values as" in model.layers[1].note
    seq = keras.Sequential([keras.Input((8,)), *layers, keras.layers.Dense(3)])
    seq.set_weights(net.get_weights())
    np.testing.assert_allclose(np.asarray(seq(XF)), np.asarray(net(XF)), rtol=1e-6)
    for reference, candidate in ((net, seq), (seq, net)):
        report = xgrad.compare_models(reference, candidate, XF)
        assert report.ok, report.mismatch_message()


@pytest.mark.parametrize(
    ("fn", "name", "activation"),
    [
        (keras.activations.gelu, "gelu", "gelu"),
        (keras.ops.gelu, "gelu_tanh", lambda t: keras.activations.gelu(t, approximate=True)),
        (_leaky_02, "leaky_relu:0.2", _leaky_02),
    ],
    ids=["gelu", "gelu_tanh", "leaky_relu_0.2"],
)
def test_keras_own_float64_activation_functions_between_layers_are_applied_as_keras_does(
    fn, name, activation
):
    """In float64 these Keras functions round a constant to float32 (see .ops): read from
    their values and evaluated with Keras' own function, so that gradients stay those of the
    user's ``call`` to float64 precision."""
    import xgrad

    net = _FunctionBetween(fn, dtype="float64")
    x = XF.astype(np.float64)
    net(x)
    model = _assert_grads_of_own_model(net, x, "float64")
    assert model.spec().layers[1] == Activation(name)
    assert "as Keras' own float64 function does" in model.layers[1].note
    seq = keras.Sequential(
        [
            keras.Input((8,), dtype="float64"),
            keras.layers.Dense(16, activation=activation, dtype="float64"),
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    seq.set_weights(net.get_weights())
    report = xgrad.compare_models(net, seq, x)
    assert report.ok, report.mismatch_message()


def test_a_gelu_function_against_its_tanh_form_is_diagnosed():
    import xgrad

    reference = _FunctionBetween(keras.activations.gelu)  # erf form (approximate=False)
    reference(XF)
    port = _FunctionBetween(keras.ops.gelu)  # approximate=True: the tanh form
    port(XF)
    port.set_weights(reference.get_weights())
    assert FRAMEWORK.read(port).spec().layers[1] == Activation("gelu_tanh")
    report = xgrad.compare_models(reference, port, XF)
    assert not report.ok
    assert report.first_divergence["path"] == "layers.0"  # the unit Dense + activation
    assert report.diagnoses[0].cause == "gelu-approximation"


class _FunctionsAroundBlocks(keras.Model):
    """Activation functions after and inside residual blocks, and at the output."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc1 = keras.layers.Dense(8)
        self.fc2 = keras.layers.Dense(8)
        self.fc3 = keras.layers.Dense(8)
        self.fc4 = keras.layers.Dense(8)
        self.add = keras.layers.Add()
        self.head = keras.layers.Dense(3)

    def call(self, inputs):
        h = self.fc1(inputs)
        h = keras.ops.relu(h + self.fc2(h))  # act(x + f(x))
        h = h + keras.activations.gelu(self.fc3(h))  # x + act(f(x))
        h = self.add([h, keras.ops.tanh(self.fc4(h))])  # Add()([x, act(f(x))])
        return keras.activations.softmax(self.head(keras.ops.silu(h)))


def test_activation_functions_around_residual_blocks_and_at_the_output():
    net = _FunctionsAroundBlocks()
    net(XF)
    model = _assert_grads_of_own_model(net, XF)
    assert model.spec() == MLP(
        8,
        [
            Dense(8),
            Residual([Dense(8)]),
            Activation("relu"),
            Residual([Dense(8), Activation("gelu")]),
            Residual([Dense(8), Activation("tanh")]),
            Activation("silu"),
            Dense(3),
            Activation("softmax"),
        ],
    )
    assert model.layers[4].name == net.add.name


def test_code_between_layers_that_is_no_activation_is_refused_naming_the_layer():
    net = _FunctionBetween(lambda t: t * t * t)
    net(XF)
    message = (
        f"layer {net.fc2.name!r} (Dense) takes an input that is not the output of the layer "
        "called before it (a branch, or code between layers), nor one of xgrad's activations "
        "of it (closest relative error "
    )
    with pytest.raises(AlignmentError, match=re.escape(message)) as info:
        FRAMEWORK.read(net)
    assert "keras.layers.Activation(fn)" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (keras.layers.PReLU(name="learned"), "layer 'learned' (PReLU) has a learned slope"),
        (
            keras.layers.GaussianNoise(0.1, name="noise"),
            "layer 'noise' (GaussianNoise) is not a layer xgrad reads",
        ),
        (
            keras.layers.ReLU(threshold=1.0, name="shifted"),
            "layer 'shifted' (ReLU) has max_value=None",
        ),
    ],
)
def test_unsupported_layers_are_refused_by_name(layer, message):
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3), layer])
    with pytest.raises(AlignmentError, match=re.escape(message)):
        FRAMEWORK.read(seq)


def test_a_branching_graph_is_refused_naming_the_layer():
    inputs = keras.Input((3,))
    a = keras.layers.Dense(3, name="left")(inputs)
    b = keras.layers.Dense(3, name="right")(inputs)
    functional = keras.Model(inputs, keras.layers.Add()([a, b]))
    with pytest.raises(AlignmentError, match=re.escape("layer 'right' (Dense) takes an input")):
        FRAMEWORK.read(functional)


def test_an_unbuilt_model_and_a_layer_are_refused():
    with pytest.raises(InputError, match="is not built"):
        FRAMEWORK.read(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(InputError, match=re.escape("wrap the layer: keras.Sequential")):
        FRAMEWORK.read(keras.layers.Dense(2))
    seq = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ParamsError, match="'layers.0.kernel' has shape"):
        FRAMEWORK.read(seq).with_weights({"layers.0.kernel": np.ones((2, 3))})


def test_load_keras_file_refuses_code_and_broken_files(tmp_path):
    lam = keras.Sequential(
        [keras.Input((3,)), keras.layers.Lambda(lambda t: t + 1), keras.layers.Dense(2)]
    )
    lam.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelFileError, match="was refused: it holds code"):
        load_keras_file(tmp_path / "lambda.keras")
    good = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    good.save(tmp_path / "good.keras")
    assert FRAMEWORK.read(load_keras_file(tmp_path / "good.keras")).layers[0].kind == "dense"
    (tmp_path / "cut.keras").write_bytes((tmp_path / "good.keras").read_bytes()[:300])
    with pytest.raises(ModelFileError, match=re.escape("is not a .keras archive")):
        load_keras_file(tmp_path / "cut.keras")
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        z.writestr("config.json", "{not json")
    with pytest.raises(ModelFileError, match="cannot load model file"):
        load_keras_file(tmp_path / "bad.keras")
    with pytest.raises(ModelFileError, match="does not exist"):
        load_keras_file(tmp_path / "missing.keras")


def test_a_converted_model_with_xgrads_own_activations_saves_and_reloads(tmp_path):
    """GELU (both forms) and a leaky ReLU of slope 0.1 have no exact Keras string: the Keras
    model xgrad builds saves them as registered objects, and the reloaded file (safe mode)
    computes what the spec computes, by the NumPy reference, and keeps the slope."""
    import xgrad

    spec = MLP(4, [Dense(5, "gelu"), Dense(5, "gelu_tanh"), Dense(3, "leaky_relu:0.1")])
    params = init_params(spec, 3)
    path = tmp_path / "m.keras"
    FRAMEWORK.build(spec, params, dtype="float64").native.save(path)
    reloaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(0).standard_normal((6, 4))
    expected = NUMPY.build(spec, params, dtype="float64").evaluate(x, loss="sum").output
    np.testing.assert_allclose(np.asarray(reloaded(x)), expected, rtol=1e-13)
    read = xgrad.read_model(reloaded)
    assert read.spec() == spec


def test_a_layer_called_with_training_true_in_call_is_refused_and_the_model_left_as_it_was():
    class Trained(keras.Model):  # as the Keras guides write a subclassed model
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(6)
            self.bn = keras.layers.BatchNormalization()
            self.out = keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.bn(self.dense(x), training=True))

    model = Trained()
    model(np.ones((3, 4), np.float32))
    before = [np.array(v.numpy()) for v in model.non_trainable_variables]
    with pytest.raises(AlignmentError, match=r"'batch_normalization.*' .* training=True in call"):
        FRAMEWORK.read(model, input_shape=(4,))
    for old, var in zip(before, model.non_trainable_variables, strict=True):
        np.testing.assert_array_equal(var.numpy(), old)  # the moving statistics kept
