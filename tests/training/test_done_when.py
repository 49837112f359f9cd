"""Issue 13's "done when": a Keras model trained with keras.optimizers.Adam() and its Flax
port trained with optax.adam(1e-3), from the same weights.

In float64 they part at step 1 and adam-epsilon is named (value and placement), with Keras'
float32-rounded hyperparameters beside it; they match once the rules agree (Keras' rule in
optax). In float32 the difference is below resolution, and the report says so.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.training import compare_training, keras_adam

pytestmark = pytest.mark.skipif(
    not {"tensorflow", "jax", "flax"} <= INSTALLED, reason="needs keras, flax and optax"
)

RNG = np.random.default_rng(7)
X, Y = RNG.standard_normal((8, 2)), 10 * RNG.standard_normal((8, 2))
# Gradients well above Adam's epsilon: the float32 case below cannot see the difference.
# (With gradients near 1e-5 somewhere, float32 sees it: see docs/training.md.)


def keras_model(dtype):
    import keras

    def init(seed):
        return keras.initializers.GlorotUniform(seed=seed)  # seeded: no global RNG touched

    return keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(2, activation="tanh", dtype=dtype, kernel_initializer=init(1)),
            keras.layers.Dense(2, dtype=dtype, kernel_initializer=init(2)),
        ]
    )


def flax_port(dtype):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.hidden = nnx.Linear(2, 2, rngs=rngs, param_dtype=dtype)
            self.out = nnx.Linear(2, 2, rngs=rngs, param_dtype=dtype)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hidden(x)))

    with jax.enable_x64(dtype == "float64"):
        return Port(nnx.Rngs(0))


@pytest.fixture(scope="module")
def float64():
    return keras_model("float64"), flax_port("float64")


def test_float64_parts_at_step_1_and_names_adam_epsilon(float64):
    import jax
    import keras
    import optax
    from flax import nnx

    reference, port = float64
    opt = keras.optimizers.Adam()
    weights = [w.copy() for w in reference.get_weights()]
    port_weights = [np.array(v) for v in jax.tree.leaves(nnx.state(port, nnx.Param))]
    report = compare_training(
        reference, port, X, Y, loss="mse", optimizers=(opt, optax.adam(1e-3)), steps=2
    )
    assert not report.ok and report.dtype == "float64"
    assert report.first_divergence.step == 1
    causes = {d.cause: d for d in report.diagnoses}
    assert set(causes) == {"adam-epsilon", "float32-hyperparameters"}
    eps = causes["adam-epsilon"]
    assert eps.confirmed and eps.step == 1
    assert "eps 1e-08 to sqrt(v_hat), after the bias correction" in eps.detail
    assert "adds 1e-07 to sqrt(v) before the bias correction (Keras' epsilon hat" in eps.detail
    assert eps.residual <= report.tolerance_at(1) < eps.before
    # the referee says which side left the reference's rule: the port, not Keras
    first = report.steps[0]
    assert first.referee_drift("reference") <= 1e-12 < first.referee_drift("flax.nnx")
    # nothing of the user's was changed
    assert all(np.array_equal(a, b) for a, b in zip(weights, reference.get_weights(), strict=True))
    after = [np.array(v) for v in jax.tree.leaves(nnx.state(port, nnx.Param))]
    assert all(np.array_equal(a, b) for a, b in zip(port_weights, after, strict=True))
    assert not opt.built


def test_float64_matches_once_the_rules_agree(float64):
    import jax
    import keras

    reference, port = float64
    report = compare_training(
        reference,
        port,
        X,
        Y,
        loss="mse",
        optimizers=(keras.optimizers.Adam(), keras_adam()),
        steps=2,
    )
    assert report.ok, report.mismatch_message()
    assert not jax.config.jax_enable_x64


def test_float32_says_the_difference_cannot_be_seen():
    import keras
    import optax

    report = compare_training(
        keras_model("float32"),
        flax_port("float32"),
        X,
        Y,
        loss="mse",
        optimizers=(keras.optimizers.Adam(), optax.adam(1e-3)),
        steps=2,
    )
    assert report.ok and report.dtype == "float32", report.mismatch_message()
    notes = {p.cause: p for p in report.precision}
    assert "adam-epsilon" in notes and 0 < notes["adam-epsilon"].effect < 1
    text = "\n".join(report.diagnosis_lines())
    assert "cannot be seen at float32 precision: adam-epsilon" in text
    assert xgrad.compare_training is compare_training
