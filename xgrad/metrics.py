"""Discrepancy metrics between a gradient and its reference, and the tolerance table.

The status of a comparison is decided by one number, the normwise relative error
``||g - ref||_2 / ||ref||_2``, against a per-dtype tolerance (:data:`TOLERANCES`). Normwise,
because elementwise relative errors explode wherever the reference is near zero (a ReLU
layer has many such entries) while the gradient as a whole is right to rounding level.
The other metrics are there to explain a status, not to decide it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from xgrad.errors import InputError

__all__ = [
    "NOISE_FLOORS",
    "PreparedReference",
    "STATUSES",
    "TOLERANCES",
    "Metrics",
    "compare_arrays",
    "json_float",
    "tolerance",
]

TOLERANCES: dict[str, float] = {
    "float64": 1e-10,
    "float32": 1e-5,
    "float16": 1e-2,
    "bfloat16": 4e-2,
}
"""Normwise relative tolerance per run dtype.

float32: a dense layer's gradient is a sum of products, each rounded with unit roundoff
u = 6e-8, and the error of such a sum grows like u times the square root of its length,
so for the widths seen in practice (up to a few thousand) it stays near 1e-6. 1e-5 leaves
a margin of about 10 above that and still flags the smallest real convention difference
the frameworks have (GELU tanh vs erf, 4e-5 to 6e-4 normwise). float64: u = 1.1e-16; 1e-10
is a wide margin that still flags a float32 computation, whose error is near 1e-7.
16-bit: u = 4.9e-4 (float16) and 3.9e-3 (bfloat16): about 20 and 10 units of roundoff,
measured on small GELU/LayerNorm/residual models where the frameworks' 16-bit gradients
land between 1e-3 and 2e-2. Override per call with ``rtol=``.
"""

NOISE_FLOORS: dict[str, float] = {
    "float64": 1e-14,
    "float32": 1e-6,
    "float16": 1e-2,
    "bfloat16": 1e-2,
}
"""Root-mean-square absolute difference below which a reference that is itself zero up to
rounding counts as matched (about 10 times the dtype's machine epsilon).

A relative error means nothing when the reference is 0: the gradient of ``sum(softmax(z))``
is exactly 0, and a float32 framework returns rounding noise of about 1e-8 there. Only when
the reference's own RMS is below the floor is the difference judged absolutely; everywhere
else the status is the normwise relative rule.
"""

STATUSES = ("match", "match-kink", "match-clip", "mismatch", "nonfinite", "uninformative")
"""Every status a comparison can have. ``uninformative``: every reference gradient is zero up
to rounding (the loss does not depend on the parameters, e.g. ``sum`` of a softmax output),
so nothing could be seen; the runner sets it (see :func:`xgrad.runner.assemble`).
``match-kink`` and ``match-clip``: a difference that rounding at an activation's kink or at
crossentropy's clipping bound explains entirely (:mod:`xgrad.diagnosis.rounding`)."""

OK_STATUSES = ("match", "match-kink", "match-clip")
"""The statuses that count as a pass."""


def tolerance(dtype: str, rtol: float | None = None) -> float:
    """The tolerance for ``dtype``, or ``rtol`` when given.

    Raises:
        InputError: ``rtol`` is not a positive finite number, or the dtype has no entry.
    """
    if rtol is not None:
        if (
            isinstance(rtol, bool)
            or not isinstance(rtol, int | float)
            or not (math.isfinite(rtol) and rtol > 0)
        ):
            raise InputError(f"rtol must be a positive finite number, got {rtol!r}")
        return float(rtol)
    if dtype not in TOLERANCES:
        raise InputError(f"no tolerance for dtype {dtype!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[dtype]


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
        first_nonfinite: the index of the first NaN/Inf in ``g`` (or in ``ref``), else None.
        status: ``match`` (``rel_norm <= tol``; or, for a reference that is zero up to
            rounding, an RMS difference below :data:`NOISE_FLOORS`), ``mismatch``, or
            ``nonfinite`` (NaN/Inf
            in ``g`` or in the reference). For ``nonfinite``, the distance metrics cover
            the finite elements only, so they still say whether the rest agrees.
        tol: the tolerance the status was decided with.
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


_CHUNK = 1 << 18  # elements per pass of the fast path: its temporaries stay in cache

_EXACT = {
    "float16": (np.float16, np.int16),
    "float32": (np.float32, np.int32),
    "float64": (np.float64, np.int64),
}


def _ordered(a: np.ndarray, dtype: str) -> np.ndarray | None:
    """Integers in the order of the floats ``a`` (rounded to ``dtype``), one apart per ULP.

    IEEE floats are sign and magnitude: negative values are mirrored so that differences of
    the integers count the representable values between two floats; -0.0 maps to 0 like
    +0.0.
    """
    if dtype not in _EXACT:
        return None
    ftype, itype = _EXACT[dtype]
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
    return np.abs(np.subtract(_ordered(a, dtype), _ordered(b, dtype), dtype=np.int64))


def _first(mask: np.ndarray) -> tuple[int, ...] | None:
    if not mask.any():
        return None
    return tuple(int(i) for i in np.argwhere(mask)[0])


class PreparedReference:
    """Everything about a reference that every framework's comparison reuses.

    :func:`compare_arrays` makes one for a single comparison; the runner makes one per
    entry and compares every framework against it, so the reference's absolute values,
    norm, thresholds and rounded ULP integers are computed once.

    ``scale`` replaces the reference's norm as the denominator of ``rel_norm`` when it is
    larger: the runner passes the sum of magnitudes of the terms of a ``sum``/``mean`` loss,
    whose value can cancel to nearly nothing while its rounding error scales with the
    terms.
    """

    def __init__(self, reference, *, dtype: str, tol: float, scale: float | None = None) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        if not ref.flags.c_contiguous:  # (ascontiguousarray would make a 0-d array 1-d)
            ref = ref.copy()
        self.ref, self.dtype, self.tol = ref, dtype, tol
        self.shape, self.size = ref.shape, int(ref.size)
        flat = ref.ravel()
        norm2 = float(flat @ flat) if ref.size else 0.0
        self.finite = bool(math.isfinite(norm2) and np.isfinite(norm2))
        if self.finite and ref.size:
            self._prepare(ref, norm2, dtype, tol)
            if scale is not None:  # a sum whose terms cancel: judge it by their magnitudes
                self.norm = max(self.norm, float(scale))

    def _prepare(self, ref: np.ndarray, norm2: float, dtype: str, tol: float) -> None:
        with np.errstate(all="ignore"):  # a float64 value can overflow the run dtype
            absref = np.abs(ref)
            self.scale = float(absref.max())
            self.norm = math.sqrt(norm2)
            self.absref = absref
            eps = np.finfo(_EXACT.get(dtype, (np.float32,))[0]).eps
            self.floor = eps * self.scale or np.finfo(np.float64).tiny
            self.ordered = _ordered(ref, dtype)

    def compare(self, candidate) -> Metrics:
        """Every metric of ``candidate`` (same shape) against this reference."""
        g = np.asarray(candidate)
        if g.shape != self.shape:
            raise InputError(f"shapes differ: candidate {g.shape}, reference {self.shape}")
        if self.finite and self.size:
            with np.errstate(all="ignore"):
                fast = self._fast(g)
            if fast is not None:
                return fast
        return _slow_compare(g, self.ref, dtype=self.dtype, tol=self.tol)

    def _status(self, rel_norm: float, diff_norm: float) -> str:
        floor = NOISE_FLOORS.get(self.dtype, 0.0) * math.sqrt(max(self.size, 1))
        if self.norm <= floor:  # the reference is zero up to rounding: judge absolutely
            return "match" if diff_norm <= floor else "mismatch"
        return "match" if rel_norm <= self.tol else "mismatch"

    def _fast(self, g: np.ndarray) -> Metrics | None:
        """All-finite path: no masks, and in chunks that stay in cache (None if anything
        is not finite)."""
        g_flat = g.reshape(-1)
        ref = self.ref.reshape(-1)
        absref = self.absref.reshape(-1)
        ordered = None if self.ordered is None else self.ordered.reshape(-1)
        dd = rd = max_rel = 0.0
        worst, worst_abs, mismatched, ulp = 0, -1.0, 0, 0
        for lo in range(0, self.size, _CHUNK):
            hi = min(lo + _CHUNK, self.size)
            diff = np.subtract(g_flat[lo:hi], ref[lo:hi], dtype=np.float64)
            dd += float(diff @ diff)
            if not math.isfinite(dd):
                return None
            rd += float(ref[lo:hi] @ diff)
            if ordered is not None:
                steps = np.subtract(
                    _ordered(g_flat[lo:hi], self.dtype), ordered[lo:hi], dtype=np.int64
                )
                ulp = max(ulp, int(steps.max()), -int(steps.min()))
            absdiff = np.abs(diff, out=diff)
            k = int(np.argmax(absdiff))
            if absdiff[k] > worst_abs:
                worst, worst_abs = lo + k, float(absdiff[k])
            a = absref[lo:hi]
            mismatched += int(np.count_nonzero(absdiff > self.tol * (a + self.scale)))
            np.divide(absdiff, np.maximum(a, self.floor), out=absdiff)
            max_rel = max(max_rel, float(absdiff.max()))
        rr = self.norm**2
        gg = max(rr + 2 * rd + dd, 0.0)
        diff_norm = math.sqrt(dd)
        rel_norm = diff_norm / self.norm if self.norm else (0.0 if dd == 0 else math.inf)
        if rr > 0 and gg > 0:
            cosine = (rr + rd) / math.sqrt(rr * gg)
        else:
            cosine = 1.0 if rr == gg == 0 else 0.0
        index = tuple(int(i) for i in np.unravel_index(worst, self.shape))
        return Metrics(
            max_abs=worst_abs,
            max_rel=max_rel,
            rel_norm=rel_norm,
            cosine=cosine,
            ulp_max=None if ordered is None else ulp,
            mismatched=mismatched,
            size=self.size,
            worst_index=index,
            worst_value=float(g_flat[worst]),
            worst_reference=float(ref[worst]),
            nan=0,
            inf=0,
            first_nonfinite=None,
            status=self._status(rel_norm, diff_norm),
            tol=self.tol,
        )


def compare_arrays(candidate, reference, *, dtype: str, tol: float) -> Metrics:
    """Every metric of ``candidate`` against ``reference`` (same shape) for run ``dtype``.

    Args:
        candidate: the framework's array, in the run dtype.
        reference: the float64 reference.
        dtype: the run dtype, for ULP distances.
        tol: the normwise relative tolerance deciding the status.

    Raises:
        InputError: the shapes differ.
    """
    return PreparedReference(reference, dtype=dtype, tol=tol).compare(candidate)


def quick_rel_norm(candidate, reference) -> float:
    """``||g - ref|| / ||ref||`` in two passes (inf when anything is not finite)."""
    with np.errstate(all="ignore"):
        diff = np.subtract(np.asarray(candidate), reference, dtype=np.float64).ravel()
        ref = np.asarray(reference, dtype=np.float64).ravel()
        dd, rr = float(diff @ diff), float(ref @ ref)
    if not (math.isfinite(dd) and math.isfinite(rr)):
        return math.inf
    return math.sqrt(dd / rr) if rr else (0.0 if dd == 0 else math.inf)


def _slow_compare(candidate, reference, *, dtype: str, tol: float) -> Metrics:
    """The general path, with masks for NaN/Inf in either array."""
    g = np.asarray(candidate)
    ref = np.asarray(reference, dtype=np.float64)
    if g.shape != ref.shape:
        raise InputError(f"shapes differ: candidate {g.shape}, reference {ref.shape}")
    g64 = g.astype(np.float64)
    nan = int(np.isnan(g64).sum())
    inf = int(np.isinf(g64).sum())
    finite = np.isfinite(g64) & np.isfinite(ref)
    first = _first(~np.isfinite(g64))
    if first is None:
        first = _first(~np.isfinite(ref))
    with np.errstate(all="ignore"):
        diff = np.where(finite, np.abs(g64 - ref), 0.0)
        ref_abs = np.where(finite, np.abs(ref), 0.0)
        scale = float(ref_abs.max()) if ref.size else 0.0
        floor = (
            np.finfo(
                np.dtype(dtype) if dtype in ("float16", "float32", "float64") else np.float32
            ).eps
            * scale
            or np.finfo(np.float64).tiny
        )
        rel = diff / np.maximum(ref_abs, floor)
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
        if ref.size and dtype in _EXACT:
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
    nonfinite = first is not None
    if nonfinite:
        status = "nonfinite"
        mismatched += int((~finite).sum())
    else:
        floor = NOISE_FLOORS.get(dtype, 0.0) * math.sqrt(max(ref.size, 1))
        if ref_norm <= floor:  # the reference is zero up to rounding: judge absolutely
            status = "match" if diff_norm <= floor else "mismatch"
        else:
            status = "match" if rel_norm <= tol else "mismatch"
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
    )
