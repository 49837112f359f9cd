"""The code between two modules, when that is where a model read module by module parts
(an activation written as a function call in ``forward``: ``F.gelu(self.fc(x))`` against
``jax.nn.gelu(self.fc(x))``).

The values around the code are known on both sides: the output of the module before it and
the input of the module after it. When the code is elementwise (both have one shape) and one
of xgrad's activations reproduces each side's values, the activation causes
(``gelu-approximation``, ``leaky-relu-slope``, ``activation-mismatch``) are tried on it as on
an activation layer.
"""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, f64, one_unit_evidence
from xgrad.identify import fit_activation, rel
from xgrad.layers import Activation

__all__ = ["code_evidence"]


def _fit(x: np.ndarray, y: np.ndarray, dtype: str):
    if x is None or y is None or x.shape != y.shape:
        return None
    name, _ = fit_activation(x, y, dtype if dtype in ("float32", "float64") else "float32")
    return None if name is None else Activation(name)


def code_evidence(ref, side, divergence, inputs, *, dtype: str, tol: float) -> Evidence | None:
    """Evidence with one activation unit for the code that ``divergence`` names (its
    ``between``), or ``None`` when that code is not elementwise or no activation reproduces
    the reference's."""
    between = divergence.between
    if not between or side.label not in between or "reference" not in between:
        return None
    (rp, rn), (cp, cn) = between["reference"], between[side.label]
    x_ref = f64((ref.grads.activations or {}).get(rp))
    x_cand = f64((side.grads.activations or {}).get(cp))
    y_ref = f64(((ref.grads.module_inputs or {}).get(rn) or (None,))[0])
    y_cand = f64(((side.grads.module_inputs or {}).get(cn) or (None,))[0])
    if any(a is None for a in (x_ref, x_cand, y_ref, y_cand)) or x_ref.shape != y_ref.shape:
        return None
    act_ref = _fit(x_ref, y_ref, ref.model.dtype)
    if act_ref is None:
        return None
    unit = UnitEvidence(
        path=divergence.path,
        label=f"{divergence.path} code ({rp} -> {rn} <-> {cp} -> {cn})",
        kind="activation",
        layers_ref=[act_ref],
        layers_cand=[_fit(x_cand, y_cand, side.model.dtype)],
        weights_ref={},
        weights_cand={},
        dweights_ref={},
        dweights_cand={},
        input_ref=x_ref,
        input_cand=x_cand,
        output_ref=y_ref,
        output_cand=y_cand,
        grad_ref=np.zeros_like(y_ref),
        grad_cand=np.zeros_like(y_cand),
    )
    return one_unit_evidence(
        ref,
        side,
        inputs,
        unit,
        dtype=dtype,
        tol=tol,
        fit_tol=max(tol, 1e-5) if side.model.dtype != "float64" else tol,
    )


def code_before(ev: Evidence) -> float:
    """The error to explain at the code: its output on both sides."""
    u = ev.units[0]
    return rel(u.output_cand, u.output_ref)
