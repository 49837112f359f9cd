"""A nonfinite comparison says which side holds the NaN/Inf and how many: a reference with NaN
rows (a -inf mask fill on fully masked rows) was reported as the candidate's, with the
candidate's counts ("in flax.nnx: nonfinite (0 NaN, 0 Inf, first at (1, 0))")."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import xgrad
from xgrad.metrics import compare_arrays

SPEC = xgrad.MLP(4, [xgrad.Dense(3)])


def _nan_rows() -> tuple[np.ndarray, np.ndarray]:
    """``(finite candidate (2, 3, 4), reference with rows (1, 0) and (1, 2) NaN)``: 8 NaN,
    the first at (1, 0, 0) in C order."""
    ref = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7.0
    ref[1, 0], ref[1, 2] = np.nan, np.nan
    return np.nan_to_num(ref, nan=0.5).astype(np.float32), ref


def test_a_reference_with_nan_rows_is_counted_on_the_references_side():
    cand, ref = _nan_rows()
    m = compare_arrays(cand, ref, dtype="float32", tol=1e-5)
    assert (m.status, m.nan, m.inf, m.ref_nan, m.ref_inf) == ("nonfinite", 0, 0, 8, 0)
    assert m.first_nonfinite == (1, 0, 0)
    assert m.nonfinite_text("flax.nnx") == (
        "the reference has 8 NaN and 0 Inf, the first at (1, 0, 0); flax.nnx's values are finite"
    )


def test_a_candidate_with_nan_and_inf_is_counted_on_its_side_and_both_when_both_are():
    ref = np.linspace(-1.0, 1.0, 12).reshape(3, 4)
    cand = ref.copy()
    cand[1, 2], cand[2, 0], cand[2, 3] = np.nan, np.inf, -np.inf
    m = compare_arrays(cand, ref, dtype="float64", tol=1e-10)
    assert (m.nan, m.inf, m.ref_nan, m.ref_inf) == (1, 2, 0, 0)
    assert m.nonfinite_text("torch") == (
        "torch has 1 NaN and 2 Inf, the first at (1, 2); the reference's values are finite"
    )
    ref = ref.copy()
    ref[0, 1] = np.nan
    both = compare_arrays(cand, ref, dtype="float64", tol=1e-10)
    assert both.nonfinite_text("torch") == (
        "torch has 1 NaN and 2 Inf, the first at (1, 2); the reference has 1 NaN and 0 Inf"
    )


def test_the_summary_and_the_mismatch_message_name_the_reference_as_the_side_with_nan():
    cand, ref = _nan_rows()
    report = xgrad.compare(SPEC, np.ones((2, 4)), frameworks=["numpy"], dtype="float64")
    m = compare_arrays(cand, ref, dtype="float32", tol=1e-5)
    output = replace(report.output, shape=ref.shape, results={"numpy": m})
    report = replace(report, output=output)
    assert not report.ok
    assert report.summary().endswith(
        "worst output in numpy: nonfinite (the reference has 8 NaN and 0 Inf, the first at "
        "(1, 0, 0); numpy's values are finite)"
    ), report.summary()
    assert (
        "Not finite: the reference has 8 NaN and 0 Inf, the first at (1, 0, 0); numpy's "
        "values are finite" in report.mismatch_message()
    )
