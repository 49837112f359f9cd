"""What the metrics are: the :class:`Metrics` record and its plain, one-array definition.

:func:`compare_arrays` computes every metric the direct way, with whole-array NumPy
operations and masks for NaN/Inf. It is the definition the fused engine
(:mod:`xgrad.metrics.fused`) must reproduce, and the path that engine takes for arrays
holding NaN/Inf.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from xgrad.errors import InputError
from xgrad.metrics.tolerances import status_of

__all__ = ["EXACT", "Metrics", "compare_arrays", "json_float", "ordered", "ulp_distance"]


@dataclass(frozen=True)
class Metrics:
    """How one gradient differs from its reference.

    Attributes:
        max_abs: ``max |g - ref|`` over finite elements.
        max_rel: ``max |g - ref| / max(|ref|, eps * max|ref|)``: elementwise, with a floor
            so that elements negligible against the largest one do not divide by ~0.
        rel_norm: ``||g - ref|| / ||ref||`` (0 when both are zero, inf when only ref is).
        cosine: cosine similarity of ``g`` and ``ref`` (1 when both are zero).
        ulp_max: the largest distance in units in the last place of the run dtype, after
            rounding the reference to that dtype; ``None`` for a 0-size array.
        mismatched: elements with ``|g - ref| > tol * (|ref| + max|ref|)``, for messages.
        size: the number of elements.
        worst_index: the index of the largest ``|g - ref|``.
        worst_value, worst_reference: ``g`` and ``ref`` there.
        nan, inf: NaN and Inf counts in ``g``.
        first_nonfinite: the index of the first NaN/Inf in ``g`` (or, when ``g`` has none,
            in ``ref``), else None.
        status: ``match`` (``rel_norm <= tol``; or, for a reference that is zero up to
            rounding, an RMS difference below :data:`~xgrad.metrics.NOISE_FLOORS`),
            ``mismatch``, or ``nonfinite`` (NaN/Inf in ``g`` or in the reference). For
            ``nonfinite``, the distance metrics cover the finite elements only, so they
            still say whether the rest agrees.
        tol: the tolerance the status was decided with.
        ref_nan, ref_inf: NaN and Inf counts in ``ref`` (a reference that is not finite
            itself, e.g. a fully masked attention row filled with -inf).
    """

    max_abs: float
    max_rel: float
    rel_norm: float
    cosine: float
    ulp_max: int | None
    mismatched: int
    size: int
    worst_index: tuple[int, ...]
    worst_value: float
    worst_reference: float
    nan: int
    inf: int
    first_nonfinite: tuple[int, ...] | None
    status: str
    tol: float
    ref_nan: int = 0
    ref_inf: int = 0

    def nonfinite_text(self, name: str) -> str:
        """Which side holds the NaN/Inf, how many, and where the first is, for a
        ``nonfinite`` status: ``"the reference has 12 NaN and 0 Inf, the first at (1, 0);
        torch's values are finite"``; ``name`` is the compared side's (a framework)."""
        first = "" if self.first_nonfinite is None else f", the first at {self.first_nonfinite}"
        cand, ref = self.nan or self.inf, self.ref_nan or self.ref_inf
        ref_words = f"the reference has {self.ref_nan} NaN and {self.ref_inf} Inf"
        if not cand:
            return f"{ref_words}{first}; {name}'s values are finite"
        words = f"{name} has {self.nan} NaN and {self.inf} Inf{first}; "
        return words + (ref_words if ref else "the reference's values are finite")

    def to_dict(self) -> dict:
        """Plain JSON-ready values (lists for indices, None for undefined numbers)."""
        out = asdict(self)
        out["worst_index"] = list(self.worst_index)
        out["first_nonfinite"] = (
            None if self.first_nonfinite is None else list(self.first_nonfinite)
        )
        for key in ("max_abs", "max_rel", "rel_norm", "cosine", "worst_value", "worst_reference"):
            out[key] = json_float(out[key])
        return out


def json_float(value: float | None) -> float | str | None:
    """Floats for JSON: NaN and infinities as the strings "nan", "inf", "-inf"."""
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


EXACT = {
    "float16": (np.float16, np.int16, 10),
    "float32": (np.float32, np.int32, 23),
    "float64": (np.float64, np.int64, 52),
}
"""Run dtype -> (float type, integer type of the same width, mantissa bits): the dtypes
whose ULP distances are counted (others have ``ulp_max=None``)."""

EPS = {name: float(np.finfo(ftype).eps) for name, (ftype, _, _) in EXACT.items()}
"""Machine epsilon per run dtype: ``max_rel``'s floor is ``eps * max|ref|``."""

TINY = float(np.finfo(np.float64).tiny)
"""``max_rel``'s floor when the reference is all zeros."""


def rel_floor(dtype: str, scale: float) -> float:
    """The floor of ``max_rel``'s denominator: ``eps(dtype) * max|ref|`` (float32's eps for
    a dtype without one), or :data:`TINY` when that is 0."""
    return EPS.get(dtype, EPS["float32"]) * scale or TINY


def ordered(a: np.ndarray, dtype: str) -> np.ndarray | None:
    """Integers in the order of the floats ``a`` (rounded to ``dtype``), one apart per ULP.

    IEEE floats are sign and magnitude: negative values are mirrored so that differences of
    the integers count the representable values between two floats; -0.0 maps to 0 like
    +0.0. Same shape as ``a``; ``None`` for a dtype outside :data:`EXACT`.
    """
    if dtype not in EXACT:
        return None
    ftype, itype, _ = EXACT[dtype]
    arr = np.asarray(a, dtype=ftype)
    i = arr.reshape(-1).view(itype)  # 1-D, so that a 0-d value takes out= too
    # sign = -1 for negative floats, else 0; for those, flip the magnitude bits and add 1:
    # i = MIN + m  ->  (i ^ MAX) + 1 = -m. Three passes, no boolean mask.
    sign = np.right_shift(i, np.iinfo(itype).bits - 1)
    out = np.bitwise_and(sign, itype(np.iinfo(itype).max))
    np.bitwise_xor(out, i, out=out)
    np.subtract(out, sign, out=out)
    return out.reshape(arr.shape)


def ulp_distance(a: np.ndarray, b: np.ndarray, dtype: str) -> np.ndarray:
    """Elementwise distance in ULPs of ``dtype`` between two arrays (rounded to it)."""
    return np.abs(np.subtract(ordered(a, dtype), ordered(b, dtype), dtype=np.int64))


def _first(mask: np.ndarray) -> tuple[int, ...] | None:
    if not mask.any():
        return None
    return tuple(int(i) for i in np.argwhere(mask)[0])


def compare_arrays(candidate, reference, *, dtype: str, tol: float) -> Metrics:
    """Every metric of ``candidate`` against ``reference`` (same shape) for run ``dtype``.

    The definition, computed directly over the whole arrays in float64: NaN/Inf in either
    array are counted, located and left out of the distance metrics (masked).
    :class:`~xgrad.metrics.PreparedReference` gives the same values (up to rounding in the
    norms, the cosine and ``max_rel``) in one cached pass for several candidates.

    Args:
        candidate: the framework's array, in the run dtype, any shape and memory order.
        reference: the float64 reference, same shape.
        dtype: the run dtype, for ULP distances and the noise floor.
        tol: the normwise relative tolerance deciding the status.

    Raises:
        InputError: the shapes differ.

    Example:
        >>> m = compare_arrays(np.array([1.0, 2.5]), np.array([1.0, 2.0]), dtype="float64",
        ...                    tol=1e-10)
        >>> m.max_abs, m.worst_index, m.status
        (0.5, (1,), 'mismatch')
    """
    g = np.asarray(candidate)
    ref = np.asarray(reference, dtype=np.float64)
    if g.shape != ref.shape:
        raise InputError(f"shapes differ: candidate {g.shape}, reference {ref.shape}")
    g64 = g.astype(np.float64)
    nan, inf = int(np.isnan(g64).sum()), int(np.isinf(g64).sum())
    ref_nan, ref_inf = int(np.isnan(ref).sum()), int(np.isinf(ref).sum())
    finite = np.isfinite(g64) & np.isfinite(ref)
    first = _first(~np.isfinite(g64))
    if first is None:
        first = _first(~np.isfinite(ref))
    with np.errstate(all="ignore"):
        diff = np.where(finite, np.abs(g64 - ref), 0.0)
        ref_abs = np.where(finite, np.abs(ref), 0.0)
        scale = float(ref_abs.max()) if ref.size else 0.0
        rel = diff / np.maximum(ref_abs, rel_floor(dtype, scale))
        ref_norm = float(np.linalg.norm(ref_abs))
        diff_norm = float(np.linalg.norm(diff))
        g_norm = float(np.linalg.norm(np.where(finite, g64, 0.0)))
        if ref_norm > 0:
            rel_norm = diff_norm / ref_norm
        else:
            rel_norm = 0.0 if diff_norm == 0 else math.inf
        if ref_norm > 0 and g_norm > 0:
            cosine = float(np.sum(np.where(finite, g64 * ref, 0.0)) / (g_norm * ref_norm))
        else:
            cosine = 1.0 if ref_norm == g_norm == 0 else 0.0
        ulp = None
        if ref.size and dtype in EXACT:
            ulp = int(
                np.where(
                    finite,
                    ulp_distance(np.where(finite, g64, 0), np.where(finite, ref, 0), dtype),
                    0,
                ).max()
            )
        mismatched = int((diff > tol * (ref_abs + scale)).sum())
    if ref.size:
        worst = np.unravel_index(int(np.argmax(diff)), ref.shape)
        worst_index = tuple(int(i) for i in worst)
        worst_value, worst_reference = float(g64[worst]), float(ref[worst])
    else:
        worst_index, worst_value, worst_reference = (), 0.0, 0.0
    if first is not None:
        status = "nonfinite"
        mismatched += int((~finite).sum())
    else:
        status = status_of(
            norm=ref_norm, diff_norm=diff_norm, size=int(ref.size), dtype=dtype, tol=tol
        )
    return Metrics(
        max_abs=float(diff.max()) if ref.size else 0.0,
        max_rel=float(rel.max()) if ref.size else 0.0,
        rel_norm=rel_norm,
        cosine=cosine,
        ulp_max=ulp,
        mismatched=mismatched,
        size=int(ref.size),
        worst_index=worst_index,
        worst_value=worst_value,
        worst_reference=worst_reference,
        nan=nan,
        inf=inf,
        first_nonfinite=first,
        status=status,
        tol=tol,
        ref_nan=ref_nan,
        ref_inf=ref_inf,
    )
