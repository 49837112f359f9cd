"""A torch CNN with a channels-first ``nn.BatchNorm2d`` against its Keras port
(``BatchNormalization``), read module by module with ``layout=`` (issue 22, newcomer trial).

The torch BatchNorm stays opaque (it normalises axis 1), so its running statistics and the
port's moving statistics do not pair; per DECISIONS.md state never counts as an unpaired
parameter: the correct port is OK (not INCOMPLETE) and a note names the state arrays not
compared, in training mode too, where a momentum difference (Keras 0.99 against torch's
0.1, i.e. Keras 0.9) changes only the updated statistics."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "tensorflow"} <= INSTALLED, reason="torch and tensorflow are needed"
)

LAYOUT = {"reference": "NCHW", "candidate": "NHWC"}


def _torch():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
    net.add_module("bn1", nn.BatchNorm2d(4))
    net.add_module("relu", nn.ReLU())
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():  # as if trained
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.05, 0.3)
        net.bn1.weight.uniform_(0.5, 1.5)
    return net.eval()


def _keras(net, momentum: float = 0.9):
    import keras

    def t(p):
        return np.asarray(p.detach().numpy())

    m = keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, padding="same", name="conv1"),
            keras.layers.BatchNormalization(epsilon=1e-5, momentum=momentum, name="bn1"),
            keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, name="fc"),
        ]
    )
    bn = net.bn1
    m.get_layer("conv1").set_weights([t(net.conv1.weight).transpose(2, 3, 1, 0), t(net.conv1.bias)])
    m.get_layer("bn1").set_weights(
        [t(bn.weight), t(bn.bias), t(bn.running_mean), t(bn.running_var)]
    )
    k = t(net.fc.weight).reshape(3, 4, 6, 6).transpose(2, 3, 1, 0).reshape(-1, 3)
    m.get_layer("fc").set_weights([k, t(net.fc.bias)])
    return m


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)


def _state_note(report) -> str:
    return next((n for n in report.notes if "state array" in n), "")


def test_correct_keras_port_of_batchnorm2d_is_ok_with_the_statistics_named(x):
    import xgrad

    net = _torch()
    report = xgrad.compare_models(net, _keras(net), x, layout=LAYOUT)
    assert report.ok, report.mismatch_message()
    assert not report.unpaired
    note = _state_note(report)
    assert "candidate bn1.mean" in note and "reference bn1.var" in note, report.notes


def test_momentum_difference_in_training_mode_is_never_a_plain_ok(x):
    import xgrad

    net = _torch()
    report = xgrad.compare_models(net, _keras(net, momentum=0.99), x, layout=LAYOUT, training=True)
    assert not report.ok or "momentum" in _state_note(report), report.notes
