"""Optimizer conventions as cause records, one module per family, tried in :data:`ORDER`.

Each cause (an :class:`OptimizerCause`, the same kind of record as the gradient causes of
:mod:`xgrad.diagnosis`) proposes alternatives to the reference's rule; :mod:`.replay
<xgrad.training.replay>` tests each by replaying the candidate's gradients through it. What
every cause needs: the reference's rule (read from its optimizer, or named by the user) and
the candidate's gradients up to the diverging step; the candidate's rule, when it can be
read, puts its own values first.

Families: :mod:`.adam` (epsilon, betas, bias correction), :mod:`.decay` (weight decay),
:mod:`.momentum`, :mod:`.rmsprop`, :mod:`.clipping`, :mod:`.rates` (learning rate, schedule,
Keras' float32 hyperparameters); :mod:`.differences` names the causes in which two known
rules differ. A new cause is a record in its family's module and an id in :data:`ORDER`.
"""

from __future__ import annotations

from xgrad.diagnosis.records import in_order
from xgrad.training.causes import adam, clipping, decay, momentum, rates, rmsprop
from xgrad.training.causes.base import Alternative, Context, OptimizerCause
from xgrad.training.causes.differences import FIELD_CAUSES, rule_differences
from xgrad.training.causes.rates import learning_rates

__all__ = [
    "FIELD_CAUSES",
    "OPTIMIZER_CAUSES",
    "ORDER",
    "Alternative",
    "Context",
    "OptimizerCause",
    "alternatives",
    "learning_rates",
    "rule_differences",
]

ORDER: tuple[str, ...] = (
    "adam-epsilon",
    "weight-decay",
    "momentum-convention",
    "rmsprop-convention",
    "bias-correction",
    "gradient-clipping",
    "schedule-offset",
    "learning-rate",
    "float32-hyperparameters",
    "adam-betas",
)
"""The order the optimizer causes are tried in (and their alternatives proposed): every
cause of the family modules, once."""

OPTIMIZER_CAUSES: tuple[OptimizerCause, ...] = in_order(
    ORDER,
    [
        *adam.CAUSES,
        *decay.CAUSES,
        *momentum.CAUSES,
        *rmsprop.CAUSES,
        *clipping.CAUSES,
        *rates.CAUSES,
    ],
)
"""Every optimizer cause, in the order they are tried (:data:`ORDER`)."""


def alternatives(ctx: Context) -> list[Alternative]:
    """Every alternative the causes propose for ``ctx.reference``, in :data:`ORDER`."""
    return [a for c in OPTIMIZER_CAUSES if c.applies(ctx.reference) for a in c.propose(ctx)]
