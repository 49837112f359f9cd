"""The convolutional causes of issue 22, planted in a tiny torch CNN (NCHW, 8x8 input, 3
channels) and in its Keras or Flax NNX port (NHWC), compared with ``layout=`` and named at
the module where they part, in each direction where the convention has two sides.

Every port is written the way a user writes it: weights copied by hand with the permutation
torch's ``(out, in, kh, kw)`` weight needs (``transpose(2, 3, 1, 0)``) and, for the classifier
after a flatten, its rows reordered from ``(C, H, W)`` to ``(H, W, C)``. The planted mistake
is one of those steps done otherwise, or a layer's own convention (Keras "same" padding, torch
``count_include_pad``, a hand-written GroupNorm). xgrad is told nothing: the reference's
modules are read as no kind and fitted from their captured values, and each cause is confirmed
by re-running the reference's module with its own weights under the other convention.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax", "tensorflow"} <= INSTALLED, reason="torch, flax and tensorflow are needed"
)

HW, CIN, C, OUT = 8, 3, 4, 2
TO_NHWC = {"reference": "NCHW", "candidate": "NHWC"}
TO_NCHW = {"reference": "NHWC", "candidate": "NCHW"}

if {"torch", "flax", "tensorflow"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.frameworks.tensorflow.ops import keras

    class TorchCNN(nn.Module):
        """conv 3x3 (stride, padding as given) -> relu -> pool -> flatten -> fc."""

        def __init__(self, stride=1, padding=0, pool=None):
            super().__init__()
            self.conv = nn.Conv2d(CIN, C, 3, stride=stride, padding=padding)
            self.pool = pool or nn.MaxPool2d(2)
            side = self.pool(self.conv(torch.zeros(1, CIN, HW, HW))).shape[-1]
            self.fc = nn.Linear(C * side * side, OUT)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))

    class NnxCNN(nnx.Module):
        """The NNX port of the valid-padded TorchCNN."""

        def __init__(self, features):
            self.conv = nnx.Conv(CIN, C, (3, 3), padding="VALID", rngs=nnx.Rngs(1))
            self.fc = nnx.Linear(features, OUT, rngs=nnx.Rngs(2))

        def __call__(self, x):
            y = nnx.max_pool(jax.nn.relu(self.conv(x)), (2, 2), (2, 2))
            return self.fc(y.reshape(y.shape[0], -1))


def _np(t) -> np.ndarray:
    return t.detach().numpy()


def _rows_hwc(fc: np.ndarray) -> np.ndarray:
    """torch's ``fc.weight (out, C * S)`` as a channels-last port's kernel ``(S * C, out)``."""
    side = int(round((fc.shape[1] // C) ** 0.5))
    return fc.reshape(OUT, C, side, side).transpose(0, 2, 3, 1).reshape(OUT, -1).T


def _keras_cnn(weights, *, strides=1, padding="valid", pool=None):
    model = keras.Sequential(
        [
            keras.Input((HW, HW, CIN)),
            keras.layers.Conv2D(
                C, 3, strides=strides, padding=padding, activation="relu", name="conv"
            ),
            pool or keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(),
            keras.layers.Dense(OUT, name="fc"),
        ]
    )
    kernel, bias, dense, dense_bias = weights
    model.layers[0].set_weights([kernel, bias])
    model.layers[3].set_weights([dense, dense_bias])
    return model


def _ported(model, *, swap=False, reorder=True):
    """``model``'s weights as a channels-last port holds them; ``swap``: the kernel copied
    with ``transpose(3, 2, 1, 0)`` (kh and kw swapped); ``reorder=False``: the classifier's
    rows left in torch's ``(C, H, W)`` order."""
    w = _np(model.conv.weight)
    kernel = w.transpose(3, 2, 1, 0) if swap else w.transpose(2, 3, 1, 0)
    fc = _np(model.fc.weight)
    dense = _rows_hwc(fc) if reorder else fc.T
    return kernel, _np(model.conv.bias), dense, _np(model.fc.bias)


def _nnx_port(model, *, flip=False, reorder=True):
    kernel, bias, dense, dense_bias = _ported(model, reorder=reorder)
    kernel = kernel[::-1, ::-1] if flip else kernel  # as a true convolution's kernel
    port = NnxCNN(dense.shape[0])
    port.conv.kernel.value, port.conv.bias.value = jnp.asarray(kernel), jnp.asarray(bias)
    port.fc.kernel.value, port.fc.bias.value = jnp.asarray(dense), jnp.asarray(dense_bias)
    return port


def _torch_from(weights, **conv) -> TorchCNN:
    """A TorchCNN holding a channels-last model's ``weights`` copied without a permutation
    of the classifier's rows (``fc.weight = dense.T``): right when the Keras side flattens
    as torch does, a planted ``channel-order`` otherwise."""
    kernel, bias, dense, dense_bias = weights
    model = TorchCNN(**conv)
    with torch.no_grad():
        model.conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        model.conv.bias.copy_(torch.from_numpy(bias))
        model.fc.weight.copy_(torch.from_numpy(dense.T.copy()))
        model.fc.bias.copy_(torch.from_numpy(dense_bias))
    return model


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, CIN, HW, HW)).astype(np.float32)


@pytest.fixture(scope="module")
def x_nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    return TorchCNN()


def _named(report, cause: str, layer: str):
    """The report's first diagnosis, checked to be ``cause``, confirmed, at ``layer``."""
    assert not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.where, d.confirmed) == (cause, layer, "forward", True), d.text()
    assert d.residual <= report.tolerance < d.before
    return d


# -- correct ports --------------------------------------------------------------------------------


def test_correct_keras_port_is_ok(reference, x):
    report = xgrad.compare_models(
        reference, _keras_cnn(_ported(reference)), x, layout=TO_NHWC, transfer=False
    )
    assert report.ok, report.summary()
    assert not report.diagnoses


@pytest.mark.exhaustive
def test_correct_nnx_port_is_ok(reference, x):
    report = xgrad.compare_models(reference, _nnx_port(reference), x, layout=TO_NHWC)
    assert report.ok, report.summary()


# -- conv-kernel-layout ---------------------------------------------------------------------------


def test_kernel_with_kh_kw_swapped_in_the_port_is_named_at_the_conv(reference, x):
    port = _keras_cnn(_ported(reference, swap=True))
    report = xgrad.compare_models(reference, port, x, layout=TO_NHWC, transfer=False)
    d = _named(report, "conv-kernel-layout", "conv")
    assert "holds the reference's kernel (3, 3, 3, 4) with kh and kw swapped" in d.detail


def test_kernel_with_kh_kw_swapped_in_the_reference_is_named_at_the_conv(reference, x_nhwc):
    # the Keras model holding the slip is the reference; the torch model is the candidate
    keras_ref = _keras_cnn(_ported(reference, swap=True))
    report = xgrad.compare_models(keras_ref, reference, x_nhwc, layout=TO_NCHW, transfer=False)
    _named(report, "conv-kernel-layout", "conv")


@pytest.mark.exhaustive
def test_a_true_convolution_is_named_with_its_kernel_flipped(reference, x):
    port = _nnx_port(reference, flip=True)
    report = xgrad.compare_models(reference, port, x, layout=TO_NHWC, transfer=False)
    d = _named(report, "conv-kernel-layout", "conv")
    assert "holds the reference's kernel (3, 3, 3, 4) with its spatial axes flipped" in (d.detail)


# -- channel-order --------------------------------------------------------------------------------


def test_classifier_rows_not_reordered_in_the_port_is_named_at_the_dense(reference, x):
    port = _keras_cnn(_ported(reference, reorder=False))
    report = xgrad.compare_models(reference, port, x, layout=TO_NHWC, transfer=False)
    d = _named(report, "channel-order", "fc")
    assert "reads 36 features flattened from 4 channels at 9 positions" in d.detail


def test_classifier_rows_not_reordered_from_a_keras_reference(reference, x_nhwc):
    # the Keras model is right and is the reference; its torch port copied the Dense
    # kernel as fc.weight = kernel.T, rows left in Keras' (H, W, C) order
    weights = _ported(reference)
    report = xgrad.compare_models(
        _keras_cnn(weights), _torch_from(weights), x_nhwc, layout=TO_NCHW, transfer=False
    )
    _named(report, "channel-order", "fc")


# -- padding-convention ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strided():
    """torch's port of a Keras stride-2 "same" conv: padding=1 (k // 2) on both sides."""
    torch.manual_seed(1)
    return TorchCNN(stride=2, padding=1, pool=nn.Identity())


def test_symmetric_padding_against_keras_same_is_named_with_the_pads(strided, x):
    port = _keras_cnn(
        _ported(strided), strides=2, padding="same", pool=keras.layers.Identity(name="pool")
    )
    report = xgrad.compare_models(strided, port, x, layout=TO_NHWC, transfer=False)
    d = _named(report, "padding-convention", "conv")
    assert "the reference pads (lo, hi) = (1, 1), (1, 1) per spatial axis" in d.detail
    assert "the candidate (0, 1), (0, 1)" in d.detail


def test_keras_same_reference_against_symmetric_torch_padding(strided, x_nhwc):
    keras_ref = _keras_cnn(
        _ported(strided), strides=2, padding="same", pool=keras.layers.Identity(name="pool")
    )
    report = xgrad.compare_models(keras_ref, strided, x_nhwc, layout=TO_NCHW, transfer=False)
    d = _named(report, "padding-convention", "conv")
    assert "the reference pads (lo, hi) = (0, 1), (0, 1)" in d.detail


# -- pool-padding ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def averaged():
    """torch AvgPool2d(3, 1, 1): count_include_pad=True by default."""
    torch.manual_seed(2)
    return TorchCNN(pool=nn.AvgPool2d(3, 1, 1))


def test_average_counting_its_padding_against_keras_same(averaged, x):
    pool = keras.layers.AveragePooling2D(3, 1, padding="same", name="pool")
    port = _keras_cnn(_ported(averaged), pool=pool)
    report = xgrad.compare_models(averaged, port, x, layout=TO_NHWC, transfer=False)
    d = _named(report, "pool-padding", "pool")
    assert "padding counted, the candidate's pads (1, 1), (1, 1), padding not counted" in d.detail


@pytest.mark.exhaustive
def test_correct_average_port_is_ok(averaged, x):
    pool = keras.layers.AveragePooling2D(3, 1, padding="same", name="pool")
    port = TorchCNN(pool=nn.AvgPool2d(3, 1, 1, count_include_pad=False))
    port.load_state_dict(averaged.state_dict())
    keras_port = _keras_cnn(_ported(averaged), pool=pool)
    report = xgrad.compare_models(port, keras_port, x, layout=TO_NHWC, transfer=False)
    assert report.ok, report.summary()


def test_keras_same_average_reference_against_torchs_default(averaged, x_nhwc):
    pool = keras.layers.AveragePooling2D(3, 1, padding="same", name="pool")
    keras_ref = _keras_cnn(_ported(averaged), pool=pool)
    report = xgrad.compare_models(keras_ref, averaged, x_nhwc, layout=TO_NCHW, transfer=False)
    _named(report, "pool-padding", "pool")


@pytest.mark.exhaustive
def test_max_pool_padded_symmetrically_against_keras_same(x):
    torch.manual_seed(3)
    ref = TorchCNN(pool=nn.MaxPool2d(3, 2, 1))
    port = _keras_cnn(
        _ported(ref), pool=keras.layers.MaxPooling2D(3, 2, padding="same", name="pool")
    )
    report = xgrad.compare_models(ref, port, x, layout=TO_NHWC, transfer=False)
    d = _named(report, "pool-padding", "pool")
    assert "maxpool pads (1, 1), (1, 1), the candidate's pads (0, 1), (0, 1)" in d.detail


# -- norm-axis ------------------------------------------------------------------------------------

if {"torch", "flax", "tensorflow"} <= INSTALLED:

    class TorchNormed(nn.Module):
        """conv -> GroupNorm(2, 4) (contiguous groups) -> fc; ``interleaved``: a hand-written
        GroupNorm whose groups take every second channel (``view(N, C // G, G, ...)``)."""

        def __init__(self, interleaved=False):
            super().__init__()
            self.conv = nn.Conv2d(CIN, C, 3, stride=2, padding=1)  # (C, 4, 4)
            self.norm = Interleaved() if interleaved else nn.GroupNorm(2, C)
            self.fc = nn.Linear(C * 4 * 4, OUT)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.norm(self.conv(x))), 1))

    class Interleaved(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(C))
            self.bias = nn.Parameter(torch.zeros(C))

        def forward(self, x):
            n = x.shape[0]
            g = x.reshape(n, C // 2, 2, *x.shape[2:])  # channel c in group c % 2
            mean = g.mean(dim=(1, 3, 4), keepdim=True)
            var = g.var(dim=(1, 3, 4), keepdim=True, unbiased=False)
            y = ((g - mean) / torch.sqrt(var + 1e-5)).reshape(x.shape)
            return y * self.weight[:, None, None] + self.bias[:, None, None]


@pytest.fixture(scope="module")
def normed():
    torch.manual_seed(4)
    ref = TorchNormed()
    with torch.no_grad():
        ref.norm.weight.uniform_(0.5, 1.5)
        ref.norm.bias.uniform_(-0.5, 0.5)
    return ref


def test_groupnorm_groups_interleaved_in_the_port(normed, x):
    port = TorchNormed(interleaved=True)
    port.load_state_dict(normed.state_dict())
    report = xgrad.compare_models(normed, port, x)
    d = _named(report, "norm-axis", "norm")
    assert "interleaved groups (channel c in group c % 2)" in d.detail


def test_groupnorm_groups_interleaved_in_the_reference(normed, x):
    # the hand-written GroupNorm is the reference; torch's own nn.GroupNorm the candidate
    ref = TorchNormed(interleaved=True)
    ref.load_state_dict(normed.state_dict())
    report = xgrad.compare_models(ref, normed, x)
    d = _named(report, "norm-axis", "norm")
    assert "the reference's groupnorm takes interleaved groups (channel c in group c % 2)" in (
        d.detail
    )
