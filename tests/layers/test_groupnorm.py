"""GroupNorm (xgrad/layers/groupnorm.py): forward against torch's ``F.group_norm`` from the
same weights (channels moved to axis 1), VJP against central finite differences on
``(c,)``, ``(l, c)`` and ``(h, w, c)`` examples, and bad fields refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from _util import numeric_gradients, rel_norm

import xgrad
from xgrad.layers import GroupNorm
from xgrad.layers.base import forward_sequence, vjp_sequence
from xgrad.layers.text import parse_layers

B = 2


def _weights(layer, shape):
    local = layer.init(np.random.default_rng(3), shape)
    return {f"layers.0.{k}": v for k, v in local.items()}


def _input(shape, seed=5):
    # per-channel offsets and spreads, so that statistics over the wrong axes show
    rng = np.random.default_rng(seed)
    return rng.normal(size=(B, *shape)) * rng.uniform(0.5, 3, shape[-1]) + np.arange(shape[-1])


CASES = [
    pytest.param(GroupNorm(2), (6,), id="c-2groups"),
    pytest.param(GroupNorm(2, epsilon=1e-3), (5, 4), id="lc-2groups"),
    pytest.param(GroupNorm(1), (3, 4), id="lc-1group"),
    pytest.param(GroupNorm(4), (2, 3, 4), id="hwc-instance"),
    pytest.param(GroupNorm(2, use_scale=False), (2, 2, 4), id="hwc-noscale"),
    pytest.param(GroupNorm(2, use_bias=False), (3, 4), id="lc-nobias"),
]


@pytest.mark.parametrize("layer,shape", CASES)
def test_forward_matches_torch_group_norm(layer, shape):
    torch = pytest.importorskip("torch")
    w = _weights(layer, shape)
    x = _input(shape)
    got = layer.forward(w, x, path="layers.0").output

    def native(name):
        return torch.tensor(w[f"layers.0.{name}"]) if f"layers.0.{name}" in w else None

    channels_first = torch.tensor(np.moveaxis(x, -1, 1))
    want = torch.nn.functional.group_norm(
        channels_first, layer.groups, native("scale"), native("bias"), layer.epsilon
    )
    np.testing.assert_allclose(got, np.moveaxis(want.numpy(), 1, -1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layer,shape", CASES)
def test_vjp_matches_finite_differences(layer, shape):
    params = _weights(layer, shape)
    x = _input(shape)
    r = np.random.default_rng(1).normal(size=(B, *shape))  # a fixed random projection

    def loss(p, xx):
        return float((forward_sequence([layer], p, xx)[0] * r).sum())

    want_params, want_x = numeric_gradients(loss, params, x)
    _, steps = forward_sequence([layer], params, x)
    grads: dict = {}
    got_x = vjp_sequence(params, steps, r, grads)
    assert rel_norm(got_x, want_x) < 1e-7
    assert set(grads) == set(params)
    for name in params:
        assert rel_norm(grads[name], want_params[name]) < 1e-7, name


def test_weights_shapes_text_and_spec():
    layer = GroupNorm(2)
    assert layer.param_names() == ("scale", "bias")
    assert layer.weight_shapes((3, 3, 8)) == {"scale": (8,), "bias": (8,)}
    assert GroupNorm(2, use_scale=False, use_bias=False).weight_shapes((8,)) == {}
    assert layer.describe() == "groupnorm(2, eps=1e-05)"
    assert parse_layers("groupnorm(4,eps=1e-3,bias=false)") == [GroupNorm(4, 1e-3, use_bias=False)]
    spec = xgrad.MLP((5, 4), [GroupNorm(2), xgrad.Flatten(), xgrad.Dense(3)])
    assert spec.param_shapes()["layers.0.scale"] == (4,)
    assert xgrad.LAYERS["groupnorm"] is GroupNorm is xgrad.GroupNorm


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: GroupNorm(0), "GroupNorm groups must be a positive integer, got 0"),
        (lambda: GroupNorm(2.0), "GroupNorm groups must be a positive integer"),
        (lambda: GroupNorm(2, epsilon=-1), "GroupNorm epsilon must be in"),
        (lambda: GroupNorm(2, use_bias="no"), "GroupNorm use_bias must be True or False"),
        (
            lambda: xgrad.MLP((5, 6), [GroupNorm(4)]),
            r"divisible by groups, got 6 channels .* use groups in \[1, 2, 3, 6\]",
        ),
        (lambda: GroupNorm(2).output_shape(()), r"examples of shape \(\.\.\., channels\)"),
    ],
)
def test_bad_fields_raise_spec_error_naming_the_fix(make, pattern):
    with pytest.raises(xgrad.SpecError, match=pattern):
        make()
