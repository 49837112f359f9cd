"""Adam's conventions: where and how large its epsilon is, its betas and AMSGrad, and the bias
correction of the moment estimates (Adam's and optax RMSprop's).
"""

from __future__ import annotations

from xgrad.optim.rules import Adam, RMSprop
from xgrad.training.causes.base import Alternative, Context, OptimizerCause, same_kind, uniq

__all__ = ["CAUSES", "PLACEMENTS"]


PLACEMENTS = {
    "paper": "to sqrt(v_hat), after the bias correction (Algorithm 1 of the paper: optax, PyTorch)",
    "hat": "to sqrt(v) before the bias correction (Keras' epsilon hat: eps / sqrt(1 - b2^t) in "
    "Algorithm 1's terms)",
    "root": "inside the square root, sqrt(v_hat + eps) (optax eps_root)",
}


def _placement(rule: Adam) -> tuple[str, float]:
    if rule.eps_root and not rule.eps:
        return "root", rule.eps_root
    return ("hat" if rule.epsilon_hat else "paper"), rule.eps


def _adam_epsilon(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    ref_place, ref_eps = _placement(ref)
    cand = same_kind(ctx)
    cand_pv = _placement(cand) if isinstance(cand, Adam) else None
    values = uniq([cand_pv[1] if cand_pv else None, 1e-8, 1e-7, ref_eps])
    out = []
    combos = [(p, v) for v in values for p in PLACEMENTS]
    if cand_pv:
        combos.insert(0, cand_pv)
    for place, value in uniq(combos):
        if (place, value) == (ref_place, ref_eps):
            continue
        changes = {
            "paper": {"eps": value, "epsilon_hat": False, "eps_root": 0.0},
            "hat": {"eps": value, "epsilon_hat": True, "eps_root": 0.0},
            "root": {"eps": 0.0, "epsilon_hat": False, "eps_root": value},
        }[place]
        out.append(
            Alternative(
                "adam-epsilon",
                changes,
                f"the candidate adds eps {value:g} {PLACEMENTS[place]}; the reference adds "
                f"{ref_eps:g} {PLACEMENTS[ref_place]}",
            )
        )
    if not ref.eps_root and ref.eps:  # optax's adam(eps_root=...) keeps its eps as well
        for value in uniq([cand.eps_root if isinstance(cand, Adam) else None, 1e-8, 1e-7]):
            out.append(
                Alternative(
                    "adam-epsilon",
                    {"eps_root": value},
                    f"the candidate adds eps_root {value:g} inside the square root, "
                    f"sqrt(v_hat + {value:g}) (optax eps_root), besides the eps {ref_eps:g} "
                    "both add",
                )
            )
    return out


def _bias_correction(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    flip = not ref.bias_correction
    return [
        Alternative(
            "bias-correction",
            {"bias_correction": flip},
            f"the candidate {'divides' if flip else 'does not divide'} the moment estimates by "
            f"1 - b^t; the reference {'does' if ref.bias_correction else 'does not'}",
        )
    ]


def _adam_betas(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    out = []
    cand = same_kind(ctx)
    if isinstance(cand, Adam) and (cand.b1, cand.b2) != (ref.b1, ref.b2):
        out.append(
            Alternative(
                "adam-betas",
                {"b1": cand.b1, "b2": cand.b2},
                f"the candidate's betas are ({cand.b1:g}, {cand.b2:g}), the reference's "
                f"({ref.b1:g}, {ref.b2:g})",
            )
        )
    for b1 in (0.9, 0.95, 0.8, 0.0):
        if b1 != ref.b1 and not (isinstance(cand, Adam) and (b1, ref.b2) == (cand.b1, cand.b2)):
            out.append(
                Alternative(
                    "adam-betas",
                    {"b1": b1},
                    f"the candidate's b1 is {b1:g}, the reference's {ref.b1:g}",
                )
            )
    for b2 in (0.999, 0.99, 0.98, 0.95):
        if b2 != ref.b2 and not (isinstance(cand, Adam) and (ref.b1, b2) == (cand.b1, cand.b2)):
            out.append(
                Alternative(
                    "adam-betas",
                    {"b2": b2},
                    f"the candidate's b2 is {b2:g}, the reference's {ref.b2:g}",
                )
            )
    out.append(
        Alternative(
            "adam-betas",
            {"amsgrad": not ref.amsgrad},
            f"the candidate {'uses' if not ref.amsgrad else 'does not use'} AMSGrad (the "
            "running maximum of v)",
        )
    )
    return out


CAUSES: tuple[OptimizerCause, ...] = (
    OptimizerCause(
        "adam-epsilon",
        (Adam,),
        "Adam's epsilon: its value (Keras 1e-7, optax and PyTorch 1e-8) and where it is added "
        "(Keras' epsilon hat before the bias correction, sqrt(v_hat) + eps, optax eps_root)",
        _adam_epsilon,
    ),
    OptimizerCause(
        "bias-correction",
        (Adam, RMSprop),
        "the moment estimates divided by 1 - b^t, or not",
        _bias_correction,
    ),
    OptimizerCause(
        "adam-betas",
        (Adam,),
        "Adam's betas, or AMSGrad on one side",
        _adam_betas,
    ),
)
