"""What an optimizer cause is, and what its alternatives are drawn from.

An optimizer cause is a record (:class:`OptimizerCause`, an
:class:`~xgrad.diagnosis.records.AbstractCause` as the gradient causes are): an id, the rules
it applies to, a summary line, what it needs, and the alternatives it proposes. Each
:class:`Alternative` changes a few fields of the reference's :class:`~xgrad.optim.Rule`;
:mod:`xgrad.training.replay` tests it by replaying the candidate's gradients through the
changed rule. The helpers here are what every family's proposals share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.diagnosis.records import AbstractCause
from xgrad.optim.rules import SGD, Adam, RMSprop, Rule

__all__ = [
    "Alternative",
    "Context",
    "OptimizerCause",
    "family",
    "candidate_value",
    "same_kind",
    "short",
    "uniq",
]


@dataclass(frozen=True)
class Alternative:
    """One alternative to the reference's rule.

    Attributes:
        cause: the cause id it would confirm.
        changes: the rule's fields it changes.
        detail: the candidate's convention in words.
    """

    cause: str
    changes: dict
    detail: str

    def apply(self, rule: Rule) -> Rule | None:
        try:
            return rule.replace(**self.changes)
        except Exception:  # an impossible combination (e.g. dampening in Keras' form)
            return None


@dataclass(frozen=True)
class Context:
    """What the alternatives are drawn from.

    Attributes:
        reference: the reference's rule.
        candidate: the candidate's rule when it could be read, else ``None``.
        fitted_lr: the learning rate that best maps the reference rule's first update onto
            the candidate's (least squares), or ``None``.
        first_grads: the candidate's gradients at the first step (to fit a clipping norm),
            or ``None``.
    """

    reference: Rule
    candidate: Rule | None = None
    fitted_lr: float | None = None
    first_grads: Mapping[str, np.ndarray] | None = None


def family(rule: Rule) -> type[Rule]:
    """The rule's algorithm: SGD, Adam (AdamW is Adam) or RMSprop."""
    return next((k for k in (SGD, Adam, RMSprop) if isinstance(rule, k)), type(rule))


def same_kind(ctx: Context) -> Rule | None:
    """The candidate's rule when it is known and of the reference's family (AdamW is Adam)."""
    c = ctx.candidate
    return c if c is not None and family(c) is family(ctx.reference) else None


def candidate_value(ctx: Context, field_name: str):
    """The candidate's value of ``field_name`` when its rule is known and of the
    reference's family, else ``None``."""
    c = same_kind(ctx)
    if c is None:
        return None
    try:
        return getattr(c, field_name)
    except AttributeError:
        return None


def uniq(values) -> list:
    """``values`` without ``None`` and repeats, in order."""
    out = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def short(value: float) -> str:
    """The shortest decimal of ``value`` (to 1e-9 relative): ``0.001``, not ``0.0010000001``."""
    for digits in range(1, 16):
        text = f"{value:.{digits}g}"
        if abs(float(text) - value) <= 1e-9 * abs(value):
            return text
    return repr(value)


@dataclass(frozen=True)
class OptimizerCause(AbstractCause):
    """One optimizer convention, as a record.

    Attributes:
        id: the cause's name in reports.
        rules: the rule classes it applies to (empty: every rule).
        summary: one line for ``docs/training.md``.
        propose: the alternatives to the reference's rule it asks to replay.
        needs: the evidence it needs.
    """

    id: str
    rules: tuple[type[Rule], ...]
    summary: str
    propose: Callable[[Context], list[Alternative]]
    needs: str = field(
        default="the reference's rule and the candidate's gradients up to the diverging step"
    )

    def applies(self, rule: Rule) -> bool:
        return not self.rules or isinstance(rule, self.rules)
