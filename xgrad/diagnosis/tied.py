"""``tied-weights``: one array used by two modules on one side (a tied LM head, a tied
autoencoder), two separate parameters on the other.

Two rules confirm it, by where the sides part:

* **Gradients** (the outputs agree): after the reference's weights are copied across, both
  sides compute the same outputs when the tying side is the reference (its one array fills
  both of the other's parameters); the gradients differ, because the tied array's gradient
  is the sum of its two uses. Confirmed when the separate side's two gradients, summed (the
  second brought to the first's layout), reproduce the tied side's one gradient within the
  tolerance.
* **Outputs** (the candidate ties, the reference has a head of its own): the reference's
  separate parameter has no place in the candidate, so the outputs differ. Confirmed when the
  reference's module holding that parameter (a dense head whose output is the model's
  output), re-run on its own captured input with the reference's tied-to array in place of
  its own parameter, reproduces the candidate's output, and re-run unchanged reproduces the
  reference's and not the candidate's (:mod:`xgrad.diagnosis.records`' rule).
"""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import f64, run_unit
from xgrad.diagnosis.records import FAITHFUL, Check, Diagnosis, drop
from xgrad.identify import rel
from xgrad.layers import Dense

__all__ = ["CAUSE", "tied_weights"]

CAUSE = "tied-weights"


def _as_owner(grad: np.ndarray, layout) -> np.ndarray:
    """A gradient of the separate parameter in the tied array's layout."""
    g = np.asarray(grad, np.float64)
    return g if layout is None else np.transpose(g, tuple(int(i) for i in np.argsort(layout)))


def _reference_name(pairing, candidate_name: str) -> str | None:
    return next((r for r, c in pairing.names.items() if c == candidate_name), None)


def _by_gradients(ref, side, pairing, t, tol: float) -> Diagnosis | None:
    """The gradient rule (the outputs agree)."""
    if t.side == "reference":
        tied_grad = ref.grads.params.get(t.owner)
        own = pairing.candidate_value(t.owner, side.grads.params)
        other = side.grads.params.get(t.other)
    else:
        tied_grad = side.grads.params.get(t.owner)
        own = ref.grads.params.get(_reference_name(pairing, t.owner) or "")
        other = ref.grads.params.get(t.other)
    if tied_grad is None or own is None or other is None:
        return None
    tied_grad = np.asarray(tied_grad, np.float64)
    before = rel(np.asarray(own, np.float64), tied_grad)
    summed = np.asarray(own, np.float64) + _as_owner(other, t.layout)
    residual = rel(summed, tied_grad)
    separate = "candidate" if t.side == "reference" else "reference"
    detail = (
        f"the {t.side} ties {t.alias} to {t.owner} (one array, whose gradient is the sum "
        f"of both uses); the {separate} has a separate parameter {t.other} there; summing "
        f"the {separate}'s two gradients, {drop(before, residual)}"
    )
    return Diagnosis(
        cause=CAUSE,
        detail=detail,
        confirmed=bool(residual <= tol),
        residual=residual,
        before=before,
        layer=t.owner.rsplit(".", 1)[0] if "." in t.owner else None,
        where="backward",
        framework=side.label,
    )


def _head(ref, path: str) -> Dense | None:
    """The reference's module at ``path`` when it is read as a dense layer (a head)."""
    info = next((i for i in ref.model.walk() if i.path == path), None)
    return info.layer if info is not None and isinstance(info.layer, Dense) else None


def _by_outputs(ref, side, pairing, t, tol: float) -> Diagnosis | None:
    """The output rule (the candidate ties, the reference's own head has no place in it):
    a confirmed diagnosis, else ``None``."""
    path, _, local = t.other.rpartition(".")
    tied_to = _reference_name(pairing, t.owner)
    inputs = (ref.grads.module_inputs or {}).get(path)
    out_ref = (ref.grads.activations or {}).get(path)
    layer = _head(ref, path) if path else None
    if layer is None or tied_to is None or not inputs or out_ref is None:
        return None
    # the candidate's value at the head is its output: the head must be the last step
    out_ref, out_cand, model_out = f64(out_ref), f64(side.grads.output), f64(ref.grads.output)
    if out_ref.shape != model_out.shape or rel(out_ref, model_out) > tol:
        return None
    if out_cand is None or out_cand.shape != out_ref.shape:
        return None
    weights = {k: f64(v) for k, v in ref.model.weights().items()}
    own = {k[len(path) + 1 :]: v for k, v in weights.items() if k.startswith(path + ".")}
    table = weights.get(tied_to)
    if table is None or local not in own:
        return None
    alt_kernel = table if t.layout is None else np.transpose(table, t.layout)
    if alt_kernel.shape != own[local].shape:
        return None
    x = f64(inputs[0])
    try:
        y_own = run_unit([layer], own, x)
        y_alt = run_unit([layer], {**own, local: alt_kernel}, x)
    except (ValueError, KeyError):
        return None
    unchanged = rel(y_own, out_cand)
    confirmed = Check(
        rel(y_alt, out_cand),
        unchanged,
        tol,
        tol,
        rel(y_own, out_ref) <= max(tol, FAITHFUL * unchanged),
    )
    if not confirmed.confirmed:
        return None
    turned = " transposed" if t.layout is not None and tuple(t.layout) != (0, 1) else ""
    detail = (
        f"the candidate ties {t.alias} to {t.owner} (one array for both uses); the "
        f"reference has a separate parameter {t.other} in its last module, {path}; the "
        f"reference's {path} re-run on its own input with {tied_to}{turned} in place of "
        f"{t.other} reproduces the candidate's output: {drop(unchanged, confirmed.residual)}"
    )
    return Diagnosis(
        cause=CAUSE,
        detail=detail,
        confirmed=True,
        residual=confirmed.residual,
        before=unchanged,
        layer=path,
        where="forward",
        framework=side.label,
    )


def tied_weights(ref, side, pairing, tol: float) -> list[Diagnosis]:
    """One diagnosis per weight tied on one side only (``pairing.tied``): by the outputs when
    the candidate ties and its output differs, else by the sum of the separate side's
    gradients; empty when nothing is tied on one side only."""
    out = []
    parts = rel(f64(side.grads.output), f64(ref.grads.output)) > tol
    for t in getattr(pairing, "tied", ()):
        found = None
        if t.side == "candidate" and parts:
            found = _by_outputs(ref, side, pairing, t, tol)
        found = found or _by_gradients(ref, side, pairing, t, tol)
        if found is not None:
            out.append(found)
    return out
