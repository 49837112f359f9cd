"""Activations: another function, another GELU form, another leaky slope, forward or only
in the derivative."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.records import Cause, Check, Finding, backward_check, check, drop, rerun
from xgrad.identify import fit_activation, leaky_slope, rel
from xgrad.layers import Activation, Dense

__all__ = ["CAUSES", "pre_activation"]


def pre_activation(unit: UnitEvidence, side: str = "ref") -> tuple[np.ndarray, str] | None:
    """``(value entering the unit's activation, activation name)`` on one side, computed
    with the reference's layer configs (the activation itself left out). For a residual
    block followed by an activation, that value is the block's own output, ``x + f(x)``."""
    if unit.block_output_ref is not None:
        z = unit.block_output_ref if side == "ref" else unit.block_output_cand
        for k, layer in enumerate(unit.members_ref):
            if layer is None:
                return None
            if isinstance(layer, Activation):
                return run_unit(unit.members_ref[:k], {}, z), layer.name
        return None
    layers = unit.layers_ref
    if not layers or any(layer is None for layer in layers):
        return None
    x, w = (
        (unit.input_ref, unit.weights_ref)
        if side == "ref"
        else (unit.input_cand, unit.weights_cand)
    )
    if set(unit.weights_ref) != set(w):
        return None
    main = layers[0]
    if isinstance(main, Dense) and main.activation != "linear":
        return run_unit([replace(main, activation="linear")], w, x), main.activation
    for k, layer in enumerate(layers):
        if isinstance(layer, Activation):
            return run_unit(layers[:k], w, x), layer.name
    return None


def describe(name: str) -> str:
    act = get_activation(name)
    if act.kind == "gelu":
        return "the exact erf GELU"
    if act.kind == "gelu_tanh":
        return "the tanh GELU"
    if act.kind == "leaky_relu":
        return f"leaky_relu with slope {act.slope:g}"
    return name


def _fit(z, a, tol: float, dtype: str) -> str | None:
    """The activation that maps ``z`` to ``a`` within the candidate's rounding, or within
    ``tol`` when none does that well; ``None`` when the two differ in shape (a unit of a
    conv, its activation and a pooling: no activation maps one to the other)."""
    if np.shape(z) != np.shape(a):
        return None
    name, err = fit_activation(z, a, dtype if dtype in ("float32", "float64") else "float32")
    if name is not None:
        return name
    candidates = list(ACTIVATIONS)
    slope = leaky_slope(z, a)
    if slope is not None:
        candidates.append(f"leaky_relu:{slope!r}")
    best, best_err = None, np.inf
    for cand in candidates:
        with np.errstate(all="ignore"):
            e = rel(get_activation(cand)(z), a)
        if e < best_err:
            best, best_err = cand, e
    return best if best_err <= tol else None


def _with_activation(layers, name: str) -> list | None:
    """``layers`` with their (first) activation replaced by ``name``: a Dense's own, or an
    Activation layer's; ``None`` when they have none."""
    layers = list(layers)
    for k, layer in enumerate(layers):
        if k == 0 and isinstance(layer, Dense) and layer.activation != "linear":
            layers[0] = replace(layer, activation=name)
            return layers
        if isinstance(layer, Activation):
            layers[k] = Activation(name)
            return layers
    return None


def _confirm(ev: Evidence, unit: UnitEvidence, name: str) -> Check | None:
    """The rule for another activation ``name``: the reference's unit with ``name`` in
    place of its own (after a residual block: the layers after it, on the block's own
    output on the reference's side)."""
    if unit.block_output_ref is not None:
        members = _with_activation(unit.members_ref, name)
        if members is None or any(layer is None for layer in unit.members_ref):
            return None
        z = unit.block_output_ref
        alt, own = run_unit(members, {}, z), run_unit(unit.members_ref, {}, z)
        return check(ev, unit.output_cand, alt, own, reference=unit.output_ref)
    layers = _with_activation(unit.layers_ref, name)
    return None if layers is None else rerun(ev, unit, layers)


def _classify(ev: Evidence, unit: UnitEvidence, before: float, want: str) -> Finding | None:
    """The candidate's activation, fitted to its own values, is the hypothesis; the
    reference's unit re-run with it confirms it (:func:`~xgrad.diagnosis.records.rerun`)."""
    found = pre_activation(unit, "cand")
    if found is None:
        return None
    z_cand, ref_name = found
    cand_name = _fit(z_cand, unit.output_cand, ev.fit_tol, ev.dtype_cand)
    if cand_name is None:
        return None
    ref_act, cand_act = get_activation(ref_name), get_activation(cand_name)
    if ref_act.name == cand_act.name:
        return None
    kinds = {ref_act.kind, cand_act.kind}
    cause = (
        "gelu-approximation"
        if kinds == {"gelu", "gelu_tanh"}
        else "leaky-relu-slope"
        if kinds == {"leaky_relu"}
        else "activation-mismatch"
    )
    if cause != want:
        return None
    confirmed = _confirm(ev, unit, cand_act.name)
    if confirmed is None or not confirmed.confirmed:
        return None
    residual = confirmed.residual
    if cause == "gelu-approximation":
        ref_form = "exact erf GELU" if ref_act.kind == "gelu" else "tanh GELU"
        cand_form = "tanh form" if cand_act.kind == "gelu_tanh" else "exact erf form"
        detail = (
            f"reference uses the {ref_form}, candidate the {cand_form} (Keras' 'gelu' and "
            "PyTorch's GELU default to erf; keras.ops.gelu, jax.nn.gelu and flax to tanh); "
            f"with the candidate's form applied to the reference {drop(before, residual)}"
        )
    elif cause == "leaky-relu-slope":
        detail = (
            f"reference slope {ref_act.slope:g}, candidate slope {cand_act.slope:g} (Keras "
            "Dense(activation='leaky_relu') 0.2, LeakyReLU layer 0.3, JAX and PyTorch 0.01); "
            f"with slope {cand_act.slope:g} {drop(before, residual)}"
        )
    else:
        detail = (
            f"reference computes {describe(ref_act.name)}, candidate "
            f"{describe(cand_act.name)}; with {cand_act.name} {drop(before, residual)}"
        )
    return Finding(detail, residual, before)


def gelu(ev, unit, before):
    return _classify(ev, unit, before, "gelu-approximation")


def leaky(ev, unit, before):
    return _classify(ev, unit, before, "leaky-relu-slope")


def other(ev, unit, before):
    return _classify(ev, unit, before, "activation-mismatch")


def backward_activation(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """Outputs agree, but the gradients are those of another activation's derivative."""
    if not isinstance(unit.main_ref, Dense):
        return None
    found = pre_activation(unit, "ref")
    if found is None:
        return None
    z, ref_name = found
    ref_act = get_activation(ref_name)
    own = ref_act.vjp(z, ref_act(z), unit.grad_ref)
    for name, act in ACTIVATIONS.items():
        if name in ("softmax", ref_act.name) or act.derivative is None:
            continue
        with np.errstate(all="ignore"):
            confirmed = backward_check(ev, unit, unit.grad_ref * act.derivative(z), own)
        detail = (
            f"the forward values agree, but the candidate back-propagates the derivative "
            f"of {name} where the reference's is that of {ref_name}; with that "
            f"derivative {drop(before, confirmed.residual)}"
        )
        finding = confirmed.finding(detail, before)
        if finding is not None:
            return finding
    return None


CAUSES = (
    Cause(
        "gelu-approximation",
        "forward",
        (),
        "exact erf GELU on one side, the tanh approximation on the other",
        gelu,
    ),
    Cause(
        "leaky-relu-slope",
        "forward",
        (),
        "leaky ReLU slopes: Keras Dense 0.2, LeakyReLU layer 0.3, JAX and PyTorch 0.01",
        leaky,
    ),
    Cause("activation-mismatch", "forward", (), "another activation function", other),
    Cause(
        "activation-mismatch",
        "backward",
        ("dense",),
        "the forward agrees but the backward uses another activation's derivative",
        backward_activation,
    ),
)
