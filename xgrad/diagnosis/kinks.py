"""Kinks: the derivative a framework takes exactly at a kink, and float rounding that puts
a pre-activation on the other side of one."""

from __future__ import annotations

import numpy as np

from xgrad.activations import get_activation
from xgrad.diagnosis.activation import pre_activation
from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.diagnosis.records import Cause, Finding, backward_check, drop
from xgrad.layers import Dense

__all__ = ["CAUSES"]

_SOURCES = {
    0.5: " (as jnp.maximum(x, 0) or lax's balanced max/min give)",
    1.0: " (a >= comparison, as jax.nn.leaky_relu uses)",
}


def kink_convention(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    if not isinstance(unit.main_ref, Dense) or pre_activation(unit) is None:
        return None
    z, name = pre_activation(unit)
    act = get_activation(name)
    if act.derivative is None:
        return None
    base = act.derivative(z)
    for k, values in act.other_kink_derivatives().items():
        mask = z == k
        if not mask.any():
            continue
        for v in values:
            deriv = np.where(mask, v, base)
            if np.array_equal(deriv, base):
                continue
            confirmed = backward_check(ev, unit, unit.grad_ref * deriv, unit.grad_ref * base)
            found = confirmed.finding(
                f"{int(mask.sum())} pre-activation(s) are exactly at {act.name}'s kink "
                f"{k:g}; the candidate's derivative there is {v:.6g}{_SOURCES.get(v, '')}, "
                f"the reference's {float(base[mask][0]):.6g}; with the candidate's value "
                f"{drop(before, confirmed.residual)}",
                before,
            )
            if found is not None:
                return found
    return None


def kink_rounding(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """Pre-activations within rounding of a kink, put on its other side by the candidate."""
    if not isinstance(unit.main_ref, Dense) or pre_activation(unit) is None:
        return None
    z, name = pre_activation(unit)
    act = get_activation(name)
    if not act.kinks or act.derivative is None:
        return None
    side = act.side_derivative(z, unit.output_cand)
    if side is None:
        return None
    base = act.derivative(z)
    flipped = side != base
    if not flipped.any():
        return None
    kinks = np.array(act.kinks)
    distance = np.min(np.abs(z[flipped][:, None] - kinks[None, :]), axis=1)
    # float32 rounding of z: a few units of eps times the size of the terms summed into it
    bound = 1e3 * np.finfo(np.float32).eps * max(float(np.abs(z).max()), 1.0)
    if float(distance.max()) > bound:
        return None
    confirmed = backward_check(ev, unit, unit.grad_ref * side, unit.grad_ref * base)
    return confirmed.finding(
        f"{int(flipped.sum())} pre-activation(s) lie within rounding of {name}'s kink "
        f"(largest distance {float(distance.max()):.2g}); the candidate's rounding puts them "
        "on the other side, which flips the derivative there; with the candidate's side on "
        f"both {drop(before, confirmed.residual)}. Both sides are right to their precision: "
        "this is rounding, not a convention",
        before,
    )


CAUSES = (
    Cause(
        "kink-convention",
        "backward",
        ("dense",),
        "the derivative taken exactly at a kink (relu'(0), leaky'(0), selu'(0), ...)",
        kink_convention,
    ),
    Cause(
        "kink-rounding",
        "backward",
        ("dense",),
        "a pre-activation within float rounding of a kink, rounded to its other side",
        kink_rounding,
    ),
)
