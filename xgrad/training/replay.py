"""The test of every optimizer cause: replay the candidate's gradients through a rule.

Replay the candidate's own gradients, step by step from its starting weights, through an
alternative rule in float64 NumPy, and compare the weights it reaches at the diverging step
with the candidate's. The alternative is confirmed when that residual is within the step's
tolerance while the reference's rule itself is not. When no single alternative is
confirmed, the candidate's own rule is replayed when it is known, then pairs of
alternatives from two different causes (Keras' float64 Adam against optax's differs both in
epsilon and in float32-rounded hyperparameters).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xgrad.metrics import NOISE_FLOORS
from xgrad.training.causes import Alternative, Context, alternatives, rule_differences
from xgrad.training.report import step_tolerance
from xgrad.training.rules import Arrays, Rule

__all__ = ["Evidence", "explain_step", "precision_notes", "relative", "replay"]


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
class Evidence:
    """The candidate's run up to the diverging step, in the reference's names (float64).

    Attributes:
        start: the candidate's starting weights.
        grads: its gradients at each step.
        weights: its weights after each step.
        step: the diverging step (from 1).
        dtype: the run's dtype; tol: its base tolerance.
    """

    start: Arrays
    grads: list[Arrays]
    weights: list[Arrays]
    step: int
    dtype: str
    tol: float

    def residual(self, rule: Rule) -> float:
        """How far the candidate's weights at the step are from ``rule``'s replay."""
        try:
            replayed = replay(rule, self.start, self.grads[: self.step])[-1]
        except Exception:  # a rule that cannot run on these arrays
            return math.inf
        target = self.weights[self.step - 1]
        return max(relative(target[k], replayed[k], self.dtype) for k in target)


PAIR_LEADERS = 12
"""Pairs are tried between the alternatives with the 12 smallest residuals and all others."""


def explain_step(ev: Evidence, ctx: Context) -> list[tuple[Alternative, float]] | None:
    """The alternatives that explain the candidate's weights at the diverging step, each
    with its residual; ``None`` when none does.

    Single alternatives first (the smallest residual wins); then the candidate's own rule
    when it is known (naming every cause in which it differs); then pairs of alternatives
    of two different causes.
    """
    limit = step_tolerance(ev.tol, ev.step)
    alts = alternatives(ctx)
    scored = []
    for alt in alts:
        rule = alt.apply(ctx.reference)
        if rule is not None:
            scored.append((alt, ev.residual(rule)))
    good = [(a, r) for a, r in scored if r <= limit]
    if good:
        return [min(good, key=lambda ar: ar[1])]
    if ctx.candidate is not None:
        r = ev.residual(ctx.candidate)
        if r <= limit:
            return [(alt, r) for alt in rule_differences(ctx.reference, ctx.candidate)]
    best = None
    leaders = {id(a) for a, _ in sorted(scored, key=lambda ar: ar[1])[:PAIR_LEADERS]}
    for (a, _), (b, _) in itertools.combinations(scored, 2):
        if a.cause == b.cause or not ({id(a), id(b)} & leaders):
            continue
        rule = b.apply(a.apply(ctx.reference) or ctx.reference)
        if rule is None:
            continue
        r = ev.residual(rule)
        if r <= limit and (best is None or r < best[2]):
            best = (a, b, r)
    if best is not None:
        return [(best[0], best[2]), (best[1], best[2])]
    return None


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
