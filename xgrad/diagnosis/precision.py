"""Precision: a candidate computing in float32 where float64 was asked, and matmuls that
read their operands at TF32 or bfloat16 precision (GPU and TPU defaults)."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.records import Cause, Check, Finding, check
from xgrad.identify import rel
from xgrad.layers import Activation, Dense
from xgrad.metrics import UNIT_ROUNDOFF

__all__ = ["CAUSES", "float32_exact", "round_mantissa"]

MATMUL_FORMATS = {"tf32": 10, "bf16": 7}  # mantissa bits kept in each operand
FLOAT32_TOL = 1e-5


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (round to nearest even), as a matmul
    unit does when it reads TF32 (10 bits) or bfloat16 (7 bits) operands."""
    f = np.asarray(x, dtype=np.float32)
    i = f.view(np.uint32).astype(np.uint64)
    shift = 23 - bits
    lsb = (i >> shift) & 1
    i = (i + (1 << (shift - 1)) - 1 + lsb) & ~np.uint64((1 << shift) - 1)
    return i.astype(np.uint32).view(np.float32).astype(np.float64)


LOWER = {"float64": ("float32", "bfloat16", "float16"), "float32": ("bfloat16", "float16")}
"""The lower precisions a candidate may compute in, for each precision asked."""


def numpy_dtype(dtype: str):
    """The NumPy dtype of ``dtype`` (bfloat16 is ml_dtypes')."""
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(dtype)


def as_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` (bfloat16 through ml_dtypes), back as float64."""
    if dtype == "bfloat16":
        a = np.asarray(a, np.float32)
    return np.asarray(a).astype(numpy_dtype(dtype)).astype(np.float64)


def exact_in(a: np.ndarray, dtype: str) -> bool:
    """Whether every value is a number of ``dtype`` (a float64 array computed in it)."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(all="ignore"):
        return bool(np.all(as_dtype(a, dtype) == a))


def float32_exact(a: np.ndarray) -> bool:
    """Whether every value is a float32 number (a float64 array computed in float32)."""
    return exact_in(a, "float32")


FLIPS = 0.1
"""A 16-bit re-run reproduces the candidate to this fraction of the dtype's unit roundoff: a
value rounded the other way (a sum accumulated in another order) moves by one unit, so a
few such values leave a residual of about this size, and the unchanged reference's error is
of the size of the unit roundoff itself."""


def _emulations(unit: UnitEvidence, dtype: str):
    """The reference's unit, with its own weights and input, computed the ways a ``dtype``
    layer computes it: inputs and weights stored in ``dtype``, arithmetic in float32
    (float64 for a float32 layer), and the result rounded to ``dtype`` after the whole unit,
    or (a Dense) after the matmul, after the bias add (or the two fused) and after the
    activation (or with the activation computed in float32 after a cast): compilers place
    these roundings differently (XLA keeps a bfloat16 bias add in float32)."""
    work = np.float64 if dtype == "float32" else np.float32

    def low(a):
        return as_dtype(a, dtype).astype(work)

    weights = {k: low(v) for k, v in unit.weights_ref.items()}
    x = low(unit.input_ref)
    yield as_dtype(run_unit(unit.layers_ref, weights, x), dtype)
    main = unit.main_ref
    if not isinstance(main, Dense) or "kernel" not in weights:
        return
    rest = [Activation(main.activation), *unit.layers_ref[1:]]
    matmul = x @ weights["kernel"]
    bias = weights.get("bias", 0)
    # the bias added to the rounded product and rounded again, added before one rounding
    # (fused), or added in float32 (a compiler that drops a rounding it need not make)
    for z in (low(low(matmul) + bias), low(matmul + bias), low(matmul) + bias):
        a = run_unit(rest, {}, z)
        yield as_dtype(a, dtype)
        yield np.asarray(a, np.float64)
        if dtype != "float32":  # the activation's own operations each rounded to dtype
            with np.errstate(all="ignore"):
                yield as_dtype(run_unit(rest, {}, z.astype(numpy_dtype(dtype))), dtype)


def _in_dtype(ev: Evidence, unit: UnitEvidence, dtype: str) -> Check:
    """The rule for a unit computed in ``dtype``: the closest of its emulations, to
    :data:`FLIPS` of the dtype's unit roundoff; where every output is a number of that dtype,
    to one unit roundoff and closer than the unchanged reference (a 16-bit activation rounds
    each of its own operations, in an order each compiler chooses, which a re-run approaches
    to one rounding)."""
    own = run_unit(unit.layers_ref, unit.weights_ref, unit.input_ref)
    tol = max(ev.fit_tol, FLOAT32_TOL)  # a float32 re-run: float32's own tolerance
    if dtype != "float32":
        tol = FLIPS * UNIT_ROUNDOFF[dtype]
        if exact_in(unit.output_cand, dtype):
            tol = min(UNIT_ROUNDOFF[dtype], rel(unit.output_cand, own))
        tol = max(ev.fit_tol, tol)
    checks = [
        check(ev, unit.output_cand, alt, own, reference=unit.output_ref, tol=tol)
        for alt in _emulations(unit, dtype)
    ]
    return min(checks, key=lambda c: c.residual)


def dtype_cause(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The candidate computes the unit in a lower precision than asked: the reference's
    unit computed in it (:func:`_emulations`) reproduces the candidate, where its outputs
    carry that precision's rounding; a float32 layer when float64 was asked, a 16-bit one
    (bfloat16, float16) in either, whole-layer compute included."""
    if any(layer is None for layer in unit.layers_ref):
        return None
    for low in LOWER.get(ev.dtype, ()):
        declared = ev.dtype_cand == low
        if low == "float32" and not (declared or exact_in(unit.output_cand, low)):
            continue
        try:
            confirmed = _in_dtype(ev, unit, low)
        except (ValueError, KeyError):  # a unit xgrad cannot re-run (no moving statistics)
            return None
        if not confirmed.confirmed:
            continue
        how = (
            f"it declares {ev.dtype_cand}"
            if declared
            else f"it returns values that are all {low} numbers"
            if exact_in(unit.output_cand, low)
            else f"its values are those of {low} arithmetic"
        )
        return Finding(
            f"{ev.dtype} was asked, but the candidate computes this layer in {low} ({how}); "
            f"the reference's layer computed in {low} agrees with it to "
            f"{confirmed.residual:.2g}, against {before:.2g} in {ev.dtype}",
            confirmed.residual,
            before,
        )
    return None


def matmul_precision(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    main = unit.main_ref
    if not isinstance(main, Dense) or any(layer is None for layer in unit.layers_ref):
        return None
    try:
        own = run_unit(unit.layers_ref, unit.weights_ref, unit.input_ref)
    except (ValueError, KeyError):
        return None
    rest = [Activation(main.activation), *unit.layers_ref[1:]]
    best = None
    for fmt, bits in MATMUL_FORMATS.items():
        z = round_mantissa(unit.input_ref, bits) @ round_mantissa(unit.weights_ref["kernel"], bits)
        if "bias" in unit.weights_ref:
            z = z + unit.weights_ref["bias"]
        confirmed = check(
            ev,
            unit.output_cand,
            run_unit(rest, {}, z),
            own,
            reference=unit.output_ref,
            tol=max(FLOAT32_TOL, ev.fit_tol),
        )
        if best is None or confirmed.residual < best[1].residual:
            best = (fmt, confirmed)
    fmt, confirmed = best
    if not confirmed.confirmed or confirmed.residual > before / 5:
        return None
    return Finding(
        f"the candidate's matmul reads its operands as {fmt.upper()} "
        f"({MATMUL_FORMATS[fmt]}-bit mantissa), as GPUs and TPUs do by default (TensorFlow's "
        "TF32, JAX's default precision, torch.backends.cuda.matmul.allow_tf32); emulating that "
        f"on the CPU reproduces the candidate to {confirmed.residual:.2g}, against "
        f"{before:.2g} for full float32",
        confirmed.residual,
        before,
    )


CAUSES = (
    Cause(
        "dtype",
        "forward",
        (),
        "a lower precision computed than asked (Keras floatx or a mixed_bfloat16 policy, "
        "JAX x64 off, an nnx layer with dtype=bfloat16, a float32 layer inside)",
        dtype_cause,
    ),
    Cause(
        "matmul-precision",
        "forward",
        ("dense",),
        "matmul operands read as TF32 or bfloat16 (GPU/TPU defaults), emulated on the CPU",
        matmul_precision,
    ),
)
