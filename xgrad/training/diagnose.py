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
   replay keeps the candidate's weights within tolerance at every step of the run and no
   other cause does as well; when several do, each is reported unconfirmed, as ambiguous.
   When the reference's rule itself keeps the candidate within tolerance at the first
   divergence (a divergence at the tolerance's edge), the first later step where it does
   not is explained; when it does at every step, the runs part by rounding.

In float32, when the runs agree (or part unexplained), :func:`precision` says which
convention differences are too small to show at that precision with these gradients.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from xgrad.diagnosis.records import Finding
from xgrad.optim.rules import Arrays, Rule
from xgrad.runner import Inputs, compare_models
from xgrad.training import replay
from xgrad.training.causes import Context
from xgrad.training.report import Divergence, OptimizerDiagnosis, PrecisionNote, step_tolerance

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


def diagnose(
    at: Divergent,
    history: History,
    rule: Rule | None,
    cand_rule: Rule | None,
    *,
    loss,
    mapping,
    rtol,
    rule_note: str | None = None,
) -> tuple[list[OptimizerDiagnosis], object | None]:
    """The tested explanations of the first divergence, and the gradient report (a
    :class:`~xgrad.Report`) when the gradients already differ there; ``rule_note`` says
    why the reference's rule is unknown, when it is. The steps, in the module docstring's
    order: :func:`_gradients`, :func:`_without_replay`, :func:`_rounding`, then
    :func:`_conventions`."""
    t = at.divergence.step
    report = _gradient_report(at, loss=loss, mapping=mapping, rtol=rtol)
    if not report.ok:
        return [_gradients(report, t)], report
    stop = _without_replay(at, history, rule, rule_note)
    if stop is not None:
        return [stop], None
    ev = replay.CandidateRun(
        history.cand_start, history.cand_grads, history.cand_weights, t, history.dtype, history.tol
    )
    ratios = ev.ratios(rule)
    if max(ratios) <= 1:
        return [_rounding(ev, rule, len(ratios))], None
    return _conventions(ev, rule, cand_rule, _leaving_step(ratios, t), len(ratios)), None


def _gradient_report(at: Divergent, *, loss, mapping, rtol):
    """:func:`xgrad.compare_models` on the two models as they were at the diverging step,
    the candidate given the reference's weights."""
    return compare_models(
        at.reference,
        at.candidate,
        at.batch.x,
        at.batch.y,
        loss=loss,
        mapping=mapping,
        transfer=True,
        rtol=rtol,
    )


def _gradients(report, t: int) -> OptimizerDiagnosis:
    """The gradients already differ at the same weights: the optimizers are not to blame."""
    lines = report.diagnosis_lines()
    detail = (
        f"the gradients already differ at step {t}, at the same weights: "
        f"{report.summary()}; see report.gradient_report"
        + (f"; its diagnosis: {lines[0].removeprefix('diagnosis: ')}" if lines else "")
    )
    return OptimizerDiagnosis("gradients", detail, True, step=t)


def _without_replay(
    at: Divergent, history: History, rule: Rule | None, rule_note: str | None
) -> OptimizerDiagnosis | None:
    """``unexplained`` when nothing can be replayed: the reference's rule is unknown, or the
    reference itself left its rule as read (xgrad's reading of it is incomplete)."""
    t = at.divergence.step
    limit = step_tolerance(history.tol, t)
    if rule is None:
        return OptimizerDiagnosis.unexplained(
            "the gradients agree at the same weights, so the optimizers differ; but the "
            "reference's rule is unknown, so no convention can be replayed ("
            + (rule_note or "name it: (tx, xgrad.training.Adam(...)) for optax")
            + ")",
            step=t,
        )
    if at.ref_drift is not None and at.ref_drift > limit:
        return OptimizerDiagnosis.unexplained(
            f"the reference's own weights are {at.ref_drift:.2g} from its rule as read "
            f"({rule.describe()}), beyond the tolerance {limit:.2g}: its optimizer computes "
            "something xgrad's reading of it does not capture",
            before=at.ref_drift,
            step=t,
        )
    return None


def _rounding(ev: replay.CandidateRun, rule: Rule, last: int) -> OptimizerDiagnosis:
    """Both sides follow the reference's rule within tolerance at every step: the runs part
    by accumulated rounding (and with too few steps after the divergence, say so)."""
    t = ev.step
    limit = step_tolerance(ev.tol, t)
    before = ev.residual(rule)
    more = (
        f"; a different rule grows like the step count and rounding like its square root: "
        f"run more than {last} steps to tell them apart"
        if last <= t + 1
        else ""
    )
    return OptimizerDiagnosis.unexplained(
        f"both sides follow the reference's rule within tolerance ({before:.2g} vs "
        f"{limit:.2g} for the candidate at step {t}, and at every step up to {last}) "
        "and their gradients agree at the same weights; the runs part by accumulated "
        f"rounding (gradients at nearby weights){more}",
        before=before,
        residual=before,
        step=t,
    )


def _leaving_step(ratios: list[float], t: int) -> int:
    """The step where the candidate first leaves the reference's rule: ``t``, or later when
    the divergence at ``t`` is rounding at the tolerance's edge and the difference shows by
    a later step."""
    if any(r > 1 for r in ratios[t - 1 :]):
        return next(i for i, r in enumerate(ratios, start=1) if i >= t and r > 1)
    return t


def _conventions(
    ev: replay.CandidateRun, rule: Rule, cand_rule: Rule | None, k: int, last: int
) -> list[OptimizerDiagnosis]:
    """Replay the candidate's gradients through the causes' alternatives from step ``k``:
    confirmed causes, ambiguous ones, or ``unexplained``."""
    t = ev.step
    ev = dataclasses.replace(ev, step=k)
    limit = step_tolerance(ev.tol, k)
    before = ev.residual(rule)
    where = f"step {k}" + (
        f" (step {t}, the first divergence, is at the tolerance's edge)" if k != t else ""
    )
    context = Context(rule, cand_rule, replay.fitted_lr(rule, ev), ev.grads[0])
    found = replay.explain_step(ev, context)
    if not found:
        known = f" (its rule as read: {cand_rule.describe()})" if cand_rule is not None else ""
        return [
            OptimizerDiagnosis.unexplained(
                f"the candidate's optimizer{known} is {before:.2g} from the reference's rule "
                f"({rule.describe()}) at {where}, and no known convention, alone or combined, "
                f"keeps it within tolerance ({limit:.2g} at step {k}) over the {last} steps",
                before=before,
                step=t,
            )
        ]
    if len(found) > 1:
        return _ambiguous(found, t, k, last, before, limit)
    return _confirmed(found[0], t, where, last, before, limit)


def _together(fit: replay.Fit, alt) -> str:
    together = [a.cause for a in fit.alternatives if a is not alt]
    return f" (together with {', '.join(together)})" if together else ""


def _confirmed(
    fit: replay.Fit, t: int, where: str, last: int, before: float, limit: float
) -> list[OptimizerDiagnosis]:
    """Confirmed diagnoses, one per cause of the one explanation that fits the run."""
    same = (
        "; these fit as well (the run cannot tell them apart): " + "; or ".join(fit.equally[:3])
        if fit.equally
        else ""
    )
    return [
        OptimizerDiagnosis.of(
            alt.cause,
            Finding(
                f"{alt.detail}{_together(fit, alt)}; replaying the candidate's gradients with "
                f"it, the error at {where} drops from {before:.2g} to {fit.residual:.2g} "
                f"(tolerance {limit:.2g}), and stays within tolerance at every step up to "
                f"{last}{same}",
                fit.residual,
                before,
            ),
            step=t,
        )
        for alt in fit.alternatives
    ]


def _ambiguous(found, t: int, k: int, last: int, before: float, limit: float):
    """Unconfirmed diagnoses, one per explanation, when several fit the run equally."""
    out = []
    for fit in found:
        rivals = "; ".join(" + ".join(f.causes) for f in found if f is not fit)
        for alt in fit.alternatives:
            detail = (
                f"ambiguous: {alt.detail}{_together(fit, alt)} would explain it (the error at "
                f"step {k} drops from {before:.2g} to {fit.residual:.2g}, tolerance "
                f"{limit:.2g}), but so would {rivals}: the {last} steps cannot tell them "
                "apart; run more steps, or name the candidate's rule"
            )
            finding = Finding(detail, fit.residual, before, confirmed=False)
            out.append(OptimizerDiagnosis.of(alt.cause, finding, step=t))
    return out


def precision(history: History, rule: Rule, cand_rule: Rule | None) -> list[PrecisionNote]:
    """The convention differences too small to be seen in this run (see
    :func:`xgrad.training.replay.precision_notes`)."""
    ctx = Context(rule, cand_rule)
    found = replay.precision_notes(
        ctx, history.start, history.ref_grads, history.dtype, history.tol
    )
    return [PrecisionNote(alt.cause, alt.detail, effect, known) for alt, effect, known in found]
