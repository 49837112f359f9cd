"""Structure: a skip connection missing on one side, a dropout left active."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.records import Cause, Finding, check, drop

__all__ = ["CAUSES", "MIN_DROPOUT_RATE"]

MIN_DROPOUT_RATE = 1e-3
"""The smallest dropout rate ``dropout-active`` considers."""


def residual_missing(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    if unit.skip_cand or unit.block_input_ref is None:
        return None
    ref, cand = unit.output_ref, unit.output_cand
    if unit.block_output_ref is not None:  # layers after the block: compare before them
        ref, cand = unit.block_output_ref, unit.block_output_cand
    confirmed = check(ev, cand, ref - unit.block_input_ref, ref)
    return confirmed.finding(
        f"the reference adds a skip connection around block {unit.path} (x + f(x)); the "
        f"candidate computes the block's layers without it (f(x)); with f(x) on both sides "
        f"{drop(before, confirmed.residual)}",
        before,
    )


def _dropout_of(clean: np.ndarray, noisy: np.ndarray, tol: float):
    """``(rate, zeroed, significant, rebuilt)`` when ``noisy`` is ``clean`` with units zeroed
    and the rest scaled by one factor ``1 / (1 - rate)`` (a dropout in training mode), else
    ``None``; ``rebuilt`` is ``clean`` with that mask."""
    significant = np.abs(clean) > 1e-6 * max(float(np.abs(clean).max()), 1e-30)
    if significant.sum() < 4:
        return None
    ratio = noisy[significant] / clean[significant]
    dropped = np.abs(ratio) < 1e-6
    kept = ratio[~dropped]
    if not dropped.any() or kept.size == 0:
        return None
    factor = float(np.median(kept))
    # a rate below 0.1% is no dropout anyone configures: a factor of 1 up to rounding is
    # another function that zeroes some values and keeps the rest (relu against elu)
    if factor < 1 / (1 - MIN_DROPOUT_RATE) or not np.allclose(
        kept, factor, rtol=max(tol, 1e-6) * 10
    ):
        return None
    rebuilt = np.where(np.abs(noisy) > 0, clean * factor, 0.0)
    return 1 - 1 / factor, int(dropped.sum()), int(significant.sum()), rebuilt


def dropout_active(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """One side's output is the other's with units zeroed and the rest scaled by one factor
    ``1 / (1 - rate)``: a dropout in training mode (on the candidate, or on the reference:
    a PyTorch reference whose ``.eval()`` was forgotten)."""
    ref, cand = unit.output_ref, unit.output_cand
    for side, clean, noisy in (("candidate", ref, cand), ("reference", cand, ref)):
        found = _dropout_of(clean, noisy, ev.fit_tol)
        if found is None:
            continue
        rate, zeroed, significant, rebuilt = found
        if side == "candidate":  # the reference under the candidate's mask
            confirmed = check(ev, cand, rebuilt, ref)
        else:  # the reference's own layers without its dropout (run_unit skips it)
            try:
                clean_ref = run_unit(unit.layers_ref, unit.weights_ref, unit.input_ref)
            except (ValueError, KeyError):  # a layer unknown, or no moving statistics
                return None
            confirmed = check(ev, cand, clean_ref, ref)
        if not confirmed.confirmed:
            return None
        residual = confirmed.residual
        rerun = (
            "With that mask applied to the reference"
            if side == "candidate"
            else "With the reference's dropout switched off"
        )
        return Finding(
            f"{zeroed} of {significant} values are zeroed and the rest scaled by "
            f"{1 / (1 - rate):.4g}: the {side} applies dropout with rate {rate:.3g} (training "
            "mode); switch it off for the comparison: module.eval() (PyTorch, Flax NNX), "
            "deterministic=True (Flax), training=False (Keras). "
            f"{rerun}, {drop(before, residual)}",
            residual,
            before,
        )
    return None


CAUSES = (
    Cause(
        "residual-missing",
        "forward",
        ("residual",),
        "a skip connection (x + f(x)) on one side only",
        residual_missing,
    ),
    Cause(
        "dropout-active",
        "forward",
        (),
        "a dropout left in training mode on one side (units zeroed, the rest scaled)",
        dropout_active,
    ),
)
