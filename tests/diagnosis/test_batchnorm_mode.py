"""``batchnorm-mode`` is tested from the reference's statistics: a port that normalises by
the batch (a BatchNorm written by hand in pure JAX, which holds no moving statistics; a
PyTorch module left in ``.train()``) against a PyTorch reference in eval mode is named, by
re-running the reference's own unit in training mode, and the other way round. (An NNX
BatchNorm left in training mode: ``test_norms_structure.py``.)"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif(not {"jax", "torch"} <= INSTALLED, reason="needs jax and torch")

if {"jax", "torch"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from torch import nn

X = np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32)


def _reference():
    """Linear -> BatchNorm1d -> ReLU -> Linear in eval mode, running statistics away from 0
    and 1 (as after training)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def _jax_port_in_training_mode(reference):
    """The reference in pure JAX, its BatchNorm normalising by the batch's statistics."""
    sd = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    params = {
        "w1": jnp.asarray(sd["0.weight"].T),
        "b1": jnp.asarray(sd["0.bias"]),
        "gamma": jnp.asarray(sd["1.weight"]),
        "beta": jnp.asarray(sd["1.bias"]),
        "w2": jnp.asarray(sd["3.weight"].T),
        "b2": jnp.asarray(sd["3.bias"]),
    }

    def f(params, x):
        h = x @ params["w1"] + params["b1"]
        mean, var = jnp.mean(h, axis=0), jnp.var(h, axis=0)
        h = (h - mean) / jnp.sqrt(var + 1e-5) * params["gamma"] + params["beta"]
        return jax.nn.relu(h) @ params["w2"] + params["b2"]

    return f, params


def _mode(report):
    assert not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.where, d.confirmed) == (
        "batchnorm-mode",
        "layers.1",
        "forward",
        True,
    ), [x.text() for x in report.diagnoses]
    assert d.residual <= report.tolerance < d.before
    return d


def test_a_hand_written_jax_batchnorm_in_training_mode():
    ref = _reference()
    d = _mode(xgrad.compare_models(ref, _jax_port_in_training_mode(ref), X))
    assert "batch's own statistics (training mode)" in d.detail and "model.eval()" in d.detail


def test_the_same_mistake_in_pytorch_train_left_on():
    ref = _reference()
    _mode(xgrad.compare_models(ref, copy.deepcopy(ref).train(), X))


def test_a_reference_in_training_mode_that_keeps_no_statistics():
    """The hand-written JAX BatchNorm as the reference: re-run in inference, it needs moving
    statistics it does not keep, and takes the candidate's."""
    ref = _reference()
    d = _mode(xgrad.compare_models(_jax_port_in_training_mode(ref), ref, X))
    assert "moving statistics (inference mode)" in d.detail
    assert "the candidate's were used" in d.detail
