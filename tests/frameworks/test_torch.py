"""The torch framework: built specs and read modules against independent expectations.

Expected values come from xgrad's float64 NumPy model (each layer's own forward and VJP),
from hand formulas and from finite differences, never from the torch framework itself.
Every test also checks that torch's global state (default dtype, grad mode, matmul
precision, RNG, threads) is as it was.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import xgrad  # noqa: E402
from xgrad.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE  # noqa: E402
from xgrad.errors import AlignmentError, InputError, ParamsError  # noqa: E402
from xgrad.frameworks.numpy import FRAMEWORK as NUMPY  # noqa: E402
from xgrad.frameworks.torch import FRAMEWORK as TORCH  # noqa: E402
from xgrad.frameworks.torch.reader import read_module  # noqa: E402
from xgrad.layers import (  # noqa: E402
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    Residual,
    RMSNorm,
)
from xgrad.losses import LOSSES  # noqa: E402
from xgrad.params import init_params  # noqa: E402
from xgrad.spec import MLP  # noqa: E402

TOL = {"float64": 1e-12, "float32": 1e-5}
DTYPES = ["float64", "float32"]


def _global_state():
    matmul = getattr(torch.backends.cuda, "matmul", None)
    return (
        torch.get_default_dtype(),
        torch.is_grad_enabled(),
        torch.get_float32_matmul_precision(),
        getattr(matmul, "allow_tf32", None),
        torch.get_num_threads(),
    )


def _rng_state() -> bytes:
    return torch.get_rng_state().numpy().tobytes()


@pytest.fixture(autouse=True)
def torch_global_state_unchanged():
    """Each test leaves torch's global state as it found it; the tests' own seeding (to
    make weights) is kept inside the test. The RNG is checked around xgrad's calls in
    test_rng_untouched."""
    before = _global_state()
    with torch.random.fork_rng(devices=[]):
        yield
    assert _global_state() == before, "torch global state changed"


def assert_close(actual, expected, tol, what=""):
    __tracebackhide__ = True
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), expected, rtol=tol, atol=tol * scale, err_msg=what
    )


def assert_same_gradients(got, want, tol, *, state=True):
    """Every field of two Gradients agree within ``tol`` (captured values when present)."""
    __tracebackhide__ = True
    assert_close(got.output, want.output, tol, "output")
    assert_close(got.input, want.input, tol, "dL/dinput")
    if want.loss is not None:
        assert_close(got.loss, want.loss, tol, "loss")
    assert list(got.params) == list(want.params)
    for name in want.params:
        assert got.params[name].shape == want.params[name].shape, name
        assert_close(got.params[name], want.params[name], tol, name)
    if state:
        assert set(got.state) == set(want.state)
        for name in want.state:
            assert_close(got.state[name], want.state[name], tol, name)
    if want.activations is not None:
        assert list(got.activations) == list(want.activations)  # call order, blocks first
        for path in want.activations:
            assert_close(got.activations[path], want.activations[path], tol, f"{path} output")
            assert_close(
                got.activation_grads[path], want.activation_grads[path], tol, f"{path} dL/doutput"
            )


def state_dict_copy(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_dict_equal(module, before):
    after = module.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), k


# -- the framework object --------------------------------------------------------------------


def test_importing_the_package_imports_no_torch():
    code = (
        "import sys, xgrad, xgrad.frameworks.torch as t\n"
        "fw = t.FRAMEWORK\n"
        "assert (fw.name, fw.aliases, fw.requires, fw.extra) == "
        "('torch', ('pytorch',), ('torch',), 'torch')\n"
        "assert not fw.claims(object()) and not fw.claims((1, 2))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_claims_modules_only():
    assert TORCH.claims(nn.Linear(2, 2))
    assert TORCH.claims(nn.Sequential(nn.ReLU()))
    assert not TORCH.claims(torch.ones(2))
    assert not TORCH.claims(F.relu)
    spec = MLP(2, [Dense(1)])
    assert not TORCH.claims((spec, init_params(spec)))
    assert TORCH.dtypes == ("float32", "float64", "bfloat16", "float16")


# -- built specs against the NumPy reference -------------------------------------------------

MIXED = MLP(
    (2, 3),
    [
        Flatten(),
        Dense(8, "relu"),
        LayerNorm(1e-5),
        Residual([Dense(8, "gelu"), Dropout(0.25, active=True), Dense(8, "tanh", use_bias=False)]),
        RMSNorm(1e-6),
        BatchNorm(1e-5, 0.9),
        Activation("silu"),
        Dropout(0.5),
        Residual(
            [
                LayerNorm(1e-3, scale=False),
                Dense(8, "leaky_relu:0.01"),
                Residual([BatchNorm(1e-3, 0.99, training=True, scale=False), Activation("elu")]),
                RMSNorm(1e-5, scale=False),
            ]
        ),
        LayerNorm(1e-4, center=False),
        BatchNorm(1e-3, 0.8, training=True),
        Dense(4, "softmax"),
    ],
)


def _unbiased_prediction(ref_state, old, momentum, n):
    """torch's running var, from the reference's (biased) update, derived by hand:

    ref = m * old + (1 - m) * v_biased;   torch = m * old + (1 - m) * v_biased * n / (n - 1)
    so torch = ref + (ref - m * old) / (n - 1).
    """
    return ref_state + (ref_state - momentum * old) / (n - 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("capture", [False, True], ids=["plain", "capture"])
def test_mixed_spec_matches_numpy(dtype, capture):
    rng = np.random.default_rng(0)
    params = init_params(MIXED, seed=3)
    x = rng.standard_normal((6, 2, 3))
    y = rng.standard_normal((6, 4))
    want = NUMPY.build(MIXED, params, dtype="float64").evaluate(x, y, loss="mse", capture=capture)
    model = TORCH.build(MIXED, params, dtype=dtype)
    got = model.evaluate(x, y, loss="mse", capture=capture)
    assert got.output.dtype == np.dtype(dtype)
    assert_same_gradients(got, want, TOL[dtype], state=False)
    # moving statistics: the means as xgrad's definition, the variances unbiased (torch)
    trained = [
        (p, layer) for p, layer in MIXED.walk() if isinstance(layer, BatchNorm) and layer.training
    ]
    assert set(got.state) == {f"{p}.{k}" for p, _ in trained for k in ("mean", "var")}
    for path, layer in trained:
        assert_close(got.state[f"{path}.mean"], want.state[f"{path}.mean"], TOL[dtype])
        predicted = _unbiased_prediction(
            want.state[f"{path}.var"], params[f"{path}.var"], layer.momentum, x.shape[0]
        )
        assert_close(got.state[f"{path}.var"], predicted, TOL[dtype], f"{path}.var")
        assert not np.allclose(got.state[f"{path}.var"], want.state[f"{path}.var"], rtol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_spec_cotangent_vjp(dtype):
    rng = np.random.default_rng(1)
    params = init_params(MIXED, seed=4)
    x = rng.standard_normal((5, 2, 3))
    cot = rng.standard_normal((5, 4))
    want = NUMPY.build(MIXED, params, dtype="float64").evaluate(x, cotangent=cot, capture=True)
    got = TORCH.build(MIXED, params, dtype=dtype).evaluate(x, cotangent=cot, capture=True)
    assert got.loss is None
    assert_same_gradients(got, want, TOL[dtype], state=False)


ACTIVATION_NAMES = [*ACTIVATIONS, "leaky_relu:0.01", "leaky_relu"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACTIVATION_NAMES)
def test_every_activation_matches_numpy(name, dtype):
    spec = MLP(
        4,
        [Dense(6, name), Dense(5), Activation(name), Residual([Dense(5, name, use_bias=False)])],
    )
    rng = np.random.default_rng(2)
    params = init_params(spec, seed=5)
    x = 2 * rng.standard_normal((7, 4))
    cot = rng.standard_normal((7, 5))
    want = NUMPY.build(spec, params, dtype="float64").evaluate(x, cotangent=cot, capture=True)
    got = TORCH.build(spec, params, dtype=dtype).evaluate(x, cotangent=cot, capture=True)
    assert_same_gradients(got, want, TOL[dtype])


KINKS = [
    ("relu", [0.0, -1.0, 1.0], [0.0, 0.0, 1.0]),
    ("leaky_relu:0.01", [0.0, -1.0, 1.0], [0.01, 0.01, 1.0]),
    ("leaky_relu", [0.0, -1.0, 1.0], [0.2, 0.2, 1.0]),
    ("selu", [0.0, 1.0], [SELU_SCALE, SELU_SCALE]),
    ("elu", [0.0, 1.0], [1.0, 1.0]),
    ("relu6", [0.0, 6.0, 3.0, 7.0], [0.0, 0.0, 1.0, 0.0]),
    ("hard_sigmoid", [-3.0, 3.0, 0.0, 4.0], [0.0, 0.0, 1 / 6, 0.0]),
    ("softplus", [0.0, 30.0, -30.0], [0.5, 1 / (1 + np.exp(-30.0)), 1 / (1 + np.exp(30.0))]),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "points", "slopes"), KINKS, ids=[k[0] for k in KINKS])
def test_kink_conventions(name, points, slopes, dtype):
    """At exact kinks the derivative is xgrad's convention (hand values, not torch's own)."""
    spec = MLP(len(points), [Activation(name)])
    x = np.array([points])
    got = TORCH.build(spec, {}, dtype=dtype).vjp(x, np.ones_like(x))
    expected = np.array([slopes], dtype=dtype)  # 1/6 rounded to the dtype, as xgrad's
    if dtype == "float64":
        np.testing.assert_array_equal(got.input, expected)
    else:
        assert_close(got.input, expected, 1e-7)


def test_dense_with_zero_pre_activation_takes_the_kink_convention():
    spec = MLP(2, [Dense(3, "relu"), Dense(3, "leaky_relu:0.01"), Dense(1)])
    params = {k: np.zeros(s) for k, s in spec.param_shapes().items()}
    params["layers.2.kernel"] = np.ones((3, 1))
    params["layers.1.kernel"] = np.eye(3)
    got = TORCH.build(spec, params, dtype="float64").gradients(np.ones((1, 2)))
    # every pre-activation is exactly 0: leaky'(0) = slope passes 0.01, relu'(0) = 0 nothing
    np.testing.assert_array_equal(got.params["layers.1.bias"], [0.01, 0.01, 0.01])
    np.testing.assert_array_equal(got.params["layers.0.bias"], [0.0, 0.0, 0.0])


def _after_identity_linear(activation: nn.Module, dtype=torch.float64) -> nn.Module:
    linear = nn.Linear(1, 1, dtype=dtype)
    with torch.no_grad():
        linear.weight.fill_(1.0)
        linear.bias.zero_()
    return nn.Sequential(linear, activation)


def test_torchs_own_selu_and_hardsigmoid_keep_torchs_conventions():
    """Read as written: nn.SELU gives scale*alpha at 0, nn.Hardsigmoid's float64 slope is
    1/6 rounded to float32; both say so in the layer's note."""
    selu = TORCH.read(_after_identity_linear(nn.SELU()))
    assert selu.layers[0].layer == Dense(1, "selu") and "1.7581" in selu.layers[0].note
    got = selu.vjp(np.zeros((1, 1)), np.ones((1, 1))).input
    assert_close(got, [[SELU_SCALE * SELU_ALPHA]], 1e-15)
    hsig32 = TORCH.read(_after_identity_linear(nn.Hardsigmoid(), torch.float32))
    assert hsig32.layers[0].note is None  # in float32 the rounding is the dtype's own
    hsig = TORCH.read(_after_identity_linear(nn.Hardsigmoid()))
    assert "float32" in hsig.layers[0].note
    slope = hsig.vjp(np.zeros((1, 1)), np.ones((1, 1))).input[0, 0]
    assert slope == float(np.float32(1 / 6)) != 1 / 6


def test_weight_free_module_computes_in_the_default_dtype():
    model = TORCH.read(nn.Sequential(nn.Tanh()), input_shape=(3,))
    assert model.dtype == "float32" and model.spec() == MLP(3, [Activation("tanh")])


@pytest.mark.parametrize("loss", list(LOSSES))
def test_losses_match_numpy(loss):
    last = {"bce": "sigmoid", "cce": "softmax"}.get(loss, "linear")
    spec = MLP(3, [Dense(5, "tanh"), Dense(4, last)])
    rng = np.random.default_rng(6)
    params = init_params(spec, seed=6)
    x = rng.standard_normal((6, 3))
    y = {
        "bce": rng.uniform(0.05, 0.95, (6, 4)),
        "bce_logits": rng.uniform(0.05, 0.95, (6, 4)),
        "cce": rng.integers(0, 4, 6),
        "cce_logits": rng.integers(0, 4, 6),
    }.get(loss, rng.standard_normal((6, 4)))
    if not LOSSES[loss].needs_target:
        y = None
    want = NUMPY.build(spec, params, dtype="float64").evaluate(x, y, loss=loss)
    got = TORCH.build(spec, params, dtype="float64").evaluate(x, y, loss=loss)
    assert_same_gradients(got, want, 1e-12)


def test_bce_logits_at_zero_has_xgrads_gradient():
    """max(out, 0) at out = 0 passes half the gradient: dL/dout = (0.5 - y) / N."""
    spec = MLP(2, [Activation("linear")])
    y = np.array([[0.25, 1.0]])
    got = TORCH.build(spec, {}, dtype="float64").evaluate(np.zeros((1, 2)), y, loss="bce_logits")
    np.testing.assert_allclose(got.input, (0.5 - y) / 2, rtol=0, atol=1e-16)
    assert_close(got.loss, np.log(2.0), 1e-15)


def test_callable_loss_and_bad_loss():
    spec = MLP(3, [Dense(2, "tanh")])
    params = init_params(spec, seed=7)
    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    model = TORCH.build(spec, params, dtype="float64")
    got = model.evaluate(x, y, loss=lambda out, t: F.mse_loss(out, t, reduction="sum"))
    ref = NUMPY.build(spec, params, dtype="float64")
    out = ref.evaluate(x).output
    want = ref.vjp(x, 2 * (out - y))  # d/dout sum((out - y)^2), by hand
    assert_close(got.loss, ((out - y) ** 2).sum(), 1e-12)
    assert_close(got.input, want.input, 1e-12)
    for name in want.params:
        assert_close(got.params[name], want.params[name], 1e-12, name)
    with pytest.raises(InputError, match=re.escape("must return a scalar tensor, got (4, 2)")):
        model.evaluate(x, y, loss=lambda out, t: out - t)


# -- BatchNorm moving statistics and the module left unchanged --------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_training_updates_with_the_unbiased_variance(dtype):
    momentum, n = 0.9, 5
    spec = MLP(3, [BatchNorm(1e-5, momentum, training=True), Dense(2)])
    params = init_params(spec, seed=8)
    x = np.random.default_rng(8).standard_normal((n, 3)) * 3 + 1
    model = TORCH.build(spec, params, dtype=dtype)
    bn = model.native[0]
    assert isinstance(bn, nn.BatchNorm1d) and bn.training
    assert bn.momentum == pytest.approx(0.1)
    before = state_dict_copy(model.native)
    got = model.gradients(x)
    again = model.gradients(x)
    assert_state_dict_equal(model.native, before)  # running stats, num_batches_tracked
    for k in got.state:
        np.testing.assert_array_equal(got.state[k], again.state[k])
    # by hand: torch keeps 0.9 of the old value and adds 0.1 of the unbiased batch variance
    xs = x.astype(dtype).astype(np.float64)
    mean = momentum * params["layers.0.mean"] + (1 - momentum) * xs.mean(axis=0)
    var = momentum * params["layers.0.var"] + (1 - momentum) * xs.var(axis=0, ddof=1)
    assert_close(got.state["layers.0.mean"], mean, TOL[dtype])
    assert_close(got.state["layers.0.var"], var, TOL[dtype])
    want = NUMPY.build(spec, params, dtype="float64").gradients(x)
    # the normalisation itself uses the biased variance, as xgrad's BatchNorm
    assert_close(got.output, want.output, TOL[dtype])
    assert_close(got.params["layers.0.scale"], want.params["layers.0.scale"], TOL[dtype])
    # the reference's var differs by exactly (1 - m) * (unbiased - biased) batch variance
    diff = (1 - momentum) * (xs.var(axis=0, ddof=1) - xs.var(axis=0))
    assert_close(got.state["layers.0.var"] - want.state["layers.0.var"], diff, TOL[dtype])


# -- weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_round_trip_bit_exact(dtype):
    params = init_params(MIXED, seed=9)
    model = TORCH.build(MIXED, params, dtype=dtype)
    weights = model.weights()
    assert list(weights) == list(MIXED.weight_shapes())
    for name, arr in weights.items():
        assert arr.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(arr, params[name].astype(dtype))
    # native names and layout: Linear weights (out, in)
    native = model.native.state_dict()
    names = model.native_names()
    assert names["layers.1.kernel"] == "1.0.weight"
    assert names["layers.3.layers.2.kernel"] == "3.2.0.weight"
    assert names["layers.5.mean"] == "5.running_mean"
    assert names["layers.8.layers.2.layers.0.bias"] == "8.2.0.bias"
    np.testing.assert_array_equal(
        native["1.0.weight"].numpy(), params["layers.1.kernel"].T.astype(dtype)
    )
    assert all(info.transposed == {"kernel"} for info in model.walk() if info.kind == "dense")
    # with_weights: a new model; the first is unchanged
    before = state_dict_copy(model.native)
    again = model.with_weights(weights)
    for name, arr in again.weights().items():
        np.testing.assert_array_equal(arr, weights[name])
    changed = model.with_weights({"layers.1.kernel": np.zeros((6, 8))})
    assert not changed.weights()["layers.1.kernel"].any()
    assert_state_dict_equal(model.native, before)
    with pytest.raises(ParamsError, match="transposed"):
        model.with_weights({"layers.1.kernel": np.zeros((8, 6))})
    assert model.spec() is MIXED


# -- reading users' modules ------------------------------------------------------------------


def _params_from(model):
    """Canonical float64 params from a read model's module, transposing Linear weights here."""
    state = model.native.state_dict()
    out = {}
    for info in model.walk():
        for local, native in info.weights.items():
            arr = state[native].detach().numpy().astype(np.float64)
            out[f"{info.path}.{local}"] = arr.T if local == "kernel" else arr
    return out


def _compare_read(model, spec, x, y=None, loss="sum", tol=1e-12):
    assert model.spec() == spec
    params = _params_from(model)
    ref = NUMPY.build(spec, params, dtype="float64")
    assert_same_gradients(
        model.evaluate(x, y, loss=loss, capture=True),
        ref.evaluate(x, y, loss=loss, capture=True),
        tol,
    )


def test_read_user_sequential():
    torch.manual_seed(0)
    user = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.GELU(), nn.Linear(8, 3)).double()
    before = state_dict_copy(user)
    model = TORCH.read(user)
    assert [(i.kind, i.name) for i in model.layers] == [
        ("dense", "0"),
        ("layernorm", "1"),
        ("activation", "2"),
        ("dense", "3"),
    ]
    assert model.layers[0].params == {"kernel": "0.weight", "bias": "0.bias"}
    assert model.layers[0].transposed == {"kernel"}
    assert model.layers[1].params == {"scale": "1.weight", "bias": "1.bias"}
    assert (model.dtype, model.input_shape, model.output_shape) == ("float64", (4,), (3,))
    spec = MLP(4, [Dense(8), LayerNorm(1e-5), Activation("gelu"), Dense(3)])
    x = np.random.default_rng(10).standard_normal((5, 4))
    y = np.random.default_rng(11).standard_normal((5, 3))
    _compare_read(model, spec, x, y, loss="mse")
    assert_state_dict_equal(user, before)
    assert model.native is not user


class FunctionalNet(nn.Module):
    """ReLU'd input layer, a pre-norm residual block with a tanh-GELU, a tanh head."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.ln = nn.LayerNorm(8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = F.relu(self.inp(x))
        h = F.gelu(self.fc1(self.ln(x)), approximate="tanh")
        x = x + self.fc2(h)
        return torch.tanh(self.head(x.flatten(1)))


FUNCTIONAL_SPEC = MLP(
    4,
    [
        Dense(8, "relu"),
        Residual([LayerNorm(1e-5), Dense(16, "gelu_tanh"), Dense(8)]),
        Dense(3, "tanh"),
    ],
)


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_user_module_with_functional_calls_and_residual(dtype):
    torch.manual_seed(1)
    user = FunctionalNet().to(getattr(torch, dtype))
    model = TORCH.read(user)
    assert [(i.path, i.name) for i in model.walk()] == [
        ("layers.0", "inp"),
        ("layers.1", "add"),
        ("layers.1.layers.0", "ln"),
        ("layers.1.layers.1", "fc1"),
        ("layers.1.layers.2", "fc2"),
        ("layers.2", "head"),
    ]
    assert "hooks" not in model.description
    x = np.random.default_rng(12).standard_normal((6, 4))
    _compare_read(model, FUNCTIONAL_SPEC, x, tol=TOL[dtype])


def test_read_user_module_gradients_by_finite_differences():
    torch.manual_seed(2)
    user = FunctionalNet().double()
    x = np.random.default_rng(13).standard_normal((3, 4))
    got = TORCH.read(user).gradients(x)

    def f(arr):
        with torch.no_grad():
            return float(user(torch.from_numpy(arr)).sum())

    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        fd[idx] = (f(x + e) - f(x - e)) / (2 * h)
    np.testing.assert_allclose(got.input, fd, rtol=1e-7, atol=1e-8)
    with torch.no_grad():
        weight = user.head.weight
        bump = torch.zeros_like(weight)
        bump[1, 2] = h
        weight += bump
        plus = f(x)
        weight -= 2 * bump
        minus = f(x)
        weight += bump
    # the kernel is (in, out): entry (2, 1) is torch's weight[1, 2]
    np.testing.assert_allclose(
        got.params["layers.2.kernel"][2, 1], (plus - minus) / (2 * h), rtol=1e-6
    )


class ParamNet(nn.Module):
    """Weights held directly and used through F.linear / F.layer_norm; an unknown-to-fx
    elementwise function (torch.special.expit) named numerically."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(5, dtype=torch.float64))
        self.g = nn.Parameter(torch.rand(5, dtype=torch.float64) + 0.5)
        self.beta = nn.Parameter(torch.randn(5, dtype=torch.float64))

    def forward(self, x):
        h = F.layer_norm(F.linear(x, self.w, self.b), (5,), self.g, self.beta, 1e-6)
        return torch.special.expit(h)


def test_read_functional_weights_and_numeric_identification():
    torch.manual_seed(3)
    model = TORCH.read(ParamNet())
    dense, norm, act = model.layers
    assert dense.params == {"kernel": "w", "bias": "b"} and dense.transposed == {"kernel"}
    assert norm.params == {"scale": "g", "bias": "beta"}
    assert act.layer == Activation("sigmoid") and "numerically" in act.note
    spec = MLP(3, [Dense(5), LayerNorm(1e-6), Activation("sigmoid")])
    _compare_read(model, spec, np.random.default_rng(14).standard_normal((4, 3)))


class Untraceable(nn.Module):
    """A tensor-valued ``if``: torch.fx cannot trace it, so the module is read through hooks."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.ln = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        h = self.fc1(x)
        if h.abs().sum() >= 0:
            h = torch.relu(h)
        h = h + self.fc2(self.ln(h))
        h = h + self.fc3(h)
        return torch.tanh(self.head(h))


def test_read_untraceable_module_through_hooks():
    torch.manual_seed(4)
    model = TORCH.read(Untraceable().double())
    assert "hooks" in model.description
    spec = MLP(
        4,
        [
            Dense(8, "relu"),
            Residual([LayerNorm(1e-5), Dense(8)]),
            Residual([Dense(8)]),
            Dense(3, "tanh"),
        ],
    )
    x = np.random.default_rng(15).standard_normal((5, 4))
    _compare_read(model, spec, x, y=np.ones((5, 3)), loss="mse")


def test_reading_the_built_module_gives_the_spec_back():
    spec = MLP(
        3,
        [
            Dense(6, "selu"),
            Residual([Dense(6, "hard_sigmoid"), Dropout(0.5)]),
            Dense(2, "softplus"),
        ],
    )
    built = TORCH.build(spec, init_params(spec, seed=11), dtype="float64")
    model = TORCH.read(built.native)
    assert model.spec() == spec
    x = np.random.default_rng(16).standard_normal((4, 3))
    _compare_read(model, spec, x)


def test_user_module_in_training_mode_is_read_as_it_is():
    torch.manual_seed(5)
    user = nn.Sequential(
        nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 2)
    ).double()
    before = state_dict_copy(user)
    model = TORCH.read(user)
    assert user.training and all(m.training for m in user.modules())
    dense, bn, act, drop, head = model.layers
    assert bn.layer == BatchNorm(1e-5, 0.9, training=True)
    assert "call module.eval()" in bn.note
    assert drop.layer == Dropout(0.5, active=True) and "random" in drop.note
    assert bn.state == {"mean": "1.running_mean", "var": "1.running_var"}
    x = np.random.default_rng(17).standard_normal((6, 3))
    first, second = model.gradients(x), model.gradients(x)
    np.testing.assert_array_equal(first.input, second.input)  # the RNG is forked each time
    assert set(first.state) == {"layers.1.mean", "layers.1.var"}
    assert_state_dict_equal(user, before)
    # in eval mode: inference statistics, no note, the NumPy model of the same spec
    user.eval()
    model = TORCH.read(user)
    assert model.layers[1].note is None and model.layers[3].layer == Dropout(0.5)
    spec = MLP(3, [Dense(6), BatchNorm(1e-5, 0.9), Activation("relu"), Dropout(0.5), Dense(2)])
    _compare_read(model, spec, x)


def test_read_model_with_weights_leaves_user_and_model_unchanged():
    torch.manual_seed(6)
    user = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    before = state_dict_copy(user)
    model = TORCH.read(user)
    weights = model.weights()
    assert weights["layers.0.kernel"].shape == (3, 4)
    np.testing.assert_array_equal(weights["layers.0.kernel"], user[0].weight.detach().numpy().T)
    new = model.with_weights({"layers.0.kernel": np.ones((3, 4))})
    np.testing.assert_array_equal(new.weights()["layers.0.kernel"], np.ones((3, 4)))
    np.testing.assert_array_equal(new.native[0].weight.detach().numpy(), np.ones((4, 3)))
    np.testing.assert_array_equal(model.weights()["layers.0.kernel"], weights["layers.0.kernel"])
    assert_state_dict_equal(user, before)
    x = np.ones((2, 3), dtype=np.float32)
    assert not np.array_equal(new.evaluate(x).output, model.evaluate(x).output)
    with pytest.raises(ParamsError, match=re.escape("unknown weight name(s) ['layers.9.kernel']")):
        model.with_weights({"layers.9.kernel": np.ones((3, 4))})
    with pytest.raises(ParamsError, match=re.escape("has shape (4, 3) but")):
        model.with_weights({"layers.0.kernel": np.ones((4, 3))})


# -- errors ----------------------------------------------------------------------------------


def test_unsupported_module_is_named():
    with pytest.raises(
        AlignmentError, match=re.escape("module '1' (PReLU) is not a layer xgrad reads")
    ):
        TORCH.read(nn.Sequential(nn.Linear(4, 6), nn.PReLU()))


def test_unknown_elementwise_code_and_modules_are_compared_as_computed():
    """As Keras' Dense(activation=my_function): code xgrad cannot name (x * 2, nn.Mish,
    F.hardswish) is a layer of unknown activation, compared as the module computes it."""

    class Odd(nn.Module):
        def __init__(self, scale):
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(3, 4), nn.Mish(), nn.Linear(4, 2)
            self.scale = scale

        def forward(self, x):
            return self.out(F.hardswish(self.act(self.fc(x)) * self.scale))

    model = TORCH.read(Odd(2.0))
    unknown = [info for info in model.layers if info.kind == "activation"]
    assert [info.layer for info in unknown] == [None, None, None]
    assert "module 'act' (Mish) is none of xgrad's activations" in unknown[0].note
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    assert xgrad.compare_models(Odd(2.0), Odd(2.0), x).ok
    report = xgrad.compare_models(Odd(2.0), Odd(3.0), x)
    assert not report.ok and report.first_divergence["path"] == "layers.0"  # the unit of fc


def test_branches_are_refused():
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            return torch.tanh(self.a(x)) * self.b(x)

    with pytest.raises(AlignmentError, match="branches are not read"):
        TORCH.read(Branches())


def test_softmax_over_another_axis_is_refused():
    with pytest.raises(AlignmentError, match=re.escape("over dim=0 (xgrad's softmax is over")):
        TORCH.read(nn.Sequential(nn.Linear(3, 3), nn.Softmax(dim=0)))
    model = TORCH.read(nn.Sequential(nn.Linear(3, 3), nn.LogSoftmax(dim=1)))
    assert model.spec() == MLP(3, [Dense(3, "log_softmax")])


def test_module_called_twice_is_refused():
    layer = nn.Linear(3, 3)
    with pytest.raises(AlignmentError, match="called more than once"):
        TORCH.read(nn.Sequential(layer, nn.ReLU(), layer))


def test_bad_inputs_are_xgrad_errors():
    with pytest.raises(InputError, match="needs a torch.nn.Module"):
        read_module(object())
    with pytest.raises(InputError, match="holds weights of several dtypes"):
        mixed = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2).half())
        TORCH.read(mixed)
    assert TORCH.read(nn.Sequential(nn.Linear(2, 2)).half()).dtype == "float16"
    flat = nn.Sequential(nn.Flatten(), nn.Linear(6, 2))
    with pytest.raises(InputError, match="pass input_shape"):
        TORCH.read(flat)
    model = TORCH.read(flat, input_shape=(2, 3))
    assert model.spec() == MLP((2, 3), [Flatten(), Dense(2)])
    with pytest.raises(InputError, match="pass input_shape"):
        TORCH.read(flat, input_shape=(7,))
    with pytest.raises(InputError, match=re.escape("got shape (2, 5)")):
        model.gradients(np.ones((2, 5)))


def test_rng_untouched():
    """Building (torch layers draw their default init), reading and evaluating a module with
    an active torch Dropout leave the global RNG as it was."""
    spec = MLP(3, [Dense(4, "relu"), Dropout(0.5, active=True), Dense(2)])
    user = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2))  # training mode
    before = _rng_state()
    built = TORCH.build(spec, init_params(spec), dtype="float32")
    built.evaluate(np.ones((2, 3)), capture=True)
    read = TORCH.read(user)
    read.evaluate(np.ones((2, 3)), capture=True)
    read.with_weights(read.weights())
    assert _rng_state() == before


def test_evaluation_under_no_grad_still_differentiates():
    spec = MLP(2, [Dense(2, "tanh")])
    model = TORCH.build(spec, init_params(spec), dtype="float64")
    with torch.no_grad():
        got = model.gradients(np.ones((1, 2)))
        assert not torch.is_grad_enabled()
    assert np.abs(got.params["layers.0.kernel"]).sum() > 0
