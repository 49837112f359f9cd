"""Conv (xgrad/layers/conv.py): forward against a direct nested-loop convolution written here
and against torch's conv1d / conv2d from the same weights, "same" padding against lax and
torch, the VJP against central finite differences, shapes and validation."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from _util import numeric_gradients, rel_norm

import xgrad
from xgrad.layers import Conv
from xgrad.layers.base import forward_sequence, vjp_sequence
from xgrad.layers.conv import conv_padding

# (layer, example shape, its (lo, hi) pads per spatial axis worked out by hand)
CASES = [
    pytest.param(Conv(4, 3), (7, 3), ((0, 0),), id="1d-valid"),
    # n=7, k=2, s=2: out ceil(7/2)=4, total (4-1)*2+2-7 = 1 -> (0, 1)
    pytest.param(Conv(4, 2, strides=2, padding="same"), (7, 2), ((0, 1),), id="1d-same-even-s2"),
    pytest.param(Conv(3, 3, padding=1, dilation=2, use_bias=False), (8, 2), ((1, 1),), id="1d-d2"),
    pytest.param(Conv(4, 3, strides=2), (7, 6, 2), ((0, 0), (0, 0)), id="2d-s2"),
    # h: n=6, k=2, d=2 -> span 3, total 2 -> (1, 1); w: n=7, k=3, d=2 -> span 5, total 4 -> (2, 2)
    pytest.param(
        Conv(4, (2, 3), dilation=2, padding="same"), (6, 7, 2), ((1, 1), (2, 2)), id="2d-same-d2"
    ),
    pytest.param(
        Conv(4, 3, groups=2, padding=((1, 2), (0, 1))),
        (5, 6, 4),
        ((1, 2), (0, 1)),
        id="2d-groups2-asym",
    ),
    # h: n=6, k=2, s=2 -> out 3, total 0; w: n=5, k=2, d=2 -> span 3, total 2 -> (1, 1)
    pytest.param(
        Conv(6, 2, strides=(2, 1), dilation=(1, 2), groups=2, padding="same", use_bias=False),
        (6, 5, 4),
        ((0, 0), (1, 1)),
        id="2d-same-even-groups-nobias",
    ),
    # h: n=5, k=2, s=1 -> total 1 -> (0, 1): the extra zero on the bottom
    pytest.param(Conv(3, 2, padding="same"), (5, 4, 1), ((0, 1), (0, 1)), id="2d-same-even"),
]


def _weights(layer, shape, path="c"):
    return {f"{path}.{k}": v for k, v in layer.init(np.random.default_rng(3), shape).items()}


def direct_conv(x, kernel, bias, strides, pads, dilation, groups):
    """The convolution written out: one output cell at a time, one tap at a time."""
    rank = x.ndim - 2
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    k_sizes, cin_g, features = kernel.shape[:rank], kernel.shape[-2], kernel.shape[-1]
    out_sizes = [
        (xp.shape[1 + a] - dilation[a] * (k_sizes[a] - 1) - 1) // strides[a] + 1
        for a in range(rank)
    ]
    per_group = features // groups
    y = np.zeros((x.shape[0], *out_sizes, features))
    for b in range(x.shape[0]):
        for o in np.ndindex(*out_sizes):
            for f in range(features):
                g = f // per_group
                total = 0.0 if bias is None else bias[f]
                for t in np.ndindex(*k_sizes):
                    at = tuple(o[a] * strides[a] + t[a] * dilation[a] for a in range(rank))
                    for c in range(cin_g):
                        total += xp[(b, *at, g * cin_g + c)] * kernel[(*t, c, f)]
                y[(b, *o, f)] = total
    return y


def _tuple(v, rank):
    return tuple(v) if isinstance(v, tuple) else (v,) * rank


@pytest.mark.parametrize("layer,shape,pads", CASES)
def test_forward_matches_a_direct_convolution(layer, shape, pads):
    w = _weights(layer, shape)
    x = np.random.default_rng(0).normal(size=(2, *shape))
    rank = len(shape) - 1
    want = direct_conv(
        x,
        w["c.kernel"],
        w.get("c.bias"),
        _tuple(layer.strides, rank),
        pads,
        _tuple(layer.dilation, rank),
        layer.groups,
    )
    got = layer.forward(w, x, path="c").output
    assert got.shape == (2, *layer.output_shape(shape))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer,shape,pads", CASES)
def test_forward_matches_torch_from_the_same_weights(layer, shape, pads):
    """torch computes channels-first with kernels (F, C/G, *k): the same numbers permuted;
    asymmetric pads go in with F.pad first (its pairs are last axis first)."""
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    w = _weights(layer, shape)
    x = np.random.default_rng(0).normal(size=(2, *shape))
    rank = len(shape) - 1
    perm_in = (0, rank + 1, *range(1, rank + 1))  # NLC -> NCL, NHWC -> NCHW
    kernel = torch.tensor(w["c.kernel"]).permute(rank + 1, rank, *range(rank))
    xt = torch.tensor(x).permute(*perm_in)
    xt = fn.pad(xt, [p for pair in reversed(pads) for p in pair])
    conv = fn.conv1d if rank == 1 else fn.conv2d
    bias = torch.tensor(w["c.bias"]) if "c.bias" in w else None
    yt = conv(
        xt,
        kernel,
        bias,
        stride=_tuple(layer.strides, rank),
        dilation=_tuple(layer.dilation, rank),
        groups=layer.groups,
    )
    want = yt.permute(0, *range(2, rank + 2), 1).numpy()
    np.testing.assert_allclose(layer.forward(w, x, path="c").output, want, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")
def test_same_padding_matches_torch_same_with_the_extra_zero_last():
    """torch's padding='same' (stride 1): an even kernel gets its odd zero at the end, as
    Keras / TF / lax "SAME" do."""
    torch = pytest.importorskip("torch")
    layer = Conv(3, (2, 4), dilation=(1, 1), padding="same")
    w = _weights(layer, (5, 6, 2))
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 2))
    yt = torch.nn.functional.conv2d(
        torch.tensor(x).permute(0, 3, 1, 2),
        torch.tensor(w["c.kernel"]).permute(3, 2, 0, 1),
        torch.tensor(w["c.bias"]),
        padding="same",
    )
    want = yt.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(layer.forward(w, x, path="c").output, want, rtol=1e-12, atol=1e-12)


def test_same_padding_agrees_with_lax_padtype_to_pads():
    """lax's "SAME" on the dilated window, for every small size, kernel, stride, dilation."""
    lax = pytest.importorskip("jax.lax")
    for n in range(1, 10):
        for k in range(1, 5):
            for s in range(1, 4):
                for d in (1, 2):
                    want = lax.padtype_to_pads((n,), ((k - 1) * d + 1,), (s,), "SAME")
                    got = conv_padding("same", (n,), k, s, d)
                    assert [tuple(p) for p in want] == list(got), (n, k, s, d)


def test_padding_forms():
    assert conv_padding("valid", (5, 6), 3) == ((0, 0), (0, 0))
    assert conv_padding("SAME", (5,), 3) == ((1, 1),)
    assert conv_padding(2, (5, 6), 3) == ((2, 2), (2, 2))
    assert conv_padding([(1, 2), (0, 3)], (5, 6), 3) == ((1, 2), (0, 3))
    assert Conv(2, 3, padding="Same").padding == "same"
    assert Conv(2, 3, padding=[[1, 0]]).padding == ((1, 0),)


@pytest.mark.parametrize("layer,shape,pads", CASES)
def test_vjp_matches_finite_differences(layer, shape, pads):
    weights = _weights(layer, shape, path="layers.0")
    x = np.random.default_rng(5).normal(size=(2, *shape))
    r = np.random.default_rng(6).normal(size=(2, *layer.output_shape(shape)))  # a projection

    def loss(p, xx):
        out, _ = forward_sequence([layer], p, xx)
        return float((out * r).sum())

    want_params, want_x = numeric_gradients(loss, weights, x)
    _, steps = forward_sequence([layer], weights, x)
    grads: dict = {}
    got_x = vjp_sequence(weights, steps, r, grads)
    assert rel_norm(got_x, want_x) < 1e-7
    assert set(grads) == set(weights)
    for name in weights:
        assert grads[name].shape == weights[name].shape
        assert rel_norm(grads[name], want_params[name]) < 1e-7, name


def test_shapes_and_init():
    layer = Conv(8, (3, 2), groups=4, strides=(1, 2))
    assert layer.weight_shapes((9, 10, 4)) == {"kernel": (3, 2, 1, 8), "bias": (8,)}
    assert layer.output_shape((9, 10, 4)) == (7, 5, 8)
    w = layer.init(np.random.default_rng(0), (9, 10, 4))
    limit = math.sqrt(6 / (6 * 1 + 6 * 8))  # Glorot over fans taps*C/G and taps*F
    assert np.abs(w["kernel"]).max() <= limit
    assert Conv(4, 3, use_bias=False).param_names() == ("kernel",)
    assert layer.describe() == "conv(8, k=(3, 2), s=(1, 2), groups=4)"


def test_a_spec_with_conv_runs_in_numpy_and_a_framework_without_an_entry_refuses_it():
    spec = xgrad.MLP((6, 6, 1), [Conv(2, 3), xgrad.Flatten(), xgrad.Dense(2)])
    assert spec.layers[0].output_shape((6, 6, 1)) == (4, 4, 2)
    params = xgrad.init_params(spec, seed=0)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 1))
    model = xgrad.get_framework("numpy").build(spec, params, dtype="float64")
    assert model.gradients(x, np.zeros((2, 2)), loss="mse").input.shape == x.shape


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: Conv(3, 3, groups=2), "Conv groups=2 must divide features=3"),
        (
            lambda: xgrad.MLP((8, 8, 3), [Conv(4, 3, groups=2)]),
            "Conv groups=2 must divide the input channels 3",
        ),
        (
            lambda: xgrad.MLP((3, 3, 2), [Conv(4, 5)]),
            r"spatial axis 0 \(size 3, padded 3\) is shorter than the dilated kernel 5",
        ),
        (
            lambda: xgrad.MLP((9, 2), [Conv(4, 3, dilation=5)]),
            "shorter than the dilated kernel 11",
        ),
        (
            lambda: xgrad.MLP((8, 3), [Conv(4, (3, 3))]),
            re.escape("Conv kernel (3, 3) has 2 sizes but the input has 1 spatial axis"),
        ),
        (lambda: xgrad.MLP((8,), [Conv(4, 3)]), "Conv takes channels-last examples"),
        (lambda: xgrad.MLP((2, 8, 8, 3), [Conv(4, 3)]), "Conv takes channels-last examples"),
        (lambda: Conv(4, 3, padding=(1, 2)), re.escape("write the pair (p, p)")),
        (lambda: Conv(4, 3, padding="full"), 'Conv padding must be "valid", "same"'),
        (lambda: Conv(4, 3, padding=-1), "negative int"),
        (lambda: Conv(4, 3, padding=((1, -1),)), "pairs must hold ints >= 0"),
        (
            lambda: xgrad.MLP((8, 8, 3), [Conv(4, 3, padding=((1, 1),))]),
            "has 1 \\(lo, hi\\) pairs but the input has 2 spatial axes",
        ),
        (lambda: Conv(0, 3), "Conv features must be a positive integer"),
        (lambda: Conv(4, (3, 0)), "Conv kernel must be a positive integer"),
        (lambda: Conv(4, (1, 2, 3)), "one size per spatial axis"),
        (lambda: Conv(4, 3, strides=0), "Conv strides must be a positive integer"),
    ],
)
def test_bad_convs_raise_spec_error_naming_the_field(make, pattern):
    with pytest.raises(xgrad.SpecError, match=pattern):
        make()
