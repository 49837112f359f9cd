"""Reading Flax models written the way the Flax docs write them: NNX modules with
nnx.Linear, LayerNorm, RMSNorm, BatchNorm, Dropout and residual blocks, in eval and train
mode; Linen modules with BatchNorm statistics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED, rel_norm

import xgrad

pytestmark = pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")

if "flax" in INSTALLED:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    from flax import nnx

    class Block(nnx.Module):
        def __init__(self, d, rngs):
            self.linear = nnx.Linear(d, d, rngs=rngs)
            self.norm = nnx.LayerNorm(d, rngs=rngs)

        def __call__(self, x):
            return x + nnx.relu(self.norm(self.linear(x)))

    class MLP(nnx.Module):
        def __init__(self, din, dh, dout, *, rngs):
            self.l1 = nnx.Linear(din, dh, rngs=rngs)
            self.bn = nnx.BatchNorm(dh, rngs=rngs)
            self.dropout = nnx.Dropout(0.2, rngs=rngs)
            self.block = Block(dh, rngs)
            self.rms = nnx.RMSNorm(dh, rngs=rngs)
            self.l2 = nnx.Linear(dh, dout, rngs=rngs)

        def __call__(self, x):
            x = nnx.gelu(self.dropout(self.bn(self.l1(x))))
            x = self.block(x)
            return self.l2(self.rms(x))

    class LinenNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(8)(x)
            x = nn.BatchNorm(use_running_average=True)(x)
            x = nn.relu(x)
            x = nn.LayerNorm()(x)
            return nn.Dense(2)(x)


RNG = np.random.default_rng(0)


def _against_numpy(model, x, tol=1e-5):
    spec = model.spec()
    weights = {k: np.asarray(v, np.float64) for k, v in model.weights().items()}
    y = RNG.normal(size=(x.shape[0], spec.output_dim))
    ref = xgrad.get_framework("numpy").build(spec, weights, dtype="float64")
    want = ref.evaluate(x, y, loss="projection", capture=True)
    got = model.evaluate(x, y, loss="projection", capture=True)
    for name, value in want.params.items():
        assert rel_norm(got.params[name], value) <= tol, name
    assert rel_norm(got.input, want.input) <= tol
    for path, value in want.activations.items():
        assert rel_norm(got.activations[path], value) <= tol, path
    return got, want


def test_an_nnx_model_in_eval_mode_reads_layer_by_layer():
    module = MLP(6, 8, 3, rngs=nnx.Rngs(0))
    module.eval()
    model = xgrad.read_model(module, input_shape=(6,))
    assert [(i.path, i.kind, i.name) for i in model.walk()] == [
        ("layers.0", "dense", "l1"),
        ("layers.1", "batchnorm", "bn"),
        ("layers.2", "activation", "layers.2"),
        ("layers.3", "residual", "layers.3"),
        ("layers.3.layers.0", "dense", "block/linear"),
        ("layers.3.layers.1", "layernorm", "block/norm"),
        ("layers.3.layers.2", "activation", "layers.3.layers.2"),
        ("layers.4", "rmsnorm", "rms"),
        ("layers.5", "dense", "l2"),
    ]
    layers = {i.path: i.layer for i in model.walk()}
    assert layers["layers.1"] == xgrad.BatchNorm(1e-5, 0.99)  # Flax's own defaults, read
    assert layers["layers.2"] == xgrad.Activation("gelu_tanh")  # nnx.gelu is the tanh form
    assert layers["layers.3.layers.1"] == xgrad.LayerNorm(1e-6)
    assert layers["layers.4"] == xgrad.RMSNorm(1e-6)
    assert model.native_names()["layers.1.mean"] == "bn/mean"
    assert "layers.1.mean" not in model.param_names  # state: no gradient
    _against_numpy(model, RNG.normal(size=(5, 6)).astype(np.float32))


def test_an_nnx_model_left_in_training_mode_is_named_with_the_fix():
    module = MLP(6, 8, 3, rngs=nnx.Rngs(0))  # nnx.BatchNorm and Dropout start in training
    model = xgrad.read_model(module, input_shape=(6,))
    notes = {i.kind: i.note for i in model.walk() if i.note}
    assert set(notes) == {"batchnorm", "dropout"}
    assert "model.eval()" in notes["batchnorm"] and "model.eval()" in notes["dropout"]
    bn = next(i.layer for i in model.walk() if i.kind == "batchnorm")
    assert bn.training


def test_an_nnx_batchnorm_in_training_mode_updates_its_statistics_like_the_reference():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(4, 6, rngs=rngs)
            self.bn = nnx.BatchNorm(6, momentum=0.9, rngs=rngs)

        def __call__(self, x):
            return self.bn(nnx.tanh(self.l1(x)))

    module = Net(nnx.Rngs(1))
    model = xgrad.read_model(module, input_shape=(4,))
    got, want = _against_numpy(model, RNG.normal(size=(8, 4)).astype(np.float32))
    assert sorted(got.state) == ["layers.1.mean", "layers.1.var"]
    for name in got.state:
        assert rel_norm(got.state[name], want.state[name]) <= 1e-5
    assert np.all(np.asarray(module.bn.mean[...]) == 0)  # the user's module is unchanged


def test_a_linen_model_with_batch_statistics():
    module = LinenNet()
    variables = module.init(jax.random.key(0), jnp.ones((1, 6)))
    model = xgrad.read_model((module, variables), input_shape=(6,))
    assert model.spec().describe() == (
        "6 -> 8:linear -> batchnorm(eps=1e-05, momentum=0.99, inference) -> relu -> "
        "layernorm(eps=1e-06) -> 2:linear"
    )
    names = model.native_names()
    assert names["layers.1.mean"] == "batch_stats/BatchNorm_0/mean"
    assert names["layers.0.kernel"] == "params/Dense_0/kernel"
    _against_numpy(model, RNG.normal(size=(4, 6)).astype(np.float32))


def test_with_weights_returns_the_users_kind_of_object_and_leaves_it_alone():
    module = MLP(6, 8, 3, rngs=nnx.Rngs(0))
    module.eval()
    model = xgrad.read_model(module, input_shape=(6,))
    before = np.asarray(module.l1.kernel[...]).copy()
    moved = model.with_weights({"layers.0.kernel": np.zeros((6, 8))})
    assert isinstance(moved.native, MLP)
    assert np.all(np.asarray(moved.native.l1.kernel[...]) == 0)
    np.testing.assert_array_equal(np.asarray(module.l1.kernel[...]), before)


def test_a_linen_model_with_an_active_dropout_is_refused_for_its_random_numbers():
    class Dropped(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.Dropout(0.5, deterministic=False)(nn.Dense(4)(x)))

    x = np.ones((2, 5), np.float32)
    module = Dropped()
    variables = module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    with pytest.raises(xgrad.InputError, match="draws random numbers") as err:
        xgrad.read_model((module, variables), input_shape=(5,))
    assert "transposed kernel" not in str(err.value)
