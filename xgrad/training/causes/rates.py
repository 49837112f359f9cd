"""The learning rate: its value (the candidate's, or fitted to its first update), a schedule
counted from another step, and Keras' float32 rounding of it (and of the other
hyperparameters).
"""

from __future__ import annotations

import math

import numpy as np

from xgrad.optim.rules import Rule
from xgrad.training.causes.base import (
    Alternative,
    Context,
    OptimizerCause,
    candidate_value,
    short,
    uniq,
)

__all__ = ["CAUSES", "learning_rates"]


def _schedule(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    if not callable(ref.learning_rate):
        return []
    schedule = ref.learning_rate
    out = []
    for shift in (1, -1):

        def shifted(count: int, _s=shift) -> float:
            return float(np.asarray(schedule(max(count + _s, 0))))

        shifted.__name__ = f"{getattr(schedule, '__name__', 'schedule')}(count{shift:+d})"
        out.append(
            Alternative(
                "schedule-offset",
                {"learning_rate": shifted},
                f"the candidate evaluates the learning-rate schedule at count {shift:+d} (the "
                "reference, like Keras and optax, at the number of updates made before, "
                "from 0)",
            )
        )
    return out


def learning_rates(fitted: float | None, ref: Rule) -> list[Alternative]:
    """Learning-rate alternatives for a fitted rate: the rate rounded to 1, 2 and 3
    significant digits (the rate the user typed, when the fit is disturbed by another
    convention) and the fit itself."""
    if fitted is None or callable(ref.learning_rate) or not math.isfinite(fitted):
        return []
    values = [float(f"{fitted:.{d}g}") for d in (1, 2, 3)] + [fitted]
    out = []
    for lr in uniq(values):
        if lr == ref.learning_rate or lr <= 0:
            continue
        out.append(
            Alternative(
                "learning-rate",
                {"learning_rate": lr},
                f"the candidate's learning rate is {short(lr)}; the reference's "
                f"{ref.learning_rate!r}",
            )
        )
    return out


def _learning_rate(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    if callable(ref.learning_rate):
        return []
    known = candidate_value(ctx, "learning_rate")
    out = []
    if known is not None and not callable(known):
        out += learning_rates(known, ref)[-1:]
    for alt in learning_rates(ctx.fitted_lr, ref):
        if alt not in out:
            out.append(alt)
    return out


def _float32(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    if ref.float32_constants:
        detail = (
            "the candidate computes with its hyperparameters as given; the reference (Keras) "
            "rounds its learning rate, weight decay, SGD momentum and Adam's betas in the bias "
            f"correction to float32, in float64 too (learning rate {ref.lr(0)!r})"
        )
    else:
        detail = (
            "the candidate rounds its learning rate, weight decay, SGD momentum and Adam's "
            "betas in the bias correction to float32, as Keras does in float64 too"
        )
    return [
        Alternative(
            "float32-hyperparameters", {"float32_constants": not ref.float32_constants}, detail
        )
    ]


CAUSES: tuple[OptimizerCause, ...] = (
    OptimizerCause(
        "schedule-offset",
        (),
        "a learning-rate schedule counted from step 0 on one side and from 1 on the other",
        _schedule,
    ),
    OptimizerCause("learning-rate", (), "a different learning rate", _learning_rate),
    OptimizerCause(
        "float32-hyperparameters",
        (),
        "Keras rounds its learning rate, momentum, weight decay and Adam's bias-correction "
        "betas to float32, in float64 too",
        _float32,
    ),
)
