"""Discrepancy metrics by hand, and the fast (chunked) path against the general one."""

from __future__ import annotations

import numpy as np
import pytest

from xgrad.metrics import _CHUNK, PreparedReference, _slow_compare, compare_arrays


def test_metrics_by_hand():
    m = compare_arrays(
        np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0]), dtype="float64", tol=1e-10
    )
    assert m.max_abs == 0.5
    assert m.max_rel == pytest.approx(0.5 / 3.0)
    assert m.rel_norm == pytest.approx(0.5 / np.sqrt(14))
    assert m.cosine == pytest.approx(15.5 / (np.sqrt(1 + 4 + 12.25) * np.sqrt(14)))
    assert m.worst_index == (2,) and (m.worst_value, m.worst_reference) == (3.5, 3.0)
    assert m.status == "mismatch" and m.mismatched == 1
    one_ulp = np.nextafter(np.float32(1), np.float32(2))
    u = compare_arrays(
        np.array([one_ulp, -1], dtype=np.float32), np.array([1.0, -1.0]), dtype="float32", tol=1e-5
    )
    assert u.ulp_max == 1 and u.status == "match"
    across_zero = compare_arrays(
        np.array([-0.0], dtype=np.float32), np.array([0.0]), dtype="float32", tol=1e-5
    )
    assert across_zero.ulp_max == 0


def test_fast_and_general_metric_paths_agree():
    """The all-finite, chunked path gives the masked general path's answers."""
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(3, _CHUNK // 2 + 7))  # spans several chunks
    cand = (ref * (1 + 1e-6 * rng.normal(size=ref.shape))).astype(np.float32)
    cand[2, 11] = -3.5  # one clear outlier, the worst element
    fast = PreparedReference(ref, dtype="float32", tol=1e-5).compare(cand)
    slow = _slow_compare(cand, ref, dtype="float32", tol=1e-5)
    for key in (
        "mismatched",
        "size",
        "worst_index",
        "worst_value",
        "worst_reference",
        "ulp_max",
        "status",
        "nan",
        "inf",
    ):
        assert getattr(fast, key) == getattr(slow, key), key
    for key in ("max_abs", "max_rel", "rel_norm", "cosine"):
        assert getattr(fast, key) == pytest.approx(getattr(slow, key), rel=1e-9), key
    with_nan = cand.copy()
    with_nan[0, 0] = np.nan
    m = PreparedReference(ref, dtype="float32", tol=1e-5).compare(with_nan)
    assert (m.status, m.nan, m.first_nonfinite) == ("nonfinite", 1, (0, 0))


def test_a_zero_reference_is_judged_by_an_absolute_floor():
    ref = np.zeros((4, 3))
    noise = np.full((4, 3), 1e-8, dtype=np.float32)
    assert compare_arrays(noise, ref, dtype="float32", tol=1e-5).status == "match"
    assert compare_arrays(noise * 1e4, ref, dtype="float32", tol=1e-5).status == "mismatch"
