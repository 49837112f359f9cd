"""Losses: crossentropy computed from logits on one side and from clipped probabilities on
the other, and a reduction (mean vs sum) that scales every gradient by one factor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xgrad.activations import get_activation
from xgrad.diagnosis.activation import pre_activation
from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.diagnosis.records import Cause, Finding, backward_check, check, drop
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
    own = get_activation(act).vjp(z, unit.output_ref, unit.grad_ref)
    confirmed = backward_check(ev, unit, logits_delta, own)
    return confirmed.finding(
        f"{saturated} output(s) are saturated (p < 1e-7 or p > 1 - 1e-7): the reference clips "
        "probabilities there (gradient 0), the candidate uses the logits form (as Keras does "
        "on the TensorFlow backend for a sigmoid/softmax output); with the logits form on "
        f"both sides {drop(before, confirmed.residual)}",
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
    if ev.dinput_cand is None or ev.dinput_ref is None:  # token ids: no dL/dinput
        pairs = []
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
    confirmed = check(ev, cand, factor * ref, ref)
    residual, before = confirmed.residual, confirmed.unchanged
    if not confirmed.confirmed:
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


def _cce_normalized(out: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dL/d out`` of Keras' ``categorical_crossentropy(from_logits=False)``: the output
    divided by its sum over the last axis, clipped to ``[EPSILON, 1 - EPSILON]``, then
    ``-sum(y * log(p)) / batch``. ``q = out / s`` has ``dq_j / dout_i = (delta_ij - q_j) / s``."""
    s = out.sum(axis=-1, keepdims=True)
    q = out / s
    inside = (q >= EPSILON) & (q <= 1 - EPSILON)
    dq = np.where(inside, -y / q, 0.0) / out.shape[0]
    return (dq - (dq * q).sum(axis=-1, keepdims=True)) / s


@dataclass(frozen=True)
class _Form:
    """One way a crossentropy reads the model's output: its family (``cce``/``bce``), what it
    takes the output for, and ``dL/d out`` as a function of ``(out, y)``."""

    name: str
    family: str
    logits: bool
    words: str
    grad: Callable[[np.ndarray, np.ndarray], np.ndarray]


def _xgrad_loss(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return lambda out, y: get_loss(name).value_and_grad(out, y)[1]


FORMS = (
    _Form("cce", "cce", False, "from probabilities", _xgrad_loss("cce")),
    _Form(
        "cce_normalized",
        "cce",
        False,
        "from probabilities divided by their sum (Keras' from_logits=False)",
        _cce_normalized,
    ),
    _Form("cce_logits", "cce", True, "from logits", _xgrad_loss("cce_logits")),
    _Form("bce", "bce", False, "from probabilities", _xgrad_loss("bce")),
    _Form("bce_logits", "bce", True, "from logits", _xgrad_loss("bce_logits")),
)
"""The forms :func:`crossentropy_form` tells apart (``dL/d out`` of each, on one output)."""


def _closest(grad: np.ndarray, forms: dict[str, np.ndarray]):
    """``(form, factor, error)`` of the form whose gradient, times one factor (a reduction),
    is nearest ``grad``; ``None`` when no form has a non-zero gradient."""
    best = None
    for form, g in forms.items():
        den = float(np.vdot(g, g))
        if den == 0:
            continue
        factor = float(np.vdot(grad, g)) / den
        err = rel(grad, factor * g)
        if best is None or err < best[2]:
            best = (form, factor, err)
    return best


def _mistaken(family: str, out: np.ndarray, ref: _Form) -> str:
    """Which side reads the output for what it is not, from the output itself, and the fix."""
    probabilities = bool(np.all((out >= 0) & (out <= 1)))
    if family == "cce":
        probabilities = probabilities and bool(np.allclose(out.sum(axis=-1), 1, atol=1e-4))
    side = "reference" if ref.logits == probabilities else "candidate"
    if probabilities:
        return (
            f"the output is a probability (a softmax or sigmoid output), so the {side}'s "
            "loss misreads it: drop from_logits=True (Keras), or give a loss of logits "
            "(optax's softmax_cross_entropy, PyTorch's CrossEntropyLoss) the logits before "
            "the softmax"
        )
    cut = " or rows not summing to 1" if family == "cce" else ""
    return (
        f"the output is not a probability (values outside [0, 1]{cut}), so the {side}'s "
        "loss misreads it: pass from_logits=True (Keras' default is False), or use a loss "
        "of logits (optax's softmax_cross_entropy, PyTorch's CrossEntropyLoss, "
        "BCEWithLogitsLoss)"
    )


def crossentropy_form(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """At the output: one side's loss takes the output as logits (``from_logits=True``,
    ``optax.softmax_cross_entropy``), the other as probabilities (Keras' default
    ``from_logits=False`` divides them by their sum first), in either direction.

    Each side's ``dL/d output`` is matched, up to one factor, with each form's gradient on the
    reference's output; confirmed when the two sides match two forms of one loss that read the
    output differently, each within the fit tolerance."""
    if unit is not ev.units[-1] or ev.y is None or ev.y.shape != unit.output_ref.shape:
        return None
    out, y = unit.output_ref, ev.y
    forms = {}
    with np.errstate(all="ignore"):
        for form in FORMS:
            g = form.grad(out, y)
            if np.all(np.isfinite(g)):
                forms[form] = g
    ref_form, cand_form = _closest(unit.grad_ref, forms), _closest(unit.grad_cand, forms)
    if ref_form is None or cand_form is None:
        return None
    if max(ref_form[2], cand_form[2]) > ev.fit_tol:
        return None
    ref, cand = ref_form[0], cand_form[0]
    if ref.family != cand.family or ref.logits == cand.logits:
        return None  # another loss, or the same reading of the output: not this cause
    alternative, unchanged = cand_form[1] * forms[cand], ref_form[1] * forms[ref]
    if not check(ev, unit.grad_cand, alternative, unchanged, reference=unit.grad_ref).confirmed:
        return None
    return Finding(
        f"the reference's loss takes the output {ref.words}, the candidate's {cand.words}; "
        f"{_mistaken(ref.family, out, ref)}. dL/d output is that of {cand.name} on the "
        f"candidate's side to {cand_form[2]:.2g}",
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
