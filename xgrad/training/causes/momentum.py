"""Momentum: its value, PyTorch's dampening, Nesterov, and where the learning rate enters
(Keras' SGD velocity, PyTorch's RMSprop buffer).
"""

from __future__ import annotations

from xgrad.optim.rules import SGD, RMSprop
from xgrad.training.causes.base import Alternative, Context, OptimizerCause, candidate_value, uniq

__all__ = ["CAUSES"]

CAUSE = "momentum-convention"


def _momentum(ctx: Context) -> list[Alternative]:
    if isinstance(ctx.reference, SGD):
        return _sgd(ctx)
    if isinstance(ctx.reference, RMSprop):
        return _rmsprop(ctx)
    return []


def _values(ctx: Context, values: tuple[float, ...], what: str) -> list[Alternative]:
    """Other momentum values: the candidate's when known, then ``values``."""
    ref = ctx.reference
    return [
        Alternative(
            CAUSE,
            {"momentum": m},
            f"the candidate's {what} is {m:g}, the reference's {ref.momentum:g}",
        )
        for m in uniq([candidate_value(ctx, "momentum"), *values])
        if m != ref.momentum
    ]


def _sgd(ctx: Context) -> list[Alternative]:
    """SGD: the momentum's value, PyTorch's dampening, Nesterov, Keras' velocity form."""
    ref = ctx.reference
    out = _values(ctx, (0.9, 0.99, 0.0), "momentum")
    if not ref.momentum:
        return out
    if not ref.lr_in_velocity:
        damp = ref.momentum if not ref.dampening else 0.0
        out.append(
            Alternative(
                CAUSE,
                {"dampening": damp},
                f"the candidate dampens the momentum by {damp:g} (PyTorch's dampening: "
                f"buf = m * buf + (1 - {damp:g}) * g); the reference by {ref.dampening:g}",
            )
        )
    out.append(
        Alternative(
            CAUSE,
            {"nesterov": not ref.nesterov},
            f"the candidate {'uses' if not ref.nesterov else 'does not use'} Nesterov "
            f"momentum; the reference {'does' if ref.nesterov else 'does not'}",
        )
    )
    if not ref.dampening:
        inside = not ref.lr_in_velocity
        where = (
            "holds -lr * g (Keras)"
            if inside
            else "is multiplied by the learning rate at the end (PyTorch, optax)"
        )
        out.append(
            Alternative(
                CAUSE,
                {"lr_in_velocity": inside},
                f"the candidate's velocity {where}; they differ when the learning rate changes",
            )
        )
    return out


def _rmsprop(ctx: Context) -> list[Alternative]:
    """RMSprop: the momentum's value, where the learning rate enters it, Nesterov."""
    ref = ctx.reference
    out = _values(ctx, (0.9, 0.0), "RMSprop momentum")
    if not ref.momentum:
        return out
    where = (
        "accumulates lr * g / rms (Keras, optax)"
        if not ref.lr_in_momentum
        else "is multiplied by the learning rate at the end (PyTorch)"
    )
    out.append(
        Alternative(
            CAUSE,
            {"lr_in_momentum": not ref.lr_in_momentum},
            f"the candidate's momentum {where}",
        )
    )
    out.append(
        Alternative(
            CAUSE,
            {"nesterov": not ref.nesterov},
            f"the candidate {'uses' if not ref.nesterov else 'does not use'} Nesterov momentum",
        )
    )
    return out


CAUSES: tuple[OptimizerCause, ...] = (
    OptimizerCause(
        CAUSE,
        (SGD, RMSprop),
        "SGD momentum: PyTorch's dampening, Nesterov, the learning rate inside Keras' velocity",
        _momentum,
    ),
)
