"""Precision: a candidate computing in float32 where float64 was asked, and matmuls that
read their operands at TF32 or bfloat16 precision (GPU and TPU defaults)."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.diagnosis.records import Cause, Finding
from xgrad.identify import rel
from xgrad.layers import Activation, Dense

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


def float32_exact(a: np.ndarray) -> bool:
    """Whether every value is a float32 number (a float64 array computed in float32)."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(all="ignore"):
        return bool(np.all(a.astype(np.float32).astype(np.float64) == a))


def dtype_cause(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    if ev.dtype != "float64" or any(layer is None for layer in unit.layers_ref):
        return None
    declared = ev.dtype_cand != "float64"
    if not (declared or float32_exact(unit.output_cand)):
        return None
    f32 = np.float32
    weights = {k: v.astype(f32) for k, v in unit.weights_ref.items()}
    a32 = run_unit(unit.layers_ref, weights, unit.input_ref.astype(f32))
    residual = rel(unit.output_cand, a32)
    if residual > FLOAT32_TOL:
        return None
    how = f"declares {ev.dtype_cand}" if declared else "returns values that are all float32 numbers"
    return Finding(
        f"float64 was asked, but the candidate computes in float32 (it {how}); the reference "
        f"evaluated in float32 agrees with it to {residual:.2g}, against {before:.2g} in float64",
        residual,
        before,
    )


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
        "float64 asked, float32 computed (Keras floatx, JAX x64 off, a float32 layer inside)",
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
