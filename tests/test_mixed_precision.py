"""Mixed precision end to end: 16-bit builds of a spec, 16-bit user models in every
framework, a precision difference diagnosed `dtype` at the layer where it starts, and no
framework exception reaching the user from any public entry point."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif(
    {"jax", "flax", "tensorflow", "torch"} - INSTALLED, reason="needs every framework"
)
if not {"jax", "flax", "tensorflow", "torch"} - INSTALLED:
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torch import nn

    import xgrad.frameworks.tensorflow.ops  # noqa: F401 - imports TensorFlow quietly
    from xgrad.frameworks.tensorflow.ops import keras

    class Net(nnx.Module):
        def __init__(self, rngs, dtype=jnp.float32, param_dtype=jnp.float32):
            kw = {"dtype": dtype, "param_dtype": param_dtype, "rngs": rngs}
            self.a = nnx.Linear(6, 8, **kw)
            self.b = nnx.Linear(8, 3, **kw)

        def __call__(self, x):
            return self.b(nnx.relu(self.a(x)))


X = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
SPEC = xgrad.MLP(6, [xgrad.Dense(8, "gelu"), xgrad.LayerNorm(), xgrad.Dense(3)])


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_a_spec_compares_in_16_bit_in_four_frameworks(dtype):
    y = np.random.default_rng(1).normal(size=(4, 3))
    report = xgrad.compare(
        SPEC, X, y, loss="projection", frameworks="jax,flax,torch,tensorflow", dtype=dtype
    )
    assert report.ok, report.mismatch_message()
    assert report.tolerance == xgrad.TOLERANCES[dtype]
    with pytest.raises(xgrad.InputError, match="dtype 'bfloat16' is not supported"):
        xgrad.compare(SPEC, X, frameworks="numpy", dtype="bfloat16")


@pytest.mark.parametrize(
    "make,where",
    [
        (lambda: Net(nnx.Rngs(0), dtype=jnp.bfloat16), "bfloat16"),  # bf16 compute, f32 params
        (lambda: Net(nnx.Rngs(0), dtype=jnp.float16, param_dtype=jnp.float16), "float16"),
        (
            lambda: keras.Sequential(
                [
                    keras.Input((6,)),
                    keras.layers.Dense(8, activation="relu", dtype="mixed_bfloat16"),
                    keras.layers.Dense(3, dtype="mixed_bfloat16"),
                ]
            ),
            "bfloat16",
        ),
        (
            lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(torch.bfloat16),
            "bfloat16",
        ),
    ],
    ids=["nnx-bf16-compute", "nnx-f16", "keras-mixed-bf16", "torch-bf16"],
)
def test_a_16_bit_port_of_a_float32_model_is_diagnosed_dtype(make, where):
    reference = Net(nnx.Rngs(0))
    report = xgrad.compare_models(reference, make(), X)
    assert not report.ok and report.dtype == "float32"
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.where) == ("dtype", "layers.0", "forward")
    assert f"computes this layer in {where}" in d.detail


def test_both_sides_in_bfloat16_compare_at_the_16_bit_tolerance():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(torch.bfloat16)
    port = Net(nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
    report = xgrad.compare_models(ref, port, X)
    assert report.dtype == "bfloat16" and report.tolerance == xgrad.TOLERANCES["bfloat16"]
    assert report.ok, report.mismatch_message()


def test_a_float32_layer_inside_a_float64_keras_model_is_named():
    spec = xgrad.MLP(6, [xgrad.Dense(8, "tanh"), xgrad.Dense(3)])
    params = xgrad.init_params(spec, seed=1)
    model = keras.Sequential(
        [
            keras.Input((6,)),  # float32 input, as keras.Input gives by default
            keras.layers.Dense(8, activation="tanh"),  # float32
            keras.layers.Dense(3, dtype="float64"),
        ]
    )
    report = xgrad.compare_models((spec, params), model, X.astype(np.float64))
    assert report.dtype == "float64" and not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.layer) == ("dtype", "layers.0")


def test_every_public_entry_point_takes_16_bit_models_without_a_framework_exception():
    models = [
        Net(nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.bfloat16),
        nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).to(torch.float16),
        keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(8, activation="relu", dtype="mixed_float16"),
                keras.layers.Dense(3, dtype="mixed_float16"),
            ]
        ),
        (
            lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"],
            {"a": jnp.ones((6, 8), jnp.bfloat16), "b": jnp.ones((8, 3), jnp.bfloat16)},
        ),
    ]
    for k, model in enumerate(models):
        read = xgrad.read_model(model, input_shape=(6,))
        assert read.dtype in ("bfloat16", "float16")
        grads = read.evaluate(X, loss="projection", y=np.ones((4, 3)), capture=True)
        assert np.all(np.isfinite(np.asarray(grads.input, np.float64)))
        for target in ("numpy", "torch"):
            try:
                xgrad.convert(model, to=target, x=X)
            except xgrad.XgradError:
                pass  # refused with xgrad's own error is fine; a framework's is not
        report = xgrad.compare_models(model, model, X)
        assert report.ok, report.mismatch_message()
        if k < 3:  # the same layers as Net (the pure-JAX function has no biases)
            diagnosed = xgrad.compare_models(Net(nnx.Rngs(1)), model, X, explain=True)
            assert diagnosed.diagnoses[0].cause == "dtype"
