"""A gradient that is zero in exact arithmetic is judged against the size of its terms.

An attention's key bias adds ``q_i . b`` to every score of query ``i``: a shift shared by
every key, which the softmax ignores, so dL/d key_bias is exactly zero. The float64 reference
returns rounding (1e-15), a float32 side rounding of the terms' size (1e-6), and the relative
difference is 1e8 on two correct computations. Such a gradient is judged absolutely, by the
tolerance applied to the size of the terms it sums (its measured rounding over the unit
roundoff), as its neighbours are judged; a wrong key-bias gradient still fails.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from conftest import INSTALLED
from planted import planted

import xgrad
from xgrad.comparison.spread import Spread
from xgrad.metrics import NOISE_FLOORS, RELATIVE_NOISE, UNIT_ROUNDOFF
from xgrad.metrics.tolerances import zero_floor

needs = pytest.mark.skipif({"torch", "jax"} - INSTALLED, reason="needs torch and jax")

SPEC = xgrad.MLP(
    (6, 16), [xgrad.Attention(16, 4, kv_heads=2, causal=True, use_bias=True), xgrad.Dense(3)]
)
"""GQA (two query heads per key head) and a causal mask: the key bias cancels either way."""


def _x(seed: int) -> np.ndarray:
    # inputs of size 3: the scores' terms are large enough that the key bias's float32
    # rounding exceeds the absolute noise floor (1e-6 RMS) on most seeds
    return 3 * np.random.default_rng(seed).standard_normal((2, 6, 16))


def _entry(report, name):
    return next(e for e in report.parameters if e.name == name)


def test_the_key_bias_cannot_move_the_loss():
    # The premise, by hand: a key bias shifts every score of a query by the same q . b, and
    # the softmax of a row shifted by a constant is the same row.
    rng = np.random.default_rng(0)
    q, k, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)), rng.standard_normal(4)

    def probs(keys):
        s = q @ keys.T / 2.0
        e = np.exp(s - s.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    assert np.allclose(probs(k + 10 * b), probs(k), rtol=0, atol=1e-12)


@needs
@pytest.mark.parametrize("seed", [1, 2, 4])
def test_an_exactly_zero_key_bias_gradient_passes_in_float32(seed):
    report = xgrad.compare(SPEC, _x(seed), frameworks="numpy,torch,jax", dtype="float32", seed=seed)
    assert report.ok, report.summary()
    key_bias = _entry(report, "layers.0.key_bias")
    size = math.prod(key_bias.shape)
    for label, m in key_bias.results.items():
        assert m.status == "match"
        # relative to a reference of rounding alone, the plain rule could not pass it
        assert m.rel_norm > 1e3
        if m.max_abs > NOISE_FLOORS["float32"] * math.sqrt(size):  # past the absolute floor
            note = next(n for n in report.notes if n.startswith(f"{label}:") and "zero" in n)
            assert "layers.0.key_bias" in note


@needs
def test_a_key_bias_gradient_that_does_not_cancel_still_fails(monkeypatch):
    # torch's attention with its key bias added to the keys with a weight rising along the
    # tokens, in the gradient only (b - b.detach() is 0 forward): the key bias's terms no
    # longer cancel, a hundredth of the keys' own gradient reaches it, nothing else changes.
    import torch

    from xgrad.frameworks.torch.modules import SelfAttention

    project = SelfAttention._project

    def planted_project(self, x):
        q, k, v = project(self, x)  # (batch, tokens, heads, head_dim)
        ramp = torch.linspace(0, 1, x.shape[1], dtype=x.dtype)[:, None, None]
        b = self.key_bias
        return q, k + 1e-2 * ramp * (b - b.detach()), v

    monkeypatch.setattr(SelfAttention, "_project", planted_project)
    report = xgrad.compare(SPEC, _x(1), frameworks="numpy,torch", dtype="float32", seed=1)
    failing = {(e.name, fw) for e, fw, _ in report.failures()}
    assert failing == {("layers.0.key_bias", "torch")}, report.summary()


def test_a_wrong_key_bias_gradient_of_the_numpy_side_still_fails():
    # The NumPy model in float32 with a thousandth of the value bias's gradient added to the
    # key bias's (the two (kv_heads, head_dim) slices mixed up, slightly).
    def change(grads, x, y, loss):
        params = dict(grads.params)
        params["layers.0.key_bias"] = (
            params["layers.0.key_bias"] + 1e-3 * (params["layers.0.value_bias"])
        )
        return dataclasses.replace(grads, params=params)

    report = xgrad.compare(
        SPEC, _x(2), frameworks=[planted("mixed", change=change)], dtype="float32", seed=2
    )
    failing = {(e.name, fw) for e, fw, _ in report.failures()}
    assert failing == {("layers.0.key_bias", "mixed")}, report.summary()


def test_the_zero_floor_is_the_tolerance_on_the_terms():
    # rounding = u * size of the terms, so tol * size = (tol / u) * rounding
    assert zero_floor(2.0, "float32", 1e-5) == pytest.approx(2.0 * 1e-5 / 2.0**-24)
    assert zero_floor(2.0, "float64", 1e-10) == pytest.approx(2.0 * 1e-10 / 2.0**-53)
    # an rtol below the unit roundoff: never tighter than the relative noise floor
    assert zero_floor(2.0, "float32", 1e-9) == 2.0 * RELATIVE_NOISE


def test_a_move_that_is_not_rounding_makes_no_zero_gradient():
    u64, u32 = UNIT_ROUNDOFF["float64"], UNIT_ROUNDOFF["float32"]
    # a float64 gradient of norm 1e-14 that moves by 2e-15: rounding of terms of size ~10
    rounding = Spread({"g": 2e-15}, factor=u32 / u64, unit=u32)
    assert rounding.zero("g", 1e-14, total=100.0)
    # a gradient of norm 1 moved by a tenth of itself (a kink crossed both ways): scaled
    # to float32 that would be a floor of 5e7, hiding anything
    kink = Spread({"g": 0.1}, factor=u32 / u64, unit=u32)
    assert not kink.zero("g", 1.0, total=100.0)
    # a gradient far above its rounding is no zero gradient
    assert not rounding.zero("g", 1.0, total=100.0)
