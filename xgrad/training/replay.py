"""The test of every optimizer cause: replay the candidate's gradients through a rule.

Replay the candidate's own gradients, step by step from its starting weights, through an
alternative rule in float64 NumPy, and compare the weights it reaches after every step with
the candidate's. An alternative is confirmed when it keeps the candidate within each step's
tolerance over the whole run while the reference's rule does not, and no alternative of
another cause does as well (one step cannot tell Nesterov from plain momentum; the next
can). When no single alternative is confirmed, the candidate's own rule is replayed when it
is known, then pairs of alternatives from two different causes (Keras' float64 Adam against
optax's differs both in epsilon and in float32-rounded hyperparameters), then combinations
of three or more; a learning rate is refitted to each.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xgrad.metrics import NOISE_FLOORS
from xgrad.optim.rules import Arrays, Rule
from xgrad.training.causes import (
    Alternative,
    Context,
    alternatives,
    learning_rates,
    rule_differences,
)
from xgrad.training.report import step_tolerance

__all__ = [
    "CandidateRun",
    "Fit",
    "explain_step",
    "fitted_lr",
    "precision_notes",
    "relative",
    "replay",
]


def relative(a: np.ndarray, b: np.ndarray, dtype: str) -> float:
    """``||a - b|| / ||b||`` in float64, with ``b``'s norm floored at the dtype's noise floor
    (:data:`xgrad.metrics.NOISE_FLOORS`) times ``sqrt(size)``: a weight that is zero up to
    rounding is judged absolutely. NaN/Inf give ``inf``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        num = float(np.linalg.norm(a - b))
        den = max(float(np.linalg.norm(b)), NOISE_FLOORS.get(dtype, 1e-14) * math.sqrt(b.size))
    if not math.isfinite(num):
        return math.inf
    return num / den if den else (0.0 if num == 0 else math.inf)


def replay(rule: Rule, start: Arrays, grads: Sequence[Arrays]) -> list[Arrays]:
    """The weights after each update of ``rule`` (float64 NumPy) from ``start`` with the
    recorded ``grads``, one dict per step."""
    params = {k: np.asarray(v, dtype=np.float64) for k, v in start.items()}
    state = rule.init(params)
    out = []
    with np.errstate(all="ignore"):
        for count, g in enumerate(grads):
            g64 = {k: np.asarray(g[k], dtype=np.float64) for k in params}
            updates, state = rule.update(g64, params, state, count)
            params = {k: params[k] + updates[k] for k in params}
            out.append(params)
    return out


@dataclass(frozen=True)
class CandidateRun:
    """The candidate's run, in the reference's names (float64): the evidence every optimizer
    cause is tested on (a gradient cause reads :class:`xgrad.diagnosis.evidence.Evidence`).

    Attributes:
        start: the candidate's starting weights.
        grads: its gradients at each step of the run.
        weights: its weights after each step.
        step: the step whose residual is reported (the first where the candidate is beyond
            tolerance of the reference's rule, from 1).
        dtype: the run's dtype; tol: its base tolerance.
    """

    start: Arrays
    grads: list[Arrays]
    weights: list[Arrays]
    step: int
    dtype: str
    tol: float

    def residuals(self, rule: Rule) -> dict[str, float]:
        """How far each of the candidate's weights at :attr:`step` is from ``rule``'s
        replay."""
        try:
            replayed = replay(rule, self.start, self.grads[: self.step])[-1]
        except Exception:  # a rule that cannot run on these arrays
            return {k: math.inf for k in self.start}
        target = self.weights[self.step - 1]
        return {k: relative(target[k], replayed[k], self.dtype) for k in target}

    def residual(self, rule: Rule) -> float:
        """How far the candidate's weights at :attr:`step` are from ``rule``'s replay (the
        largest over the weights)."""
        return max(self.residuals(rule).values())

    def ratios(self, rule: Rule, *, stop: bool = False) -> list[float]:
        """``residual / step tolerance`` after each step of the run (the steps from the
        first where the candidate's weights are not finite on are left out); with ``stop``,
        the list ends at the first ratio above 1."""
        out = []
        try:
            replayed = replay(rule, self.start, self.grads)
        except Exception:
            return [math.inf]
        for t, (want, got) in enumerate(zip(self.weights, replayed, strict=False), start=1):
            if t > self.step and not all(np.all(np.isfinite(v)) for v in want.values()):
                break
            r = max(relative(want[k], got[k], self.dtype) for k in want)
            out.append(r / step_tolerance(self.tol, t))
            if stop and out[-1] > 1:
                break
        return out

    def fits(self, rule: Rule) -> bool:
        """Whether ``rule`` keeps the candidate within tolerance at every step of the run."""
        return max(self.ratios(rule, stop=True)) <= 1


@dataclass(frozen=True)
class Fit:
    """Alternatives that, applied together, explain the candidate's run (a training
    diagnosis, :class:`xgrad.training.OptimizerDiagnosis`, is made of it).

    Attributes:
        alternatives: one per cause.
        residual: the error left at :attr:`CandidateRun.step`.
        rule: the reference's rule with every alternative applied.
        equally: other alternatives in the same causes that fit the run as well, in words
            (the run cannot tell these values apart).
    """

    alternatives: tuple[Alternative, ...]
    residual: float
    rule: Rule
    equally: tuple[str, ...] = ()

    @property
    def causes(self) -> tuple[str, ...]:
        return tuple(a.cause for a in self.alternatives)


PAIR_LEADERS = 12
"""Pairs are tried between the alternatives with the 12 smallest residuals and all others."""

PLAUSIBLE_PER_CAUSE = 2
"""Combinations of three or more causes draw on each cause's 2 best alternatives among those
that bring the error down on their own."""

MAX_COMBINATIONS = 512
"""At most this many combinations of three or more causes are replayed."""


def fitted_lr(rule: Rule, ev: CandidateRun) -> float | None:
    """The learning rate ``rule`` would need for its first update to match the candidate's
    (least squares over every weight), or ``None`` for a schedule."""
    if callable(rule.learning_rate) or not rule.learning_rate:
        return None
    try:
        first = replay(rule, ev.start, ev.grads[:1])[0]
    except Exception:
        return None
    want = ev.weights[0]
    u = np.concatenate([(first[k] - ev.start[k]).ravel() for k in first])
    v = np.concatenate([(want[k] - ev.start[k]).ravel() for k in first])
    den = float(u @ u)
    if not den or not np.all(np.isfinite(v)):
        return None
    return rule.lr(0) * float(u @ v) / den


def _combine(ref: Rule, alts: Sequence[Alternative]) -> Rule | None:
    rule: Rule | None = ref
    for a in alts:
        rule = a.apply(rule) if rule is not None else None
    return rule


def _with_lr(ref: Rule, alts: Sequence[Alternative], ev: CandidateRun):
    """``(alternatives, rule)``: ``alts`` applied, and each with a learning rate refitted."""
    rule = _combine(ref, alts)
    if rule is None:
        return
    yield tuple(alts), rule
    if callable(ref.learning_rate):
        return
    for lr in learning_rates(fitted_lr(rule, ev), ref):
        both = lr.apply(rule)
        if both is not None:
            yield (*alts, lr), both


def _choose(found: list[Fit]) -> list[Fit]:
    """One finding per distinct set of causes: the first proposed (the frameworks' defaults
    and round learning rates come first); the others of the same causes are listed as
    fitting equally."""
    groups: dict[frozenset, list[Fit]] = {}
    for f in found:
        groups.setdefault(frozenset(f.causes), []).append(f)
    out = []
    for group in groups.values():
        first, rest = group[0], group[1:]
        words = _uniq_text(a.detail for f in rest for a in f.alternatives)
        out.append(dataclasses.replace(first, equally=tuple(words)))
    return out


def _agrees(finding: Fit, rule: Rule) -> bool:
    return all(
        getattr(finding.rule, k) == getattr(rule, k, None)
        for a in finding.alternatives
        for k in a.changes
    )


def _uniq_text(texts) -> list[str]:
    out: list[str] = []
    for t in texts:
        if t not in out:
            out.append(t)
    return out


def explain_step(ev: CandidateRun, ctx: Context) -> list[Fit]:
    """The explanations of the candidate's run: one :class:`Fit` when one set of causes
    does (confirmed), several when different sets fit every step equally well (ambiguous),
    none when nothing does.

    An explanation must keep the candidate within tolerance at every step of the run, not
    only at the diverging one: one step cannot tell Nesterov from plain momentum from a
    smaller learning rate, the next steps can. In this order: the candidate's own rule when
    it is known (naming only the causes it needs: those whose own fields, put back to the
    reference's, leave it outside tolerance); single alternatives; one cause with a
    refitted learning rate, and pairs of two causes; a beam search that adds one cause at a
    time, keeping the combinations that bring the error down most, until the run fits;
    combinations of the alternatives that each bring the error down on their own.
    """
    ref = ctx.reference
    known = None
    if ctx.candidate is not None and rule_differences(ref, ctx.candidate):
        if ev.fits(ctx.candidate):
            known = _needed(ev, ref, ctx.candidate)
    scored = _scored(ev, ref, alternatives(ctx))
    limit = step_tolerance(ev.tol, ev.step)
    singles = [Fit((a,), r, rule) for a, rule, r, _ in scored if r <= limit and ev.fits(rule)]
    if known is not None:  # a single alternative that reads like the candidate's rule
        same = [
            f
            for f in singles
            if f.causes == known.causes and _agrees(f, ctx.candidate)  # type: ignore[arg-type]
        ]
        return _choose(same)[:1] or [known]
    if singles:
        return _choose(singles)
    others = [(a, r) for a, _, r, _ in scored if a.cause != "learning-rate"]
    found = _pairs(ev, ref, others)
    if found:
        return _choose(found)
    searched = _search(ev, ref, [a for a, _ in others])
    if searched is not None:
        return [searched]
    return _choose(_combinations(ev, ref, scored))


def _scored(ev: CandidateRun, ref: Rule, alts: list[Alternative]):
    """``(alternative, its rule, largest residual, summed residual)`` for each alternative
    that makes a rule."""
    out = []
    for alt in alts:
        rule = alt.apply(ref)
        if rule is not None:
            each = ev.residuals(rule)
            out.append((alt, rule, max(each.values()), sum(each.values())))
    return out


def _pairs(ev: CandidateRun, ref: Rule, others: list[tuple[Alternative, float]]) -> list[Fit]:
    """One cause with a refitted learning rate, and pairs of two causes (one of them among
    the :data:`PAIR_LEADERS` alternatives with the smallest residuals), that fit the run."""
    limit = step_tolerance(ev.tol, ev.step)
    leaders = {id(a) for a, _ in sorted(others, key=lambda ar: ar[1])[:PAIR_LEADERS]}
    tries = [combo for alt, _ in others for combo in list(_with_lr(ref, [alt], ev))[1:]]
    tries += [
        ((a, b), _combine(ref, (a, b)))
        for (a, _), (b, _) in itertools.combinations(others, 2)
        if a.cause != b.cause and {id(a), id(b)} & leaders
    ]
    found = []
    for combo, rule in tries:
        r = math.inf if rule is None else ev.residual(rule)
        if r <= limit and ev.fits(rule):
            found.append(Fit(combo, r, rule))
    return found


def _combinations(ev: CandidateRun, ref: Rule, scored) -> list[Fit]:
    """Combinations of three or more of the plausible alternatives (each brings the error,
    summed over the weights, down on its own: a convention may fix one weight while another
    still dominates the largest error), the smallest that fit the run; at most
    :data:`MAX_COMBINATIONS` are replayed."""
    limit = step_tolerance(ev.tol, ev.step)
    before = sum(ev.residuals(ref).values())
    plausible: dict[str, list[Alternative]] = {}
    summed = [(a, total) for a, _, _, total in scored if a.cause != "learning-rate"]
    for a, r in sorted(summed, key=lambda ar: ar[1]):
        if r < before and len(plausible.setdefault(a.cause, [])) < PLAUSIBLE_PER_CAUSE:
            plausible[a.cause].append(a)
    plausible = {c: best for c, best in plausible.items() if best}
    causes = list(plausible)
    found: list[Fit] = []
    tried = 0
    for size in range(2, len(causes) + 1):
        for group in itertools.combinations(causes, size):
            for picked in itertools.product(*(plausible[c] for c in group)):
                for combo, rule in _with_lr(ref, picked, ev):
                    if len(combo) < 3:
                        continue  # (tried by _pairs)
                    tried += 1
                    r = ev.residual(rule)
                    if r <= limit and ev.fits(rule):
                        found.append(Fit(combo, r, rule))
                    if tried >= MAX_COMBINATIONS:
                        return found
        if found:
            return found
    return found


SEARCH_DEPTH = 5
"""The most causes the search combines."""

BEAM = 4
"""The search keeps the 4 best combinations of each size."""


def _search(ev: CandidateRun, ref: Rule, alts: list[Alternative]) -> Fit | None:
    """A beam search over combinations: from each of the :data:`BEAM` best combinations so
    far, add one alternative of a cause not yet in it (or a learning rate refitted to it),
    keep the best by the error summed over the weights, until one fits the run; then drop
    each member the run fits without. ``None`` when none fits."""
    limit = step_tolerance(ev.tol, ev.step)
    beam: list[tuple[tuple[Alternative, ...], Rule, float]] = [
        ((), ref, sum(ev.residuals(ref).values()))
    ]
    for _ in range(SEARCH_DEPTH):
        grown: dict[frozenset, tuple[tuple[Alternative, ...], Rule, float]] = {}
        for chosen, rule, score in beam:
            used = {a.cause for a in chosen}
            options = [a for a in alts if a.cause not in used]
            if "learning-rate" not in used and not callable(ref.learning_rate):
                options += learning_rates(fitted_lr(rule, ev), ref)
            for a in options:
                new = a.apply(rule)
                if new is None:
                    continue
                each = ev.residuals(new)
                total = sum(each.values())
                if not total < score:
                    continue
                combo = (*chosen, a)
                if len(combo) > 1 and max(each.values()) <= limit and ev.fits(new):
                    return _prune(ev, ref, combo, new)
                key = frozenset(id(b) for b in combo)
                if key not in grown or total < grown[key][2]:
                    grown[key] = (combo, new, total)
        if not grown:
            return None
        beam = sorted(grown.values(), key=lambda c: c[2])[:BEAM]
    return None


def _prune(ev: CandidateRun, ref: Rule, chosen: tuple[Alternative, ...], rule: Rule) -> Fit:
    """``chosen`` without the members the run fits without."""
    for a in list(chosen):
        rest = tuple(b for b in chosen if b is not a)
        fewer = _combine(ref, rest) if rest else None
        if fewer is not None and ev.fits(fewer):
            chosen, rule = rest, fewer
    return Fit(chosen, ev.residual(rule), rule)


def _needed(ev: CandidateRun, ref: Rule, cand: Rule) -> Fit:
    """The candidate's rule as a finding: only the causes it needs to fit the run."""
    diffs = rule_differences(ref, cand)
    keep, rule = [], cand
    for alt in diffs:
        try:
            reverted = rule.replace(**{f: getattr(ref, f) for f in alt.changes})
        except Exception:
            reverted = None
        if alt.changes and reverted is not None and ev.fits(reverted):
            rule = reverted  # this difference does not show in the run
        else:
            keep.append(alt)
    return Fit(tuple(keep or diffs), ev.residual(cand), cand)


NO_EFFECT = 1e-6
"""A known convention difference whose replay moves no weight by more than this fraction of
the tolerance is the same arithmetic in another form (decoupled weight decay of 0; the
learning rate inside or outside the velocity at a constant rate: float64 rounding alone)
and is not listed."""


def precision_notes(
    ctx: Context, start: Arrays, grads: Sequence[Arrays], dtype: str, tol: float
) -> list[tuple[Alternative, float, bool]]:
    """The conventions too small to be seen in this run: ``(alternative, effect, known)``
    where ``effect`` is the largest ``relative change of a weight / step tolerance`` over
    the run when the alternative replaces the reference's rule (float64, the reference's
    gradients), between 0 and 1. When the candidate's rule is known, only its differences
    from the reference's (``known``); else one per cause: its first such alternative, in
    the order the cause proposes them (the frameworks' defaults first). Not
    ``float32-hyperparameters``: a float32 run rounds them on both sides."""
    base = replay(ctx.reference, start, grads)

    def effect(rule: Rule) -> float:
        other = replay(rule, start, grads)
        return max(
            relative(o[k], b[k], "float64") / step_tolerance(tol, t)
            for t, (o, b) in enumerate(zip(other, base, strict=True), start=1)
            for k in b
        )

    if ctx.candidate is not None:
        e = effect(ctx.candidate.replace(float32_constants=ctx.reference.float32_constants))
        if not 0 < e < 1:
            return []
        out = []
        for alt in rule_differences(ctx.reference, ctx.candidate):
            if alt.cause == "float32-hyperparameters":
                continue
            rule = alt.apply(ctx.reference)
            own = e if rule is None else effect(rule)
            if own > NO_EFFECT:  # not a difference of form alone (decoupled decay at 0)
                out.append((alt, min(own, e) if rule is None else own, True))
        return out
    out: dict[str, tuple[Alternative, float, bool]] = {}
    for alt in alternatives(ctx):
        if alt.cause in out or alt.cause == "float32-hyperparameters":
            continue  # (a float32 run rounds every hyperparameter to float32 on both sides)
        rule = alt.apply(ctx.reference)
        if rule is None:
            continue
        e = effect(rule)
        if 0 < e < 1:
            out[alt.cause] = (alt, e, False)
    return list(out.values())
