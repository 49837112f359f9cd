"""Discrepancy metrics: the fused pass over every candidate of an entry against the plain
formulas, written out here independently (elementwise, in float64), on random arrays that
span several chunks, with NaN/Inf, zero references, other memory orders and threads."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

import xgrad.metrics.fused as fused
from xgrad.errors import InputError
from xgrad.metrics import CHUNK, PreparedReference, compare_arrays


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


# -- the plain formulas, element by element ----------------------------------------------

_BITS = {"float32": ("f", "i", np.float32), "float64": ("d", "q", np.float64)}


def _ulps(a: float, b: float, dtype: str) -> int:
    """ULPs between two floats rounded to ``dtype``: count through the sign-magnitude bit
    patterns (both zeros are the same point)."""
    ffmt, ifmt, ftype = _BITS[dtype]

    def key(v: float) -> int:
        bits = struct.unpack(ifmt, struct.pack(ffmt, float(ftype(v))))[0]
        magnitude = bits & ((1 << (8 * struct.calcsize(ifmt) - 1)) - 1)
        return -magnitude if bits < 0 else magnitude

    return abs(key(a) - key(b))


def plain(g, ref, *, dtype: str, tol: float) -> dict:
    """The documented metrics of ``g`` against ``ref`` (all finite), computed directly."""
    g = np.asarray(g, dtype=np.float64).reshape(-1)
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    diff = np.abs(g - r)
    scale = float(np.max(np.abs(r)))
    floor = float(np.finfo(_BITS[dtype][2]).eps) * scale or np.finfo(np.float64).tiny
    worst = int(np.argmax(diff))
    ref_norm = math.sqrt(math.fsum(r * r))
    diff_norm = math.sqrt(math.fsum(diff * diff))
    g_norm = math.sqrt(math.fsum(g * g))
    return {
        "max_abs": float(diff[worst]),
        "max_rel": float(np.max(diff / np.maximum(np.abs(r), floor))),
        "rel_norm": diff_norm / ref_norm,
        "cosine": math.fsum(g * r) / (g_norm * ref_norm),
        "ulp_max": max(_ulps(a, b, dtype) for a, b in zip(g, r, strict=True)),
        "mismatched": int(np.sum(diff > tol * (np.abs(r) + scale))),
        "flat_worst": worst,
        "worst_value": float(g[worst]),
        "worst_reference": float(r[worst]),
        "status": "match" if diff_norm / ref_norm <= tol else "mismatch",
    }


def check(m, g, ref, *, dtype: str, tol: float) -> None:
    want = plain(g, ref, dtype=dtype, tol=tol)
    for key in ("ulp_max", "mismatched", "worst_value", "worst_reference", "status"):
        assert getattr(m, key) == want[key], key
    index = np.unravel_index(want["flat_worst"], np.shape(g))
    assert m.worst_index == tuple(int(i) for i in index)
    for key in ("max_abs", "max_rel", "rel_norm", "cosine"):
        assert getattr(m, key) == pytest.approx(want[key], rel=1e-9, abs=1e-300), key
    assert (m.nan, m.inf, m.first_nonfinite, m.size) == (0, 0, None, np.size(ref))


@pytest.fixture
def threads(monkeypatch):
    """Entries of two chunks already go to the threads of the fused pass."""
    monkeypatch.setattr(fused, "PARALLEL_CHUNKS", 2)


def _candidates(rng, ref, n: int, dtype=np.float32):
    out = {}
    for i in range(n):
        g = (ref * (1 + 3e-7 * rng.normal(size=ref.shape))).astype(dtype)
        out[f"fw{i}"] = g
    return out


@pytest.mark.parametrize("shape", [(7,), (5, 3), (3, CHUNK // 2 + 7), (CHUNK * 2 + 11,)])
def test_fused_pass_equals_the_plain_formulas(rng, shape, threads):
    ref = rng.normal(size=shape)
    ref.reshape(-1)[0] = 0.0  # a zero reference element: max_rel's floor, ULPs across zero
    cands = _candidates(rng, ref, 3)
    bad = cands["fw1"].reshape(-1)
    bad[-1] = -3.5  # one clear outlier, in the last chunk
    bad[0] = -0.0  # -0.0 against +0.0: zero ULPs
    cands["fw2"].reshape(-1)[len(bad) // 2] *= -1  # a sign flipped in the middle
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(cands)
    for label, g in cands.items():
        check(measured.results[label], g, ref, dtype="float32", tol=1e-5)
    for (a, b), value in measured.differences.items():
        want = float(np.linalg.norm(cands[a].astype(np.float64) - cands[b]))
        assert value == pytest.approx(want, rel=1e-7, abs=1e-300)
    assert measured.ref_norm == pytest.approx(float(np.linalg.norm(ref)), rel=1e-12)


def test_fused_pass_reads_transposed_views_and_float64_candidates(rng, threads):
    ref = rng.normal(size=(CHUNK // 8 + 3, 64))
    base = (ref * (1 + 1e-6 * rng.normal(size=ref.shape))).astype(np.float32)
    cands = {
        "c_order": base,
        "transposed": np.ascontiguousarray(base.T).T,  # torch's kernels, handed over as views
        "float64": ref * (1 + 1e-9 * rng.normal(size=ref.shape)),
    }
    cands["transposed"][3, 5] = 9.0
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(cands)
    for label, g in cands.items():
        check(measured.results[label], g, ref, dtype="float32", tol=1e-5)
    assert measured.differences[("c_order", "transposed")] == pytest.approx(
        abs(9.0 - float(base[3, 5])), rel=1e-7
    )


def test_identical_candidates_are_exactly_zero_apart(rng, threads):
    ref = rng.normal(size=(CHUNK * 3,))
    g = (ref * (1 + 1e-6 * rng.normal(size=ref.shape))).astype(np.float32)
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(
        {"a": g, "b": g.copy()}
    )
    assert measured.differences[("a", "b")] == 0.0


@pytest.mark.parametrize("size", [9, CHUNK * 2 + 5])
def test_nonfinite_candidates_and_references_take_the_masked_way(rng, size, threads):
    ref = rng.normal(size=size)
    good = (ref * (1 + 1e-7)).astype(np.float32)
    with_nan = good.copy()
    with_nan[size - 2] = np.nan
    with_inf = good.copy()
    with_inf[1] = np.inf
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(
        {"good": good, "nan": with_nan, "inf": with_inf}
    )
    check(measured.results["good"], good, ref, dtype="float32", tol=1e-5)
    nan, inf = measured.results["nan"], measured.results["inf"]
    assert (nan.status, nan.nan, nan.inf, nan.first_nonfinite) == ("nonfinite", 1, 0, (size - 2,))
    assert (inf.status, inf.nan, inf.inf, inf.first_nonfinite) == ("nonfinite", 0, 1, (1,))
    # the finite elements are still measured: the rest agrees
    assert nan.rel_norm < 1e-6 and inf.rel_norm < 1e-6
    assert measured.differences[("good", "nan")] == math.inf
    assert measured.differences[("nan", "inf")] == math.inf
    bad_ref = ref.copy()
    bad_ref[3] = np.nan
    m = PreparedReference(bad_ref, dtype="float32", tol=1e-5).compare(good)
    assert m.status == "nonfinite" and m.first_nonfinite == (3,)


def test_a_zero_reference_is_judged_by_an_absolute_floor(threads):
    for size in (12, CHUNK * 2):
        ref = np.zeros(size)
        noise = np.full(size, 1e-8, dtype=np.float32)
        assert compare_arrays(noise, ref, dtype="float32", tol=1e-5).status == "match"
        loud = compare_arrays(noise * 1e4, ref, dtype="float32", tol=1e-5)
        assert loud.status == "mismatch" and loud.rel_norm == math.inf
        assert loud.max_abs == pytest.approx(1e-4)


def test_float64_runs_count_float64_ulps(rng, threads):
    ref = rng.normal(size=CHUNK + 9)
    g = ref.copy()
    g[5] = np.nextafter(np.nextafter(ref[5], np.inf), np.inf)  # two ULPs up
    g[-1] = -g[-1]  # across zero: a huge distance, measured exactly
    measured = PreparedReference(ref, dtype="float64", tol=1e-10).compare_many({"g": g})
    check(measured.results["g"], g, ref, dtype="float64", tol=1e-10)


def test_the_worst_element_is_the_first_of_equals_whatever_the_threads(rng, threads):
    ref = np.zeros(CHUNK * 4)
    ref[:] = 1.0
    g = ref.astype(np.float32)
    for i in (CHUNK * 3 + 1, CHUNK + 2, 5):  # three equal worst elements, in three chunks
        g[i] = 2.0
    m = PreparedReference(ref, dtype="float32", tol=1e-5).compare(g)
    assert m.worst_index == (5,) and m.mismatched == 3


def test_shapes_must_agree():
    with pytest.raises(InputError, match="shapes differ"):
        PreparedReference(np.zeros(3), dtype="float32", tol=1e-5).compare_many({"a": np.zeros(4)})
