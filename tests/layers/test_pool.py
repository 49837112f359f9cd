"""MaxPool, AvgPool, GlobalAvgPool (xgrad/layers/pool.py): forward against a direct loop over
windows written here, against torch's pooling and lax.reduce_window "SAME" on the same
inputs, the VJP against central finite differences, ties, shapes and validation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from _util import numeric_gradients, rel_norm

import xgrad
from xgrad.layers import AvgPool, GlobalAvgPool, MaxPool
from xgrad.layers.base import forward_sequence, vjp_sequence

# (layer, example shape, its (lo, hi) pads per spatial axis worked out by hand)
CASES = [
    pytest.param(MaxPool(2), (6, 5, 3), ((0, 0), (0, 0)), id="max-2d"),
    # n=7, k=3, s=2: out 4, total (4-1)*2+3-7 = 2 -> (1, 1)
    pytest.param(MaxPool(3, 2, "same"), (7, 2), ((1, 1),), id="max-1d-same"),
    pytest.param(
        MaxPool((2, 3), (1, 2), ((1, 0), (1, 2))), (4, 5, 2), ((1, 0), (1, 2)), id="max-2d-asym"
    ),
    # n=5, k=2, s=2: out 3, total 1 -> (0, 1): the extra cell at the end
    pytest.param(AvgPool(2, padding="same"), (5, 5, 2), ((0, 1), (0, 1)), id="avg-same-even"),
    pytest.param(
        AvgPool(2, padding="same", count_include_pad=True),
        (5, 5, 2),
        ((0, 1), (0, 1)),
        id="avg-same-even-include",
    ),
    pytest.param(AvgPool(3, 2, 1), (7, 6, 2), ((1, 1), (1, 1)), id="avg-pad1"),
    pytest.param(
        AvgPool(3, 2, 1, count_include_pad=True), (7, 6, 2), ((1, 1), (1, 1)), id="avg-pad1-include"
    ),
    pytest.param(AvgPool(3, 1, ((2, 0),)), (6, 3), ((2, 0),), id="avg-1d-asym"),
]


def _tuple(v, rank):
    return tuple(v) if isinstance(v, tuple) else (v,) * rank


def direct_pool(layer, x, pads):
    """Each window gathered by hand from the real cells it covers (padding skipped)."""
    rank = x.ndim - 2
    pool, strides = _tuple(layer.pool, rank), _tuple(layer.strides, rank)
    sizes = x.shape[1:-1]
    outs = [(sizes[a] + sum(pads[a]) - pool[a]) // strides[a] + 1 for a in range(rank)]
    y = np.zeros((x.shape[0], *outs, x.shape[-1]))
    for o in np.ndindex(*outs):
        real = []
        for t in np.ndindex(*pool):
            at = tuple(o[a] * strides[a] + t[a] - pads[a][0] for a in range(rank))
            if all(0 <= at[a] < sizes[a] for a in range(rank)):
                real.append(x[(slice(None), *at, slice(None))])
        cells = np.stack(real)  # (cells, B, C)
        if layer.kind == "maxpool":
            y[(slice(None), *o, slice(None))] = cells.max(axis=0)
        else:
            count = np.prod(pool) if layer.count_include_pad else len(real)
            y[(slice(None), *o, slice(None))] = cells.sum(axis=0) / count
    return y


@pytest.mark.parametrize("layer,shape,pads", CASES)
def test_forward_matches_a_direct_loop(layer, shape, pads):
    x = np.random.default_rng(0).normal(size=(2, *shape))
    got = layer.forward({}, x, path="p").output
    assert got.shape == (2, *layer.output_shape(shape))
    np.testing.assert_allclose(got, direct_pool(layer, x, pads), rtol=1e-13, atol=1e-13)


TORCH_CASES = [
    (MaxPool(3, 2, 1), (7, 6, 2)),
    (MaxPool((2, 3), (2, 1), 0), (6, 5, 2)),
    (MaxPool(3, 1, 1), (6, 2)),
    (AvgPool(3, 2, 1, count_include_pad=True), (7, 6, 2)),
    (AvgPool(3, 2, 1, count_include_pad=False), (7, 6, 2)),
    (AvgPool(2, 1, 1, count_include_pad=False), (5, 2)),
]


@pytest.mark.parametrize(
    "layer,shape",
    TORCH_CASES,
    ids=[f"{layer.describe()}-{len(s) - 1}d" for layer, s in TORCH_CASES],
)
def test_forward_matches_torch_pooling(layer, shape):
    """torch pads symmetrically (``padding=p``) and computes channels-first."""
    torch = pytest.importorskip("torch")
    fn = torch.nn.functional
    rank = len(shape) - 1
    x = np.random.default_rng(1).normal(size=(2, *shape))
    xt = torch.tensor(x).permute(0, rank + 1, *range(1, rank + 1))
    args = (layer.pool, layer.strides, layer.padding)
    if layer.kind == "maxpool":
        yt = (fn.max_pool1d if rank == 1 else fn.max_pool2d)(xt, *args)
    else:
        pool = fn.avg_pool1d if rank == 1 else fn.avg_pool2d
        yt = pool(xt, *args, count_include_pad=layer.count_include_pad)
    want = yt.permute(0, *range(2, rank + 2), 1).numpy()
    np.testing.assert_allclose(layer.forward({}, x, path="p").output, want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    "pool,strides,shape",
    [(2, 2, (5, 5, 2)), (3, 2, (6, 7, 2)), (2, 1, (4, 3)), ((2, 3), (2, 2), (5, 6, 1))],
)
def test_same_pooling_matches_lax_reduce_window(pool, strides, shape):
    """lax "SAME" windows: max over real cells, and the average Keras / Flax compute with
    count_include_pad=False (the window sum over the window's count of real cells)."""
    lax = pytest.importorskip("jax.lax")
    rank = len(shape) - 1
    x = np.random.default_rng(2).normal(size=(2, *shape)).astype(np.float32)
    dims = (1, *_tuple(pool, rank), 1)
    steps = (1, *_tuple(strides, rank), 1)

    def window(v, init, op):
        return np.asarray(lax.reduce_window(v, init, op, dims, steps, "SAME"))

    want_max = window(x, -np.inf, lax.max)
    want_avg = window(x, 0.0, lax.add) / window(np.ones_like(x), 0.0, lax.add)
    got_max = MaxPool(pool, strides, "same").forward({}, x, path="p").output
    got_avg = AvgPool(pool, strides, "same").forward({}, x, path="p").output
    np.testing.assert_allclose(got_max, want_max, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_avg, want_avg, rtol=1e-6, atol=1e-6)


GLOBAL_CASES = [
    pytest.param(GlobalAvgPool(), (4, 3), None, id="global-1d"),
    pytest.param(GlobalAvgPool(), (3, 4, 2), None, id="global-2d"),
]


@pytest.mark.parametrize("layer,shape,pads", CASES + GLOBAL_CASES)
def test_vjp_matches_finite_differences(layer, shape, pads):
    x = np.random.default_rng(5).normal(size=(2, *shape))
    r = np.random.default_rng(6).normal(size=(2, *layer.output_shape(shape)))  # a projection

    def loss(p, xx):
        out, _ = forward_sequence([layer], p, xx)
        return float((out * r).sum())

    _, want_x = numeric_gradients(loss, {}, x)
    _, steps = forward_sequence([layer], {}, x)
    grads: dict = {}
    got_x = vjp_sequence({}, steps, r, grads)
    assert not grads
    assert rel_norm(got_x, want_x) < 1e-7


def test_max_ties_send_the_gradient_to_the_first_maximum_in_row_major_order():
    x = np.array([[[1.0, 3.0], [3.0, 3.0]]])[..., None]  # (1, 2, 2, 1), three tied maxima
    layer = MaxPool(2)
    step = layer.forward({}, x, path="p")
    assert step.output.item() == 3.0
    dx = layer.vjp({}, step, np.ones((1, 1, 1, 1)), {})
    assert dx[..., 0].tolist() == [[[0.0, 1.0], [0.0, 0.0]]]


def test_global_avgpool_by_hand():
    x = np.arange(12.0).reshape(1, 2, 3, 2)
    layer = GlobalAvgPool()
    assert layer.output_shape((2, 3, 2)) == (2,)
    np.testing.assert_array_equal(layer.forward({}, x, path="p").output, [[5.0, 6.0]])


def test_strides_default_to_the_pool_and_no_weights():
    assert MaxPool(3).strides == 3
    assert AvgPool((2, 3)).strides == (2, 3)
    assert MaxPool(2, 1).strides == 1
    assert MaxPool(2).output_shape((7, 5, 3)) == (3, 2, 3)
    assert AvgPool(2, padding="same").output_shape((7, 5, 3)) == (4, 3, 3)
    for layer in (MaxPool(2), AvgPool(2), GlobalAvgPool()):
        assert layer.param_names() == ()
        assert layer.weight_shapes((4, 4, 2)) == {}


@pytest.mark.parametrize(
    "make,pattern",
    [
        (
            lambda: xgrad.MLP((6, 6, 2), [MaxPool(2, padding=2)]),
            re.escape("MaxPool padding (2, 2) on spatial axis 0 is not smaller than the pool"),
        ),
        (
            lambda: xgrad.MLP((6, 2), [AvgPool(2, padding=((0, 3),))]),
            "not smaller than the pool size 2",
        ),
        (
            lambda: xgrad.MLP((2, 2, 1), [MaxPool(3)]),
            "shorter than the dilated pool 3",
        ),
        (
            lambda: xgrad.MLP((6, 2), [AvgPool((2, 2))]),
            re.escape("AvgPool pool (2, 2) has 2 sizes but the input has 1 spatial axis"),
        ),
        (lambda: xgrad.MLP((6,), [MaxPool(2)]), "MaxPool takes channels-last examples"),
        (lambda: xgrad.MLP((6,), [GlobalAvgPool()]), "GlobalAvgPool takes channels-last"),
        (lambda: MaxPool(0), "MaxPool pool must be a positive integer"),
        (lambda: AvgPool(2, padding="full"), "AvgPool padding must be"),
        (lambda: AvgPool(2, count_include_pad=1), "count_include_pad must be True or False"),
    ],
)
def test_bad_pools_raise_spec_error_naming_the_field(make, pattern):
    with pytest.raises(xgrad.SpecError, match=pattern):
        make()
