"""The beginner tutorials' CNNs, each ported by hand into the other two frameworks (issue 22):

* PyTorch's MNIST ``Net`` (NCHW: two valid 3x3 ``nn.Conv2d``, ``F.max_pool2d``, dropout,
  ``torch.flatten(x, 1)``, two ``nn.Linear``, ``log_softmax``);
* Keras' "Simple MNIST convnet" (NHWC: a ``Sequential`` of ``Conv2D(relu)``,
  ``MaxPooling2D``, ``Conv2D(relu)``, ``MaxPooling2D``, ``Flatten``, ``Dropout``,
  ``Dense(softmax)``);
* Flax's NNX MNIST ``CNN`` (NHWC: two "SAME" ``nnx.Conv``, ``nnx.avg_pool`` through a
  ``partial``, a reshape, two ``nnx.Linear``).

Written here in our own words, with the channel counts shrunk and 12x12 / 16x16 inputs. A port
copies the original's weights the way a user does: torch's ``(out, in, kh, kw)`` kernels
transposed to ``(kh, kw, in, out)`` (or back), ``(out, in)`` Linear weights transposed, and
the rows of the classifier after the flatten regrouped between torch's ``(C, H, W)`` order and
the channels-last ``(H, W, C)``. Correct ports are OK with every parameter paired; a port whose
classifier rows were not regrouped (the classic "accuracy drops after conversion") is named
``channel-order`` at that classifier, confirmed. ``transfer=True`` writes the torch ``Net``'s
weights into fresh Keras and NNX ports bit-exactly (after undoing the layout).

One direction per pair of frameworks runs in ``make test``; the others are ``exhaustive``.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax", "tensorflow"} <= INSTALLED, reason="torch, flax and tensorflow are needed"
)

A, B, HIDDEN, CLASSES = 4, 8, 16, 10  # conv channels, hidden units, classes
SIZE = {"torch": 12, "keras": 16, "nnx": 12}  # each tutorial's input height and width
FLAT = {"torch": (B, 16), "keras": (B, 4), "nnx": (B, 9)}  # (channels, positions) flattened
LAYOUT = {"torch": "NCHW", "keras": "NHWC", "nnx": "NHWC"}

if {"torch", "flax", "tensorflow"} <= INSTALLED:
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.frameworks.tensorflow.ops import keras

    # -- PyTorch's tutorial and its ports ------------------------------------------------------

    class TorchNet(nn.Module):
        """PyTorch's MNIST Net: (N, 1, 12, 12) -> 10x10 -> 8x8 -> pooled 4x4 -> 10 classes."""

        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, A, 3, 1)
            self.conv2 = nn.Conv2d(A, B, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(B * 4 * 4, HIDDEN)
            self.fc2 = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            x = F.relu(self.conv2(F.relu(self.conv1(x))))
            x = self.dropout1(F.max_pool2d(x, 2))
            x = F.relu(self.fc1(torch.flatten(x, 1)))
            return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)

    def keras_port_of_net():
        return keras.Sequential(
            [
                keras.Input((12, 12, 1)),
                keras.layers.Conv2D(A, 3, activation="relu"),
                keras.layers.Conv2D(B, 3, activation="relu"),
                keras.layers.MaxPooling2D(2),
                keras.layers.Dropout(0.25),
                keras.layers.Flatten(),
                keras.layers.Dense(HIDDEN, activation="relu"),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(CLASSES),
                keras.layers.Activation("log_softmax"),
            ]
        )

    class NnxPortOfNet(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(1, A, (3, 3), padding="VALID", rngs=rngs)
            self.conv2 = nnx.Conv(A, B, (3, 3), padding="VALID", rngs=rngs)
            self.fc1 = nnx.Linear(B * 4 * 4, HIDDEN, rngs=rngs)
            self.fc2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
            x = nnx.max_pool(x, (2, 2), strides=(2, 2))
            x = nnx.relu(self.fc1(x.reshape(x.shape[0], -1)))
            return nnx.log_softmax(self.fc2(x))

    # -- Keras' tutorial and its ports ---------------------------------------------------------

    def keras_convnet():
        """Keras' Simple MNIST convnet: (N, 16, 16, 1) -> 14 -> 7 -> 5 -> 2 -> 10 classes."""
        return keras.Sequential(
            [
                keras.Input((16, 16, 1)),
                keras.layers.Conv2D(A, kernel_size=(3, 3), activation="relu"),
                keras.layers.MaxPooling2D(pool_size=(2, 2)),
                keras.layers.Conv2D(B, kernel_size=(3, 3), activation="relu"),
                keras.layers.MaxPooling2D(pool_size=(2, 2)),
                keras.layers.Flatten(),
                keras.layers.Dropout(0.5),
                keras.layers.Dense(CLASSES, activation="softmax"),
            ]
        )

    class TorchPortOfConvnet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, A, 3)
            self.conv2 = nn.Conv2d(A, B, 3)
            self.dropout = nn.Dropout(0.5)
            self.dense = nn.Linear(B * 2 * 2, CLASSES)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            return F.softmax(self.dense(self.dropout(torch.flatten(x, 1))), dim=1)

    class NnxPortOfConvnet(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(1, A, (3, 3), padding="VALID", rngs=rngs)
            self.conv2 = nnx.Conv(A, B, (3, 3), padding="VALID", rngs=rngs)
            self.dropout = nnx.Dropout(0.5, deterministic=True)
            self.dense = nnx.Linear(B * 2 * 2, CLASSES, rngs=rngs)

        def __call__(self, x):
            x = nnx.max_pool(nnx.relu(self.conv1(x)), (2, 2), strides=(2, 2))
            x = nnx.max_pool(nnx.relu(self.conv2(x)), (2, 2), strides=(2, 2))
            x = self.dropout(x.reshape(x.shape[0], -1))
            return nnx.softmax(self.dense(x))

    # -- Flax's tutorial and its ports ---------------------------------------------------------

    class NnxCNN(nnx.Module):
        """Flax's NNX MNIST CNN: (N, 12, 12, 1) -> SAME conv, avg pool 6x6 -> 3x3 -> 10."""

        def __init__(self, *, rngs):
            self.conv1 = nnx.Conv(1, A, kernel_size=(3, 3), rngs=rngs)
            self.conv2 = nnx.Conv(A, B, kernel_size=(3, 3), rngs=rngs)
            self.avg_pool = functools.partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
            self.linear1 = nnx.Linear(B * 3 * 3, HIDDEN, rngs=rngs)
            self.linear2 = nnx.Linear(HIDDEN, CLASSES, rngs=rngs)

        def __call__(self, x):
            x = self.avg_pool(nnx.relu(self.conv1(x)))
            x = self.avg_pool(nnx.relu(self.conv2(x)))
            x = x.reshape(x.shape[0], -1)
            return self.linear2(nnx.relu(self.linear1(x)))

    class TorchPortOfCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, A, 3, padding="same")
            self.conv2 = nn.Conv2d(A, B, 3, padding="same")
            self.linear1 = nn.Linear(B * 3 * 3, HIDDEN)
            self.linear2 = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            x = F.avg_pool2d(F.relu(self.conv1(x)), 2)
            x = F.avg_pool2d(F.relu(self.conv2(x)), 2)
            return self.linear2(F.relu(self.linear1(torch.flatten(x, 1))))

    def keras_port_of_cnn():
        return keras.Sequential(
            [
                keras.Input((12, 12, 1)),
                keras.layers.Conv2D(A, 3, padding="same", activation="relu"),
                keras.layers.AveragePooling2D(2),
                keras.layers.Conv2D(B, 3, padding="same", activation="relu"),
                keras.layers.AveragePooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(HIDDEN, activation="relu"),
                keras.layers.Dense(CLASSES),
            ]
        )

    BUILD = {
        ("torch", "torch"): TorchNet,
        ("torch", "keras"): keras_port_of_net,
        ("torch", "nnx"): lambda: NnxPortOfNet(nnx.Rngs(1)),
        ("keras", "keras"): keras_convnet,
        ("keras", "torch"): TorchPortOfConvnet,
        ("keras", "nnx"): lambda: NnxPortOfConvnet(nnx.Rngs(1)),
        ("nnx", "nnx"): lambda: NnxCNN(rngs=nnx.Rngs(0)),
        ("nnx", "torch"): TorchPortOfCNN,
        ("nnx", "keras"): keras_port_of_cnn,
    }


# -- copying the weights as a user does ------------------------------------------------------------


def _weighted(model, framework: str) -> list:
    """The model's convolutions and dense layers in call order (their definition order)."""
    if framework == "torch":
        return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if framework == "keras":
        return [layer for layer in model.layers if layer.weights]
    return [m for m in vars(model).values() if isinstance(m, (nnx.Conv, nnx.Linear))]


def weights_of(model, framework: str) -> list[list[np.ndarray]]:
    """``[kernel, bias]`` per layer, as the framework stores them."""
    if framework == "torch":
        return [
            [m.weight.detach().numpy(), m.bias.detach().numpy()] for m in _weighted(model, "torch")
        ]
    if framework == "keras":
        return [layer.get_weights() for layer in _weighted(model, "keras")]
    return [[np.asarray(m.kernel[...]), np.asarray(m.bias[...])] for m in _weighted(model, "nnx")]


def load(model, framework: str, weights) -> None:
    for m, (kernel, bias) in zip(_weighted(model, framework), weights, strict=True):
        if framework == "torch":
            with torch.no_grad():
                m.weight.copy_(torch.from_numpy(kernel))
                m.bias.copy_(torch.from_numpy(bias))
        elif framework == "keras":
            m.set_weights([kernel, bias])
        else:
            m.kernel.value, m.bias.value = jnp.asarray(kernel), jnp.asarray(bias)


def _rows(kernel: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """An ``(in, out)`` kernel whose rows read features flattened as ``grid``, reordered to
    read them flattened as ``grid`` transposed."""
    return kernel.reshape(*grid, -1).transpose(1, 0, 2).reshape(kernel.shape)


def ported(weights, source: str, target: str, flat: tuple[int, int], *, regroup=True, swap=False):
    """``weights`` of ``source`` as ``target`` stores them; the first dense layer after the
    flatten, of ``flat`` = (channels, positions), gets its rows regrouped between torch's
    ``(C, H, W)`` and the channels-last ``(H, W, C)`` (unless ``regroup=False``: the slip);
    ``swap``: the first kernel's kh and kw swapped (a slip)."""
    out, first_dense = [], True
    for kernel, bias in weights:
        conv = kernel.ndim == 4
        if source == "torch":  # to channels-last, (in, out)
            kernel = kernel.transpose(2, 3, 1, 0) if conv else kernel.T
        if conv and swap and not out:
            kernel = kernel.transpose(1, 0, 2, 3)
        if not conv and first_dense and (source == "torch") != (target == "torch") and regroup:
            kernel = _rows(kernel, flat if source == "torch" else flat[::-1])
        first_dense = first_dense and conv
        if target == "torch":
            kernel = kernel.transpose(3, 2, 0, 1) if conv else kernel.T
        out.append([np.ascontiguousarray(kernel), bias.copy()])
    return out


@functools.cache
def original(tutorial: str):
    if tutorial == "torch":
        torch.manual_seed(0)
    elif tutorial == "keras":
        keras.utils.set_random_seed(0)
    model = BUILD[(tutorial, tutorial)]()
    if tutorial == "torch":
        model.eval()
    return model


def port(tutorial: str, framework: str, **slips):
    model = BUILD[(tutorial, framework)]()
    if framework == "torch":
        model.eval()
    weights = ported(
        weights_of(original(tutorial), tutorial), tutorial, framework, FLAT[tutorial], **slips
    )
    load(model, framework, weights)
    return model


def x_for(tutorial: str) -> np.ndarray:
    n = SIZE[tutorial]
    shape = (2, 1, n, n) if tutorial == "torch" else (2, n, n, 1)
    return np.random.default_rng(0).normal(size=shape).astype(np.float32)


def compare(tutorial: str, framework: str, candidate, **options):
    layout = {"reference": LAYOUT[tutorial], "candidate": LAYOUT[framework]}
    return xgrad.compare_models(
        original(tutorial), candidate, x_for(tutorial), layout=layout, **options
    )


# -- the tests -------------------------------------------------------------------------------------

PAIRS = [
    ("torch", "keras"),
    ("keras", "nnx"),
    ("nnx", "torch"),
    pytest.param("keras", "torch", marks=pytest.mark.exhaustive),
    pytest.param("nnx", "keras", marks=pytest.mark.exhaustive),
    pytest.param("torch", "nnx", marks=pytest.mark.exhaustive),
]


@pytest.mark.parametrize(("tutorial", "framework"), PAIRS)
def test_correct_port_is_ok_with_every_parameter_paired(tutorial, framework):
    report = compare(tutorial, framework, port(tutorial, framework))
    assert report.ok, report.summary()
    assert not report.unpaired
    assert len(report.parameters) == 2 * len(_weighted(original(tutorial), tutorial))
    if LAYOUT[tutorial] != LAYOUT[framework]:
        assert any("reads features flattened" in n for n in report.notes), report.notes


PLANTED = [
    ("torch", "keras"),
    ("nnx", "torch"),
    pytest.param("torch", "nnx", marks=pytest.mark.exhaustive),
]  # keras -> torch: below (a dropout between the flatten and the classifier)


def _classifier(tutorial: str) -> tuple[str, set[str]]:
    """The reference's first dense layer after the flatten, and the paths a localisation
    there may give: it, or the weight-free module between the flatten and it (a dropout)."""
    if tutorial == "keras":
        layers = original("keras").layers
        return layers[-1].name, {layers[-1].name, layers[-2].name}
    name = {"torch": "fc1", "nnx": "linear1"}[tutorial]
    return name, {name}


def _localised(report, tutorial: str) -> None:
    first = report.first_divergence
    spot = first["path"] or first["between"]["reference"][1]
    assert spot in _classifier(tutorial)[1], first


@functools.cache
def planted(tutorial: str, framework: str):
    """The report on a port whose classifier rows were not regrouped."""
    return compare(tutorial, framework, port(tutorial, framework, regroup=False))


# the cause is xgrad/diagnosis/conv.py's (issue 22 Deliver 3), landing beside this file
CAUSES_LANDED = importlib.util.find_spec("xgrad.diagnosis.conv") is not None


@pytest.mark.parametrize(("tutorial", "framework"), PLANTED)
def test_classifier_rows_not_regrouped_is_localised_at_the_classifier(tutorial, framework):
    report = planted(tutorial, framework)
    assert not report.ok and not report.unpaired
    _localised(report, tutorial)


@pytest.mark.skipif(not CAUSES_LANDED, reason="xgrad.diagnosis.conv has not landed")
@pytest.mark.parametrize(("tutorial", "framework"), PLANTED)
def test_classifier_rows_not_regrouped_is_named_channel_order(tutorial, framework):
    found = [(d.cause, d.layer, d.confirmed) for d in planted(tutorial, framework).diagnoses]
    assert found == [("channel-order", _classifier(tutorial)[0], True)], found


@pytest.mark.exhaustive
def test_rows_not_regrouped_behind_a_dropout_is_localised_at_the_classifier():
    # Keras' convnet flattens, then drops out, then classifies: the divergence is the
    # dropout's input (the code between the last conv and it, where the flatten is)
    report = planted("keras", "torch")
    assert not report.ok and not report.unpaired
    _localised(report, "keras")


@pytest.mark.exhaustive
@pytest.mark.skipif(not CAUSES_LANDED, reason="xgrad.diagnosis.conv has not landed")
def test_rows_not_regrouped_behind_a_dropout_is_named_channel_order():
    found = [(d.cause, d.layer, d.confirmed) for d in planted("keras", "torch").diagnoses]
    assert found == [("channel-order", _classifier("keras")[0], True)], found


SWAPPED = [("torch", "keras"), ("keras", "nnx")]


@pytest.mark.exhaustive
@pytest.mark.parametrize(("tutorial", "framework"), SWAPPED)
def test_first_kernel_with_kh_and_kw_swapped_is_localised_at_the_first_conv(tutorial, framework):
    report = compare(tutorial, framework, port(tutorial, framework, swap=True))
    assert not report.ok and not report.unpaired
    first_conv = _weighted(original(tutorial), tutorial)[0]
    name = first_conv.name if tutorial == "keras" else "conv1"
    assert report.first_divergence["path"] in (name, "layers.0"), report.first_divergence


@pytest.mark.parametrize("framework", ["keras", "nnx"])
def test_transfer_writes_the_torch_net_into_a_fresh_port_bit_exactly(framework):
    from xgrad.comparison import transfer
    from xgrad.pairing.layouts import layouts_of
    from xgrad.runner import _read

    fresh = BUILD[("torch", framework)]()
    layout = layouts_of({"reference": "NCHW", "candidate": "NHWC"})
    options = dict(mapping="auto", read="auto", output=None, training=None, apply_kwargs=None)
    pair = _read(original("torch"), fresh, x_for("torch"), layout, **options)
    copied = weights_of(transfer(pair, True).candidate.native, framework)
    # what a user copies: the kernels transposed, the biases as they are
    want = ported(weights_of(original("torch"), "torch"), "torch", framework, FLAT["torch"])
    before = weights_of(fresh, framework)
    for i in (0, 1, 3):  # conv1, conv2, fc2
        for got, expected in zip(copied[i], want[i], strict=True):
            assert got.dtype == expected.dtype and np.array_equal(got, expected), i
    # fc1's kernel reads the flattened features: a fresh port's values cannot tell in which
    # order, so it is left as it was and listed as unpaired with the reason; its bias is copied
    assert np.array_equal(copied[2][0], before[2][0])
    assert np.array_equal(copied[2][1], want[2][1])
    rows = {side: (name, why) for side, name, why in pair.alignment.unpaired}
    assert len(pair.alignment.unpaired) == 2 and rows["reference"][0] == "fc1.kernel", rows
    assert rows["candidate"][0].endswith(".kernel") and "channel-order" in rows["reference"][1]
