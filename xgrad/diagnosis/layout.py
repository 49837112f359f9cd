"""Weight layout: a kernel transposed, another layer's kernel, or a missing transpose in
the backward pass."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.diagnosis.precision import as_dtype
from xgrad.diagnosis.records import Cause, Finding, check, drop, rerun
from xgrad.identify import rel
from xgrad.pairing.params import regroups

__all__ = ["CAUSES"]


def _same(ev: Evidence, cand, ref) -> bool:
    """Equal up to the rounding of a copy into the candidate's storage dtype (whichever
    precision it keeps its weights in)."""
    if ref is None or cand is None:
        return ref is None and cand is None
    if cand.shape != ref.shape:
        return False
    return any(
        rel(cand, as_dtype(ref, dtype)) <= ev.fit_tol
        for dtype in ("float64", "float32", "bfloat16", "float16")
    )


def _as_held(ev: Evidence, unit: UnitEvidence) -> tuple[dict, list[str]] | None:
    """The reference's own arrays arranged as the candidate holds them: each candidate
    weight found as the reference's in place, transposed, or another layer's of the same
    name; ``(weights, what moved)``, or ``None`` when a weight is none of these."""
    weights, moved = {}, []
    for k, c in unit.weights_cand.items():
        r = unit.weights_ref.get(k)
        if r is None:
            return None
        if _same(ev, c, r):
            weights[k] = r
        elif r.ndim == 2 and _same(ev, c, r.T):
            weights[k] = r.T
            moved.append(f"the candidate's {k} is the reference's transposed ({c.shape})")
        else:
            other = next(
                (o for o in ev.units if o.path != unit.path and _same(ev, c, o.weights_ref.get(k))),
                None,
            )
            if other is None:
                return None
            weights[k] = other.weights_ref[k]
            moved.append(
                f"the candidate's layer {unit.path} holds the reference's layer {other.path} {k}"
            )
    return weights, moved


def _regrouped(cand: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The candidate's array in the reference's shape where it is a reshape of it (an NNX
    ``(d, heads, head_dim)`` kernel against a ``(d, d)`` one, paired through a reshape)."""
    return cand.reshape(ref.shape) if regroups(cand.shape, ref.shape) else cand


def weights_differ(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The candidate's weights are not the reference's: the reference's arrays in another
    layout or at another layer (confirmed when the reference's unit re-run with them as the
    candidate holds them reproduces the candidate), or other numbers ("weights differ",
    never confirmed: no convention is tested on weights that differ)."""
    shared = [k for k in unit.weights_ref if k in unit.weights_cand]  # absent: norm-affine's
    if all(
        _same(ev, _regrouped(unit.weights_cand[k], unit.weights_ref[k]), unit.weights_ref[k])
        for k in shared
    ):
        return None
    if any(layer is None for layer in unit.layers_ref):
        return None
    other = [
        f"{k} {unit.weights_cand[k].shape} vs {unit.weights_ref[k].shape}"
        for k in shared
        if unit.weights_cand[k].shape
        not in (unit.weights_ref[k].shape, unit.weights_ref[k].T.shape)
    ]
    if other:  # not one array in two layouts: never paired, so never copied across
        return Finding(
            f"the candidate's layer {unit.path} holds weights of other shapes than the "
            f"reference's ({', '.join(other)}): they pair with nothing, so the reference's were "
            "not copied into them; load them yourself (the reference's reshaped) and pass "
            "transfer=False",
            None,
            before,
            confirmed=False,
        )
    held = _as_held(ev, unit) if set(unit.weights_cand) == set(unit.weights_ref) else None
    if held is not None:
        weights, moved = held
        confirmed = rerun(ev, unit, weights=weights)
        words = "; ".join(moved)
        if "transposed" in words:
            words += "; PyTorch's nn.Linear.weight is (out, in), Keras and Flax kernels (in, out)"
        else:
            words += ": layers paired in the wrong order"
        if confirmed.confirmed:
            return Finding(
                f"{words}; the reference's layer with its weights as the candidate holds them "
                f"reproduces the candidate: {drop(before, confirmed.residual)}",
                confirmed.residual,
                before,
            )
        return Finding(
            f"{words}, but the reference's layer with its weights as the candidate holds "
            f"them leaves {confirmed.residual:.2g} of the error {before:.2g}: something else "
            "differs too",
            confirmed.residual,
            before,
            confirmed=False,
        )
    diffs = ", ".join(
        f"{name} rel {rel(unit.weights_cand[name], unit.weights_ref[name]):.2g}"
        for name in shared
        if not _same(ev, unit.weights_cand[name], unit.weights_ref[name])
    )
    return Finding(
        f"the candidate's weights of layer {unit.path} differ from the reference's ({diffs}), "
        "and not by a transpose or a reordering of layers; were they copied across? No "
        "convention is tested on weights that differ",
        None,
        before,
        confirmed=False,
    )


def untransposed_dinput(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """dL/dinput computed as ``delta @ W`` instead of ``delta @ W.T`` (square kernels)."""
    if unit is not ev.units[0] or unit.activation() is None or unit.z() is None:
        return None
    if ev.dinput_cand is None or ev.dinput_ref is None:  # token ids: no dL/dinput
        return None
    k = unit.weights_ref["kernel"]
    if k.shape[0] != k.shape[1]:
        return None
    from xgrad.activations import get_activation

    delta = get_activation(unit.activation()).vjp(unit.z(), unit.output_ref, unit.grad_ref)
    before = rel(ev.dinput_cand, ev.dinput_ref)
    confirmed = check(ev, ev.dinput_cand, delta @ k, delta @ k.T, reference=ev.dinput_ref)
    return confirmed.finding(
        "the candidate's dL/dinput is delta @ W instead of delta @ W.T (a missing transpose "
        f"in layer {unit.path}'s backward); recomputed that way "
        f"{drop(before, confirmed.residual)}",
        before,
    )


CAUSES = (
    Cause(
        "weight-layout",
        "forward",
        ("dense", "layernorm", "rmsnorm", "batchnorm"),
        "a kernel stored transposed (PyTorch's (out, in)), or another layer's weights",
        weights_differ,
    ),
    Cause(
        "weight-layout",
        "backward",
        ("dense",),
        "dL/dinput computed with the kernel untransposed (delta @ W instead of delta @ W.T)",
        untransposed_dinput,
    ),
)
