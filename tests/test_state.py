"""No global state leaks: after every public call, also one that raised, the frameworks'
global settings, NumPy's error state and global random state are exactly as before."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif(
    {"jax", "flax", "tensorflow"} - INSTALLED, reason="needs every framework"
)

if not {"jax", "flax", "tensorflow"} - INSTALLED:
    import jax
    import jax.numpy as jnp
    import keras
    import tensorflow as tf
    from flax import nnx

    import xgrad.frameworks.tensorflow.ops  # noqa: F401 - imports TensorFlow quietly


def snapshot() -> dict:
    state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what is checked
    return {
        "jax_enable_x64": jax.config.jax_enable_x64,
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "keras_floatx": keras.config.floatx(),
        "keras_dtype_policy": keras.config.dtype_policy().name,
        "tf32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "numpy_errstate": np.geterr(),
        "numpy_random": (state[0], state[1].tobytes(), state[2], state[3], state[4]),
        "tf_logger_filters": len(tf.get_logger().filters),
        "stderr": os.fstat(2).st_ino,
    }


SPEC = xgrad.MLP(4, [xgrad.Dense(5, "gelu"), xgrad.Dense(3, "softmax")])
X = np.random.default_rng(0).normal(size=(6, 4))
Y = np.array([0, 1, 2, 0, 1, 2])


def _port(p, x):
    if x.shape[0] == 7:
        raise ValueError("this port refuses batches of 7")  # raised inside float64 JAX code
    return jax.nn.softmax(jax.nn.gelu(x @ p["a"] + p["b"], approximate=False) @ p["c"] + p["d"])


def _port_params(dtype):
    return {
        "a": jnp.zeros((4, 5), dtype),
        "b": jnp.zeros(5, dtype),
        "c": jnp.zeros((5, 3), dtype),
        "d": jnp.zeros(3, dtype),
    }


def _float64_port():
    with jax.enable_x64(True):
        return (_port, _port_params(jnp.float64))


def _keras64():
    return keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(
                5,
                activation="gelu",
                dtype="float64",
                kernel_initializer=keras.initializers.GlorotUniform(seed=1),
            ),
            keras.layers.Dense(
                3,
                activation="softmax",
                dtype="float64",
                kernel_initializer=keras.initializers.GlorotUniform(seed=2),
            ),
        ]
    )


CALLS = {
    "compare-float64": lambda: xgrad.compare(SPEC, X, Y, loss="cce", dtype="float64"),
    "compare-float32-explain": lambda: xgrad.compare(
        SPEC, X, Y, loss="cce", rtol=1e-12, explain=True
    ),
    "compare-raises": lambda: xgrad.compare(SPEC, X, np.ones((6, 9)), loss="mse"),
    "compare-models-float64": lambda: xgrad.compare_models(
        _keras64(), _float64_port(), X, Y, loss="cce"
    ),
    "compare-models-raises-inside-jax": lambda: xgrad.compare_models(
        (SPEC, xgrad.init_params(SPEC)), _float64_port(), np.ones((7, 4))
    ),
    "compare-models-nnx": lambda: xgrad.compare_models(
        (SPEC, xgrad.init_params(SPEC)),
        xgrad.get_framework("flax").build(SPEC, dtype="float32").native,
        X,
    ),
    "convert-to-jax-float64": lambda: xgrad.convert((SPEC, xgrad.init_params(SPEC)), to="jax"),
    "convert-to-keras": lambda: xgrad.convert((SPEC, xgrad.init_params(SPEC)), to="tensorflow"),
    "cli-compare": lambda: xgrad.cli.main(
        [
            "compare",
            "--input-dim",
            "4",
            "--layers",
            "5:gelu,3:softmax",
            "--dtype",
            "float64",
            "--quiet",
        ]
    ),
    "cli-bad-usage": lambda: xgrad.cli.main(["compare", "--layers", "5:nope"]),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_no_global_state_changes(name, capsys):
    import xgrad.cli  # noqa: F401

    before = snapshot()
    try:
        CALLS[name]()
    except xgrad.XgradError:
        pass
    except ValueError as exc:  # the port's own error, raised inside jax code
        assert "batches of 7" in str(exc)
    capsys.readouterr()
    assert snapshot() == before


def test_a_float64_run_really_computes_in_float64():
    assert not jax.config.jax_enable_x64
    grads = xgrad.get_framework("jax").build(SPEC, dtype="float64").gradients(X)
    assert grads.params["layers.0.kernel"].dtype == np.float64
    assert not jax.config.jax_enable_x64
    model = xgrad.get_framework("tensorflow").build(SPEC, dtype="float64").native
    assert model.layers[0].compute_dtype == "float64" and keras.config.floatx() == "float32"
    module = xgrad.get_framework("flax").build(SPEC, dtype="float64").native
    assert isinstance(module, nnx.Module)
