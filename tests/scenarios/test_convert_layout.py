"""``xgrad.convert(torch_cnn, into=keras_port, x=..., layout=...)`` (issue 22): a channels-first
torch CNN converted into its fresh channels-last Keras port. Every weight is written bit for
bit in Keras' layout (derived by hand: ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``, Linear
transposed); a classifier after a flatten of a (C, H, W) activation, whose rows the two
layouts order differently, is refused by name (IncompleteConversion), never written as it
stands. Tiny sizes: 3 channels in, 6x6 images, batch 2."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "tensorflow"} <= INSTALLED, reason="torch and tensorflow are needed"
)

LAYOUT = {"reference": "NCHW", "candidate": "NHWC"}


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)


def _torch(flatten: bool):
    import torch
    from torch import nn

    torch.manual_seed(0)
    head = (
        [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 5)]
        if flatten
        else [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5)]
    )
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(), *head
    )


def _keras(flatten: bool):
    import keras

    head = (
        [keras.layers.MaxPooling2D(2), keras.layers.Flatten(), keras.layers.Dense(5)]
        if flatten
        else [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5)]
    )
    return keras.Sequential(
        [
            keras.Input((6, 6, 3)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.ReLU(),
            keras.layers.Conv2D(6, 3),
            keras.layers.ReLU(),
            *head,
        ]
    )


def test_torch_cnn_converts_into_its_keras_port_bit_exactly(x):
    import torch

    import xgrad

    net = _torch(flatten=False)
    out = xgrad.convert(net, into=_keras(flatten=False), x=x, layout=LAYOUT)
    g = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    want = [
        g["0.weight"].transpose(2, 3, 1, 0),
        g["0.bias"],
        g["2.weight"].transpose(2, 3, 1, 0),
        g["2.bias"],
        g["6.weight"].T,
        g["6.bias"],
    ]
    got = out.get_weights()
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    y = np.asarray(out(np.transpose(x, (0, 2, 3, 1))))
    np.testing.assert_allclose(y, net(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_classifier_after_a_flatten_is_refused_by_name(x):
    import xgrad
    from xgrad.convert import IncompleteConversion

    target = _keras(flatten=True)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(IncompleteConversion) as info:
        xgrad.convert(_torch(flatten=True), into=target, x=x, layout=LAYOUT)
    assert any(name.endswith("kernel") and "dense" in name for name in info.value.unwritten)
    assert "channel-order" in str(info.value)
    for a, b in zip(target.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # nothing written


def test_layout_without_into_is_refused():
    import xgrad
    from xgrad.errors import InputError

    with pytest.raises(InputError, match="layout= with into="):
        xgrad.convert(_torch(flatten=False), to="numpy", layout=LAYOUT)
