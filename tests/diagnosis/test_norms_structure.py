"""Causes of the layer vocabulary, each planted in a port written the way the framework's
docs write it and confirmed at the right layer: norm epsilons, batch vs moving statistics,
momentum and PyTorch's unbiased running variance, missing affine terms, a dropout left on,
a missing skip connection."""

from __future__ import annotations

import pytest
from _ports import one, reference, x
from conftest import INSTALLED

import xgrad

needs_torch = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
needs_flax = pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")
if "torch" in INSTALLED:
    from torch import nn
if "flax" in INSTALLED:
    import jax
    import jax.numpy as jnp
    from flax import nnx


@needs_torch
def test_layernorm_epsilon_keras_default_against_pytorchs():
    ref = reference([xgrad.Dense(8, "tanh"), xgrad.LayerNorm(), xgrad.Dense(3)], 6)  # eps 1e-3
    port = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 3))
    report = xgrad.compare_models(ref, port, x(6))
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("layernorm-epsilon", "layers.1", "forward")
    assert "reference epsilon 0.001, candidate 1e-05" in d.detail
    assert d.residual <= report.tolerance < d.before


@needs_torch
def test_batchnorm_epsilon_in_inference():
    ref = reference([xgrad.Dense(8, "relu"), xgrad.BatchNorm(), xgrad.Dense(3)], 6)
    port = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.BatchNorm1d(8), nn.Linear(8, 3)).eval()
    d = one(xgrad.compare_models(ref, port, x(6)))
    assert (d.cause, d.layer) == ("batchnorm-epsilon", "layers.1")
    assert "reference epsilon 0.001, candidate 1e-05" in d.detail


@needs_torch
def test_batchnorm_momentum_and_the_unbiased_running_variance():
    ref = reference([xgrad.Dense(8, "tanh"), xgrad.BatchNorm(1e-5, 0.9, training=True)], 6)
    port = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.BatchNorm1d(8, momentum=0.1)).train()
    report = xgrad.compare_models(ref, port, x(6))
    assert [e.name for e, _, m in report.failures()] == ["layers.1.var"]  # forward agrees
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("batchnorm-momentum", "layers.1", "state")
    assert "unbiased batch variance (divided by N - 1 = 7" in d.detail


@needs_torch
def test_the_unbiased_running_variance_on_the_reference_side():
    """PyTorch as the reference: the candidate (xgrad's biased update) is the one that
    differs from it, and the wording says which side does what."""
    reference_module = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.BatchNorm1d(8)).train()
    port = reference([xgrad.Dense(8, "tanh"), xgrad.BatchNorm(1e-5, 0.9, training=True)], 6)
    report = xgrad.compare_models(reference_module, port, x(6))
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("batchnorm-momentum", "layers.1", "state")
    assert "the reference updates the moving variance with the unbiased" in d.detail


@needs_torch
def test_batchnorm_momentum_read_the_pytorch_way_round():
    # torch momentum=0.1 is xgrad's (Keras') 0.9, and the reader says so
    port = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, momentum=0.1)).eval()
    model = xgrad.read_model(port, input_shape=(6,))
    assert model.layers[1].layer == xgrad.BatchNorm(1e-5, 0.9)


@needs_flax
def test_batchnorm_mode_an_nnx_module_left_in_training():
    ref = reference([xgrad.Dense(8, "tanh"), xgrad.BatchNorm(1e-5), xgrad.Dense(3)], 6)

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(6, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)  # NNX starts in training mode
            self.l2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.bn(jnp.tanh(self.l1(x))))

    d = one(xgrad.compare_models(ref, Port(nnx.Rngs(0)), x(6)))
    assert (d.cause, d.layer, d.where) == ("batchnorm-mode", "layers.1", "forward")
    assert "batch's own statistics (training mode)" in d.detail and "model.eval()" in d.detail


@needs_torch
def test_norm_affine_terms_missing_on_the_candidate():
    ref = reference([xgrad.Dense(8, "tanh"), xgrad.LayerNorm(1e-5), xgrad.Dense(3)], 6)
    port = nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.LayerNorm(8, elementwise_affine=False), nn.Linear(8, 3)
    )
    d = one(xgrad.compare_models(ref, port, x(6)))
    assert (d.cause, d.layer) == ("norm-affine", "layers.1")
    assert "the candidate has no bias or scale where the reference has one" in d.detail


@needs_flax
def test_dropout_left_active():
    ref = reference([xgrad.Dense(16, "tanh"), xgrad.Dropout(0.5), xgrad.Dense(3)], 6)

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(6, 16, rngs=rngs)
            self.drop = nnx.Dropout(0.5, rngs=rngs)  # training mode: masks are drawn
            self.l2 = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.drop(jnp.tanh(self.l1(x))))

    report = xgrad.compare_models(ref, Port(nnx.Rngs(0)), x(6))
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("dropout-active", "layers.0", "forward")
    assert "applies dropout with rate 0.5" in d.detail and "eval()" in d.detail


@needs_torch
@needs_flax
def test_dropout_left_active_in_a_pytorch_reference():
    """The commonest form: model.eval() forgotten on the PyTorch side, the reference."""
    reference_module = nn.Sequential(
        nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.25), nn.Linear(16, 3)
    )

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = nnx.Linear(6, 16, rngs=rngs)
            self.drop = nnx.Dropout(0.25, rngs=rngs)
            self.fc2 = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc2(self.drop(nnx.relu(self.fc1(x))))

    port = Port(nnx.Rngs(0))
    port.eval()
    report = xgrad.compare_models(reference_module, port, x(6))
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("dropout-active", "layers.0", "forward")
    assert "the reference applies dropout with rate 0.25" in d.detail and "eval()" in d.detail


@needs_flax
def test_residual_missing_in_the_port():
    ref = reference(
        [xgrad.Dense(8, "tanh"), xgrad.Residual([xgrad.Dense(8, "relu")]), xgrad.Dense(3)], 6
    )

    def port(p, x):  # forgot the skip: h = relu(h @ w1 + b1) instead of h + relu(...)
        h = jnp.tanh(x @ p["w0"] + p["b0"])
        h = jax.nn.relu(h @ p["w1"] + p["b1"])
        return h @ p["w2"] + p["b2"]

    shapes = {"w0": (6, 8), "b0": (8,), "w1": (8, 8), "b1": (8,), "w2": (8, 3), "b2": (3,)}
    report = xgrad.compare_models(ref, (port, {k: jnp.zeros(s) for k, s in shapes.items()}), x(6))
    assert report.divergences[0].path == "layers.1"  # the block, not its layer
    d = one(report)
    assert (d.cause, d.layer, d.where) == ("residual-missing", "layers.1", "forward")
    assert "without it (f(x))" in d.detail
