"""Modes: several modules of one unit left in training mode together (a BatchNorm and a
Dropout), which neither ``batchnorm-mode`` nor ``dropout-active`` reproduces alone."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.records import Cause, Finding, check, drop
from xgrad.diagnosis.structure import _dropout_of
from xgrad.identify import rel
from xgrad.layers import BatchNorm, Dropout

__all__ = ["CAUSES", "TRAINING_FIXES"]

TRAINING_FIXES = {
    "torch": "module.eval() on the PyTorch side (it switches BatchNorm and Dropout together)",
    "flax.nnx": "model.eval() on the Flax NNX side (it switches BatchNorm and Dropout "
    "together), or use_running_average=True and deterministic=True",
    "flax.linen": "use_running_average=True (BatchNorm) and deterministic=True (Dropout) on the "
    "Flax Linen side",
    "tensorflow": "call the Keras model with training=False (and pass no training=True to its "
    "layers in call)",
    "jax": "your JAX function's training flag off: the moving statistics and no dropout mask",
}
"""The fix, by framework, for a side whose BatchNorm and Dropout are in training mode."""

ANY_FIX = (
    "module.eval() (PyTorch), model.eval() (Flax NNX), use_running_average=True and "
    "deterministic=True (Flax Linen), training=False (Keras)"
)
"""The fix where the side's framework is not known."""


def _fix(framework: str | None) -> str:
    name = (framework or "").split("[")[0]  # keras[jax]: Keras on another backend
    if name == "keras":
        name = "tensorflow"
    return TRAINING_FIXES.get(name, ANY_FIX)


def _modes(unit: UnitEvidence) -> dict[bool, np.ndarray]:
    """``training -> output`` of the reference's unit re-run on its own input and weights
    with its BatchNorm in each mode, dropout off (inference needs moving statistics: the
    reference's, else the candidate's where the reference keeps none)."""
    main = unit.main_ref
    out = {}
    for training in (main.training, not main.training):
        weights = dict(unit.weights_ref)
        if not training and not {"mean", "var"} <= set(weights):
            weights.update({k: v for k, v in unit.weights_cand.items() if k in ("mean", "var")})
            if not {"mean", "var"} <= set(weights):
                continue
        try:
            layers = [replace(main, training=training), *unit.layers_ref[1:]]
            out[training] = run_unit(layers, weights, unit.input_ref)
        except (ValueError, KeyError):
            continue
    return out


def _side_mode(output: np.ndarray, modes: dict[bool, np.ndarray], tol: float):
    """``(batchnorm training, dropout rate or None, rebuilt, zeroed, significant)``: the mode
    of the unit that reproduces ``output`` within ``tol`` (the BatchNorm's mode, and a dropout
    mask read from the zeros) and the reference's re-run in it, or ``None``."""
    for training, clean in modes.items():
        if rel(output, clean) <= tol:
            return training, None, clean, 0, 0
        found = _dropout_of(clean, output, tol)
        if found is not None:
            rate, zeroed, significant, rebuilt = found
            if rel(output, rebuilt) <= tol:
                return training, rate, rebuilt, zeroed, significant
    return None


def _in_training(side: str, mode, framework: str | None) -> str:
    training, rate, _, zeroed, significant = mode
    parts = ["BatchNorm normalises with the batch's own statistics"] if training else []
    if rate is not None:
        parts.append(
            f"Dropout zeroes {zeroed} of {significant} values (rate {rate:.3g}, the rest "
            f"scaled by {1 / (1 - rate):.4g})"
        )
    return f"the {side}'s {' and its '.join(parts)}: fix with {_fix(framework)}"


def training_mode(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """A BatchNorm and a Dropout of one unit both in training mode (a PyTorch or NNX model
    whose ``.eval()`` was forgotten, a Keras model called with ``training=True``), on one
    side or split between the two: neither ``batchnorm-mode`` nor ``dropout-active`` alone
    reproduces such a unit.

    The reference's unit is re-run on its own input and weights with its BatchNorm in each
    mode and no dropout; each side's output must be one of those re-runs, or one of them with
    units zeroed and the rest scaled by one factor (a dropout mask, read from the zeros).
    Confirmed (:func:`~xgrad.diagnosis.records.check`) when the two sides differ in both the
    BatchNorm's mode and the dropout, the reference is reproduced in its own mode, and the
    re-run in the candidate's modes (its mask applied) reproduces the candidate's output while
    the re-run in the reference's does not."""
    main = unit.main_ref
    layers = [*unit.layers_ref[1:], *unit.layers_cand[1:]]
    if not isinstance(main, BatchNorm) or not any(isinstance(lay, Dropout) for lay in layers):
        return None
    modes = _modes(unit)
    ref = _side_mode(unit.output_ref, modes, ev.fit_tol)
    cand = _side_mode(unit.output_cand, modes, ev.fit_tol)
    if ref is None or cand is None or ref[0] != main.training:
        return None  # a side no mode reproduces, or a reference read in another mode
    if ref[0] == cand[0] or (ref[1] is None) == (cand[1] is None):
        return None  # one module's mode differs at most: batchnorm-mode or dropout-active
    confirmed = check(ev, unit.output_cand, cand[2], ref[2], reference=unit.output_ref)
    if not confirmed.confirmed:
        return None
    residual = confirmed.residual
    sides = [
        _in_training(side, mode, framework)
        for side, mode, framework in (("reference", ref, None), ("candidate", cand, ev.framework))
        if mode[0] or mode[1] is not None
    ]
    return Finding(
        f"modules of this unit are in training mode: {'; '.join(sides)}. With the "
        f"candidate's modes re-run on the reference's unit {drop(before, residual)}",
        residual,
        before,
    )


CAUSES = (
    Cause(
        "training-mode",
        "forward",
        ("batchnorm",),
        "a BatchNorm and a Dropout of one unit both left in training mode (on one side, or "
        "split between the two)",
        training_mode,
    ),
)
