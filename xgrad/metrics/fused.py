"""The fused engine: every candidate of an entry against its reference in one chunked pass.

:class:`PreparedReference` computes the metrics of :func:`~xgrad.metrics.compare_arrays`
for several candidates at once (one per framework), with the differences between them. An
entry of at most :data:`CHUNK` elements is measured with all candidates stacked as the rows
of one array; a larger one chunk by chunk (:class:`_FusedPass`), each chunk small enough that
its temporaries stay in cache, large entries on several threads. Arrays holding NaN/Inf go
the plain, masked way of the definition.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xgrad.errors import InputError
from xgrad.metrics.definition import EXACT, Metrics, compare_arrays, ordered, rel_floor
from xgrad.metrics.tolerances import status_of

__all__ = ["CHUNK", "PARALLEL_CHUNKS", "EntryComparison", "PreparedReference"]

CHUNK = 1 << 15
"""Elements per chunk of the fused pass. Every temporary of a chunk (one float64 difference
per candidate, and a few shared buffers) stays in a core's L2 cache, so each array is read
from memory once."""

PARALLEL_CHUNKS = 8
"""An entry of at least this many chunks is measured by several threads (NumPy releases the
GIL in its loops); smaller ones in the calling thread."""


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
        results: candidate label -> its :class:`~xgrad.metrics.Metrics`.
        ref_norm: ``||ref||_2`` (``inf`` when the reference is not finite).
        differences: ``(a, b)`` -> ``||g_a - g_b||_2`` for every pair of candidates, in the
            order they were given (``inf`` where either holds NaN/Inf).
    """

    results: dict[str, Metrics]
    ref_norm: float
    differences: dict[tuple[str, str], float]


class PreparedReference:
    """Everything about a reference that every candidate's comparison reuses.

    The runner makes one per entry and measures every framework against it in one pass
    (:meth:`compare_many`).

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
        self.floor = rel_floor(dtype, 0.0)
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
        self.floor = rel_floor(dtype, self.scale)
        if scale is not None:  # a sum whose terms cancel: judge it by their magnitudes
            self.norm = max(self.norm, float(scale))

    def compare(self, candidate) -> Metrics:
        """Every metric of ``candidate`` (same shape) against this reference."""
        return self.compare_many({"candidate": candidate}, pairs=False).results["candidate"]

    def compare_many(
        self, candidates: Mapping[str, object], *, pairs: bool = True
    ) -> EntryComparison:
        """Every candidate against this reference in one pass over the arrays.

        The pass runs in chunks of :data:`CHUNK` elements: each chunk of the reference is
        read once, its absolute values, elementwise denominators and rounded ULP integers
        are made once, and every candidate's chunk is then measured against them while
        they are in cache, with the differences between candidates (``pairs``) taken from
        the same chunk. A candidate may be in any memory order (a transposed or
        axis-permuted view, as torch's kernels come): it gives the metrics of its C-order
        copy (see :class:`_Chunks`). A candidate holding NaN/Inf (or a reference that does)
        goes the general, masked way of :func:`~xgrad.metrics.compare_arrays` instead.

        Args:
            candidates: label -> array of the reference's shape, any float dtype.
            pairs: also measure ``||g_a - g_b||_2`` for every pair of candidates.

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
                results[label] = compare_arrays(
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

    def _stacked(self, arrays: list[np.ndarray], labels: list[str], pairs: bool):
        """An entry of one chunk at most: every candidate at once, as the rows of one
        array, so that the cost is a fixed number of NumPy calls."""
        r = self.ref.reshape(-1)
        cands = np.empty((len(arrays), self.size))
        for i, g in enumerate(arrays):
            cands[i] = np.asarray(g, dtype=np.float64).reshape(-1)  # (C order, whatever g's)
        diffs = cands - r
        dd = np.einsum("ij,ij->i", diffs, diffs)
        good = np.isfinite(dd)
        if not good.all():  # NaN/Inf: those candidates go the masked way
            keep = [i for i in range(len(arrays)) if good[i]]
            if not keep:
                return {}, {}
            labels = [labels[i] for i in keep]
            cands, diffs, dd = cands[keep], diffs[keep], dd[keep]
        rd = np.einsum("ij,j->i", diffs, r)
        absd = np.abs(diffs)
        at = np.argmax(absd, axis=1)
        worst = absd[np.arange(len(labels)), at]
        absr = np.abs(r)
        mismatched = np.count_nonzero(absd > self.tol * (absr + self.scale), axis=1)
        max_rel = (absd / np.maximum(absr, self.floor)).max(axis=1)
        ulp = None
        if self.dtype in EXACT:
            ftype = EXACT[self.dtype][0]
            steps = np.subtract(
                ordered(cands.astype(ftype), self.dtype),
                ordered(r.astype(ftype), self.dtype),
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
        job = _FusedPass(self, arrays, pairs)
        parts = job.run()
        results = {}
        for i, label in enumerate(labels):
            if job.bad[i]:
                continue
            results[label] = self._metrics(
                job.cands[i], parts, i, math.fsum(job.dd[i]), math.fsum(job.rd[i])
            )
        differences = {}
        for p, (a, b) in enumerate(job.pair_list):
            if not (job.bad[a] or job.bad[b]):
                # ||d_a - d_b||^2 = dd_a + dd_b - 2 d_a.d_b: exact for equal candidates (the
                # same sums, in the same order), otherwise off by about 1e-16 * dd, far below
                # the rounding the pairs differ by.
                cross = np.concatenate([job.dd[a], job.dd[b], -2 * job.pd[p]])
                differences[(labels[a], labels[b])] = math.sqrt(max(math.fsum(cross), 0.0))
        return results, differences

    def _metrics(self, cand, parts: list[_Sums], i: int, dd: float, rd: float) -> Metrics:
        """Candidate ``i``'s :class:`Metrics` from every thread's sums of the fused pass."""
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
            ulp=max(part.ulp[i] for part in parts) if self.dtype in EXACT else None,
            mismatched=sum(part.mismatched[i] for part in parts),
            value=float(cand[np.unravel_index(at, self.shape)]),
        )

    def _finish(self, *, dd, rd, worst, at, max_rel, ulp, mismatched, value) -> Metrics:
        """The :class:`Metrics` of one finite candidate from its sums and maxima: ``dd`` is
        ``||g - ref||^2``, ``rd`` is ``ref . (g - ref)``, ``at`` the flat (C-order) index of
        the largest ``|g - ref|``, ``worst``, and ``value`` is ``g`` there."""
        rr = self.ref_norm**2
        gg = max(rr + 2 * rd + dd, 0.0)
        diff_norm = math.sqrt(dd)
        rel_norm = diff_norm / self.norm if self.norm else (0.0 if dd == 0 else math.inf)
        if rr > 0 and gg > 0:
            cosine = (rr + rd) / math.sqrt(rr * gg)
        else:
            cosine = 1.0 if rr == gg == 0 else 0.0
        index = tuple(int(j) for j in np.unravel_index(at, self.shape))
        status = status_of(
            norm=self.norm, diff_norm=diff_norm, size=self.size, dtype=self.dtype, tol=self.tol
        )
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
            status=status,
            tol=self.tol,
        )


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """``||a - b||_2`` in float64 (``inf`` when anything is not finite)."""
    with np.errstate(all="ignore"):
        diff = np.subtract(a, b, dtype=np.float64).reshape(-1)
        value = float(np.sqrt(np.einsum("i,i", diff, diff))) if diff.size else 0.0
    return value if math.isfinite(value) else math.inf


# -- the chunked pass ---------------------------------------------------------------------


class _Chunks:
    """How a fused pass cuts an entry of ``shape`` into chunks.

    Each chunk is a range ``[lo, hi)`` of the reference's flat C-order indices. When every
    candidate is C-contiguous the chunks are plain slices of :data:`CHUNK` elements
    (``index`` is ``None``), in order.

    When one is not (any rank, any axis permutation or stride: torch hands its kernels over
    as transposed or axis-permuted views), each chunk is instead a regular block
    ``view[i_0, ..., i_{a-1}, r0:r1]``: whole sub-arrays along one ``axis`` ``a``, which
    the pass gathers into the chunk's buffer in the reference's order; no copy of the whole
    candidate is made. ``a`` is the first axis whose sub-arrays (``prod(shape[a+1:])``
    elements) fit in a chunk, but never past the next-to-last one, so a chunk holds at
    least one whole last-axis row. For a 2-D entry ``a = 0``: blocks of ``CHUNK // ncols``
    whole rows, which read a transposed view's memory one full cache line at a time.
    Chunk numbers run over the leading indices ``i_0 .. i_{a-1}`` fastest, so that
    consecutive chunks gather the same stretch of a permuted candidate's memory while it is
    still in cache. The order of chunks changes no result: every sum over chunks is an
    exactly rounded ``math.fsum``, and the first of equal maxima is chosen by flat index.

    Attributes:
        n: the number of chunks.
        width: the most elements a chunk holds (the size of the buffers).
    """

    def __init__(self, shape: tuple[int, ...], *, blocked: bool) -> None:
        size = math.prod(shape)
        if not blocked or len(shape) <= 1:
            shape = (size,)
        last = max(len(shape) - 2, 0)
        axis = next((a for a in range(last) if math.prod(shape[a + 1 :]) <= CHUNK), last)
        self.blocked = blocked
        self.prefix = shape[:axis]  # the axes indexed one by one: i_0 .. i_{a-1}
        self.n_prefix = math.prod(self.prefix)
        self.length = shape[axis]  # the axis cut into runs of `rows`
        self.inner = math.prod(shape[axis + 1 :])  # elements per index along `axis`
        self.rows = max(1, CHUNK // self.inner)
        self.n = self.n_prefix * -(-self.length // self.rows)
        self.width = min(self.rows, self.length) * self.inner

    def bounds(self, c: int) -> tuple[int, int, tuple | None]:
        """Chunk ``c``'s flat range ``(lo, hi)`` and, for blocked chunks, its index into an
        array of the entry's shape (else ``None``)."""
        j, p = divmod(c, self.n_prefix)
        r0 = j * self.rows
        r1 = min(r0 + self.rows, self.length)
        lo, hi = (p * self.length + r0) * self.inner, (p * self.length + r1) * self.inner
        if not self.blocked:
            return lo, hi, None
        index = []
        for n in reversed(self.prefix):  # p as a multi-index over the prefix axes
            p, i = divmod(p, n)
            index.append(i)
        return lo, hi, (*reversed(index), slice(r0, r1))


class _Sums:
    """What one thread of the fused pass accumulates: running maxima, counts and where the
    largest difference is (the per-chunk sums go to :class:`_FusedPass`'s arrays, added up
    exactly afterwards, so that no result depends on which thread took which chunk)."""

    def __init__(self, k: int) -> None:
        self.worst = [-1.0] * k
        self.worst_at = [0] * k
        self.max_rel = [0.0] * k
        self.ulp = [0] * k
        self.mismatched = [0] * k


class _FusedPass:
    """One chunked pass over an entry: the candidates, the chunks, and the per-chunk sums
    its threads fill.

    Attributes:
        cands: the candidates (non-native float dtypes such as bfloat16 cast to float64).
        dd, rd: ``(k, n_chunks)``: per chunk, ``||d_i||^2`` and ``ref . d_i`` with
            ``d_i = g_i - ref``.
        pair_list, pd: the candidate pairs ``(a, b)`` and, ``(n_pairs, n_chunks)``, per
            chunk ``d_a . d_b``.
        bad: candidates found to hold NaN/Inf (their sums are left unfinished).
    """

    def __init__(self, prepared: PreparedReference, arrays: list[np.ndarray], pairs: bool):
        self.prepared = prepared
        self.cands = []
        for g in arrays:
            if g.dtype.kind != "f" or g.dtype.itemsize not in (2, 4, 8):
                g = g.astype(np.float64)  # e.g. bfloat16: no native cast in every loop
            self.cands.append(g)
        contiguous = [g.flags.c_contiguous for g in self.cands]
        self.chunks = _Chunks(prepared.shape, blocked=not all(contiguous))
        # a C-contiguous candidate is sliced flat; any other is indexed by blocks
        self.flat = [
            g.reshape(-1) if c else None for g, c in zip(self.cands, contiguous, strict=True)
        ]
        k, n = len(self.cands), self.chunks.n
        self.dd = np.zeros((k, n))
        self.rd = np.zeros((k, n))
        self.pair_list = [(a, b) for a in range(k) for b in range(a + 1, k)] if pairs else []
        self.pd = np.zeros((len(self.pair_list), n))
        self.bad = [False] * k
        self.counter = itertools.count()

    def run(self) -> list[_Sums]:
        """Every chunk measured, on up to :func:`_threads` threads when there are at least
        :data:`PARALLEL_CHUNKS`; the sums of each thread."""
        n = self.chunks.n
        threads = min(_threads(), n) if n >= PARALLEL_CHUNKS else 1
        if threads <= 1:
            return [_Worker(self).run()]
        parts, errors = [], []

        def run() -> None:
            try:
                parts.append(_Worker(self).run())
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
        return parts


@dataclass
class _Side:
    """The reference's side of one chunk, made once for every candidate: ``r`` its values,
    ``den`` = ``1 / max(|r|, floor)``, ``r_run`` the values rounded to the run dtype and
    ``r_int`` their bits as integers (``None`` without ULPs); ``thresh`` the mismatch
    threshold ``tol * (|r| + scale)``, made on first need."""

    r: np.ndarray
    den: np.ndarray
    r_run: np.ndarray | None
    r_int: np.ndarray | None
    thresh: np.ndarray | None = None


class _Worker:
    """One thread of a fused pass: it takes chunks from the pass's counter until none is
    left, measuring every candidate in buffers one chunk wide, and keeps its own
    :class:`_Sums`.

    Per chunk (:meth:`chunk`): the reference's side once (:meth:`reference_side`); then per
    candidate its difference in float64, kept for the pairwise products
    (:meth:`difference`); its two dot products (:meth:`dots`); ``|d|`` with its argmax,
    mismatches and largest ratio to the reference (:meth:`largest`); and the ULP distance
    (:meth:`ulps`); last, one dot product per pair of candidates (:meth:`pair_products`).
    """

    def __init__(self, job: _FusedPass) -> None:
        self.job, self.prepared = job, job.prepared
        k, width = len(job.cands), job.chunks.width
        self.flat_ref = job.prepared.ref.reshape(-1)
        exact = EXACT.get(self.prepared.dtype)
        self.ftype, self.itype, bits = exact if exact else (None, None, 0)
        self.limit = 1 << bits
        self.diffs = np.empty((k, width))
        self.absd = np.empty(width)
        self.inv = np.empty(width)
        self.thresh = np.empty(width)
        self.flags = np.empty(width, dtype=bool)
        self.steps = None if exact is None else np.empty(width, self.itype)
        self.ref_run = (
            None if exact is None or self.ftype is np.float64 else np.empty(width, self.ftype)
        )
        self.cand_run = None if exact is None else np.empty(width, self.ftype)
        self.blocks: dict[np.dtype, np.ndarray] = {}  # see gathered()
        self.sums = _Sums(k)

    def run(self) -> _Sums:
        """Take chunks until none is left; this thread's sums."""
        while (c := next(self.job.counter)) < self.job.chunks.n:
            self.chunk(c)
        return self.sums

    def chunk(self, c: int) -> None:
        """Measure every candidate on chunk ``c``, and the products of the pairs."""
        job = self.job
        lo, hi, index = job.chunks.bounds(c)
        side = self.reference_side(lo, hi)
        for i in range(len(job.cands)):
            if job.bad[i]:
                continue
            d, g = self.difference(i, side.r, lo, hi, index)
            if not self.dots(i, c, d, side.r):
                continue
            self.largest(i, lo, d, side)
            if self.ftype is not None:
                self.ulps(i, g, side)
        self.pair_products(c, hi - lo)

    def reference_side(self, lo: int, hi: int) -> _Side:
        """The reference's values on ``[lo, hi)``, their denominators and run-dtype bits."""
        r = self.flat_ref[lo:hi]
        den = self.inv[: hi - lo]
        np.abs(r, out=den)
        np.maximum(den, self.prepared.floor, out=den)
        np.reciprocal(den, out=den)
        if self.ftype is None:
            return _Side(r, den, None, None)
        if self.ref_run is None:
            r_run = r
        else:
            r_run = self.ref_run[: hi - lo]
            np.copyto(r_run, r, casting="unsafe")
        return _Side(r, den, r_run, r_run.view(self.itype))

    def difference(self, i: int, r: np.ndarray, lo: int, hi: int, index) -> tuple:
        """``d = g_i - r`` in float64 on the chunk, in the buffers' row ``i``; and ``g_i``'s
        chunk itself, flat and contiguous in its own dtype.

        A candidate in another memory order is gathered once per chunk: its block (of
        ``index``) is copied, in its own dtype, into a buffer in the reference's order,
        which the difference and the ULP distance then both read.
        """
        d = self.diffs[i, : hi - lo]
        flat = self.job.flat[i]
        if flat is None:
            block = self.job.cands[i][index]
            g = self.gathered(block.dtype)[: hi - lo]
            np.copyto(g.reshape(block.shape), block)
        else:
            g = flat[lo:hi]
        if g.dtype == np.float64:
            np.subtract(g, r, out=d)
        else:
            np.copyto(d, g)
            np.subtract(d, r, out=d)
        return d, g

    def gathered(self, dtype: np.dtype) -> np.ndarray:
        """This thread's buffer, one chunk wide, for blocks of ``dtype`` (made on first use)."""
        if dtype not in self.blocks:
            self.blocks[dtype] = np.empty(self.job.chunks.width, dtype)
        return self.blocks[dtype]

    def dots(self, i: int, c: int, d: np.ndarray, r: np.ndarray) -> bool:
        """Chunk ``c``'s ``d . d`` and ``r . d`` for candidate ``i``; ``False`` (and the
        candidate marked bad, for the masked way) when ``d . d`` is not finite."""
        s = float(np.einsum("i,i", d, d))
        if not math.isfinite(s):
            self.job.bad[i] = True  # NaN/Inf (or an overflowing square)
            return False
        self.job.dd[i, c] = s
        self.job.rd[i, c] = float(np.einsum("i,i", r, d))
        return True

    def largest(self, i: int, lo: int, d: np.ndarray, side: _Side) -> None:
        """``max |d|`` (first of equals) and where, the count above the mismatch threshold,
        and the largest ``|d| / max(|r|, floor)``, folded into candidate ``i``'s sums."""
        sums, prep = self.sums, self.prepared
        a = self.absd[: d.size]
        np.abs(d, out=a)
        j = int(np.argmax(a))
        worst = float(a[j])
        if worst > sums.worst[i] or (worst == sums.worst[i] and lo + j < sums.worst_at[i]):
            sums.worst[i], sums.worst_at[i] = worst, lo + j
        if worst > prep.tol * prep.scale:  # else no element can exceed tol * (|r| + scale)
            if side.thresh is None:
                side.thresh = th = self.thresh[: d.size]
                np.abs(side.r, out=th)
                np.add(th, prep.scale, out=th)
                np.multiply(th, prep.tol, out=th)
            above = np.greater(a, side.thresh, out=self.flags[: d.size])
            sums.mismatched[i] += int(np.count_nonzero(above))
        np.multiply(a, side.den, out=a)
        sums.max_rel[i] = max(sums.max_rel[i], float(a.max()))

    def ulps(self, i: int, g: np.ndarray, side: _Side) -> None:
        """The largest ULP distance of candidate ``i``'s chunk ``g`` (both sides rounded to
        the run dtype), folded into its sums.

        Two floats of the same sign are as many ULPs apart as their bit patterns (read as
        integers) differ; that difference, taken with wrap-around in the integers of the
        floats' width, is below ``2**mantissa_bits`` whenever the signs agree, and at least
        that when they differ. So one subtraction and two reductions give the answer unless
        a value is that far out, and the chunk is then measured the exact way.
        """
        n = side.r.size
        if g.dtype == self.ftype:
            g_run = g
        else:
            g_run = self.cand_run[:n]
            np.copyto(g_run, g, casting="unsafe")
        raw = self.steps[:n]
        np.subtract(g_run.view(self.itype), side.r_int, out=raw)
        top, bottom = int(raw.max()), int(raw.min())
        if top >= self.limit or bottom <= -self.limit:
            dtype = self.prepared.dtype
            exact = np.subtract(ordered(g_run, dtype), ordered(side.r_run, dtype), dtype=np.int64)
            top, bottom = int(exact.max()), int(exact.min())
        self.sums.ulp[i] = max(self.sums.ulp[i], top, -bottom)

    def pair_products(self, c: int, n: int) -> None:
        """Chunk ``c``'s ``d_a . d_b`` for every pair of good candidates."""
        job = self.job
        for p, (a, b) in enumerate(job.pair_list):
            if not (job.bad[a] or job.bad[b]):
                job.pd[p, c] = float(np.einsum("i,i", self.diffs[a, :n], self.diffs[b, :n]))
