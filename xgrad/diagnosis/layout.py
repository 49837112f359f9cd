"""Weight layout: a kernel transposed, another layer's kernel, or a missing transpose in
the backward pass."""

from __future__ import annotations

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.precision import as_dtype
from xgrad.diagnosis.records import Cause, Finding, drop
from xgrad.identify import rel

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


def weights_differ(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    shared = [k for k in unit.weights_ref if k in unit.weights_cand]  # absent: norm-affine's
    if all(_same(ev, unit.weights_cand[k], unit.weights_ref[k]) for k in shared):
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
    k, r = unit.weights_cand.get("kernel"), unit.weights_ref.get("kernel")

    def rerun(kernel):
        return run_unit(unit.layers_ref, {**unit.weights_cand, "kernel": kernel}, unit.input_cand)

    if k is not None and r is not None and k.shape == r.T.shape and rel(k, r.T) <= ev.fit_tol:
        residual = rel(rerun(r), unit.output_ref)
        return Finding(
            f"the candidate's kernel is the reference's transposed ({k.shape}); with the "
            f"reference's layout {drop(before, residual)}",
            residual,
            before,
        )
    if k is not None:
        for other in ev.units:
            o = other.weights_ref.get("kernel")
            if (
                other.path != unit.path
                and o is not None
                and o.shape == k.shape
                and rel(k, o) <= ev.fit_tol
            ):
                residual = rel(rerun(r), unit.output_ref)
                return Finding(
                    f"the candidate's layer {unit.path} holds the reference's layer "
                    f"{other.path} kernel: layers paired in the wrong order; with its own "
                    f"kernel {drop(before, residual)}",
                    residual,
                    before,
                )
    diffs = ", ".join(
        f"{name} rel {rel(unit.weights_cand[name], unit.weights_ref[name]):.2g}"
        for name in shared
        if not _same(ev, unit.weights_cand[name], unit.weights_ref[name])
    )
    return Finding(
        f"the candidate's weights of layer {unit.path} differ from the reference's ({diffs}), "
        "and not by a transpose or a reordering of layers; were they copied across?",
        None,
        before,
        confirmed=False,
    )


def untransposed_dinput(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """dL/dinput computed as ``delta @ W`` instead of ``delta @ W.T`` (square kernels)."""
    if unit is not ev.units[0] or unit.activation() is None or unit.z() is None:
        return None
    k = unit.weights_ref["kernel"]
    if k.shape[0] != k.shape[1]:
        return None
    from xgrad.activations import get_activation

    delta = get_activation(unit.activation()).vjp(unit.z(), unit.output_ref, unit.grad_ref)
    before = rel(ev.dinput_cand, ev.dinput_ref)
    residual = rel(ev.dinput_cand, delta @ k)
    if residual > ev.fit_tol:
        return None
    return Finding(
        "the candidate's dL/dinput is delta @ W instead of delta @ W.T (a missing transpose "
        f"in layer {unit.path}'s backward); recomputed that way {drop(before, residual)}",
        residual,
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
