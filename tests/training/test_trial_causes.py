"""Findings of the new-user trial of compare_training (issue 13): the cause named must be the
one that tells the rules apart, and only the conventions that differ are listed.

Every expectation is derived by hand from the frameworks' published defaults and update
rules (cited at each test), not from xgrad's output.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.training import SGD, Adam, RMSprop, compare_training
from xgrad.training.causes import rule_differences

SPEC = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2)])
RNG = np.random.default_rng(1)
X, Y = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))

needs = {
    name: pytest.mark.skipif(name not in INSTALLED, reason=f"needs {name}")
    for name in ("jax", "torch", "tensorflow")
}


def model(dtype="float64", seed=0):
    return (SPEC, {k: v.astype(dtype) for k, v in xgrad.init_params(SPEC, seed).items()})


def run(ref_opt, cand_opt, *, steps, dtype="float64", seed=0):
    x, y = X.astype(dtype), Y.astype(dtype)
    m = model(dtype, seed)
    return compare_training(m, m, x, y, loss="mse", optimizers=(ref_opt, cand_opt), steps=steps)


def causes(report, confirmed=True):
    return {d.cause for d in report.diagnoses if d.confirmed is confirmed}


def sgd(*args, **kw):
    import optax

    return optax.sgd(*args, **kw)


# -- 1. one step cannot tell conventions apart: later steps must -----------------------------


@needs["jax"]
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nesterov_against_plain_momentum_is_named_nesterov(dtype):
    # step 1: Nesterov moves by lr (g + 0.9 g) = 1.9 lr g, plain momentum by lr g; so do
    # "momentum 0" and "learning rate lr / 1.9". Step 2: plain momentum moves by
    # lr (g2 + 0.9 g1), which only "not Nesterov" gives.
    report = run(SGD(0.01, momentum=0.9, nesterov=True), sgd(0.01, momentum=0.9), steps=5)
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed) == ("momentum-convention", True)
    assert d.detail.startswith("the candidate does not use Nesterov momentum")


@needs["jax"]
def test_one_step_that_fits_several_causes_is_ambiguous_not_confirmed():
    report = run(SGD(0.01, momentum=0.9, nesterov=True), sgd(0.01, momentum=0.9), steps=1)
    assert causes(report) == set()
    assert {"momentum-convention", "learning-rate"} <= causes(report, confirmed=False)
    assert all(d.detail.startswith("ambiguous: ") for d in report.diagnoses)
    assert "run more steps" in report.diagnoses[0].detail


@needs["jax"]
def test_global_norm_clipping_is_named_with_its_norm_not_as_a_learning_rate():
    import optax

    # the gradients' global norm is above 0.5 (checked by hand below), so clipping scales
    # each update by 0.5 / ||g_t||: a different factor every step, which no learning rate
    # matches beyond the first
    norm = np.linalg.norm(np.concatenate([np.ravel(v) for v in _mse_grads().values()]))
    assert norm > 0.5  # clipping is active
    tx = optax.chain(optax.clip_by_global_norm(0.5), optax.sgd(0.1))
    report = run(SGD(0.1), tx, steps=4)
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed) == ("gradient-clipping", True)
    assert d.detail.startswith("the candidate applies clipping all gradients to global norm 0.5;")


def _mse_grads():
    # dL/dw of mean((tanh(x k0 + b0) k1 + b1 - y)^2), by hand
    p = xgrad.init_params(SPEC, 0)
    h = np.tanh(X @ p["layers.0.kernel"] + p["layers.0.bias"])
    out = h @ p["layers.1.kernel"] + p["layers.1.bias"]
    d = 2 * (out - Y) / out.size
    dh = d @ p["layers.1.kernel"].T * (1 - h**2)
    return {"k1": h.T @ d, "b1": d.sum(0), "k0": X.T @ dh, "b0": dh.sum(0)}


@needs["jax"]
@needs["torch"]
def test_torch_adamw_default_decay_against_optax_adamw_is_weight_decay_in_float32():
    import optax
    import torch

    # torch.optim.AdamW: weight_decay=0.01; optax.adamw: weight_decay=1e-4 (their docs).
    # The decay moves the weights by lr * 0.0099 * w per step, about the float32 tolerance:
    # at the edge at step 1, clear by step 5.
    report = run(lambda p: torch.optim.AdamW(p), optax.adamw(1e-3), steps=5, dtype="float32")
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed) == ("weight-decay", True), report.diagnosis_lines()
    assert "decoupled weight decay 0.0001" in d.detail


# -- 2. fields equal on both sides, or without effect, are not causes ----------------------------


def test_fields_without_effect_are_not_differences():
    # how decay is applied when there is none; how momentum is kept when there is none;
    # where the learning rate enters the momentum when it is constant
    assert rule_differences(Adam(1e-3, decoupled=False), Adam(1e-3)) == []
    assert rule_differences(SGD(0.1), SGD(0.1, nesterov=True, dampening=0.5)) == []
    assert rule_differences(RMSprop(0.1, lr_in_momentum=False), RMSprop(0.1)) == []
    assert (
        rule_differences(SGD(0.1, momentum=0.9, lr_in_velocity=True), SGD(0.1, momentum=0.9)) == []
    )
    (d,) = rule_differences(SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.9, nesterov=True))
    assert d.cause == "momentum-convention"


@needs["tensorflow"]
@needs["torch"]
def test_keras_rmsprop_against_torch_rmsprop_names_only_what_differs():
    import keras
    import torch

    # Keras RMSprop(): lr 1e-3, rho 0.9, eps 1e-7 inside the root, no momentum, no decay;
    # torch RMSprop(): lr 1e-2, alpha 0.99, eps 1e-8 outside the root, no momentum, no decay.
    # In float32 both round their hyperparameters alike.
    report = run(
        keras.optimizers.RMSprop(), lambda p: torch.optim.RMSprop(p), steps=3, dtype="float32"
    )
    assert causes(report) == {"learning-rate", "rmsprop-convention"}, report.diagnosis_lines()


@needs["jax"]
@needs["torch"]
def test_a_named_rule_that_differs_in_eps_root_only_names_adam_epsilon():
    import optax
    import torch

    report = run(
        lambda p: torch.optim.Adam(p),
        (optax.adam(1e-3, eps_root=1e-8), Adam(1e-3, eps_root=1e-8)),
        steps=3,
    )
    assert causes(report) == {"adam-epsilon"}, report.diagnosis_lines()


# -- 3, 4. learning rates, and three conventions at once ---------------------------------------


@needs["jax"]
@needs["tensorflow"]
@pytest.mark.parametrize(
    "opts, dtype, expected",
    [
        # Keras keeps its learning rate in float32 even in float64 runs
        ("sgd", "float64", {"learning-rate", "float32-hyperparameters"}),
        ("sgd", "float32", {"learning-rate"}),
        # Keras Adam: epsilon 1e-7 added before the bias correction; optax 1e-8 after
        ("adam", "float32", {"learning-rate", "adam-epsilon"}),
        ("adam", "float64", {"learning-rate", "adam-epsilon", "float32-hyperparameters"}),
    ],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_a_different_learning_rate_is_named(opts, dtype, expected, seed):
    import keras
    import optax

    pair = {
        "sgd": (keras.optimizers.SGD(0.01), optax.sgd(0.02)),
        "adam": (keras.optimizers.Adam(1e-3), optax.adam(2e-3)),
    }[opts]
    report = run(*pair, steps=3, dtype=dtype, seed=seed)
    if dtype == "float32":  # Keras' epsilon may be too small to show in float32
        assert "learning-rate" in causes(report) and causes(report) <= expected
    else:
        assert causes(report) == expected, report.diagnosis_lines()
    (lr,) = [d for d in report.diagnoses if d.cause == "learning-rate"]
    assert lr.detail.startswith(
        f"the candidate's learning rate is {0.02 if opts == 'sgd' else 0.002};"
    )


@needs["jax"]
@needs["tensorflow"]
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_conventions_at_once_are_all_named(seed):
    import keras
    import optax

    # Keras AdamW(): weight decay 0.004, epsilon 1e-7 before the bias correction, float32
    # hyperparameters; optax.adamw(1e-3): weight decay 1e-4, epsilon 1e-8 after it
    report = run(keras.optimizers.AdamW(), optax.adamw(1e-3), steps=3, seed=seed)
    assert causes(report) == {"weight-decay", "adam-epsilon", "float32-hyperparameters"}, (
        report.diagnosis_lines()
    )
    (wd,) = [d for d in report.diagnoses if d.cause == "weight-decay"]
    assert wd.detail.startswith("the candidate applies decoupled weight decay 0.0001")


# -- 5. messages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "sgd:momentum=0.9,rho=0.5",
            "optimizer option 'rho' in 'sgd:momentum=0.9,rho=0.5': sgd has no rho; its options "
            "are clip_global_norm, ",
        ),
        ("adam:momentum=0.9", "optimizer option 'momentum' in 'adam:momentum=0.9': adam has no"),
    ],
)
def test_an_option_the_rule_does_not_have_is_named_as_written(text, message):
    from xgrad.training import OptimizerSpec

    with pytest.raises(xgrad.InputError, match=re.escape(message)):
        OptimizerSpec.parse(text)


@pytest.mark.parametrize(
    "framework, message",
    [
        ("tensorflow", "keras.optimizers.RMSprop has no option eps_in_sqrt; it takes "),
        ("torch", "torch.optim.RMSprop has no option eps_in_sqrt; it takes lr, alpha, eps"),
    ],
)
def test_a_framework_message_keeps_the_users_spelling(framework, message):
    from xgrad.training import OptimizerSpec
    from xgrad.training.optimizers import optimizer_for

    pytest.importorskip({"tensorflow": "keras", "torch": "torch"}[framework])
    spec = OptimizerSpec.parse("rmsprop:rho=0.5,eps_in_sqrt=true")
    assert spec.text() == "rmsprop:rho=0.5,eps_in_sqrt=true"
    with pytest.raises(xgrad.InputError, match=re.escape(message)) as info:
        optimizer_for(framework, spec)
    assert "'rmsprop:rho=0.5,eps_in_sqrt=true'" in str(info.value)
    if framework == "tensorflow":
        assert "rho, epsilon" in str(info.value) and " decay" not in str(info.value)


@needs["jax"]
def test_an_uncalled_optax_function_is_named():
    import optax

    with pytest.raises(xgrad.InputError, match=re.escape("is the function optax.adam, not a")):
        run(SGD(0.1), optax.adam, steps=1)


@needs["tensorflow"]
def test_an_uncalled_keras_class_is_named():
    import keras

    with pytest.raises(xgrad.InputError, match=re.escape("class keras.optimizers.Adam, not an")):
        run(keras.optimizers.Adam, SGD(0.1), steps=1)


def test_x_and_batches_together_are_refused():
    with pytest.raises(xgrad.InputError, match="not both"):
        compare_training(
            model(),
            model(),
            X,
            Y,
            loss="mse",
            optimizers=(SGD(0.1), SGD(0.1)),
            batches=[(X, Y)],
        )


@needs["tensorflow"]
def test_keras_use_ema_without_overwrite_follows_the_plain_rule():
    import keras

    # Keras keeps the moving average beside the weights and only writes it into them every
    # ema_overwrite_frequency steps (None: never during training)
    report = run(
        keras.optimizers.Adam(use_ema=True),
        Adam(1e-3, eps=1e-7, epsilon_hat=True, float32_constants=True),
        steps=3,
    )
    assert report.ok and report.referee is not None


@needs["tensorflow"]
def test_an_unknown_reference_rule_says_why():
    import keras

    report = run(keras.optimizers.Adagrad(0.1), SGD(0.1), steps=2)
    (d,) = report.diagnoses
    assert d.cause == "unexplained"
    assert "xgrad's referee knows Keras' SGD, Adam, AdamW, RMSprop, not Adagrad" in d.detail
    assert "optax" not in d.detail


@needs["jax"]
@needs["torch"]
def test_a_divergence_at_the_tolerance_edge_is_not_called_rounding_when_it_grows():
    import optax
    import torch
    from flax import nnx

    # the trial's case: torch AdamW() (weight decay 0.01) against optax.adamw(1e-3) (1e-4) on
    # a Flax port, float32. The decay differs by lr * 0.0099 = 9.9e-6 of each weight per step:
    # at the float32 tolerance (1e-5) at step 1, and growing like the step count after
    class Port(nnx.Module):
        def __init__(self, *, rngs):
            self.fc1 = nnx.Linear(4, 16, rngs=rngs)
            self.fc2 = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc2(nnx.relu(self.fc1(x)))

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.standard_normal((8, 3)).astype(np.float32)
    report = compare_training(
        net,
        Port(rngs=nnx.Rngs(0)),
        x,
        y,
        loss="mse",
        optimizers=(lambda p: torch.optim.AdamW(p), optax.adamw(1e-3)),
        steps=5,
    )
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed) == ("weight-decay", True), report.diagnosis_lines()
    assert "decoupled weight decay 0.0001" in d.detail
    assert report.first_divergence.step == 1
    assert "the first divergence, is at the tolerance's edge" in d.detail
