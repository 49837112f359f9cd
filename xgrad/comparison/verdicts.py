"""The verdict policy: what passes beyond the plain per-entry tolerance, and what cannot pass.

Three rules change statuses after the entries are measured (:mod:`xgrad.comparison.entries`);
each is stated in docs/tolerances.md. The first and the last read the rounding each
reference gradient carries, measured by re-running the reference with its inputs moved by a
few units of roundoff (:mod:`xgrad.comparison.spread`), only when a gradient fails or every
gradient is small:

* **uninformative** (:func:`mark_uninformative`): when every reference gradient is within
  its own rounding (the loss does not depend on the parameters, or nothing flows back to
  them), nothing can be compared, and every gradient entry fails as ``uninformative``;
* **an ill-conditioned loss** (:func:`widen_for_conditioning`): when the loss turns a side's
  own output rounding into a gradient difference larger than the tolerance (saturated
  ``bce``/``cce``), that side's gradients are judged at a wider tolerance, said in a note;
* **cancelling sums** (:func:`judge_cancelling`): a gradient that is a small sum of large
  terms carries rounding of the terms' size; a side that differs from the reference by
  no more than :data:`~xgrad.metrics.RELATIVE_NOISE` times that rounding matches, said in a
  note; one that is zero up to that rounding (an attention's key bias) is judged against
  the tolerance applied to the size of its terms instead, whatever its relative difference;
* **16-bit rounding** (:func:`judge_low_precision`): a 16-bit side's gradient that differs
  from the float64 reference by no more than
  :data:`~xgrad.metrics.tolerances.LOW_PRECISION_NOISE` times the rounding of the same
  model computed in 16 bits (:func:`~xgrad.comparison.spread.low_precision_rounding`)
  matches, said in a note; the fixed 16-bit tolerances do not grow with depth, a 16-bit
  computation's error does.

:func:`wants_explanation` decides whether the diagnosis phase runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from xgrad.comparison.entries import Comparison
from xgrad.comparison.inputs import Inputs
from xgrad.comparison.sides import Side
from xgrad.comparison.spread import (
    LOW_PRECISION,
    NUDGE,
    Spread,
    low_precision_rounding,
    reference_spread,
)
from xgrad.frameworks.base import DTYPES
from xgrad.losses import Loss
from xgrad.metrics.tolerances import (
    LOW_PRECISION_NOISE,
    RELATIVE_NOISE,
    UNIT_ROUNDOFF,
    status_of,
    zero_floor,
)
from xgrad.report import Entry, LayerEntry, Report

__all__ = [
    "CONDITIONING",
    "INFORMATIVE",
    "MAX_WIDENED",
    "ZERO_GRADIENT",
    "Judged",
    "conditioning",
    "consensus_note",
    "judge",
    "judge_cancelling",
    "judge_low_precision",
    "mark_uninformative",
    "needs_spread",
    "wants_explanation",
    "widen_for_conditioning",
]

ZERO_GRADIENT = 16.0
"""The reference's gradients are zero up to rounding when, all together, their norm is at
most this many times their own rounding (how far they move when only rounding changes,
:mod:`xgrad.comparison.spread`): a relative rounding error of 6% or more, where no digit is
left for a tolerance to judge. A gradient the loss really depends on sits thousands of
times above its rounding, even a small sum of cancelling terms."""

INFORMATIVE = 1e4
"""One gradient more than this many times its own rounding (relative rounding below 1e-4)
is informative on its own, whatever the others: a ReLU kink crossed in both measuring runs
moves the gradients before it by far more than rounding, never those after it."""

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
    input: Entry | None
    layers: dict[str, LayerEntry]
    notes: list[str]
    degenerate: bool


def _seed(ref: Side, inputs: Inputs) -> np.ndarray | None:
    """dL/d output (float64), what every gradient of the model is a product of; ``None``
    for a pair of the user's loss functions."""
    if inputs.cotangent is not None:
        return np.asarray(inputs.cotangent, np.float64)
    if isinstance(inputs.loss, Loss):
        with np.errstate(all="ignore"):
            out = np.asarray(ref.grads.output, np.float64)
            return np.asarray(inputs.loss.value_and_grad(out, inputs.y)[1], np.float64)
    return None


def _rms(measured, name: str) -> float:
    m = measured[name]
    size = next(iter(m.results.values())).size if m.results else 0
    return m.ref_norm / math.sqrt(size) if size else 0.0


def _mark(entry: Entry, status: str = "uninformative") -> Entry:
    results = {fw: replace(m, status=status) for fw, m in entry.results.items()}
    return replace(entry, results=results)


def _gradient_names(entries, input_entry) -> list[str]:
    return [e.name for e in entries] + ([input_entry.name] if input_entry is not None else [])


def needs_spread(c: Comparison, entries, input_entry, measured) -> bool:
    """Whether the reference's rounding is worth two more evaluations of it: some side's
    gradient fails (the cancelling-sums rule may explain it), or the reference's gradients
    may be degenerate. The second is screened cheaply: degenerate gradients are rounding,
    the unit roundoff times the terms they sum, so they are far below dL/d output unless
    those terms are ``1 / sqrt(eps)`` times larger than it; above ``sqrt(eps)`` times it
    (or with your own loss functions, whose dL/d output xgrad cannot form) they are not
    looked at. The screen only saves the evaluation; the rule itself never compares with
    dL/d output."""
    names = _gradient_names(entries, input_entry)
    if not names:
        return False
    if any(
        m.status == "mismatch"
        for e in [*entries, *([input_entry] if input_entry is not None else [])]
        for m in e.results.values()
    ):
        return True
    largest = max(_rms(measured, n) for n in names)
    if largest == 0:
        return True
    seed = _seed(c.ref, c.inputs)
    if seed is None or not np.size(seed) or not np.all(np.isfinite(seed)):
        return False
    dtype = c.ref.model.dtype
    eps = float(np.finfo(dtype).eps) if dtype in DTYPES else 1e-2
    return largest <= math.sqrt(eps) * float(np.sqrt(np.mean(np.square(seed))))


def mark_uninformative(ref: Side, entries, input_entry, inputs: Inputs, measured, spread):
    """When every reference gradient is zero up to its own rounding (``spread``, a
    :class:`~xgrad.comparison.spread.Spread`, or ``None`` when not measured: nothing is
    marked), no comparison can see anything: those entries become ``uninformative`` (a
    failing status) and a note says why and what to do. The gradients are judged together
    (:data:`ZERO_GRADIENT`; none may be :data:`INFORMATIVE` on its own), never against
    dL/d output: a saturated ``bce`` has a huge dL/d output that the sigmoid cancels, and
    gradients of order 1. A single zero gradient among informative ones (a bias before a
    batch norm) is judged by the noise floor as usual.

    Returns:
        ``(entries, input entry, note or None)``.
    """
    names = _gradient_names(entries, input_entry)
    if spread is None or not names or any(n not in spread.norms for n in names):
        return entries, input_entry, None
    size = math.fsum(measured[n].ref_norm ** 2 for n in names)
    rounding = math.fsum(spread.norms[n] ** 2 for n in names)
    if not math.sqrt(size) <= ZERO_GRADIENT * math.sqrt(rounding):
        return entries, input_entry, None
    if any(0 < spread.norms[n] < measured[n].ref_norm / INFORMATIVE for n in names):
        return entries, input_entry, None
    note = _degenerate_note(ref, inputs, measured, names, spread)
    marked_input = None if input_entry is None else _mark(input_entry)
    return [_mark(e) for e in entries], marked_input, note


def _degenerate_note(ref: Side, inputs: Inputs, measured, names, spread: Spread) -> str:
    """Why nothing was compared: dL/d output is zero, nothing flows back, or it cancels."""
    what = inputs.loss_name or "given cotangent"
    seed = _seed(ref, inputs)
    if seed is not None and not np.any(seed):
        return (
            f"every reference gradient is zero: dL/d output is zero at every output (each "
            f"output equals its target, or lies past the clipping bound of the {what}), so no "
            "comparison can see anything; use loss='projection' (a seeded random direction, "
            "never degenerate) or other targets"
        )
    moved = math.sqrt(math.fsum(spread.norms[n] ** 2 for n in names))
    total = math.sqrt(math.fsum(measured[n].ref_norm ** 2 for n in names))
    how = (
        "exactly zero, and stay so when the inputs move"
        if total == moved == 0
        else f"zero up to rounding (norm {total:.2g}; they move by {moved:.2g} when the "
        f"inputs move by {NUDGE} units of roundoff)"
    )
    return (
        f"every reference gradient is {how}: the {what} does not depend on the parameters "
        "here (the sum of a softmax output is always 1), or nothing flows back to them (a "
        "ReLU dead on the whole batch), so no comparison can see anything; use "
        "loss='projection' (a seeded random direction, never degenerate) or a loss with "
        "targets, or check the model's activations at this input"
    )


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


def judge_cancelling(c: Comparison, parameters, input_entry, measured, spread) -> Judged:
    """Each side's failing gradient whose difference from the reference is within
    :data:`~xgrad.metrics.RELATIVE_NOISE` times the reference's own rounding there
    (``spread``, scaled to the judged dtype) matches: the gradient is a small sum of
    cancelling terms, and rounding of the terms' size is all that differs. Only up to a
    relative difference of :data:`MAX_WIDENED`, like the ill-conditioned loss: beyond, a
    floor would hide real differences.

    A gradient that is zero up to that rounding (:meth:`~xgrad.comparison.spread.Spread.zero`:
    zero in exact arithmetic, like an attention's key bias) has no digit a relative
    difference could judge: its difference is judged absolutely, against the tolerance
    applied to the size of the terms it sums (:func:`~xgrad.metrics.tolerances.zero_floor`),
    whatever its relative difference. A note per side names the gradients so judged."""
    cancelled: dict[str, list[str]] = {}
    zeros: dict[str, list[str]] = {}
    names = [n for n in _gradient_names(parameters, input_entry) if n in measured]
    total = math.sqrt(math.fsum(measured[n].ref_norm ** 2 for n in names))

    def rejudge(entry: Entry) -> Entry:
        noise = spread.noise(entry.name)
        if noise is None or entry.name not in measured:
            return entry
        ref_norm = measured[entry.name].ref_norm
        zero = spread.zero(entry.name, ref_norm, total)
        if not (ref_norm > 0 or zero):
            return entry
        floor = zero_floor(noise, c.dtype, c.tol) if zero else RELATIVE_NOISE * noise
        results = dict(entry.results)
        for label, m in entry.results.items():
            if m.status != "mismatch" or not (zero or m.rel_norm <= MAX_WIDENED):
                continue  # (beyond, the gradient is mostly rounding: no verdict of ours)
            # (a parameter's or input's norm is its own; of a zero reference, at most this)
            diff = m.rel_norm * ref_norm if ref_norm > 0 else m.max_abs * math.sqrt(m.size)
            status = status_of(
                norm=ref_norm, diff_norm=diff, size=m.size, dtype=c.dtype, tol=m.tol, noise=floor
            )
            if status == "match":
                results[label] = replace(m, status="match")
                (zeros if zero else cancelled).setdefault(label, []).append(
                    f"{entry.name} (norm {ref_norm:.2g}, its rounding {noise:.2g}, "
                    f"difference {diff:.2g})"
                )
        return replace(entry, results=results)

    parameters = [rejudge(e) for e in parameters]
    input_entry = None if input_entry is None else rejudge(input_entry)
    notes = [_cancelling_note(label, which, False, c) for label, which in cancelled.items()]
    notes += [_cancelling_note(label, which, True, c) for label, which in zeros.items()]
    return Judged(parameters, input_entry, {}, notes, degenerate=False)


def _cancelling_note(label: str, which: list[str], zero: bool, c: Comparison) -> str:
    """The note on the gradients of side ``label`` that :func:`judge_cancelling` matched."""
    listed = f"{'; '.join(which[:3])}{'; ...' if len(which) > 3 else ''}"
    measured = (
        f"measured by re-running the reference with its inputs moved by {NUDGE} units of "
        "roundoff each way"
    )
    if not zero:
        return (
            f"{label}: {len(which)} gradient(s) are small sums of large terms that cancel, so "
            f"they carry rounding of the terms' size, {measured}: {listed}; each difference "
            f"is within {RELATIVE_NOISE:g} times that rounding, so it matches"
        )
    return (
        f"{label}: {len(which)} gradient(s) are zero up to their rounding ({measured}): their "
        f"terms cancel exactly (as an attention's key bias: the softmax ignores a shift "
        f"shared by every key) or below {c.dtype}'s resolution, so no relative difference "
        f"means anything there: {listed}; each difference is within the tolerance "
        f"({c.tol:g}) of the size of the terms (their rounding over {c.dtype}'s unit "
        "roundoff), so it matches"
    )


def _failing(parameters, input_entry, layers) -> bool:
    entries = [*parameters, *([input_entry] if input_entry is not None else [])]
    results = [m for e in entries for m in e.results.values()]
    results += [m for e in layers.values() for m in (*e.forward.values(), *e.backward.values())]
    return any(m.status == "mismatch" for m in results)


def _layer_ends(c: Comparison) -> dict[str, str]:
    """Layer path -> the key of its output among the reference's captured values."""
    if c.ref.grads.activations is None or not c.alignments:
        return {}
    return {u.path: u.end for u, _ in next(iter(c.alignments.values())).pairs}


def judge_low_precision(c: Comparison, parameters, input_entry, layers, measured) -> Judged:
    """Each 16-bit side's failing gradient (or layer output, or ``dL/d`` it) whose
    difference from the float64 reference is within
    :data:`~xgrad.metrics.tolerances.LOW_PRECISION_NOISE` times the rounding of the same
    model computed in 16 bits there (:func:`~xgrad.comparison.spread.low_precision_rounding`,
    measured once, only when such a value fails) matches, and a note per side names the
    gradients. Never a relative difference above ``LOW_PRECISION_NOISE * sqrt(u)`` (0.25 in
    bfloat16, 0.088 in float16): a value whose 16-bit rounding comes near that has no digit
    left to judge in 16 bits; its mismatch stands, and a note says so and to compare in
    float32. Nothing changes for other dtypes, for :func:`xgrad.compare_models` (its
    reference is your own model) or when nothing fails."""
    unchanged = Judged(list(parameters), input_entry, dict(layers), [], degenerate=False)
    if c.dtype not in LOW_PRECISION or not _failing(parameters, input_entry, layers):
        return unchanged
    names = [n for n in _gradient_names(parameters, input_entry) if n in measured]
    ends = _layer_ends(c)
    rounding = low_precision_rounding(
        c.ref, c.inputs, names, c.dtype, [ends[p] for p in layers if p in ends]
    )
    if rounding is None:
        return unchanged
    limit = math.sqrt(UNIT_ROUNDOFF[c.dtype])
    matched: dict[str, list[str]] = {}
    beyond: dict[str, str] = {}

    def rejudge(results: dict, name: str, key: str, ref_norm: float) -> dict:
        noise = rounding.noise(key)
        if noise is None or not ref_norm > 0:
            return results
        results = dict(results)
        for label, m in results.items():
            if m.status != "mismatch":
                continue
            if m.rel_norm * ref_norm <= LOW_PRECISION_NOISE * min(noise, limit * ref_norm):
                results[label] = replace(m, status="match")
                matched.setdefault(label, []).append(
                    f"{name} (difference {m.rel_norm:.2g}, its {c.dtype} rounding "
                    f"{noise / ref_norm:.2g})"
                )
            elif noise > limit * ref_norm:
                beyond[name] = f"{name} ({noise / ref_norm:.2g} of it)"
        return results

    def entry(e: Entry) -> Entry:
        ref_norm = measured[e.name].ref_norm if e.name in measured else 0.0
        return replace(e, results=rejudge(e.results, e.name, e.name, ref_norm))

    def layer(path: str, e: LayerEntry) -> LayerEntry:
        end = ends.get(path)
        if end is None:
            return e
        out = c.ref.grads.activations.get(end)
        grad = (c.ref.grads.activation_grads or {}).get(end)
        if out is not None:
            norm = float(np.linalg.norm(np.asarray(out, np.float64)))
            e = replace(e, forward=rejudge(e.forward, f"{path} output", f"{end}:output", norm))
        if grad is not None:
            norm = float(np.linalg.norm(np.asarray(grad, np.float64)))
            e = replace(e, backward=rejudge(e.backward, f"dL/d {path}", f"{end}:grad", norm))
        return e

    parameters = [entry(e) for e in parameters]
    input_entry = None if input_entry is None else entry(input_entry)
    layers = {path: layer(path, e) for path, e in layers.items()}
    notes = [_low_precision_note(label, which, c.dtype) for label, which in matched.items()]
    if beyond:
        which = list(beyond.values())
        listed = f"{'; '.join(which[:3])}{'; ...' if len(which) > 3 else ''}"
        notes.append(
            f"{len(which)} failing value(s) carry {c.dtype} rounding of more than "
            f"{limit:.2g} of themselves (this model computed in float16, scaled to "
            f"{c.dtype}): {listed}; a {c.dtype} comparison has no digit left to judge "
            "there, so their mismatch says nothing about the port: compare in float32"
        )
    return Judged(parameters, input_entry, layers, notes, degenerate=False)


def _low_precision_note(label: str, which: list[str], dtype: str) -> str:
    """The note on the gradients of side ``label`` that :func:`judge_low_precision` matched."""
    listed = f"{'; '.join(which[:3])}{'; ...' if len(which) > 3 else ''}"
    scaled = "" if dtype == "float16" else f", scaled to {dtype}'s unit roundoff"
    return (
        f"{label}: {len(which)} value(s) differ from the float64 reference by {dtype} "
        f"rounding: each difference is within {LOW_PRECISION_NOISE:g} times how far this "
        f"model computed in float16 (every weight and operation rounded to 11 bits{scaled}) "
        f"lands from the reference there, so it matches ({listed}). A 16-bit error grows with "
        f"the operations a value passes through; at {dtype} a difference below that "
        "cannot be seen: compare in float32 to check conventions"
    )


def judge(c: Comparison, entries, input_entry, layers, measured) -> Judged:
    """The rules, in order: uninformative first (when nothing flows back, the backward
    values of layers say nothing either), then the ill-conditioned loss, then cancelling
    sums, then 16-bit rounding. The reference's rounding is measured once per comparison,
    only when a gradient fails or every gradient is small (:func:`needs_spread`); its
    16-bit rounding only when a 16-bit gradient still fails."""
    spread = None
    if needs_spread(c, entries, input_entry, measured):
        names = _gradient_names(entries, input_entry)
        spread = reference_spread(c.ref, c.inputs, names, c.dtype, c.tol)
    entries, input_entry, degenerate = mark_uninformative(
        c.ref, entries, input_entry, c.inputs, measured, spread
    )
    judged = widen_for_conditioning(c, entries, input_entry, layers)
    if degenerate:
        layers = {
            path: replace(e, backward=_mark_all(e.backward)) for path, e in judged.layers.items()
        }
        return Judged(judged.parameters, judged.input, layers, [*judged.notes, degenerate], True)
    if spread is not None:
        cancelling = judge_cancelling(c, judged.parameters, judged.input, measured, spread)
        notes = [*judged.notes, *cancelling.notes]
        judged = Judged(cancelling.parameters, cancelling.input, judged.layers, notes, False)
    low = judge_low_precision(c, judged.parameters, judged.input, judged.layers, measured)
    return Judged(low.parameters, low.input, low.layers, [*judged.notes, *low.notes], False)


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
