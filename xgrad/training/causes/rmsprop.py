"""RMSprop's conventions: the decay of the mean square, epsilon inside or outside the root,
centered, and the mean square's starting value.
"""

from __future__ import annotations

import itertools

from xgrad.optim.rules import RMSprop
from xgrad.training.causes.base import Alternative, Context, OptimizerCause, candidate_value, uniq

__all__ = ["CAUSES"]


def _rms_text(decay: float, eps: float, inside: bool) -> str:
    where = "inside the root, g / sqrt(nu + eps)" if inside else "outside, g / (sqrt(nu) + eps)"
    return f"decay {decay:g} and eps {eps:g} {where}"


def _rmsprop(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    now = _rms_text(ref.decay, ref.eps, ref.eps_in_sqrt)
    decays = uniq([candidate_value(ctx, "decay"), ref.decay, 0.9, 0.99])
    epss = uniq([candidate_value(ctx, "eps"), ref.eps, 1e-7, 1e-8])
    out = []
    for decay, eps, inside in itertools.product(decays, epss, (True, False)):
        if (decay, eps, inside) == (ref.decay, ref.eps, ref.eps_in_sqrt):
            continue
        out.append(
            Alternative(
                "rmsprop-convention",
                {"decay": decay, "eps": eps, "eps_in_sqrt": inside},
                f"the candidate's RMSprop has {_rms_text(decay, eps, inside)}; the "
                f"reference's {now}",
            )
        )
    out.append(
        Alternative(
            "rmsprop-convention",
            {"centered": not ref.centered},
            f"the candidate's RMSprop is {'' if not ref.centered else 'not '}centered; the "
            f"reference's is {'' if ref.centered else 'not '}centered",
        )
    )
    if ref.initial_scale != 1.0:
        out.append(
            Alternative(
                "rmsprop-convention",
                {"initial_scale": 1.0},
                "the candidate starts the mean square at 1 (TensorFlow 1's RMSProp); the "
                f"reference at {ref.initial_scale:g}",
            )
        )
    return out


CAUSES: tuple[OptimizerCause, ...] = (
    OptimizerCause(
        "rmsprop-convention",
        (RMSprop,),
        "RMSprop: decay (rho 0.9, alpha 0.99), epsilon inside or outside the root, centered",
        _rmsprop,
    ),
)
