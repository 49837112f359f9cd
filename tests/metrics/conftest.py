"""The plain formulas of every metric, written out here independently (elementwise, in
float64), as the oracle for both the definition and the fused engine; and a fixture that
sends entries of two chunks to the fused pass's threads."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

import xgrad.metrics.fused as fused

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


def check_plain(m, g, ref, *, dtype: str, tol: float) -> None:
    """``m`` holds the plain formulas' metrics of ``g`` against ``ref``."""
    want = plain(g, ref, dtype=dtype, tol=tol)
    for key in ("ulp_max", "mismatched", "worst_value", "worst_reference", "status"):
        assert getattr(m, key) == want[key], key
    index = np.unravel_index(want["flat_worst"], np.shape(g))
    assert m.worst_index == tuple(int(i) for i in index)
    for key in ("max_abs", "max_rel", "rel_norm", "cosine"):
        assert getattr(m, key) == pytest.approx(want[key], rel=1e-9, abs=1e-300), key
    assert (m.nan, m.inf, m.first_nonfinite, m.size) == (0, 0, None, np.size(ref))


@pytest.fixture(scope="session")
def check():
    """:func:`check_plain`, for the tests of each module."""
    return check_plain


@pytest.fixture
def threads(monkeypatch):
    """Entries of two chunks already go to the threads of the fused pass."""
    monkeypatch.setattr(fused, "PARALLEL_CHUNKS", 2)
