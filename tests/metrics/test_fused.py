"""The fused engine (xgrad/metrics/fused.py): every candidate of an entry measured in one
chunked pass must give the metrics of the definition. Checked against the plain formulas
(conftest.py) on arrays that span several chunks, with NaN/Inf, zero references, other
memory orders and threads; and, by property test, against :func:`compare_arrays` on random
entries of any rank up to 4 with the chunk made small."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xgrad.metrics.fused as fused
from xgrad.errors import InputError
from xgrad.metrics import CHUNK, PreparedReference, compare_arrays


def _candidates(rng, ref, n: int, dtype=np.float32):
    out = {}
    for i in range(n):
        g = (ref * (1 + 3e-7 * rng.normal(size=ref.shape))).astype(dtype)
        out[f"fw{i}"] = g
    return out


@pytest.mark.parametrize("shape", [(7,), (5, 3), (3, CHUNK // 2 + 7), (CHUNK * 2 + 11,)])
def test_fused_pass_equals_the_plain_formulas(rng, shape, threads, check):
    ref = rng.normal(size=shape)
    ref.reshape(-1)[0] = 0.0  # a zero reference element: max_rel's floor, ULPs across zero
    cands = _candidates(rng, ref, 3)
    bad = cands["fw1"].reshape(-1)
    bad[-1] = -3.5  # one clear outlier, in the last chunk
    bad[0] = -0.0  # -0.0 against +0.0: zero ULPs
    cands["fw2"].reshape(-1)[len(bad) // 2] *= -1  # a sign flipped in the middle
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(cands)
    for label, g in cands.items():
        check(measured.results[label], g, ref, dtype="float32", tol=1e-5)
    for (a, b), value in measured.differences.items():
        want = float(np.linalg.norm(cands[a].astype(np.float64) - cands[b]))
        assert value == pytest.approx(want, rel=1e-7, abs=1e-300)
    assert measured.ref_norm == pytest.approx(float(np.linalg.norm(ref)), rel=1e-12)


def test_fused_pass_reads_transposed_views_and_float64_candidates(rng, threads, check):
    ref = rng.normal(size=(CHUNK // 8 + 3, 64))
    base = (ref * (1 + 1e-6 * rng.normal(size=ref.shape))).astype(np.float32)
    cands = {
        "c_order": base,
        "transposed": np.ascontiguousarray(base.T).T,  # torch's kernels, handed over as views
        "float64": ref * (1 + 1e-9 * rng.normal(size=ref.shape)),
    }
    cands["transposed"][3, 5] = 9.0
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(cands)
    for label, g in cands.items():
        check(measured.results[label], g, ref, dtype="float32", tol=1e-5)
    assert measured.differences[("c_order", "transposed")] == pytest.approx(
        abs(9.0 - float(base[3, 5])), rel=1e-7
    )


@pytest.mark.parametrize(
    ("stored", "view"),
    [((3, 2, 0, 1), (2, 3, 1, 0)), ((0, 2, 1, 3), (0, 2, 1, 3)), ((3, 0, 1, 2), (1, 2, 3, 0))],
    ids=["torch-conv-kernel", "middle-axes-swapped", "rolled"],
)
def test_axis_permuted_views_of_any_rank_give_their_contiguous_copys_metrics(
    rng, stored, view, threads, check
):
    # a torch conv kernel is stored (out, in, kh, kw) and handed over as
    # .transpose(2, 3, 1, 0) of it, shape (kh, kw, in, out): the reference's layout
    ref = rng.normal(size=(3, 5, 64, 80))
    g = (ref * (1 + 1e-6 * rng.normal(size=ref.shape))).astype(np.float32)
    g[2, 1, 40, 7] = 4.0
    permuted = np.ascontiguousarray(g.transpose(stored)).transpose(view)
    assert permuted.shape == ref.shape and not permuted.flags.c_contiguous
    np.testing.assert_array_equal(permuted, g)
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(
        {"contiguous": g, "permuted": permuted}
    )
    assert measured.results["permuted"] == measured.results["contiguous"]
    check(measured.results["permuted"], g, ref, dtype="float32", tol=1e-5)
    assert measured.results["permuted"].worst_index == (2, 1, 40, 7)
    assert measured.differences[("contiguous", "permuted")] == 0.0


def test_identical_candidates_are_exactly_zero_apart(rng, threads):
    ref = rng.normal(size=(CHUNK * 3,))
    g = (ref * (1 + 1e-6 * rng.normal(size=ref.shape))).astype(np.float32)
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(
        {"a": g, "b": g.copy()}
    )
    assert measured.differences[("a", "b")] == 0.0


@pytest.mark.parametrize("size", [9, CHUNK * 2 + 5])
def test_nonfinite_candidates_and_references_take_the_masked_way(rng, size, threads, check):
    ref = rng.normal(size=size)
    good = (ref * (1 + 1e-7)).astype(np.float32)
    with_nan = good.copy()
    with_nan[size - 2] = np.nan
    with_inf = good.copy()
    with_inf[1] = np.inf
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(
        {"good": good, "nan": with_nan, "inf": with_inf}
    )
    check(measured.results["good"], good, ref, dtype="float32", tol=1e-5)
    nan, inf = measured.results["nan"], measured.results["inf"]
    assert (nan.status, nan.nan, nan.inf, nan.first_nonfinite) == ("nonfinite", 1, 0, (size - 2,))
    assert (inf.status, inf.nan, inf.inf, inf.first_nonfinite) == ("nonfinite", 0, 1, (1,))
    # the finite elements are still measured: the rest agrees
    assert nan.rel_norm < 1e-6 and inf.rel_norm < 1e-6
    assert measured.differences[("good", "nan")] == math.inf
    assert measured.differences[("nan", "inf")] == math.inf
    bad_ref = ref.copy()
    bad_ref[3] = np.nan
    m = PreparedReference(bad_ref, dtype="float32", tol=1e-5).compare(good)
    assert m.status == "nonfinite" and m.first_nonfinite == (3,)


@pytest.mark.parametrize(
    "measure",
    [
        compare_arrays,
        lambda g, ref, **kw: PreparedReference(ref, **kw).compare(g),
    ],
    ids=["definition", "fused"],
)
def test_a_zero_reference_is_judged_by_an_absolute_floor(measure, threads):
    for size in (12, CHUNK * 2):
        ref = np.zeros(size)
        noise = np.full(size, 1e-8, dtype=np.float32)
        assert measure(noise, ref, dtype="float32", tol=1e-5).status == "match"
        loud = measure(noise * 1e4, ref, dtype="float32", tol=1e-5)
        assert loud.status == "mismatch" and loud.rel_norm == math.inf
        assert loud.max_abs == pytest.approx(1e-4)


def test_float64_runs_count_float64_ulps(rng, threads, check):
    ref = rng.normal(size=CHUNK + 9)
    g = ref.copy()
    g[5] = np.nextafter(np.nextafter(ref[5], np.inf), np.inf)  # two ULPs up
    g[-1] = -g[-1]  # across zero: a huge distance, measured exactly
    measured = PreparedReference(ref, dtype="float64", tol=1e-10).compare_many({"g": g})
    check(measured.results["g"], g, ref, dtype="float64", tol=1e-10)


def test_the_worst_element_is_the_first_of_equals_whatever_the_threads(rng, threads):
    ref = np.zeros(CHUNK * 4)
    ref[:] = 1.0
    g = ref.astype(np.float32)
    for i in (CHUNK * 3 + 1, CHUNK + 2, 5):  # three equal worst elements, in three chunks
        g[i] = 2.0
    m = PreparedReference(ref, dtype="float32", tol=1e-5).compare(g)
    assert m.worst_index == (5,) and m.mismatched == 3


def test_shapes_must_agree():
    with pytest.raises(InputError, match="shapes differ"):
        PreparedReference(np.zeros(3), dtype="float32", tol=1e-5).compare_many({"a": np.zeros(4)})


# -- the chunks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "chunk"),
    [((10, 7), 16), ((10, 70), 16), ((4, 5, 6, 7), 50), ((4, 5, 6, 7), 300), ((3, 9, 2), 4)],
)
def test_blocked_chunks_cover_every_index_once_as_blocks_of_whole_rows(monkeypatch, shape, chunk):
    monkeypatch.setattr(fused, "CHUNK", chunk)
    chunks = fused._Chunks(shape, blocked=True)
    flat = np.arange(math.prod(shape)).reshape(shape)
    seen = []
    for c in range(chunks.n):
        lo, hi, index = chunks.bounds(c)
        block = flat[index]
        np.testing.assert_array_equal(block.reshape(-1), np.arange(lo, hi))
        assert hi - lo <= chunks.width and block.shape[-1] == shape[-1]
        seen.extend(range(lo, hi))
    assert sorted(seen) == list(range(math.prod(shape)))


def test_a_two_d_entry_is_cut_into_blocks_of_whole_rows(monkeypatch):
    monkeypatch.setattr(fused, "CHUNK", 100)
    chunks = fused._Chunks((25, 30), blocked=True)  # 3 rows of 30 per chunk
    assert [chunks.bounds(c)[:2] for c in range(chunks.n)] == [
        (0, 90),
        (90, 180),
        (180, 270),
        (270, 360),
        (360, 450),
        (450, 540),
        (540, 630),
        (630, 720),
        (720, 750),
    ]
    assert chunks.bounds(8)[2] == (slice(24, 25),) and chunks.width == 90


# -- the property: fused == definition ---------------------------------------------------

LAYOUTS = ("c", "permuted", "strided", "reversed")


def _lay_out(g: np.ndarray, layout: str, perm) -> np.ndarray:
    """The values of ``g`` (C order) in another memory order, as a view of ``g``'s shape."""
    if layout == "permuted" and g.ndim:
        return np.ascontiguousarray(g.transpose(perm)).transpose(np.argsort(perm))
    if layout == "strided" and g.ndim:
        wide = np.zeros((*g.shape[:-1], 2 * g.shape[-1]), g.dtype)
        wide[..., ::2] = g
        return wide[..., ::2]
    if layout == "reversed" and g.ndim:
        return np.ascontiguousarray(g[::-1])[::-1]
    return g


@st.composite
def entries(draw):
    """A reference of rank 0 to 4 and 1 to 4 candidates, drawn from a seed, with their
    memory orders, dtypes, levels of noise, NaN/Inf, and the chunk size of the pass."""
    ndim = draw(st.sampled_from([0, 1, 2, 2, 3, 4]))
    shape = tuple(draw(st.lists(st.integers(1, 8), min_size=ndim, max_size=ndim)))
    if ndim and draw(st.integers(0, 9)) == 0:
        shape = (0, *shape[1:])  # now and then an empty entry
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "normal", "normal", "zero", "nonfinite"]))
    ref = rng.normal(size=shape) * 10.0 ** rng.uniform(-3, 3)
    if kind == "zero":
        ref = np.zeros(shape)
    elif ref.size:
        ref.reshape(-1)[rng.integers(0, ref.size, size=2)] = 0.0
        if kind == "nonfinite":
            ref.reshape(-1)[rng.integers(0, ref.size)] = rng.choice([np.nan, np.inf])
    cands, plain = {}, {}
    for i in range(draw(st.integers(1, 4))):
        noise = draw(st.sampled_from([0.0, 1e-7, 1e-4, 1.0]))
        if i and draw(st.integers(0, 3)) == 0:
            g = plain[f"g{i - 1}"].copy()  # equal to the one before: exactly 0 apart
        else:
            scale = max(float(np.max(np.abs(ref[np.isfinite(ref)]), initial=0.0)), 1e-9)
            if draw(st.integers(0, 3)) == 0:  # equal largest differences in many chunks
                g = ref + scale * rng.integers(-1, 2, size=shape)
            else:
                g = ref + noise * scale * rng.normal(size=shape)
            g = g.astype(draw(st.sampled_from([np.float32, np.float64])))
            if g.size and draw(st.integers(0, 4)) == 0:
                at = rng.integers(0, g.size, size=draw(st.integers(1, 3)))
                g.reshape(-1)[at] = rng.choice([np.nan, np.inf, -np.inf], size=at.size)
        perm = draw(st.permutations(range(ndim)))
        cands[f"g{i}"] = _lay_out(g, draw(st.sampled_from(LAYOUTS)), perm)
        plain[f"g{i}"] = g
    dtype = draw(st.sampled_from(["float32", "float64"]))
    chunk = draw(st.sampled_from([2, 5, 16, 1 << 15]))  # the last: one chunk, stacked
    return ref, cands, plain, dtype, chunk


def _same_metrics(got, want) -> None:
    for key in ("max_abs", "ulp_max", "mismatched", "size", "worst_index", "worst_value"):
        assert _same(getattr(got, key), getattr(want, key)), key
    for key in ("worst_reference", "nan", "inf", "first_nonfinite", "status", "tol"):
        assert _same(getattr(got, key), getattr(want, key)), key
    assert got.max_rel == pytest.approx(want.max_rel, rel=1e-12, abs=0), "max_rel"
    assert got.rel_norm == pytest.approx(want.rel_norm, rel=1e-12, abs=0), "rel_norm"
    assert got.cosine == pytest.approx(want.cosine, rel=1e-9, abs=1e-9), "cosine"


def _same(a, b) -> bool:
    """Equal, or both NaN (the value at a NaN element)."""
    return a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )


def _plain_difference(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(all="ignore"):
        value = float(np.linalg.norm(a.astype(np.float64) - b.astype(np.float64)))
    return value if math.isfinite(value) else math.inf


@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(entries())
def test_the_fused_engine_gives_the_definitions_metrics(entry):
    ref, cands, plain, dtype, chunk = entry
    tol = {"float32": 1e-5, "float64": 1e-10}[dtype]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fused, "CHUNK", chunk)  # many chunks: their edges fall everywhere
        patch.setattr(fused, "PARALLEL_CHUNKS", 2)  # and threads take them
        measured = PreparedReference(ref, dtype=dtype, tol=tol).compare_many(cands)
    assert list(measured.results) == list(cands)
    for label, g in plain.items():
        _same_metrics(measured.results[label], compare_arrays(g, ref, dtype=dtype, tol=tol))
    want_norm = float(np.linalg.norm(ref)) if np.isfinite(ref).all() else math.inf
    assert measured.ref_norm == pytest.approx(want_norm, rel=1e-12)
    labels = list(plain)
    assert list(measured.differences) == [
        (a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]
    ]
    for (a, b), value in measured.differences.items():
        want = _plain_difference(plain[a], plain[b])
        if want == 0.0 or not math.isfinite(want):
            assert value == want, (a, b)
            continue
        # the pass adds ||d_a||^2 + ||d_b||^2 - 2 d_a.d_b: exact to rounding of those terms
        terms = sum(_plain_difference(plain[x], ref) ** 2 for x in (a, b))
        assert abs(value**2 - want**2) <= 1e-12 * terms + 1e-300, (a, b)


@pytest.mark.parametrize(
    ("shape", "layout"),
    [
        (shape, layout)
        for shape in [(23,), (7, 6), (3, 4, 5), (2, 3, 4, 5)]
        for layout in LAYOUTS[1:]
        if len(shape) > 1 or layout != "permuted"  # one axis: a single order
    ],
)
def test_every_rank_and_memory_order_crosses_chunk_edges(rng, monkeypatch, shape, layout):
    monkeypatch.setattr(fused, "CHUNK", 5)
    monkeypatch.setattr(fused, "PARALLEL_CHUNKS", 2)
    ref = rng.normal(size=shape)
    g = (ref * (1 + 1e-6 * rng.normal(size=shape))).astype(np.float32)
    g.reshape(-1)[g.size // 2] = 3.0
    view = _lay_out(g, layout, tuple(reversed(range(len(shape)))))
    assert not view.flags.c_contiguous
    measured = PreparedReference(ref, dtype="float32", tol=1e-5).compare_many({"g": g, "v": view})
    want = compare_arrays(g, ref, dtype="float32", tol=1e-5)
    _same_metrics(measured.results["v"], want)
    _same_metrics(measured.results["g"], want)
    assert measured.differences[("g", "v")] == 0.0
