"""The verdict policy: what passes beyond the plain per-entry tolerance, and what cannot pass.

Two rules change statuses after the entries are measured (:mod:`xgrad.comparison.entries`);
both are stated in docs/tolerances.md:

* **uninformative** (:func:`mark_uninformative`): when every reference gradient is zero up to
  rounding, nothing can be compared, and every gradient entry fails as ``uninformative``;
* **an ill-conditioned loss** (:func:`widen_for_conditioning`): when the loss turns a side's
  own output rounding into a gradient difference larger than the tolerance (saturated
  ``bce``/``cce``), that side's gradients are judged at a wider tolerance, said in a note.

:func:`wants_explanation` decides whether the diagnosis phase runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from xgrad.comparison.entries import Comparison
from xgrad.comparison.inputs import Inputs
from xgrad.comparison.sides import Side
from xgrad.frameworks.base import DTYPES
from xgrad.losses import Loss
from xgrad.report import Entry, LayerEntry, Report

__all__ = [
    "CONDITIONING",
    "MAX_WIDENED",
    "ZERO_GRADIENT",
    "Judged",
    "conditioning",
    "consensus_note",
    "judge",
    "mark_uninformative",
    "wants_explanation",
    "widen_for_conditioning",
]

ZERO_GRADIENT = 64
"""A reference gradient whose RMS is below this many machine epsilons of the reference's
dtype, relative to the RMS of dL/d output, is zero up to rounding."""

MAX_WIDENED = 1e-2
"""Beyond this, a tolerance would hide real differences: the float64 reference is re-run
from the side's own outputs instead (:mod:`xgrad.diagnosis.rounding`)."""

CONDITIONING = 3.0
"""Gradients are judged at ``max(tol, CONDITIONING * kappa)``, where ``kappa`` is how much the
side's own output difference moves dL/d output through the loss (see :func:`conditioning`)."""


@dataclass(frozen=True)
class Judged:
    """The gradient entries after the verdict rules, and what the rules had to say."""

    parameters: list[Entry]
    input: Entry
    layers: dict[str, LayerEntry]
    notes: list[str]
    degenerate: bool


def _seed_scale(ref: Side, inputs: Inputs) -> float | None:
    """The RMS of dL/d output: what every gradient of the model is a product of."""
    if inputs.cotangent is not None:
        seed = inputs.cotangent
    elif isinstance(inputs.loss, Loss):
        with np.errstate(all="ignore"):
            seed = inputs.loss.value_and_grad(np.asarray(ref.grads.output, np.float64), inputs.y)[1]
    else:
        return None
    return float(np.sqrt(np.mean(np.square(seed)))) if np.size(seed) else None


def _mark(entry: Entry, status: str = "uninformative") -> Entry:
    results = {fw: replace(m, status=status) for fw, m in entry.results.items()}
    return replace(entry, results=results)


def mark_uninformative(ref: Side, entries, input_entry, inputs: Inputs, measured):
    """When every reference gradient is zero up to rounding, no comparison can see anything:
    those entries become ``uninformative`` (a failing status) and a note says why and what to
    do. A single zero gradient among informative ones (a bias before a batch norm) is judged
    by the absolute noise floor as usual. Each gradient's RMS comes from the reference norm
    its entry's metric pass measured.

    Returns:
        ``(entries, input entry, note or None)``.
    """
    scale = _seed_scale(ref, inputs)
    names = [e.name for e in entries] + ([input_entry.name] if input_entry is not None else [])
    if scale is None or scale == 0 or not names:
        return entries, input_entry, None
    rms = []
    for name in names:
        m = measured[name]
        size = next(iter(m.results.values())).size if m.results else 0
        rms.append(m.ref_norm / math.sqrt(size) if size else 0.0)
    eps = float(np.finfo(ref.model.dtype).eps) if ref.model.dtype in DTYPES else 1e-2
    if max(rms) > ZERO_GRADIENT * eps * scale:
        return entries, input_entry, None
    note = (
        f"every reference gradient is zero up to rounding (largest RMS {max(rms):.2g}, against "
        f"dL/d output {scale:.2g}): the {inputs.loss_name or 'given cotangent'} does not "
        "depend on the parameters here (the sum of a softmax output is always 1), so no "
        "comparison can see anything; use loss='projection' (a seeded random direction, never "
        "degenerate) or a loss with targets"
    )
    marked_input = None if input_entry is None else _mark(input_entry)
    return [_mark(e) for e in entries], marked_input, note


def conditioning(ref: Side, side: Side, inputs: Inputs, tol: float):
    """``(widened tolerance, kappa)`` when the loss amplifies the side's output rounding
    beyond ``tol``, else ``None``.

    ``kappa = ||g(out_side) - g(out_ref)|| / ||g(out_ref)||`` with ``g`` the float64 loss
    gradient: what the output difference alone does to every gradient (they are all linear in
    dL/d output). Saturated ``bce``/``cce`` outputs (``(1 - y) / (1 - p)`` near ``p = 1``) turn
    a one-ulp output difference into 1e-3 there. Elements that cross the clipping bound are
    left out: that is rounding of another kind (``match-clip``, see
    :mod:`xgrad.diagnosis.rounding`). Only the gradients are widened, never the output or the
    loss value, so a wrong forward computation is still caught.
    """
    loss = inputs.loss
    if not isinstance(loss, Loss) or inputs.y is None or inputs.cotangent is not None:
        return None
    out_ref = np.asarray(ref.grads.output, np.float64)
    out_side = np.asarray(side.grads.output, np.float64)
    if out_ref.shape != out_side.shape or not np.all(np.isfinite(out_side)):
        return None
    with np.errstate(all="ignore"):
        g_ref = loss.value_and_grad(out_ref, inputs.y)[1]
        g_side = loss.value_and_grad(out_side, inputs.y)[1]
    crossed = (g_ref == 0) != (g_side == 0)  # the clipping bound crossed: not this rule's
    g_side = np.where(crossed, g_ref, g_side)
    den = float(np.linalg.norm(g_ref))
    if den == 0 or not np.isfinite(den):
        return None
    kappa = float(np.linalg.norm(g_side - g_ref)) / den
    if CONDITIONING * kappa <= tol or CONDITIONING * kappa > MAX_WIDENED:
        return None  # nothing to widen; or too ill-conditioned for a tolerance to decide
    return CONDITIONING * kappa, kappa


def _rejudge(entry: Entry | None, label: str, tol: float) -> Entry | None:
    if entry is None:
        return None
    m = entry.results.get(label)
    if m is None or m.status != "mismatch" or m.rel_norm > tol:
        return entry
    return replace(entry, results={**entry.results, label: replace(m, status="match", tol=tol)})


def widen_for_conditioning(c: Comparison, entries, input_entry, layers) -> Judged:
    """Each side whose loss is ill-conditioned at its outputs (:func:`conditioning`) has its
    gradient entries (parameters, input, layers backward) judged at its widened tolerance; a
    note says so when that changed a status."""
    notes = []
    layers = dict(layers)
    for s in c.sides:
        widened = conditioning(c.ref, s, c.inputs, c.tol)
        if widened is None:
            continue
        side_tol, kappa = widened
        before = (entries, input_entry, dict(layers))
        entries = [_rejudge(e, s.label, side_tol) for e in entries]
        input_entry = _rejudge(input_entry, s.label, side_tol)
        for path, entry in layers.items():
            m = entry.backward.get(s.label)
            if m is not None and m.status == "mismatch" and m.rel_norm <= side_tol:
                backward = {**entry.backward, s.label: replace(m, status="match", tol=side_tol)}
                layers[path] = replace(entry, backward=backward)
        if (entries, input_entry, layers) == before:
            continue  # nothing needed the wider tolerance
        notes.append(
            f"{s.label}: the loss is ill-conditioned at these outputs: {s.label}'s output "
            f"differs from the reference's by its own rounding, which moves dL/d output by "
            f"{kappa:.2g} (relative); its gradients are judged at tolerance {side_tol:.2g}"
        )
    return Judged(list(entries), input_entry, layers, notes, degenerate=False)


def judge(c: Comparison, entries, input_entry, layers, measured) -> Judged:
    """Both rules, in order: uninformative first (when nothing flows back, the backward
    values of layers say nothing either), then the ill-conditioned loss."""
    entries, input_entry, degenerate = mark_uninformative(
        c.ref, entries, input_entry, c.inputs, measured
    )
    judged = widen_for_conditioning(c, entries, input_entry, layers)
    if not degenerate:
        return judged
    layers = {path: replace(e, backward=_mark_all(e.backward)) for path, e in judged.layers.items()}
    return Judged(judged.parameters, judged.input, layers, [*judged.notes, degenerate], True)


def _mark_all(results: dict) -> dict:
    return {fw: replace(m, status="uninformative") for fw, m in results.items()}


def wants_explanation(report: Report, explain: bool | None) -> bool:
    """Whether the diagnosis phase runs: ``explain=True`` always, ``None`` on a failure,
    ``False`` never; never when the comparison was uninformative (nothing to explain)."""
    if explain is False or report.uninformative:
        return False
    return explain is True or not report.ok


def consensus_note(pairs, failing: set[str], sides: int, tol: float) -> str | None:
    """A note when every side fails against the reference while agreeing with every other
    side within ``tol`` (``pairs``: :class:`~xgrad.report.Pairwise`): two or more frameworks
    computing the same thing point at the reference itself (a layer's NumPy definition or
    VJP, or your reference model), not at the frameworks."""
    if sides < 2 or len(failing) < sides or not pairs:
        return None
    worst = max(p.rel_norm for p in pairs)
    if not worst <= tol:
        return None
    return (
        f"all {sides} frameworks fail against the reference but agree with each other (largest "
        f"difference {worst:.2g}, tolerance {tol:g}): the reference itself is the likely "
        "culprit (a layer's NumPy forward or VJP, or the reference model), not the frameworks"
    )
