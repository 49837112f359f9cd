"""Why the two runs part: the diagnosis of the first divergence, and what float32 cannot see.

In this order, at the first step where a weight is beyond tolerance:

1. **gradients**: :func:`xgrad.compare_models` on the two models as they were at that step
   (the candidate given the reference's weights). If the gradients already differ, the
   optimizers are not to blame: the report hands over to that gradient report and its
   diagnosis.
2. **the reference's own rule**: without it (an optax transformation whose rule was not
   named), nothing can be replayed; if the reference itself left its rule (the referee),
   xgrad's reading of its optimizer is incomplete: ``unexplained``.
3. **optimizer conventions**: the candidate's gradients are replayed through the
   alternatives of :data:`~xgrad.training.OPTIMIZER_CAUSES`; a cause is confirmed when its
   replay lands within the step's tolerance of the candidate's weights.

In float32, when the runs agree (or part unexplained), :func:`precision` says which
convention differences are too small to show at that precision with these gradients.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xgrad.runner import Inputs, compare_models
from xgrad.training import replay
from xgrad.training.causes import Context
from xgrad.training.report import Divergence, OptimizerDiagnosis, PrecisionNote, step_tolerance
from xgrad.training.rules import Arrays, Rule

__all__ = ["Divergent", "History", "diagnose", "precision"]


@dataclass
class History:
    """The run so far, in the reference's names, float64 (trained parameters only).

    Attributes:
        start: the reference's starting weights; cand_start: the candidate's.
        ref_grads, cand_grads: each side's gradients at each step.
        cand_weights: the candidate's weights after each step.
        dtype: the run's dtype; tol: its base tolerance.
    """

    start: Arrays
    dtype: str
    tol: float
    cand_start: Arrays = field(default_factory=dict)
    ref_grads: list[Arrays] = field(default_factory=list)
    cand_grads: list[Arrays] = field(default_factory=list)
    cand_weights: list[Arrays] = field(default_factory=list)


@dataclass
class Divergent:
    """The first divergence and what was evaluated at that step.

    Attributes:
        divergence: where the runs part.
        reference, candidate: the models as they were when that step's gradients were
            taken.
        batch: that step's batch.
        ref_drift: the reference's distance from its own rule (the referee) at that step.
    """

    divergence: Divergence
    reference: object
    candidate: object
    batch: Inputs
    ref_drift: float | None = None


def _unexplained(step: int, detail: str, before=None, residual=None) -> OptimizerDiagnosis:
    return OptimizerDiagnosis("unexplained", step, detail, False, residual, before)


def diagnose(
    at: Divergent,
    history: History,
    rule: Rule | None,
    cand_rule: Rule | None,
    *,
    loss,
    mapping,
    rtol,
) -> tuple[list[OptimizerDiagnosis], object | None]:
    """The tested explanations of the first divergence, and the gradient report (a
    :class:`~xgrad.Report`) when the gradients already differ there."""
    t = at.divergence.step
    limit = step_tolerance(history.tol, t)
    report = compare_models(
        at.reference,
        at.candidate,
        at.batch.x,
        at.batch.y,
        loss=loss,
        mapping=mapping,
        transfer=True,
        rtol=rtol,
    )
    if not report.ok:
        lines = report.diagnosis_lines()
        detail = (
            f"the gradients already differ at step {t}, at the same weights: "
            f"{report.summary()}; see report.gradient_report"
            + (f"; its diagnosis: {lines[0].removeprefix('diagnosis: ')}" if lines else "")
        )
        return [OptimizerDiagnosis("gradients", t, detail, True)], report
    if rule is None:
        return [
            _unexplained(
                t,
                "the gradients agree at the same weights, so the optimizers differ; but the "
                "reference's rule is unknown, so no convention can be replayed (name it: "
                "(tx, xgrad.training.Adam(...)) for optax)",
            )
        ], None
    if at.ref_drift is not None and at.ref_drift > limit:
        return [
            _unexplained(
                t,
                f"the reference's own weights are {at.ref_drift:.2g} from its rule as read "
                f"({rule.describe()}), beyond the tolerance {limit:.2g}: its optimizer computes "
                "something xgrad's reading of it does not capture",
                before=at.ref_drift,
            )
        ], None
    ev = replay.Evidence(
        history.cand_start, history.cand_grads, history.cand_weights, t, history.dtype, history.tol
    )
    before = ev.residual(rule)
    if before <= limit:
        return [
            _unexplained(
                t,
                f"both sides follow the reference's rule within tolerance ({before:.2g} vs "
                f"{limit:.2g} for the candidate) and their gradients agree at the same weights; "
                "the runs part by accumulated rounding (gradients at nearby weights)",
                before=before,
                residual=before,
            )
        ], None
    found = replay.explain_step(ev, Context(rule, cand_rule, _fitted_lr(rule, ev)))
    if not found:
        known = f" (its rule as read: {cand_rule.describe()})" if cand_rule is not None else ""
        return [
            _unexplained(
                t,
                f"the candidate's optimizer{known} is {before:.2g} from the reference's rule "
                f"({rule.describe()}) at step {t}, and no known convention brings it within "
                f"{limit:.2g}",
                before=before,
            )
        ], None
    out = []
    for alt, residual in found:
        together = [a.cause for a, _ in found if a is not alt]
        also = f" (together with {', '.join(together)})" if together else ""
        out.append(
            OptimizerDiagnosis(
                alt.cause,
                t,
                f"{alt.detail}{also}; replaying the candidate's gradients with it, the "
                f"error drops from {before:.2g} to {residual:.2g} (tolerance {limit:.2g})",
                True,
                residual=residual,
                before=before,
            )
        )
    return out, None


def _fitted_lr(rule: Rule, ev: replay.Evidence) -> float | None:
    """The learning rate that maps the reference rule's first update onto the candidate's
    (least squares over every weight), or ``None`` for a schedule."""
    if callable(rule.learning_rate) or not rule.learning_rate:
        return None
    first = replay.replay(rule, ev.start, ev.grads[:1])[0]
    want = ev.weights[0]
    u = np.concatenate([(first[k] - ev.start[k]).ravel() for k in first])
    v = np.concatenate([(want[k] - ev.start[k]).ravel() for k in first])
    den = float(u @ u)
    if not den or not np.all(np.isfinite(v)):
        return None
    return rule.learning_rate * float(u @ v) / den


def precision(history: History, rule: Rule, cand_rule: Rule | None) -> list[PrecisionNote]:
    """The convention differences too small to be seen in this run (see
    :func:`xgrad.training.replay.precision_notes`)."""
    ctx = Context(rule, cand_rule)
    found = replay.precision_notes(
        ctx, history.start, history.ref_grads, history.dtype, history.tol
    )
    return [PrecisionNote(alt.cause, alt.detail, effect, known) for alt, effect, known in found]
