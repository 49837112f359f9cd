"""Structure: a skip connection missing on one side, a dropout left active."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.diagnosis.records import Cause, Finding, drop
from xgrad.identify import rel

__all__ = ["CAUSES"]


def residual_missing(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    if unit.skip_cand or unit.block_input_ref is None:
        return None
    without = unit.output_ref - unit.block_input_ref
    residual = rel(unit.output_cand, without)
    if residual > ev.fit_tol:
        return None
    return Finding(
        f"the reference adds a skip connection around block {unit.path} (x + f(x)); the "
        f"candidate computes the block's layers without it (f(x)); with f(x) on both sides "
        f"{drop(before, residual)}",
        residual,
        before,
    )


def dropout_active(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The candidate's output is the reference's with units zeroed and the rest scaled by
    one factor ``1 / (1 - rate)``: a dropout in training mode."""
    ref, cand = unit.output_ref, unit.output_cand
    significant = np.abs(ref) > 1e-6 * max(float(np.abs(ref).max()), 1e-30)
    if significant.sum() < 4:
        return None
    ratio = cand[significant] / ref[significant]
    dropped = np.abs(ratio) < 1e-6
    kept = ratio[~dropped]
    if not dropped.any() or kept.size == 0:
        return None
    factor = float(np.median(kept))
    if factor <= 1 or not np.allclose(kept, factor, rtol=max(ev.fit_tol, 1e-6) * 10):
        return None
    rate = 1 - 1 / factor
    rebuilt = np.where(np.abs(cand) > 0, ref * factor, 0.0)
    residual = rel(cand, rebuilt)
    return Finding(
        f"{int(dropped.sum())} of {int(significant.sum())} values are zeroed and the rest "
        f"scaled by {factor:.4g}: the candidate applies dropout with rate {rate:.3g} (training "
        "mode); switch it off for the comparison: module.eval() (PyTorch, Flax NNX), "
        "deterministic=True (Flax), training=False (Keras). With that mask applied to the "
        f"reference, {drop(before, residual)}",
        residual,
        before,
    )


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
