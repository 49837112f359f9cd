"""Weight decay: decoupled or L2 in the gradient, scaled by the learning rate or not, and its
value.
"""

from __future__ import annotations

from xgrad.training.causes.base import Alternative, Context, OptimizerCause, candidate_value, uniq

__all__ = ["CAUSES"]


def _decay_text(wd: float, decoupled: bool, scaled: bool = True) -> str:
    if not wd:
        return "no weight decay"
    if not decoupled:
        return f"L2 weight decay {wd:g} added to the gradient"
    return f"decoupled weight decay {wd:g}" + (" times the learning rate" if scaled else "")


def _weight_decay(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    now = _decay_text(ref.weight_decay, ref.decoupled, ref.decay_scaled_by_lr)
    combos = []
    known = candidate_value(ctx, "weight_decay")
    if known is not None:
        combos.append(
            (known, candidate_value(ctx, "decoupled"), candidate_value(ctx, "decay_scaled_by_lr"))
        )
    combos += [(wd, True, True) for wd in (1e-4, 0.004, 0.01)]  # the frameworks' defaults
    if ref.weight_decay:
        combos += [
            (ref.weight_decay, not ref.decoupled, True),
            (ref.weight_decay, True, not ref.decay_scaled_by_lr),
            (0.0, ref.decoupled, True),
        ]
    combos += [(wd, False, True) for wd in (1e-4, 0.004, 0.01)]
    out = []
    for wd, dec, scaled in uniq(combos):
        if (wd, dec, scaled) == (ref.weight_decay, ref.decoupled, ref.decay_scaled_by_lr):
            continue
        if not wd and not ref.weight_decay:
            continue
        out.append(
            Alternative(
                "weight-decay",
                {"weight_decay": wd, "decoupled": dec, "decay_scaled_by_lr": scaled},
                f"the candidate applies {_decay_text(wd, dec, scaled)}; the reference {now}",
            )
        )
    return out


CAUSES: tuple[OptimizerCause, ...] = (
    OptimizerCause(
        "weight-decay",
        (),
        "decoupled decay vs L2 in the gradient, and its value (Keras AdamW 0.004, PyTorch "
        "0.01, optax 1e-4)",
        _weight_decay,
    ),
)
