"""Token embeddings and RMSNorm forms: the embedding's scale, its padding row, the epsilon
outside the root, Gemma's ``(1 + w)`` scale.

The reference's unit is a layer of a stated kind (:class:`~xgrad.layers.Embedding`,
:class:`~xgrad.layers.RMSNorm`) or a module xgrad reads as no kind whose parameters and
captured values fit one (a table gathered by the model's token ids; one ``(d,)`` weight and an
RMSNorm form, :func:`~xgrad.diagnosis.fit_transformer.fit_rmsnorm`), or an embedding module
and the model's own code after it (``embed_tokens(ids) * sqrt(d)`` written in the model's
``forward``: :func:`code_evidence`). Each cause re-runs it
with its own weights and input under the other convention (:mod:`xgrad.diagnosis.records`).
``rmsnorm-epsilon`` (another epsilon value, inside the root) is :mod:`xgrad.diagnosis.norms`'.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, f64, one_unit_evidence
from xgrad.diagnosis.fit_transformer import (
    RMSForm,
    embedding_table,
    fit_rmsnorm,
    ids_of,
    rmsnorm,
)
from xgrad.diagnosis.records import Cause, Finding, check, drop
from xgrad.diagnosis.transformer import context, subtree
from xgrad.identify import EPSILONS, FIT, rel
from xgrad.layers import Embedding, RMSNorm

__all__ = ["CAUSES", "code_evidence"]


# -- embeddings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """The reference's embedding: its table ``(vocab, dim)``, the ids it read ``(B, T)``,
    its scale and its padding row (``None``: none, or unknown)."""

    table: np.ndarray
    ids: np.ndarray
    scale: float
    padding: int | None


def _scale_of(table: np.ndarray, ids: np.ndarray, y: np.ndarray, dtype: str) -> float | None:
    """The one factor ``s`` with ``y == table[ids] * s`` within the fit, or ``None``."""
    rows = table[ids]
    den = float(np.sum(rows * rows))
    if den == 0 or y.shape != rows.shape:
        return None
    s = float(np.sum(rows * y)) / den
    for named in (1.0, math.sqrt(table.shape[1])):
        if math.isclose(s, named, rel_tol=1e-5):
            s = named
    return s if rel(rows * s, y) <= FIT.get(dtype, 1e-5) else None


def _padding_of(table_grad, ids: np.ndarray, g: np.ndarray, scale: float) -> int | None:
    """The row that is read but gets no gradient in ``table_grad`` (the reference's own),
    where the scattered ``dL/d output`` would give it one; ``None`` if no row is."""
    if table_grad is None:
        return None
    full = _scatter(ids, g, scale, table_grad.shape, None)
    for row in np.unique(ids):
        if not np.any(table_grad[row]) and np.any(full[row]):
            return int(row)
    return None


def _scatter(ids, g, scale: float, shape, padding: int | None) -> np.ndarray:
    """``dL/d table``: ``scale * dL/dy`` added into the rows read, the padding row zero."""
    out = np.zeros(shape)
    np.add.at(out, ids.reshape(-1), (g * scale).reshape(-1, shape[1]))
    if padding is not None:
        out[padding] = 0.0
    return out


def _one(arrays: dict) -> np.ndarray | None:
    two = [v for v in arrays.values() if np.ndim(v) == 2]
    return two[0] if len(two) == 1 else None


def table(ev: Evidence, unit: UnitEvidence) -> Table | None:
    """The reference's embedding of ``unit``, read once (``None``: not one)."""
    ctx = context(ev)
    key = ("embedding", unit.path, id(unit))
    if key not in ctx.memo:
        ctx.memo[key] = _table(ev, unit)
    return ctx.memo[key]


def _table(ev: Evidence, unit: UnitEvidence) -> Table | None:
    main, y = unit.main_ref, unit.output_ref
    dtype = ev.dtype_ref if ev.dtype_ref in FIT else "float32"
    if isinstance(main, Embedding):
        t = unit.weights_ref.get("embedding")
        ids = ids_of(unit.input_ref, main.vocab)
        if t is None or ids is None:
            return None
        return Table(t, ids, 1.0 if main.scale is None else main.scale, main.padding_idx)
    if unit.kind != "module" or not unit.path or y.ndim < 2:
        return None
    found = embedding_table(subtree(ev, unit), y.shape[-1])
    if found is None:
        return None
    t = found[1]
    for x in (unit.input_ref, ev.x):  # a first module's own input, or the model's ids
        ids = ids_of(x, t.shape[0])
        if ids is None or ids.shape != y.shape[:-1]:
            continue
        s = _scale_of(t, ids, y, dtype)
        if s is not None:
            pad = _padding_of(_one(unit.dweights_ref), ids, unit.grad_ref, s)
            return Table(t, ids, s, pad)
    return None


def code_evidence(
    ref, side, divergence, inputs, *, dtype: str, tol: float, weights
) -> Evidence | None:
    """Evidence with one :class:`~xgrad.layers.Embedding` unit for the code that
    ``divergence`` names (its ``between``) when the module before it is the reference's
    embedding: the table, gathered by the model's ids and scaled by the one factor that
    gives the value entering the module after the code, is the unit (its output that value
    on each side); ``None`` when the module before is no table or no factor fits.

    Args:
        ref, side: the reference's and the compared side's :class:`~xgrad.runner.Side`.
        divergence: the first divergence, at the code between two modules.
        inputs: the checked batch (:class:`~xgrad.comparison.inputs.Inputs`; ``x`` the ids).
        weights: the reference's canonical weights, float64.
    """
    between = divergence.between or {}
    if side.label not in between or "reference" not in between:
        return None
    (before, after), (_, cand_after) = between["reference"], between[side.label]
    y_ref = f64(((ref.grads.module_inputs or {}).get(after) or (None,))[0])
    y_cand = f64(((side.grads.module_inputs or {}).get(cand_after) or (None,))[0])
    if y_ref is None or y_cand is None or y_ref.shape != y_cand.shape or y_ref.ndim < 2:
        return None
    prefix = before + "."
    tree = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
    found = embedding_table(tree, y_ref.shape[-1])
    ids = None if found is None else ids_of(inputs.x, found[1].shape[0])
    if ids is None or ids.shape != y_ref.shape[:-1]:
        return None
    t = found[1]
    s = _scale_of(t, ids, y_ref, ref.model.dtype if ref.model.dtype in FIT else "float32")
    if s is None:
        return None
    unit = UnitEvidence(
        path=divergence.path,
        label=f"{divergence.path} code ({before} and the code after it -> {after})",
        kind="embedding",
        layers_ref=[Embedding(t.shape[0], t.shape[1], scale=None if s == 1.0 else s)],
        layers_cand=[None],
        weights_ref={"embedding": t},
        weights_cand={},
        dweights_ref={},
        dweights_cand={},
        input_ref=ids,
        input_cand=ids,
        output_ref=y_ref,
        output_cand=y_cand,
        grad_ref=np.zeros_like(y_ref),
        grad_cand=np.zeros_like(y_cand),
    )
    lower = dtype == "float64" and side.model.dtype != "float64"
    return one_unit_evidence(
        ref, side, inputs, unit, dtype=dtype, tol=tol, fit_tol=max(tol, 1e-5) if lower else tol
    )


def _scale_words(s: float, dim: int) -> str:
    if s == 1.0:
        return "does not scale the looked-up vectors"
    if math.isclose(s, math.sqrt(dim)):
        return f"multiplies them by sqrt(dim) = sqrt({dim}) (Gemma, the original Transformer)"
    if math.isclose(s, 1 / math.sqrt(dim)):
        return f"divides them by sqrt(dim) = sqrt({dim})"
    return f"multiplies them by {s:g}"


def embedding_scale(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The reference's table, gathered by its ids and scaled by another common factor (1,
    ``sqrt(dim)``, ``1 / sqrt(dim)``), reproduces the candidate's output."""
    t = table(ev, unit)
    if t is None:
        return None
    dim = t.table.shape[1]
    rows = t.table[t.ids]
    own = rows * t.scale
    best = None
    for s in (1.0, math.sqrt(dim), 1.0 / math.sqrt(dim), float(dim)):
        if math.isclose(s, t.scale):
            continue
        confirmed = check(ev, unit.output_cand, rows * s, own, reference=unit.output_ref)
        if confirmed.confirmed and (best is None or confirmed.residual < best[1].residual):
            best = (s, confirmed)
    if best is None:
        return None
    s, confirmed = best
    return Finding(
        f"the reference {_scale_words(t.scale, dim)}, the candidate {_scale_words(s, dim)}; "
        f"with the candidate's factor {drop(before, confirmed.residual)}",
        confirmed.residual,
        before,
    )


def padding_idx(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The outputs agree, the table's gradients differ: the reference's table gradient
    re-made from the candidate's ``dL/d output`` with the padding row zeroed (torch's
    ``padding_idx``) or not (``nnx.Embed``, ``keras.layers.Embedding``, ``nn.Embedding``
    without it) reproduces the candidate's."""
    t = table(ev, unit)
    cand = _one(unit.dweights_cand)
    ref = _one(unit.dweights_ref)
    if t is None or cand is None or ref is None or cand.shape != t.table.shape:
        return None
    g = unit.grad_cand
    own = _scatter(t.ids, g, t.scale, cand.shape, t.padding)
    options = [None] if t.padding is not None else []
    if t.padding is None:
        options += [int(r) for r in np.unique(t.ids) if not np.any(cand[r]) and np.any(own[r])]
    for pad in options:
        alt = _scatter(t.ids, g, t.scale, cand.shape, pad)
        confirmed = check(ev, cand, alt, own, reference=ref)
        if not confirmed.confirmed:
            continue
        if pad is None:
            words = (
                f"the reference gives row {t.padding} (its padding_idx) no gradient, the "
                "candidate does (nnx.Embed, keras.layers.Embedding and an nn.Embedding "
                "without padding_idx have no padding row)"
            )
        else:
            words = (
                f"the candidate gives row {pad} no gradient (torch's nn.Embedding("
                f"padding_idx={pad})), the reference does"
            )
        return Finding(
            f"{words}; with that on both sides {drop(before, confirmed.residual)}",
            confirmed.residual,
            before,
        )
    return None


# -- RMSNorm forms ---------------------------------------------------------------------------------


def rms_form(ev: Evidence, unit: UnitEvidence) -> tuple[RMSForm, np.ndarray | None] | None:
    """The reference's RMSNorm of ``unit`` and its weight, read once (``None``: not one)."""
    ctx = context(ev)
    key = ("rmsnorm", unit.path, id(unit))
    if key not in ctx.memo:
        ctx.memo[key] = _rms_form(ev, unit)
    return ctx.memo[key]


def _rms_form(ev: Evidence, unit: UnitEvidence):
    main = unit.main_ref
    if isinstance(main, RMSNorm) and len(unit.layers_ref) == 1:
        return RMSForm(main.epsilon), unit.weights_ref.get("scale")
    if unit.kind != "module" or not unit.path or unit.input_ref.shape != unit.output_ref.shape:
        return None
    tree = subtree(ev, unit)
    if len(tree) > 1 or any(np.ndim(v) != 1 for v in tree.values()):
        return None
    w = next(iter(tree.values()), None)
    dtype = ev.dtype_ref if ev.dtype_ref in FIT else "float32"
    found = fit_rmsnorm(unit.input_ref, unit.output_ref, w, dtype)
    return None if found is None else (found[0], w)


def _rms_test(ev, unit, before, variants, words) -> Finding | None:
    found = rms_form(ev, unit)
    if found is None:
        return None
    form, w = found
    own = rmsnorm(unit.input_ref, w, form)
    for alt in variants(form, w):
        confirmed = check(
            ev, unit.output_cand, rmsnorm(unit.input_ref, w, alt), own, reference=unit.output_ref
        )
        if confirmed.confirmed:
            return Finding(
                f"{words(form, alt)}; with the candidate's form {drop(before, confirmed.residual)}",
                confirmed.residual,
                before,
            )
    return None


def _placement(form: RMSForm, w):
    flipped = replace(form, outside=not form.outside)
    yield flipped
    for eps in EPSILONS:
        if not math.isclose(eps, form.epsilon):
            yield replace(flipped, epsilon=eps)


def _root(form: RMSForm) -> str:
    if form.outside:
        return f"adds epsilon {form.epsilon:g} outside the root: x / (sqrt(mean(x**2)) + eps)"
    return (
        f"adds epsilon {form.epsilon:g} inside the root: x / sqrt(mean(x**2) + eps) (LLaMA, "
        "torch.nn.RMSNorm, nnx.RMSNorm)"
    )


def rmsnorm_epsilon_placement(ev: Evidence, unit: UnitEvidence, before: float):
    """The reference's RMSNorm re-run with its epsilon on the other side of the square root
    (its own epsilon first, then the common ones) reproduces the candidate."""
    return _rms_test(
        ev,
        unit,
        before,
        _placement,
        lambda form, alt: f"the reference {_root(form)}; the candidate {_root(alt)}",
    )


def _offset(form: RMSForm, w):
    if w is not None:
        yield replace(form, offset=not form.offset)


def _gain(form: RMSForm) -> str:
    if form.offset:
        return "scales by (1 + weight), its weight stored as an offset from one (Gemma)"
    return "scales by its weight (LLaMA, torch.nn.RMSNorm, nnx.RMSNorm)"


def rmsnorm_offset(ev: Evidence, unit: UnitEvidence, before: float):
    """The reference's RMSNorm re-run with its weight read as ``1 + w`` (Gemma) instead of
    ``w``, or the other way round, reproduces the candidate."""
    return _rms_test(
        ev,
        unit,
        before,
        _offset,
        lambda form, alt: f"the reference {_gain(form)}; the candidate {_gain(alt)}",
    )


CAUSES = (
    Cause(
        "embedding-scale",
        "forward",
        ("embedding", "module"),
        "embeddings multiplied by sqrt(dim) on one side only (Gemma, the original Transformer)",
        embedding_scale,
    ),
    Cause(
        "padding-idx",
        "backward",
        ("embedding", "module"),
        "the padding row gets no gradient on one side only (torch's padding_idx)",
        padding_idx,
    ),
    Cause(
        "rmsnorm-epsilon-placement",
        "forward",
        ("rmsnorm", "module"),
        "RMSNorm epsilon outside the square root on one side",
        rmsnorm_epsilon_placement,
    ),
    Cause(
        "rmsnorm-offset",
        "forward",
        ("rmsnorm", "module"),
        "RMSNorm scaled by (1 + weight) (Gemma) on one side, by weight on the other",
        rmsnorm_offset,
    ),
)
