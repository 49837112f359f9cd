"""Precision: a candidate computing in float32 where float64 was asked, and matmuls that
read their operands at TF32 or bfloat16 precision (GPU and TPU defaults)."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.records import Cause, Finding
from xgrad.identify import rel
from xgrad.layers import Activation, Dense
from xgrad.metrics import TOLERANCES

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


def as_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """``a`` rounded to ``dtype`` (bfloat16 through ml_dtypes), back as float64."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.asarray(a, np.float32).astype(ml_dtypes.bfloat16).astype(np.float64)
    return np.asarray(a).astype(dtype).astype(np.float64)


def exact_in(a: np.ndarray, dtype: str) -> bool:
    """Whether every value is a number of ``dtype`` (a float64 array computed in it)."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(all="ignore"):
        return bool(np.all(as_dtype(a, dtype) == a))


def float32_exact(a: np.ndarray) -> bool:
    """Whether every value is a float32 number (a float64 array computed in float32)."""
    return exact_in(a, "float32")


def _emulated(unit: UnitEvidence, dtype: str) -> np.ndarray:
    """The reference's unit computed the way a ``dtype`` layer does: inputs and weights
    stored in ``dtype``, arithmetic in float32 (float64 for a float32 layer), the output
    rounded to ``dtype``."""
    work = np.float64 if dtype == "float32" else np.float32
    weights = {k: as_dtype(v, dtype).astype(work) for k, v in unit.weights_ref.items()}
    out = run_unit(unit.layers_ref, weights, as_dtype(unit.input_ref, dtype).astype(work))
    return as_dtype(out, dtype)


def dtype_cause(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    if any(layer is None for layer in unit.layers_ref):
        return None
    for low in LOWER.get(ev.dtype, ()):
        declared = ev.dtype_cand == low
        if not (declared or exact_in(unit.output_cand, low)):
            continue
        residual = rel(unit.output_cand, _emulated(unit, low))
        if residual > TOLERANCES[low]:
            continue
        how = (
            f"declares {ev.dtype_cand}"
            if declared
            else f"returns values that are all {low} numbers"
        )
        return Finding(
            f"{ev.dtype} was asked, but the candidate computes this layer in {low} (it {how}); "
            f"the reference evaluated in {low} agrees with it to {residual:.2g}, against "
            f"{before:.2g} in {ev.dtype}",
            residual,
            before,
        )
    return None


def matmul_precision(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    main = unit.main_ref
    if not isinstance(main, Dense) or any(layer is None for layer in unit.layers_ref):
        return None
    best = None
    for fmt, bits in MATMUL_FORMATS.items():
        z = round_mantissa(unit.input_cand, bits) @ round_mantissa(
            unit.weights_cand["kernel"], bits
        )
        if "bias" in unit.weights_cand:
            z = z + unit.weights_cand["bias"]
        a = run_unit([Activation(main.activation), *unit.layers_ref[1:]], {}, z)
        residual = rel(unit.output_cand, a)
        if best is None or residual < best[1]:
            best = (fmt, residual)
    fmt, residual = best
    if residual > max(FLOAT32_TOL, ev.fit_tol) or residual > before / 5:
        return None
    return Finding(
        f"the candidate's matmul reads its operands as {fmt.upper()} "
        f"({MATMUL_FORMATS[fmt]}-bit mantissa), as GPUs and TPUs do by default (TensorFlow's "
        "TF32, JAX's default precision, torch.backends.cuda.matmul.allow_tf32); emulating that "
        f"on the CPU reproduces the candidate to {residual:.2g}, against {before:.2g} for full "
        "float32",
        residual,
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
