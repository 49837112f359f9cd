"""A PyTorch model with a BatchNorm in eval mode, ported by hand to pure JAX the way people
port it: the affine terms in ``params``, the running statistics closed over from the
enclosing scope. The statistics are read as the norm's state (not as weight-free code joined
to the Dense before it), so the exact port passes and a planted bug is named at the norm."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED, rel_norm

import xgrad

pytestmark = pytest.mark.skipif(not {"jax", "torch"} <= INSTALLED, reason="needs jax and torch")

if {"jax", "torch"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from torch import nn

X = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)


def _reference():
    """Linear -> BatchNorm1d -> ReLU -> Linear in eval mode, with running statistics and
    affine terms away from their initial values (as after training)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    bn = model[1]
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def _port(reference, *, eps=1e-5, as_jax=False, flip_stats=False):
    """``(f, params)``: the reference in pure JAX, its statistics closed over (NumPy arrays
    as ``.numpy()`` gives them, or JAX arrays), not in ``params``."""
    sd = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    params = {
        "w1": jnp.asarray(sd["0.weight"].T),
        "b1": jnp.asarray(sd["0.bias"]),
        "gamma": jnp.asarray(sd["1.weight"]),
        "beta": jnp.asarray(sd["1.bias"]),
        "w2": jnp.asarray(sd["3.weight"].T),
        "b2": jnp.asarray(sd["3.bias"]),
    }
    mean, var = sd["1.running_mean"], sd["1.running_var"]
    if flip_stats:  # the statistics of the features in reverse order
        mean, var = mean[::-1].copy(), var[::-1].copy()
    if as_jax:
        mean, var = jnp.asarray(mean), jnp.asarray(var)

    def f(params, x):
        h = x @ params["w1"] + params["b1"]
        h = (h - mean) / jnp.sqrt(var + eps) * params["gamma"] + params["beta"]
        h = jax.nn.relu(h)
        return h @ params["w2"] + params["b2"]

    return f, params


@pytest.mark.parametrize("as_jax", [False, True], ids=["numpy-stats", "jax-stats"])
def test_closed_over_running_statistics_are_the_norms_state(as_jax):
    ref = _reference()
    model = xgrad.read_model(_port(ref, as_jax=as_jax))
    kinds = [info.kind for info in model.layers]
    assert kinds == ["dense", "batchnorm", "activation", "dense"]
    norm = model.layers[1]
    assert norm.state == {"mean": "mean", "var": "var"}  # named as the code names them
    assert norm.layer == xgrad.BatchNorm(1e-5, norm.layer.momentum)  # eps read from the code
    sd = ref.state_dict()
    assert np.array_equal(model.weights()["layers.1.var"], sd["1.running_var"].numpy())
    assert model.layers[0].layer == xgrad.Dense(16)  # no activation invented

    report = xgrad.compare_models(ref, _port(ref, as_jax=as_jax), X)
    assert report.ok, report.diagnoses
    assert not report.diagnoses


def test_a_wrong_epsilon_in_the_port_is_named_at_the_norm():
    ref = _reference()
    report = xgrad.compare_models(ref, _port(ref, eps=1e-3), X)
    assert not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.confirmed) == ("batchnorm-epsilon", "layers.1", True)
    assert "candidate 0.001" in d.detail


def test_statistics_of_other_features_are_named_at_the_norm():
    ref = _reference()
    report = xgrad.compare_models(ref, _port(ref, as_jax=True, flip_stats=True), X)
    assert not report.ok
    d = report.diagnoses[0]
    assert d.layer == "layers.1"
    assert "mean" in d.detail and "var" in d.detail  # the statistics differ, and say so


def test_transfer_copies_the_references_statistics_into_the_closure():
    """transfer=True and convert(into=...) give the port the reference's running statistics:
    the function computes with them, although they live outside its params."""
    ref = _reference()
    fresh = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    port = _port(fresh.eval())  # another initialisation, statistics 0 and 1
    report = xgrad.compare_models(ref, port, X, transfer=True)
    assert report.ok, report.diagnoses

    fn, params = xgrad.convert(ref, into=port, x=X)
    with torch.no_grad():
        expected = ref(torch.from_numpy(X)).numpy()
    assert rel_norm(np.asarray(fn(params, X)), expected) <= 1e-5
    assert rel_norm(np.asarray(port[0](port[1], X)), expected) > 0.1  # the user's f unchanged


def test_a_closed_over_array_that_is_not_a_statistic_stays_code():
    """Only a mean and a variance together are statistics: a closed-over shift alone is part
    of the code (here an activation xgrad does not know), as before."""
    rng = np.random.default_rng(1)
    shift = rng.standard_normal(16).astype(np.float32)
    params = {"w": jnp.asarray(rng.standard_normal((8, 16)), jnp.float32)}

    def f(params, x):
        return jax.nn.relu(x @ params["w"] - shift)

    model = xgrad.read_model((f, params))
    assert [info.kind for info in model.layers] == ["dense"]
    assert not model.layers[0].state
