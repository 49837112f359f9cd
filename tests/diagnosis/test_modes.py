"""Several modules of one unit left in training mode together (``training-mode``): a
BatchNorm and a Dropout after it, on either side, named together with each side's fix."""

from __future__ import annotations

import numpy as np
import pytest
from _ports import one, x
from conftest import INSTALLED

import xgrad

needs = pytest.mark.skipif(
    {"torch", "flax", "tensorflow"} - INSTALLED, reason="needs torch, flax and keras"
)
if not {"torch", "flax", "tensorflow"} - INSTALLED:
    import keras
    import torch
    from flax import nnx
    from torch import nn


def _torch_classifier():
    torch.manual_seed(0)
    module = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.25), nn.Linear(16, 3)
    )
    with torch.no_grad():  # moving statistics that differ from the batch's own
        module[1].running_mean.uniform_(-0.5, 0.5)
        module[1].running_var.uniform_(0.5, 2.0)
    return module


@needs
def test_batchnorm_and_dropout_left_in_training_are_named_together_on_either_side():
    xs = x(6)
    keras_model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16),
            keras.layers.BatchNormalization(epsilon=1e-5),
            keras.layers.ReLU(),
            keras.layers.Dropout(0.25),
            keras.layers.Dense(3),
        ]
    )
    port = _torch_classifier()  # a PyTorch module starts in training mode
    report = xgrad.compare_models(keras_model, port, xs)
    d = one(report)
    assert (d.cause, d.layer, d.where, d.confirmed) == (
        "training-mode",
        "layers.1",
        "forward",
        True,
    ), d.text()
    assert "the candidate's BatchNorm normalises with the batch's own statistics" in d.detail
    assert "its Dropout zeroes" in d.detail and "(rate 0.25, the rest scaled by 1.333)" in d.detail
    assert "fix with module.eval() on the PyTorch side" in d.detail
    assert d.residual <= report.tolerance < d.before

    # the commonest form: the PyTorch reference is the one whose .eval() was forgotten
    d = one(xgrad.compare_models(port, keras_model, xs))
    assert (d.cause, d.layer, d.confirmed) == ("training-mode", "layers.1", True), d.text()
    assert "the reference's BatchNorm normalises with the batch's own statistics" in d.detail

    assert xgrad.compare_models(keras_model, port.eval(), xs).ok  # the fix


@needs
def test_an_nnx_port_never_switched_to_eval():
    class Port(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = nnx.Linear(6, 16, rngs=rngs)
            self.bn = nnx.BatchNorm(16, rngs=rngs)  # NNX starts in training mode
            self.drop = nnx.Dropout(0.25, rngs=rngs)
            self.fc2 = nnx.Linear(16, 3, rngs=rngs)

        def __call__(self, x):
            return self.fc2(self.drop(nnx.relu(self.bn(self.fc1(x)))))

    reference = _torch_classifier().eval()
    port = Port(nnx.Rngs(0))
    d = one(xgrad.compare_models(reference, port, x(6)))
    assert (d.cause, d.layer, d.confirmed) == ("training-mode", "layers.1", True), d.text()
    assert "the candidate's BatchNorm" in d.detail and "rate 0.25" in d.detail
    assert "model.eval() on the Flax NNX side" in d.detail
    port.eval()
    assert xgrad.compare_models(reference, port, x(6)).ok


def test_a_single_module_in_training_is_left_to_its_own_cause():
    """Only the BatchNorm's mode differs: batchnorm-mode, not training-mode."""
    spec = xgrad.MLP(
        6, [xgrad.Dense(8), xgrad.BatchNorm(1e-5), xgrad.Dropout(0.25), xgrad.Dense(3)]
    )
    params = xgrad.init_params(spec, seed=0)
    params["layers.1.var"] = np.linspace(0.5, 2.0, 8)  # moving statistics of their own
    port = xgrad.MLP(
        6,
        [xgrad.Dense(8), xgrad.BatchNorm(1e-5, training=True), xgrad.Dropout(0.25), xgrad.Dense(3)],
    )
    report = xgrad.compare_models((spec, params), (port, params), x(6).astype(np.float64))
    assert [d.cause for d in report.diagnoses] == ["batchnorm-mode"]
