"""The differences between two known rules, named by cause (when both optimizers' rules were
read)."""

from __future__ import annotations

import dataclasses

from xgrad.optim.rules import RMSprop, Rule
from xgrad.training.causes.base import Alternative, family, short

__all__ = ["FIELD_CAUSES", "rule_differences"]


FIELD_CAUSES = {
    "eps": "adam-epsilon",
    "epsilon_hat": "adam-epsilon",
    "eps_root": "adam-epsilon",
    "weight_decay": "weight-decay",
    "decoupled": "weight-decay",
    "decay_scaled_by_lr": "weight-decay",
    "momentum": "momentum-convention",
    "nesterov": "momentum-convention",
    "dampening": "momentum-convention",
    "lr_in_velocity": "momentum-convention",
    "lr_in_momentum": "momentum-convention",
    "decay": "rmsprop-convention",
    "eps_in_sqrt": "rmsprop-convention",
    "centered": "rmsprop-convention",
    "initial_scale": "rmsprop-convention",
    "bias_correction": "bias-correction",
    "clip_norm": "gradient-clipping",
    "clip_global_norm": "gradient-clipping",
    "clip_value": "gradient-clipping",
    "learning_rate": "learning-rate",
    "float32_constants": "float32-hyperparameters",
    "b1": "adam-betas",
    "b2": "adam-betas",
    "amsgrad": "adam-betas",
}
"""Rule field -> the cause it belongs to (RMSprop's ``eps`` is ``rmsprop-convention``)."""


def rule_differences(reference: Rule, candidate: Rule) -> list[Alternative]:
    """The causes in which two known rules differ, one :class:`Alternative` each (with the
    fields that differ, both ways, in words); one ``optimizer`` when they are different
    algorithms."""
    if family(reference) is not family(candidate):
        return [
            Alternative(
                "optimizer",
                {},
                f"the candidate runs {candidate.describe()}, the reference {reference.describe()}",
            )
        ]
    by_cause: dict[str, list[str]] = {}
    changes: dict[str, dict] = {}
    for f in dataclasses.fields(reference):
        a, b = getattr(reference, f.name), getattr(candidate, f.name)
        if a == b or (f.name == "learning_rate" and callable(a) and callable(b)):
            continue
        if _inert(reference, f.name) and _inert(candidate, f.name):
            continue
        cause = FIELD_CAUSES.get(f.name, "optimizer")
        if f.name == "eps" and isinstance(reference, RMSprop):
            cause = "rmsprop-convention"
        by_cause.setdefault(cause, []).append(f"{f.name} {_words(b)} vs {_words(a)}")
        changes.setdefault(cause, {})[f.name] = b
    return [
        Alternative(cause, changes[cause], "the candidate's rule as read has " + ", ".join(diffs))
        for cause, diffs in by_cause.items()
    ]


def _inert(rule: Rule, name: str) -> bool:
    """Whether field ``name`` cannot change ``rule``'s arithmetic: how weight decay is
    applied when there is none, how momentum is kept when there is none, where the learning
    rate enters the momentum when it is constant."""
    if name in ("decoupled", "decay_scaled_by_lr"):
        return not rule.weight_decay
    if name in ("nesterov", "dampening", "lr_in_velocity", "lr_in_momentum"):
        if not getattr(rule, "momentum", 0.0):
            return True
        return name in ("lr_in_velocity", "lr_in_momentum") and not callable(rule.learning_rate)
    return False


def _words(value) -> str:
    if callable(value):
        return getattr(value, "__name__", "a schedule")
    return short(value) if isinstance(value, float) else str(value)
