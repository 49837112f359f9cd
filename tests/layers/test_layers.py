"""Every layer kind: forward by hand formulas, VJP against finite differences, structure
and validation (one test module for the small layer modules of xgrad/layers/)."""

from __future__ import annotations

import numpy as np
import pytest
from _util import numeric_gradients, rel_norm

import xgrad
from xgrad.layers import (
    LAYERS,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    Residual,
    RMSNorm,
)
from xgrad.layers.base import forward_sequence, vjp_sequence

RNG = np.random.default_rng(7)


def _weights(layer, shape, prefix="layers.0"):
    local = layer.init(np.random.default_rng(3), shape)
    out = {f"{prefix}.{k}": v for k, v in local.items()}
    if layer.children:
        for j, child in enumerate(layer.children):
            out.update(_weights(child, shape, f"{prefix}.layers.{j}"))
    return out


LAYER_CASES = [
    pytest.param(Dense(5, "tanh"), (4,), id="dense"),
    pytest.param(Dense(5, "softmax", use_bias=False), (4,), id="dense-softmax-nobias"),
    pytest.param(Activation("log_softmax"), (4,), id="log-softmax"),
    pytest.param(LayerNorm(1e-3), (6,), id="layernorm"),
    pytest.param(LayerNorm(1e-5, center=False), (6,), id="layernorm-nocenter"),
    pytest.param(RMSNorm(1e-6), (6,), id="rmsnorm"),
    pytest.param(RMSNorm(1e-6, scale=False), (6,), id="rmsnorm-noscale"),
    pytest.param(BatchNorm(), (6,), id="batchnorm-inference"),
    pytest.param(BatchNorm(training=True), (6,), id="batchnorm-training"),
    pytest.param(BatchNorm(training=True), (3, 4), id="batchnorm-training-lc"),
    pytest.param(BatchNorm(training=True, center=False), (2, 2, 3), id="batchnorm-training-hwc"),
    pytest.param(BatchNorm(), (2, 2, 3), id="batchnorm-inference-hwc"),
    pytest.param(Dropout(0.4, active=True), (6,), id="dropout-active"),
    pytest.param(Flatten(), (2, 3), id="flatten"),
    pytest.param(Residual([Dense(4, "tanh"), LayerNorm()]), (4,), id="residual"),
]


@pytest.mark.parametrize("layer,shape", LAYER_CASES)
def test_vjp_matches_finite_differences(layer, shape):
    weights = _weights(layer, shape)
    x = RNG.normal(size=(5, *shape))
    out_shape = (5, *layer.output_shape(shape))
    r = np.random.default_rng(1).normal(size=out_shape)  # a fixed random projection
    state = {k: v for k, v in weights.items() if k.rsplit(".", 1)[1] in ("mean", "var")}
    params = {k: v for k, v in weights.items() if k not in state}

    def loss(p, xx):
        out, _ = forward_sequence([layer], {**p, **state}, xx)
        return float((out * r).sum())

    want_params, want_x = numeric_gradients(loss, params, x)
    out, steps = forward_sequence([layer], weights, x)
    grads: dict = {}
    got_x = vjp_sequence(weights, steps, r, grads)
    assert rel_norm(got_x, want_x) < 1e-7
    assert set(grads) == set(params)
    for name in params:
        assert rel_norm(grads[name], want_params[name]) < 1e-7, name


def test_layernorm_forward_by_hand():
    x = np.array([[1.0, 2.0, 4.0], [0.0, -1.0, 1.0]])
    w = {"n.scale": np.array([1.0, 2.0, 0.5]), "n.bias": np.array([0.1, 0.0, -0.1])}
    mean = np.array([[7 / 3], [0.0]])
    var = np.array([[((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 3], [2 / 3]])
    want = (x - mean) / np.sqrt(var + 1e-3) * w["n.scale"] + w["n.bias"]
    np.testing.assert_allclose(LayerNorm().forward(w, x, path="n").output, want, rtol=1e-14)


def test_rmsnorm_forward_by_hand():
    x = np.array([[3.0, 4.0]])
    got = RMSNorm(epsilon=0.5).forward({"n.scale": np.array([1.0, 2.0])}, x, path="n").output
    np.testing.assert_allclose(got, [[3 / 3.6055512754639896, 8 / 3.6055512754639896]])
    # sqrt((9 + 16) / 2 + 0.5) = sqrt(13)


def test_batchnorm_modes_and_state_update_by_hand():
    x = np.array([[1.0, 10.0], [3.0, 14.0]])
    w = {
        "b.scale": np.ones(2),
        "b.bias": np.zeros(2),
        "b.mean": np.array([0.5, 1.0]),
        "b.var": np.array([4.0, 9.0]),
    }
    inference = BatchNorm(epsilon=0.0).forward(w, x, path="b")
    np.testing.assert_allclose(inference.output, (x - w["b.mean"]) / np.sqrt(w["b.var"]))
    assert inference.state == {}
    training = BatchNorm(epsilon=0.0, momentum=0.9, training=True).forward(w, x, path="b")
    np.testing.assert_allclose(training.output, [[-1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(
        training.state["b.mean"], 0.9 * w["b.mean"] + 0.1 * np.array([2, 12])
    )
    np.testing.assert_allclose(training.state["b.var"], 0.9 * w["b.var"] + 0.1 * np.array([1, 4]))


@pytest.mark.parametrize("shape", [(6,), (5, 3), (2, 3, 3)], ids=["c", "lc", "hwc"])
def test_batchnorm_over_the_last_axis_matches_torch(shape):
    """Channels last: batch statistics over the batch and every spatial position, as torch's
    F.batch_norm computes them on the channels-first copy from the same weights. torch
    updates running_var with the unbiased variance (N - 1): the biased update is recovered
    from it by hand."""
    torch = pytest.importorskip("torch")
    f_batch_norm = torch.nn.functional.batch_norm
    local = BatchNorm().init(np.random.default_rng(3), shape)
    w = {f"b.{k}": v for k, v in local.items()}
    t = {k: torch.tensor(v) for k, v in local.items()}  # copies: torch updates them in place
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, *shape)) * rng.uniform(0.5, 3, shape[-1]) + np.arange(shape[-1])
    x_first = torch.tensor(np.moveaxis(x, -1, 1))

    def last(a):
        return np.moveaxis(a.numpy(), 1, -1)

    training = BatchNorm(1e-3, momentum=0.9, training=True).forward(w, x, path="b")
    want = f_batch_norm(x_first, t["mean"], t["var"], t["scale"], t["bias"], True, 0.1, 1e-3)
    np.testing.assert_allclose(training.output, last(want), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(training.state["b.mean"], t["mean"].numpy(), rtol=1e-12)
    n = x.size // shape[-1]  # values per channel
    new_unbiased = t["var"].numpy() - 0.9 * local["var"]  # 0.1 * var * n / (n - 1)
    want_var = 0.9 * local["var"] + new_unbiased * (n - 1) / n
    np.testing.assert_allclose(training.state["b.var"], want_var, rtol=1e-12)
    inference = BatchNorm(1e-3).forward(w, x, path="b").output
    t = {k: torch.tensor(v) for k, v in local.items()}
    want = f_batch_norm(x_first, t["mean"], t["var"], t["scale"], t["bias"], False, 0.1, 1e-3)
    np.testing.assert_allclose(inference, last(want), rtol=1e-12, atol=1e-12)


def test_dropout_is_identity_inactive_and_a_fixed_mask_active():
    x = RNG.normal(size=(4, 10))
    assert Dropout(0.5).forward({}, x, path="layers.0").output is x
    layer = Dropout(0.5, active=True, seed=3)
    a = layer.forward({}, x, path="layers.0").output
    b = layer.forward({}, x, path="layers.0").output
    np.testing.assert_array_equal(a, b)  # the same mask every time, in every process
    kept = a != 0
    np.testing.assert_allclose(a[kept], 2 * x[kept])
    c = layer.forward({}, x, path="layers.1").output
    assert not np.array_equal(a != 0, c != 0)  # another layer draws another mask


def test_residual_adds_its_input_and_names_nested_weights():
    spec = xgrad.MLP(3, [Residual([Dense(3, "relu"), Dense(3)])])
    assert list(spec.param_shapes()) == [
        "layers.0.layers.0.kernel",
        "layers.0.layers.0.bias",
        "layers.0.layers.1.kernel",
        "layers.0.layers.1.bias",
    ]
    w = xgrad.init_params(spec)
    x = RNG.normal(size=(2, 3))
    h = np.maximum(x @ w["layers.0.layers.0.kernel"] + w["layers.0.layers.0.bias"], 0)
    want = x + h @ w["layers.0.layers.1.kernel"] + w["layers.0.layers.1.bias"]
    out, _ = forward_sequence(spec.layers, w, x)
    np.testing.assert_allclose(out, want, rtol=1e-14)


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: LayerNorm(epsilon=-1), "epsilon must be in"),
        (lambda: LayerNorm(center="yes"), "center must be True or False"),
        (lambda: BatchNorm(momentum=1.5), r"momentum must be in \[0, 1\]"),
        (lambda: Dropout(1.0), r"rate must be in \[0, 1\)"),
        (lambda: Dropout(0.1, seed=-1), "seed must be a non-negative integer"),
        (lambda: Residual([]), "at least one layer"),
        (lambda: Residual(Dense(3)), "wrap it"),
        (lambda: Residual([3]), "must be an xgrad layer"),
        (lambda: xgrad.MLP(4, [Residual([Dense(3)])]), "must keep the shape"),
        (lambda: BatchNorm().output_shape(()), r"examples of shape \(\.\.\., channels\)"),
        (lambda: Activation("swoosh"), "unknown activation"),
    ],
)
def test_bad_layers_raise_spec_error_naming_the_value(make, pattern):
    with pytest.raises(xgrad.SpecError, match=pattern):
        make()


def test_registry_lists_every_layer_kind_once():
    assert set(LAYERS) == {
        "dense",
        "activation",
        "layernorm",
        "rmsnorm",
        "batchnorm",
        "groupnorm",
        "dropout",
        "flatten",
        "residual",
        "embedding",
        "attention",
        "gated_mlp",
        "conv",
        "maxpool",
        "avgpool",
        "global_avgpool",
        "lstm",
        "gru",
    }
    assert all(cls.kind == kind for kind, cls in LAYERS.items())
