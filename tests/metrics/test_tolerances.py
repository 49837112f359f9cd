"""The tolerance table, its override, the note on an rtol below rounding, and the status rule
(xgrad/metrics/tolerances.py)."""

from __future__ import annotations

import math
import re

import pytest

from xgrad.errors import InputError
from xgrad.metrics import NOISE_FLOORS, OK_STATUSES, STATUSES, TOLERANCES, rtol_note, tolerance
from xgrad.metrics.tolerances import UNIT_ROUNDOFF, status_of


def test_every_dtype_has_a_tolerance_above_its_unit_roundoff_and_a_noise_floor():
    assert set(TOLERANCES) == set(UNIT_ROUNDOFF) == set(NOISE_FLOORS)
    for dtype, tol in TOLERANCES.items():
        assert tol > UNIT_ROUNDOFF[dtype], dtype
    assert set(OK_STATUSES) <= set(STATUSES)


def test_tolerance_reads_the_table_or_takes_the_override():
    assert tolerance("float32") == 1e-5
    assert tolerance("float32", 3e-4) == 3e-4
    assert tolerance("float64", 1) == 1.0


@pytest.mark.parametrize("bad", [0, -1e-3, math.inf, math.nan, True, "1e-5"])
def test_a_bad_rtol_is_refused(bad):
    with pytest.raises(InputError, match=re.escape(f"positive finite number, got {bad!r}")):
        tolerance("float32", bad)


def test_an_unknown_dtype_is_refused_with_the_known_ones():
    with pytest.raises(InputError, match="no tolerance for dtype 'int8'; known: float64, float32"):
        tolerance("int8")


def test_rtol_note_only_below_the_unit_roundoff():
    assert rtol_note(None, "float32") is None
    assert rtol_note(1e-7, "float32") is None  # above 2**-24 = 6e-8
    assert rtol_note(1e-9, "bfloat16x") is None  # no roundoff known
    note = rtol_note(1e-8, "float32", what="cells")
    assert note == (
        "rtol 1e-08 is below float32's unit roundoff (6.0e-08): float32 cells mismatch on "
        "rounding alone (its default tolerance is 1e-05)"
    )


def test_status_is_relative_unless_the_reference_is_zero_up_to_rounding():
    # relative: 1e-6 of a norm of 1 is a match at 1e-5, 1e-4 is not
    assert status_of(norm=1.0, diff_norm=1e-6, size=4, dtype="float32", tol=1e-5) == "match"
    assert status_of(norm=1.0, diff_norm=1e-4, size=4, dtype="float32", tol=1e-5) == "mismatch"
    # a reference of RMS below the float32 floor (1e-6): the difference is judged absolutely
    floor = NOISE_FLOORS["float32"] * math.sqrt(100)
    assert status_of(norm=0.0, diff_norm=floor, size=100, dtype="float32", tol=1e-5) == "match"
    assert (
        status_of(norm=floor / 2, diff_norm=floor * 1.01, size=100, dtype="float32", tol=1e-5)
        == "mismatch"
    )


def test_a_measured_noise_floor_passes_a_difference_of_its_size_whatever_rel_norm():
    # A gradient of norm 1e-3 that sums terms of order 1: float32 rounding of 3e-7 is 3e-4
    # of it. Within the measured noise it matches; beyond it the relative rule decides.
    args = {"norm": 1e-3, "size": 8, "dtype": "float32", "tol": 1e-5}
    assert status_of(diff_norm=3e-7, **args) == "mismatch"  # 3e-4 relative
    assert status_of(diff_norm=3e-7, noise=4e-7, **args) == "match"
    assert status_of(diff_norm=5e-7, noise=4e-7, **args) == "mismatch"
