"""The definition of the metrics (xgrad/metrics/definition.py): :func:`compare_arrays` by hand,
against the plain formulas written out in conftest.py, and with NaN/Inf masked."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

import xgrad.metrics.definition
from xgrad.errors import InputError
from xgrad.metrics import Metrics, compare_arrays, json_float, ulp_distance


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


@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 3, 4), ()])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compare_arrays_equals_the_plain_formulas(rng, shape, dtype, check):
    ref = rng.normal(size=shape)
    if ref.ndim:
        ref.reshape(-1)[0] = 0.0  # a zero reference element: max_rel's floor
    g = (ref * (1 + 1e-6 * rng.normal(size=shape))).astype(dtype)
    if g.size > 1:
        g.reshape(-1)[-1] = -2.5  # one clear outlier
    check(compare_arrays(g, ref, dtype=dtype, tol=1e-5), g, ref, dtype=dtype, tol=1e-5)


def test_nonfinite_values_are_counted_located_and_masked(rng):
    ref = rng.normal(size=(3, 4))
    g = ref.astype(np.float32)
    g[1, 2], g[2, 0], g[2, 3] = np.nan, np.inf, -np.inf
    m = compare_arrays(g, ref, dtype="float32", tol=1e-5)
    assert (m.status, m.nan, m.inf, m.first_nonfinite) == ("nonfinite", 1, 2, (1, 2))
    assert m.rel_norm < 1e-6 and m.mismatched == 3  # the rest agrees; the 3 count as off
    bad_ref = ref.copy()
    bad_ref[0, 1] = np.inf
    m = compare_arrays(ref, bad_ref, dtype="float64", tol=1e-10)
    assert (m.status, m.nan, m.inf, m.first_nonfinite) == ("nonfinite", 0, 0, (0, 1))


def test_a_zero_size_array_has_no_ulps():
    m = compare_arrays(np.zeros((0, 3)), np.zeros((0, 3)), dtype="float32", tol=1e-5)
    assert (m.size, m.ulp_max, m.max_abs, m.worst_index, m.status) == (0, None, 0.0, (), "match")


def test_shapes_must_agree():
    with pytest.raises(InputError, match=r"shapes differ: candidate \(4,\), reference \(3,\)"):
        compare_arrays(np.zeros(4), np.zeros(3), dtype="float32", tol=1e-5)


def test_ulp_distance_counts_representable_values_across_zero():
    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    a = np.array([-tiny, 1.0, -0.0], dtype=np.float32)
    b = np.array([tiny, np.nextafter(np.float32(1), np.float32(2)), 0.0], dtype=np.float32)
    assert ulp_distance(a, b, "float32").tolist() == [2, 1, 0]


def test_to_dict_writes_json_ready_values():
    m = compare_arrays(np.array([np.nan, 1.0]), np.array([1.0, 1.0]), dtype="float64", tol=1e-10)
    out = m.to_dict()
    assert set(out) == set(Metrics.__dataclass_fields__)
    assert out["first_nonfinite"] == [0] and out["worst_index"] == [0]
    assert [json_float(v) for v in (math.nan, math.inf, -math.inf, 0.5, None)] == [
        "nan",
        "inf",
        "-inf",
        0.5,
        None,
    ]


def test_docstring_examples():
    result = doctest.testmod(xgrad.metrics.definition, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
