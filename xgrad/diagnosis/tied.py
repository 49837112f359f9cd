"""``tied-weights``: one array used by two modules on one side (a tied LM head, a tied
autoencoder), two separate parameters on the other.

After the reference's weights are copied across, both sides compute the same outputs; the
gradients differ, because the tied array's gradient is the sum of its two uses. The cause is
confirmed when the separate side's two gradients, summed (the second brought to the first's
layout), reproduce the tied side's one gradient within the tolerance.
"""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.records import Diagnosis, drop
from xgrad.identify import rel

__all__ = ["CAUSE", "tied_weights"]

CAUSE = "tied-weights"


def _as_owner(grad: np.ndarray, layout) -> np.ndarray:
    """A gradient of the separate parameter in the tied array's layout."""
    g = np.asarray(grad, np.float64)
    return g if layout is None else np.transpose(g, tuple(int(i) for i in np.argsort(layout)))


def tied_weights(ref, side, pairing, tol: float) -> list[Diagnosis]:
    """One diagnosis per weight tied on one side only (``pairing.tied``), confirmed by the sum
    of the separate side's gradients; empty when nothing is tied on one side only."""
    out = []
    for t in getattr(pairing, "tied", ()):
        if t.side == "reference":
            tied_grad = ref.grads.params.get(t.owner)
            own = pairing.candidate_value(t.owner, side.grads.params)
            other = side.grads.params.get(t.other)
        else:
            tied_grad = side.grads.params.get(t.owner)
            own = ref.grads.params.get(
                next((r for r, c in pairing.names.items() if c == t.owner), "")
            )
            other = ref.grads.params.get(t.other)
        if tied_grad is None or own is None or other is None:
            continue
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
        out.append(
            Diagnosis(
                cause=CAUSE,
                detail=detail,
                confirmed=bool(residual <= tol),
                residual=residual,
                before=before,
                layer=t.owner.rsplit(".", 1)[0] if "." in t.owner else None,
                where="backward",
                framework=side.label,
            )
        )
    return out
