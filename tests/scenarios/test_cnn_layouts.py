"""Inputs in different layouts per side (``layout=`` of ``compare_models``, module by module):

* a torch CNN (NCHW: ``nn.Conv2d``, ``max_pool2d``, ``flatten``, ``nn.Linear``) against its
  Keras port (NHWC: ``Conv2D``, ``MaxPooling2D``, ``Flatten``, ``Dense``) and its Flax NNX
  port (``nnx.Conv`` is NHWC), each port's weights copied by hand with the permutations a
  user writes (kernel ``(kh, kw, in, out)``; the classifier's rows reordered from
  ``(c, h, w)`` to ``(h, w, c)``): every parameter paired, everything matches;
* planted: a kernel copied without its spatial axes swapped (named at the conv); a classifier
  whose rows were not reordered (``channel-order``: left unpaired with the reason, never
  compared or copied in a wrong order); transfer of conv kernels into the port bit-exact;
* a time-first ``nn.LSTM`` against a batch-first one (``TNC`` against ``NTC``);
* refusals: shapes that do not tell the layout, unknown layouts.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax", "tensorflow"} <= INSTALLED, reason="torch, flax and tensorflow are needed"
)

LAYOUT = {"reference": "NCHW", "candidate": "NHWC"}
C, K, HW, OUT = 4, 3, 10, 3  # conv 1 -> 4 channels, kernel 3, 10x10 input, 3 outputs
POOLED = (HW - K + 1) // 2  # 4

if {"torch", "flax", "tensorflow"} <= INSTALLED:
    import jax
    import torch
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.frameworks.tensorflow.ops import keras
    from xgrad.pairing.layouts import LayoutError

    class TorchCNN(nn.Module):
        def __init__(self, kernel=K):
            super().__init__()
            self.conv = nn.Conv2d(1, C, kernel)
            self.fc = nn.Linear(C * POOLED * POOLED, OUT)

        def forward(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
            return self.fc(torch.flatten(x, 1))

    class NnxCNN(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(1, C, (K, K), padding="VALID", rngs=rngs)
            self.fc = nnx.Linear(C * POOLED * POOLED, OUT, rngs=rngs)

        def __call__(self, x):
            x = nnx.max_pool(jax.nn.relu(self.conv(x)), (2, 2), (2, 2))
            return self.fc(x.reshape(x.shape[0], -1))


def _keras_cnn():
    return keras.Sequential(
        [
            keras.Input((HW, HW, 1)),
            keras.layers.Conv2D(C, K, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(OUT),
        ]
    )


def _ported(model: nn.Module, *, flip=False, reorder=True):
    """The torch weights as a channels-last port holds them: ``(kernel, conv bias, dense
    kernel (features, out), dense bias)``; ``flip``: the kernel's spatial axes left swapped
    (``transpose(3, 2, 1, 0)``), ``reorder=False``: the classifier's rows left in torch's
    ``(c, h, w)`` order."""
    w = model.conv.weight.detach().numpy()
    kernel = w.transpose(3, 2, 1, 0) if flip else w.transpose(2, 3, 1, 0)
    fc = model.fc.weight.detach().numpy()
    if reorder:
        fc = fc.reshape(OUT, C, POOLED, POOLED).transpose(0, 2, 3, 1).reshape(OUT, -1)
    return kernel, model.conv.bias.detach().numpy(), fc.T, model.fc.bias.detach().numpy()


def _keras_port(model, **how):
    k = _keras_cnn()
    kernel, bias, dense, dense_bias = _ported(model, **how)
    k.layers[0].set_weights([kernel, bias])
    k.layers[3].set_weights([dense, dense_bias])
    return k


def _nnx_port(model, **how):
    f = NnxCNN(nnx.Rngs(1))
    kernel, bias, dense, dense_bias = _ported(model, **how)
    f.conv.kernel.value, f.conv.bias.value = kernel, bias
    f.fc.kernel.value, f.fc.bias.value = dense, dense_bias
    return f


@pytest.fixture(scope="module")
def torch_cnn():
    torch.manual_seed(0)
    return TorchCNN()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(2, 1, HW, HW)).astype(np.float32)


# the NNX ports of the tutorial CNNs (test_tutorial_cnns.py) cover NNX in make test
@pytest.mark.parametrize("port", ["keras", pytest.param("nnx", marks=pytest.mark.exhaustive)])
def test_correct_port_matches_with_every_parameter_paired(torch_cnn, x, port):
    cand = _keras_port(torch_cnn) if port == "keras" else _nnx_port(torch_cnn)
    report = xgrad.compare_models(torch_cnn, cand, x, layout=LAYOUT)
    assert report.ok, report.summary()
    assert not report.unpaired
    assert {e.name for e in report.parameters} == {
        "conv.kernel",
        "conv.bias",
        "fc.kernel",
        "fc.bias",
    }
    assert any("fc.kernel reads features flattened" in n for n in report.notes)
    # every module's activations compared in the reference's layout
    conv = next(layer for layer in report.layers if layer.path == "conv")
    assert conv.shape == (2, C, HW - K + 1, HW - K + 1)


def test_same_x_without_layout_is_the_ports_own_error_with_the_fix(torch_cnn, x):
    with pytest.raises(xgrad.errors.InputError, match=r"pass layout=\{'reference'"):
        xgrad.compare_models(torch_cnn, _keras_port(torch_cnn), x)


@pytest.mark.parametrize("port", ["keras", pytest.param("nnx", marks=pytest.mark.exhaustive)])
def test_kernel_copied_without_swapping_its_spatial_axes_is_named_at_the_conv(torch_cnn, x, port):
    make = _keras_port if port == "keras" else _nnx_port
    report = xgrad.compare_models(torch_cnn, make(torch_cnn, flip=True), x, layout=LAYOUT)
    assert not report.ok
    first = report.first_divergence
    assert first["path"] == "conv" and first["where"] == "forward", first


def test_classifier_rows_not_reordered_part_at_the_classifier(torch_cnn, x):
    # the port holds torch's rows as they stand: paired so (a port that permutes to
    # channels-first before flattening holds them so, correctly), and the forward parts there
    report = xgrad.compare_models(
        torch_cnn, _nnx_port(torch_cnn, reorder=False), x, layout=LAYOUT, transfer=False
    )
    assert not report.ok and not report.unpaired
    conv = next(layer for layer in report.layers if layer.path == "conv")
    assert next(iter(conv.forward.values())).status == "match"
    assert "fc" in str(report.first_divergence), report.first_divergence


def test_classifier_of_unknown_order_pairs_with_nothing_and_says_why(torch_cnn, x):
    # an unrelated initialisation: nothing tells in which order the port's classifier reads
    report = xgrad.compare_models(torch_cnn, NnxCNN(nnx.Rngs(3)), x, layout=LAYOUT, transfer=True)
    rows = {(u["side"], u["name"]): u["reason"] for u in report.unpaired}
    assert set(rows) == {("reference", "fc.kernel"), ("candidate", "fc.kernel")}
    reason = rows[("reference", "fc.kernel")]
    assert "channel-order" in reason
    assert "(4, 16) by the reference (NCHW) and (16, 4) by the candidate (NHWC)" in reason
    conv = next(layer for layer in report.layers if layer.path == "conv")
    assert next(iter(conv.forward.values())).status == "match"  # copied through its layout


def test_conv_kernel_transfer_is_bit_exact(torch_cnn, x):
    from xgrad.comparison import transfer
    from xgrad.pairing.layouts import layouts_of
    from xgrad.runner import _read

    pair = _read(
        torch_cnn,
        _keras_cnn(),
        x,
        layouts_of(LAYOUT),
        mapping="auto",
        read="auto",
        output=None,
        training=None,
        apply_kwargs=None,
    )
    copied = transfer(pair, True).candidate.native
    got = copied.layers[0].get_weights()[0]
    want = torch_cnn.conv.weight.detach().numpy().transpose(2, 3, 1, 0)
    assert got.dtype == want.dtype and np.array_equal(got, want)


# -- refusals --------------------------------------------------------------------------------------


class Cubic(nn.Module if {"torch"} <= INSTALLED else object):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        return self.conv(x).flatten(1)


def test_channels_and_width_of_one_size_are_refused_without_layout():
    torch.manual_seed(0)
    a = Cubic()
    x = np.random.default_rng(1).normal(size=(2, 4, 5, 4)).astype(np.float32)
    with pytest.raises(LayoutError, match=r"layout='NCHW' if both take x as it is"):
        xgrad.compare_models(a, a, x)
    assert xgrad.compare_models(a, a, x, layout="NCHW").ok


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("NHCW", "it needs to be one of NC, NCL, NLC, NCHW, NHWC, NTC, TNC"),
        ({"reference": "NCHW", "candidate": "NLC"}, "two orders of the same axes"),
        ({"reference": "NCHW"}, "takes the keys 'reference' and 'candidate'"),
        ("NCL", "has 3 axes but the inputs are input"),
    ],
)
def test_bad_layouts_are_refused(torch_cnn, x, layout, message):
    with pytest.raises(LayoutError, match=message):
        xgrad.compare_models(torch_cnn, torch_cnn, x, layout=layout)


# -- time-first against batch-first ----------------------------------------------------------------


class Recurrent(nn.Module if {"torch"} <= INSTALLED else object):
    """An LSTM and a head on every step; ``batch_first`` as given; ``reverse``: a planted slip
    (the sequence fed backwards)."""

    def __init__(self, batch_first: bool, reverse: bool = False):
        super().__init__()
        self.batch_first, self.reverse = batch_first, reverse
        self.lstm = nn.LSTM(3, 5, batch_first=batch_first)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        if self.reverse:
            x = x.flip(1 if self.batch_first else 0)
        out, _ = self.lstm(x)
        return self.head(out)


@pytest.fixture(scope="module")
def lstms():
    torch.manual_seed(0)
    ref = Recurrent(batch_first=True)
    cands = {}
    for reverse in (False, True):
        cand = Recurrent(batch_first=False, reverse=reverse)
        cand.load_state_dict({k: v for k, v in ref.state_dict().items() if "batch" not in k})
        cands[reverse] = cand
    return ref, cands


def test_time_first_lstm_against_batch_first(lstms):
    ref, cands = lstms
    x = np.random.default_rng(2).normal(size=(2, 6, 3)).astype(np.float32)  # (N, T, C)
    layout = {"reference": "NTC", "candidate": "TNC"}
    report = xgrad.compare_models(ref, cands[False], x, layout=layout)
    assert report.ok, report.summary()
    assert not report.unpaired and len(report.parameters) == 6
    planted = xgrad.compare_models(ref, cands[True], x, layout=layout)
    assert not planted.ok
    assert "lstm" in str(planted.first_divergence)
