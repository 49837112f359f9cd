"""Discrepancy metrics between a gradient and its reference, and the tolerance table.

The status of a comparison is decided by one number, the normwise relative error
``||g - ref||_2 / ||ref||_2``, against a per-dtype tolerance (:data:`TOLERANCES`). Normwise,
because elementwise relative errors explode wherever the reference is near zero (a ReLU
layer has many such entries) while the gradient as a whole is right to rounding level.
The other metrics are there to explain a status, not to decide it.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from xgrad.errors import InputError

__all__ = [
    "NOISE_FLOORS",
    "EntryComparison",
    "PreparedReference",
    "STATUSES",
    "TOLERANCES",
    "UNIT_ROUNDOFF",
    "Metrics",
    "compare_arrays",
    "json_float",
    "rtol_note",
    "tolerance",
]

UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
"""Each dtype's unit roundoff: a normwise tolerance below it fails on rounding alone."""


def rtol_note(rtol: float | None, dtype: str, what: str = "results") -> str | None:
    """A note when a given ``rtol`` is below ``dtype``'s unit roundoff (else ``None``): such
    a comparison mismatches on rounding alone, whatever the frameworks do. ``what`` names
    the things compared (``"cells"`` in a sweep)."""
    if rtol is None or dtype not in UNIT_ROUNDOFF or rtol >= UNIT_ROUNDOFF[dtype]:
        return None
    return (
        f"rtol {rtol:g} is below {dtype}'s unit roundoff ({UNIT_ROUNDOFF[dtype]:.1e}): "
        f"{dtype} {what} mismatch on rounding alone (its default tolerance is "
        f"{TOLERANCES[dtype]:g})"
    )


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


CHUNK = 1 << 15
"""Elements per chunk of the fused pass. Every temporary of a chunk (one float64 difference
per candidate, and a few shared buffers) stays in a core's L2 cache, so each array is read
from memory once."""

PARALLEL_CHUNKS = 8
"""An entry of at least this many chunks is measured by several threads (NumPy releases the
GIL in its loops); smaller ones in the calling thread."""

_EXACT = {
    "float16": (np.float16, np.int16, 10),
    "float32": (np.float32, np.int32, 23),
    "float64": (np.float64, np.int64, 52),
}
# run dtype -> (float type, integer type of the same width, mantissa bits)
_EPS = {name: float(np.finfo(ftype).eps) for name, (ftype, _, _) in _EXACT.items()}


def _ordered(a: np.ndarray, dtype: str) -> np.ndarray | None:
    """Integers in the order of the floats ``a`` (rounded to ``dtype``), one apart per ULP.

    IEEE floats are sign and magnitude: negative values are mirrored so that differences of
    the integers count the representable values between two floats; -0.0 maps to 0 like
    +0.0.
    """
    if dtype not in _EXACT:
        return None
    ftype, itype, _ = _EXACT[dtype]
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


def _threads() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


@dataclass(frozen=True)
class EntryComparison:
    """Every candidate of one entry against its reference, from one fused pass.

    Attributes:
        results: candidate label -> its :class:`Metrics`.
        ref_norm: ``||ref||_2`` (``inf`` when the reference is not finite).
        differences: ``(a, b)`` -> ``||g_a - g_b||_2`` for every pair of candidates, in the
            order they were given (``inf`` where either holds NaN/Inf).
    """

    results: dict[str, Metrics]
    ref_norm: float
    differences: dict[tuple[str, str], float]


class _Sums:
    """What one thread of the fused pass accumulates: per-chunk sums (added up in chunk
    order afterwards, so that the result does not depend on which thread took which chunk)
    and running maxima."""

    def __init__(self, k: int) -> None:
        self.worst = [-1.0] * k
        self.worst_at = [0] * k
        self.max_rel = [0.0] * k
        self.ulp = [0] * k
        self.mismatched = [0] * k


class PreparedReference:
    """Everything about a reference that every candidate's comparison reuses.

    :func:`compare_arrays` makes one for a single comparison; the runner makes one per
    entry and measures every framework against it in one pass (:meth:`compare_many`).

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
        self.finite, self.scale, self.ref_norm, self.norm = True, 0.0, 0.0, 0.0
        self.floor = np.finfo(np.float64).tiny
        if not self.size:
            return
        flat = ref.reshape(-1)
        hi, lo, squares = -math.inf, math.inf, []
        for start in range(0, self.size, CHUNK):  # one read of the reference
            r = flat[start : start + CHUNK]
            hi, lo = max(hi, float(r.max())), min(lo, float(r.min()))
            squares.append(float(np.einsum("i,i", r, r)))  # (no BLAS: it threads short dots)
        rr = math.fsum(squares)
        self.finite = math.isfinite(hi) and math.isfinite(lo) and math.isfinite(rr)
        if not self.finite:
            self.ref_norm = self.norm = math.inf
            return
        self.scale = max(hi, -lo)
        self.ref_norm = self.norm = math.sqrt(rr)
        self.floor = _EPS.get(dtype, _EPS["float32"]) * self.scale or self.floor
        if scale is not None:  # a sum whose terms cancel: judge it by their magnitudes
            self.norm = max(self.norm, float(scale))

    def compare(self, candidate) -> Metrics:
        """Every metric of ``candidate`` (same shape) against this reference."""
        return self.compare_many({"candidate": candidate}, pairs=False).results["candidate"]

    def compare_many(self, candidates: Mapping[str, object], *, pairs: bool = True):
        """Every candidate against this reference in one pass over the arrays.

        The pass runs in chunks of :data:`CHUNK` elements: each chunk of the reference is
        read once, its absolute values, elementwise denominators and rounded ULP integers
        are made once, and every candidate's chunk is then measured against them while
        they are in cache, with the differences between candidates (``pairs``) taken from
        the same chunk. A candidate holding NaN/Inf (or a reference that does) goes the
        general, masked way instead.

        Returns:
            An :class:`EntryComparison`.

        Raises:
            InputError: a candidate's shape differs from the reference's.
        """
        arrays = {}
        for label, candidate in candidates.items():
            g = np.asarray(candidate)
            if g.shape != self.shape:
                raise InputError(f"shapes differ: candidate {g.shape}, reference {self.shape}")
            arrays[label] = g
        labels = list(arrays)
        results: dict[str, Metrics] = {}
        differences: dict[tuple[str, str], float] = {}
        if self.finite and self.size:
            with np.errstate(all="ignore"):
                run = self._stacked if self.size <= CHUNK else self._fused
                results, differences = run([arrays[lb] for lb in labels], labels, pairs)
        for label in labels:
            if label not in results:
                results[label] = _slow_compare(
                    arrays[label], self.ref, dtype=self.dtype, tol=self.tol
                )
        if pairs:
            for i, a in enumerate(labels):
                for b in labels[i + 1 :]:
                    if (a, b) not in differences:
                        differences[(a, b)] = _difference(arrays[a], arrays[b])
            differences = {
                (a, b): differences[(a, b)] for i, a in enumerate(labels) for b in labels[i + 1 :]
            }
        return EntryComparison(
            results={label: results[label] for label in labels},
            ref_norm=self.ref_norm,
            differences=differences,
        )

    # -- the fused pass -------------------------------------------------------------------

    def _stacked(self, arrays: list[np.ndarray], labels: list[str], pairs: bool):
        """An entry of one chunk at most: every candidate at once, as the rows of one
        array, so that the cost is a fixed number of NumPy calls."""
        r = self.ref.reshape(-1)
        cands = np.empty((len(arrays), self.size))
        for i, g in enumerate(arrays):
            cands[i] = np.asarray(g, dtype=np.float64).reshape(-1)
        diffs = cands - r
        dd = np.einsum("ij,ij->i", diffs, diffs)
        good = np.isfinite(dd)
        if not good.all():  # NaN/Inf: those candidates go the masked way
            keep = [i for i in range(len(arrays)) if good[i]]
            if not keep:
                return {}, {}
            arrays = [arrays[i] for i in keep]
            labels = [labels[i] for i in keep]
            cands, diffs, dd = cands[keep], diffs[keep], dd[keep]
        rd = np.einsum("ij,j->i", diffs, r)
        absd = np.abs(diffs)
        at = np.argmax(absd, axis=1)
        rows = np.arange(len(labels))
        worst = absd[rows, at]
        absr = np.abs(r)
        mismatched = np.count_nonzero(absd > self.tol * (absr + self.scale), axis=1)
        max_rel = (absd / np.maximum(absr, self.floor)).max(axis=1)
        ulp = None
        if self.dtype in _EXACT:
            ftype = _EXACT[self.dtype][0]
            steps = np.subtract(
                _ordered(cands.astype(ftype), self.dtype),
                _ordered(r.astype(ftype), self.dtype),
                dtype=np.int64,
            )
            ulp = np.abs(steps).max(axis=1)
        results = {}
        for i, label in enumerate(labels):
            results[label] = self._finish(
                dd=float(dd[i]),
                rd=float(rd[i]),
                worst=float(worst[i]),
                at=int(at[i]),
                max_rel=float(max_rel[i]),
                ulp=None if ulp is None else int(ulp[i]),
                mismatched=int(mismatched[i]),
                value=float(cands[i, at[i]]),
            )
        differences = {}
        if pairs and len(labels) > 1:
            for i, a in enumerate(labels):
                e = diffs[i + 1 :] - diffs[i]
                for j, norm2 in enumerate(np.einsum("ij,ij->i", e, e)):
                    differences[(a, labels[i + 1 + j])] = math.sqrt(float(norm2))
        return results, differences

    def _fused(self, arrays: list[np.ndarray], labels: list[str], pairs: bool):
        """Several chunks: each candidate measured chunk by chunk, on a few threads."""
        cands = []
        for g in arrays:
            if g.dtype.kind != "f" or g.dtype.itemsize not in (2, 4, 8):
                g = g.astype(np.float64)  # e.g. bfloat16: no native cast in every loop
            cands.append(g)
        # A 2-D candidate in another memory order (a transposed view: torch's kernels) is read
        # in blocks of whole rows, copied into the chunk's buffer in the reference's order.
        by_rows = self.ref.ndim == 2 and any(not g.flags.c_contiguous for g in cands)
        ncols = self.shape[1] if by_rows else 0
        step = max(1, CHUNK // ncols) * ncols if by_rows else CHUNK
        sources = []
        for g in cands:
            if g.flags.c_contiguous:
                sources.append((g.reshape(-1), None))
            elif by_rows:
                sources.append((None, g))
            else:
                sources.append((np.ascontiguousarray(g).reshape(-1), None))
        k = len(sources)
        n_chunks = -(-self.size // step)
        dd = np.zeros((k, n_chunks))
        rd = np.zeros((k, n_chunks))
        pair_list = [(a, b) for a in range(k) for b in range(a + 1, k)] if pairs else []
        pd = np.zeros((len(pair_list), n_chunks))
        bad = [False] * k
        counter = itertools.count()
        threads = min(_threads(), n_chunks) if n_chunks >= PARALLEL_CHUNKS else 1

        def work() -> _Sums:
            return self._work(sources, step, ncols, counter, n_chunks, dd, rd, pair_list, pd, bad)

        if threads <= 1:
            parts = [work()]
        else:
            parts, errors = [], []

            def run() -> None:
                try:
                    parts.append(work())
                except BaseException as exc:  # pragma: no cover - re-raised below
                    errors.append(exc)

            others = [threading.Thread(target=run, daemon=True) for _ in range(threads - 1)]
            for t in others:
                t.start()
            run()
            for t in others:
                t.join()
            if errors:  # pragma: no cover
                raise errors[0]
        results = {}
        for i, label in enumerate(labels):
            if bad[i]:
                continue
            results[label] = self._metrics(cands[i], parts, i, math.fsum(dd[i]), math.fsum(rd[i]))
        differences = {}
        for p, (a, b) in enumerate(pair_list):
            if not (bad[a] or bad[b]):
                cross = np.concatenate([dd[a], dd[b], -2 * pd[p]])
                differences[(labels[a], labels[b])] = math.sqrt(max(math.fsum(cross), 0.0))
        return results, differences

    def _work(self, sources, step, ncols, counter, n_chunks, dd, rd, pair_list, pd, bad) -> _Sums:
        """Take chunks from ``counter`` until none is left; fill this thread's sums.

        Per chunk, the reference's side is made once: ``1 / max(|ref|, floor)`` (for
        ``max_rel``), the reference rounded to the run dtype (for ULPs) and, only when some
        candidate's largest difference could exceed it, the mismatch threshold. Then, per
        candidate: its difference in float64 (kept for the pairwise norms), two dot products,
        ``|d|`` with its argmax and its largest ratio to the reference, and the ULP distance.
        """
        k, size = len(sources), self.size
        width = min(step, size)
        ref = self.ref.reshape(-1)
        exact = _EXACT.get(self.dtype)
        ftype, itype, bits = exact if exact else (None, None, 0)
        limit = 1 << bits
        diffs = np.empty((k, width))
        absd = np.empty(width)
        inv = np.empty(width)
        thresh = np.empty(width)
        flags = np.empty(width, dtype=bool)
        steps = None if exact is None else np.empty(width, itype)
        ref_run = None if exact is None or ftype is np.float64 else np.empty(width, ftype)
        cand_run = None if exact is None else np.empty(width, ftype)
        tol, scale, floor = self.tol, self.scale, self.floor
        sums = _Sums(k)
        while True:
            c = next(counter)
            if c >= n_chunks:
                return sums
            lo = c * step
            hi = min(lo + step, size)
            n = hi - lo
            rows = None if not ncols else (lo // ncols, hi // ncols)
            r = ref[lo:hi]
            den = inv[:n]
            np.abs(r, out=den)
            np.maximum(den, floor, out=den)
            np.reciprocal(den, out=den)
            have_thresh = False
            if exact is not None:
                if ref_run is None:
                    r_run = r
                else:
                    r_run = ref_run[:n]
                    np.copyto(r_run, r, casting="unsafe")
                r_int = r_run.view(itype)
            for i in range(k):
                if bad[i]:
                    continue
                flat, block = sources[i]
                d = diffs[i, :n]
                if flat is not None:
                    g = flat[lo:hi]
                    if g.dtype == np.float64:
                        np.subtract(g, r, out=d)
                    else:
                        np.copyto(d, g)
                        np.subtract(d, r, out=d)
                else:
                    g = block[rows[0] : rows[1]]
                    np.copyto(d.reshape(g.shape), g)
                    np.subtract(d, r, out=d)
                s = float(np.einsum("i,i", d, d))
                if not math.isfinite(s):
                    bad[i] = True  # NaN/Inf (or an overflowing square): the masked way
                    continue
                dd[i, c] = s
                rd[i, c] = float(np.einsum("i,i", r, d))
                a = absd[:n]
                np.abs(d, out=a)
                j = int(np.argmax(a))
                worst = float(a[j])
                if worst > sums.worst[i] or (worst == sums.worst[i] and lo + j < sums.worst_at[i]):
                    sums.worst[i], sums.worst_at[i] = worst, lo + j
                if worst > tol * scale:  # else no element can exceed tol * (|ref| + scale)
                    th = thresh[:n]
                    if not have_thresh:
                        np.abs(r, out=th)
                        np.add(th, scale, out=th)
                        np.multiply(th, tol, out=th)
                        have_thresh = True
                    above = np.greater(a, th, out=flags[:n])
                    sums.mismatched[i] += int(np.count_nonzero(above))
                np.multiply(a, den, out=a)
                sums.max_rel[i] = max(sums.max_rel[i], float(a.max()))
                if exact is not None:
                    if flat is not None and g.dtype == ftype:
                        g_run = g
                    else:
                        g_run = cand_run[:n]
                        np.copyto(g_run.reshape(g.shape), g, casting="unsafe")
                    sums.ulp[i] = max(
                        sums.ulp[i], self._ulp(g_run, r_run, r_int, itype, limit, steps)
                    )
            for p, (a_, b_) in enumerate(pair_list):
                if bad[a_] or bad[b_]:
                    continue
                # ||d_a - d_b||^2 = dd_a + dd_b - 2 d_a.d_b: one dot product per pair. It is
                # exact for equal candidates (the same sums, in the same order) and otherwise
                # off by about 1e-16 * dd, far below the rounding the pairs differ by.
                pd[p, c] = float(np.einsum("i,i", diffs[a_, :n], diffs[b_, :n]))

    def _ulp(self, g_run, r_run, r_int, itype, limit, steps) -> int:
        """The largest ULP distance in one chunk (both sides rounded to the run dtype).

        Two floats of the same sign are as many ULPs apart as their bit patterns (read as
        integers) differ; that difference, taken with wrap-around in the integers of the
        floats' width, is below ``2**mantissa_bits`` whenever the signs agree, and at least
        that when they differ. So one subtraction and two reductions give the answer unless
        a value is that far out, and the chunk is then measured the exact way.
        """
        raw = steps[: g_run.size]
        np.subtract(g_run.view(itype), r_int, out=raw)
        top, bottom = int(raw.max()), int(raw.min())
        if top < limit and bottom > -limit:
            return max(top, -bottom)
        exact = np.subtract(
            _ordered(g_run, self.dtype), _ordered(r_run, self.dtype), dtype=np.int64
        )
        return max(int(exact.max()), -int(exact.min()))

    def _metrics(self, cand, parts: list[_Sums], i: int, dd: float, rd: float) -> Metrics:
        worst, at = -1.0, 0
        for part in parts:
            w, a = part.worst[i], part.worst_at[i]
            if w > worst or (w == worst and a < at):
                worst, at = w, a
        return self._finish(
            dd=dd,
            rd=rd,
            worst=worst,
            at=at,
            max_rel=max(part.max_rel[i] for part in parts),
            ulp=max(part.ulp[i] for part in parts) if self.dtype in _EXACT else None,
            mismatched=sum(part.mismatched[i] for part in parts),
            value=float(cand[np.unravel_index(at, self.shape)]),
        )

    def _finish(self, *, dd, rd, worst, at, max_rel, ulp, mismatched, value) -> Metrics:
        """The :class:`Metrics` of one candidate from its sums and maxima."""
        rr = self.ref_norm**2
        gg = max(rr + 2 * rd + dd, 0.0)
        diff_norm = math.sqrt(dd)
        rel_norm = diff_norm / self.norm if self.norm else (0.0 if dd == 0 else math.inf)
        if rr > 0 and gg > 0:
            cosine = (rr + rd) / math.sqrt(rr * gg)
        else:
            cosine = 1.0 if rr == gg == 0 else 0.0
        index = tuple(int(j) for j in np.unravel_index(at, self.shape))
        return Metrics(
            max_abs=worst,
            max_rel=max_rel,
            rel_norm=rel_norm,
            cosine=cosine,
            ulp_max=ulp,
            mismatched=mismatched,
            size=self.size,
            worst_index=index,
            worst_value=value,
            worst_reference=float(self.ref.reshape(-1)[at]),
            nan=0,
            inf=0,
            first_nonfinite=None,
            status=self._status(rel_norm, diff_norm),
            tol=self.tol,
        )

    def _status(self, rel_norm: float, diff_norm: float) -> str:
        floor = NOISE_FLOORS.get(self.dtype, 0.0) * math.sqrt(max(self.size, 1))
        if self.norm <= floor:  # the reference is zero up to rounding: judge absolutely
            return "match" if diff_norm <= floor else "mismatch"
        return "match" if rel_norm <= self.tol else "mismatch"


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b||_2`` in float64 (``inf`` when anything is not finite)."""
    with np.errstate(all="ignore"):
        diff = np.subtract(a, b, dtype=np.float64).reshape(-1)
        value = float(np.sqrt(np.einsum("i,i", diff, diff))) if diff.size else 0.0
    return value if math.isfinite(value) else math.inf


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
        floor = _EPS.get(dtype, _EPS["float32"]) * scale or float(np.finfo(np.float64).tiny)
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
