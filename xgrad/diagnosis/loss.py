"""Losses: crossentropy computed from logits on one side and from clipped probabilities on
the other, and a reduction (mean vs sum) that scales every gradient by one factor."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.activation import pre_activation
from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.diagnosis.records import Cause, Finding, drop, grads_residual
from xgrad.identify import rel
from xgrad.losses import EPSILON, Loss, get_loss

__all__ = ["CAUSES", "reduction_factors"]


def clipping(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    name = ev.loss.name if isinstance(ev.loss, Loss) else None
    if name not in ("bce", "cce") or unit is not ev.units[-1] or ev.y is None:
        return None
    found = pre_activation(unit)
    if found is None:
        return None
    z, act = found
    if act != ("sigmoid" if name == "bce" else "softmax"):
        return None
    p = unit.output_ref
    saturated = int(((p < EPSILON) | (p > 1 - EPSILON)).sum())
    if saturated == 0:
        return None
    logits_delta = get_loss(f"{name}_logits").value_and_grad(z, ev.y)[1]
    residual = grads_residual(unit, logits_delta)
    if residual > ev.fit_tol:
        return None
    return Finding(
        f"{saturated} output(s) are saturated (p < 1e-7 or p > 1 - 1e-7): the reference clips "
        "probabilities there (gradient 0), the candidate uses the logits form (as Keras does "
        "on the TensorFlow backend for a sigmoid/softmax output); with the logits form on "
        f"both sides {drop(before, residual)}",
        residual,
        before,
    )


def reduction_factors(batch: int, units: int) -> dict[float, str]:
    """The factors between two reductions of one loss, and what each means."""
    n = batch * units
    out = {}
    for size, words in (
        (n, f"(batch {batch} x units {units}): a mean over all elements"),
        (batch, "batch: a mean over the batch"),
        (units, "units: a mean over the last axis"),
    ):
        if size > 1:
            out.setdefault(1 / size, f"1/{size} = 1/{words} where the reference sums")
            out.setdefault(
                float(size), f"{size} = the inverse: the candidate sums where the reference means"
            )
    out.setdefault(0.5, "0.5: the 1/2 of an l2 loss (0.5 * squared error)")
    out.setdefault(2.0, "2: the reference has the 1/2 of an l2 loss and the candidate not")
    return out


def loss_reduction(ev: Evidence, unit: UnitEvidence | None, before: float) -> Finding | None:
    """Every gradient is the reference's times one factor that a reduction produces."""
    pairs = [(ev.dinput_cand, ev.dinput_ref)]
    for u in ev.units:
        pairs += [
            (u.dweights_cand[k], g) for k, g in u.dweights_ref.items() if k in u.dweights_cand
        ]
    cand = np.concatenate([np.ravel(c) for c, _ in pairs])
    ref = np.concatenate([np.ravel(r) for _, r in pairs])
    den = float(ref @ ref)
    if den == 0 or rel(ev.output_cand, ev.output_ref) > ev.fit_tol:
        return None
    factor = float(cand @ ref) / den
    if abs(factor - 1) < 1e-3 or factor == 0:
        return None
    residual = rel(cand, factor * ref)
    before = rel(cand, ref)
    if residual > ev.fit_tol:
        return None
    batch = ev.output_ref.shape[0]
    units = int(np.prod(ev.output_ref.shape[1:]))
    for value, words in reduction_factors(batch, units).items():
        if abs(factor / value - 1) < 1e-6:
            return Finding(
                f"every gradient of the candidate is the reference's times {factor:.6g} "
                f"(factor {words}); scaling by 1/{factor:.6g}, {drop(before, residual)}",
                residual,
                before,
            )
    return Finding(
        f"every gradient of the candidate is the reference's times {factor:.6g}, a factor no "
        "loss reduction produces (not 1/batch, 1/units, 1/(batch*units), 0.5 or 2): a scaled "
        "output or learning-rate-like constant somewhere in the candidate?",
        residual,
        before,
        confirmed=False,
    )


def crossentropy_form(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """At the output: one side's loss takes the output as logits (``from_logits=True``,
    ``optax.softmax_cross_entropy``), the other as probabilities."""
    if unit is not ev.units[-1] or ev.y is None or ev.y.shape != unit.output_ref.shape:
        return None
    out, y = unit.output_ref, ev.y
    forms = {}
    with np.errstate(all="ignore"):
        for name in ("cce", "cce_logits", "bce", "bce_logits"):
            g = get_loss(name).value_and_grad(out, y)[1]
            if np.all(np.isfinite(g)):
                forms[name] = g

    def closest(grad):
        best = None
        for name, g in forms.items():
            den = float(np.vdot(g, g))
            if den == 0:
                continue
            factor = float(np.vdot(grad, g)) / den
            err = rel(grad, factor * g)
            if best is None or err < best[2]:
                best = (name, factor, err)
        return best

    ref_form, cand_form = closest(unit.grad_ref), closest(unit.grad_cand)
    if ref_form is None or cand_form is None:
        return None
    if max(ref_form[2], cand_form[2]) > ev.fit_tol or ref_form[0] == cand_form[0]:
        return None
    if ref_form[0].rstrip("_logits") != cand_form[0].rstrip("_logits"):
        return None  # binary against categorical: another loss, not another form

    def words(form):
        return "from logits" if form.endswith("_logits") else "from probabilities"

    return Finding(
        f"the reference's loss takes the output {words(ref_form[0])}, the candidate's "
        f"{words(cand_form[0])} (Keras' from_logits, optax's softmax_cross_entropy takes "
        f"logits, PyTorch's CrossEntropyLoss takes logits and NLLLoss log-probabilities); "
        f"dL/d output is that of {cand_form[0]} on the candidate's side to {cand_form[2]:.2g}",
        cand_form[2],
        before,
    )


CAUSES = (
    Cause(
        "crossentropy-form",
        "backward",
        (),
        "crossentropy taking logits on one side and probabilities on the other",
        crossentropy_form,
    ),
    Cause(
        "crossentropy-clipping",
        "backward",
        ("dense",),
        "crossentropy from clipped probabilities on one side, from logits on the other",
        clipping,
    ),
    Cause(
        "loss-reduction",
        "model",
        (),
        "every gradient scaled by one factor: mean vs sum, 1/batch, the 1/2 of an l2 loss",
        loss_reduction,
    ),
)
