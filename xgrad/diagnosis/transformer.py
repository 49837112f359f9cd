"""Attention conventions: RoPE layout and base, the score scale, the causal mask, the masked
score, the q/k/v layout, the grouped-query repeat and the softmax's precision.

Each cause re-runs the reference's attention (:func:`~xgrad.diagnosis.fit_transformer.attend`)
with the reference's own weights and input under one other convention, and is confirmed by the
one rule of :mod:`xgrad.diagnosis.records`: the re-run reproduces the candidate's output within
tolerance, the unchanged re-run reproduces the reference's and not the candidate's.

The reference's unit is an :class:`~xgrad.layers.Attention` (a spec, or a module a reader
recognises), or a module xgrad reads as no kind (``LlamaAttention``, a user's own) whose
parameters and captured values are fitted as an attention
(:func:`~xgrad.diagnosis.fit_transformer.fit_attention`). The weights of such a module live in
its submodules; :func:`attach` gives the causes every weight of the reference and every
module's captured inputs (its padding mask among them).

Confirmed on the output: an opaque module's parameter gradients carry the candidate's own
names (``in_proj_weight`` against ``q``, ``k``, ``v``), so they are compared by the report, not
here. Positions are ``0 .. T-1``: position ids are integers and are not captured.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace

import numpy as np

from xgrad.diagnosis.evidence import Context, Evidence, UnitEvidence, f64
from xgrad.diagnosis.fit_transformer import (
    BASES,
    SOFTMAX,
    AttentionWeights,
    Convention,
    alternatives,
    attend,
    attention_weights,
    canonical_weights,
    convention_of,
    differing_heads,
    distance_to,
    fit_attention,
)
from xgrad.diagnosis.records import Cause, Check, Finding, check, drop
from xgrad.identify import FIT, rel
from xgrad.layers.attention import Attention

__all__ = ["CAUSES", "NONFINITE", "Context", "attach", "context", "fitted", "subtree"]


# -- what the causes see beyond a unit ---------------------------------------------------------


def attach(ev: Evidence, ref, side, weights: Mapping[str, np.ndarray] | None) -> None:
    """Give ``ev`` the :class:`~xgrad.diagnosis.evidence.Context` of the reference ``ref``
    and the compared ``side`` (:class:`~xgrad.runner.Side` objects), ``weights`` the
    reference's canonical ones."""
    if weights is None:
        weights = {k: f64(v) for k, v in ref.model.weights().items()}
    ev.transformer = Context(weights, ref.grads.module_inputs or {}, side.grads.module_inputs or {})


def context(ev: Evidence) -> Context:
    """``ev``'s :class:`~xgrad.diagnosis.evidence.Context` (an empty one, kept, when none
    was attached)."""
    if ev.transformer is None:
        ev.transformer = Context({}, {}, {})
    return ev.transformer


def subtree(ev: Evidence, unit: UnitEvidence) -> dict[str, np.ndarray]:
    """The reference's parameters of ``unit`` and of every module inside it, by their names
    below the unit's path (``q_proj.kernel``, ``in_proj.kernel``); the whole model's (path
    ``""``) are never gathered."""
    if not unit.path:
        return dict(unit.weights_ref)
    prefix = unit.path + "."
    ctx = context(ev)
    tree = {k[len(prefix) :]: f64(v) for k, v in ctx.weights.items() if k.startswith(prefix)}
    if tree:
        return tree
    tree = dict(unit.weights_ref)
    for other in ev.units:
        if other.path.startswith(prefix):
            rest = other.path[len(prefix) :]
            tree.update({f"{rest}.{k}": v for k, v in other.weights_ref.items()})
    return tree


def _keep(
    ev: Evidence, unit: UnitEvidence, x: np.ndarray
) -> tuple[np.ndarray | None, float | None]:
    """The padding mask ``(B, T)`` (True = attend) the reference's module was called with,
    and the score it adds to a masked key where the mask says it; ``(None, None)`` if none.

    Read from a floating input after the first: a ``(B, T)`` mask of 0 and 1, or an additive
    mask ``(B, 1, T, T)`` or ``(B, T, T)`` of 0 (attend) and one large negative value
    (Hugging Face's, ``finfo.min``, causal and padding together: a key is kept when some
    query attends to it)."""
    ctx = context(ev)
    b, t = x.shape[:2]
    for a in (ctx.inputs_ref.get(unit.path) or [])[1:]:
        a = f64(a)
        if a.shape == (b, t) and np.all((a == 0) | (a == 1)):
            return a.astype(bool), None
        if a.shape not in ((b, 1, t, t), (b, t, t)):
            continue
        blocked = a[a != 0]
        if blocked.size and np.all(blocked == blocked[0]) and blocked[0] <= -1e4:
            allowed = (a == 0).reshape(b, -1, t)
            return allowed.any(axis=1), float(blocked[0])
    return None, None


# -- the reference's attention --------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """The reference's attention as re-run here: its weights and convention, its input and
    padding mask, and the unchanged re-run's output and per-head values."""

    weights: AttentionWeights
    convention: Convention
    x: np.ndarray
    keep: np.ndarray | None
    y: np.ndarray
    o: np.ndarray
    identified: bool  # fitted from the module's values (not a stated Attention)


def fitted(ev: Evidence, unit: UnitEvidence) -> Fitted | None:
    """The reference's attention of ``unit``, fitted once per unit (``None``: not one)."""
    ctx = context(ev)
    key = ("attention", unit.path, id(unit))
    if key not in ctx.memo:
        ctx.memo[key] = _fit(ev, unit)
    return ctx.memo[key]


def _fit(ev: Evidence, unit: UnitEvidence) -> Fitted | None:
    x, main = unit.input_ref, unit.main_ref
    if x is None or x.ndim != 3 or unit.output_ref.shape != x.shape:
        return None
    keep, fill = _keep(ev, unit, x)
    if isinstance(main, Attention) and len(unit.layers_ref) == 1:
        w, c = canonical_weights(unit.weights_ref, main), convention_of(main)
        identified = False
    elif unit.kind == "module" and unit.path:
        options = attention_weights(subtree(ev, unit), x.shape[-1])
        dtype = ev.dtype_ref if ev.dtype_ref in FIT else "float32"
        with np.errstate(all="ignore"):
            found = fit_attention(options, x, unit.output_ref, dtype, keep)
        if found is None:
            return None
        w, c, _ = found
        identified = True
        if fill is not None and fill != c.fill:  # the value its mask adds, where it reproduces
            seen = replace(c, fill=fill)
            if rel(attend(w, seen, x, keep)[0], unit.output_ref) <= FIT[dtype]:
                c = seen
    else:
        return None
    y, o = attend(w, c, x, keep)
    return Fitted(w, c, x, keep, y, o, identified)


# -- words -----------------------------------------------------------------------------------------

ROPE = {
    None: "applies no rotary embedding",
    "half": "rotates the two halves of each head vector (LLaMA, GPT-NeoX: rotate_half)",
    "interleaved": "rotates interleaved pairs (x[2m], x[2m+1]) (GPT-J rotate_every_two, "
    "Meta's original complex multiply)",
}

GQA = {
    "interleave": "repeats each key/value head over consecutive query heads "
    "(repeat_interleave, LLaMA's repeat_kv)",
    "tile": "tiles the key/value heads (query head h reads kv head h mod kv_heads: tile / repeat)",
}

AXES = {
    "heads-first": "reads each projection's columns as (heads, head_dim)",
    "dim-first": "reads each projection's columns as (head_dim, heads)",
}

SPLIT = {
    "blocks": "splits the fused projection as (3, heads, head_dim) blocks (GPT-2's c_attn, "
    "torch's in_proj_weight)",
    "per-head": "splits the fused projection per head as (heads, 3, head_dim) (GPT-NeoX's "
    "and Megatron's query_key_value)",
}


def _order(c: Convention, fused: bool) -> str:
    parts = ", ".join(c.order)
    if c.order != "qkv":
        return f"splits the fused projection's heads in the order {parts}"
    if fused:
        return (
            "splits the fused projection's heads in the order q, k, v (GPT-2's c_attn, "
            "torch's in_proj_weight)"
        )
    return (
        "has separate q, k and v projections (a fused projection paired with them holds "
        "them stacked in the order q, k, v)"
    )


SOFTMAX_WORDS = {
    "float": "computes the softmax in the model's precision (float32 or wider)",
    "bfloat16": "computes the softmax on bfloat16 scores, its output rounded to bfloat16",
    "bfloat16-steps": "computes the softmax in bfloat16 throughout",
    "bfloat16-fused": "computes the softmax on bfloat16 scores as XLA compiles jax.nn.softmax "
    "under jit (scores, exponentials and their sum rounded to bfloat16, the division in "
    "float32)",
}


def _scale(c: Convention, dim: int) -> str:
    hd, s = c.head_dim, c.score_scale
    named = (  # pairs, not a dict: at dim = head_dim**2, 1/head_dim is 1/sqrt(dim) too
        (1.0 / math.sqrt(hd), f"1/sqrt(head_dim) = 1/sqrt({hd})"),
        (1.0, "no scale (1)"),
        (1.0 / hd, f"1/head_dim = 1/{hd} (the scale applied twice)"),
        (1.0 / math.sqrt(dim), f"1/sqrt(dim) = 1/sqrt({dim}) (the model's width, not the head's)"),
        (math.sqrt(hd), f"sqrt(head_dim) = sqrt({hd}) (multiplied, not divided)"),
    )
    words = [w for v, w in named if math.isclose(v, s, rel_tol=1e-9)]
    k = 1.0 / (s * math.sqrt(hd)) if s > 0 else 0.0
    if not words and round(k) >= 2 and math.isclose(k, round(k), rel_tol=1e-6):
        # GPT-2's scale_attn_by_inverse_layer_idx: 1/(sqrt(hd) * (layer + 1))
        words = [f"1/(sqrt(head_dim) * {round(k)}) = {s:g}"]
    return " or ".join(words) if words else f"{s:g}"


def _causal(c: Convention) -> str:
    if not c.causal:
        return "attends to every token (no causal mask)"
    return {
        0: "masks the future (token i sees keys j <= i)",
        -1: "masks the diagonal too (token i sees keys j < i: shifted by one; the first "
        "token sees nothing)",
        1: "lets each token see the next one (keys j <= i + 1: shifted by one)",
    }[c.causal_offset]


def _fill(value: float) -> str:
    if value == -math.inf:
        return "-inf"
    if value == float(np.finfo(np.float32).min):
        return "the dtype's lowest value (finfo.min, Hugging Face)"
    return f"{value:g}"


def _sides(ref: str, cand: str) -> str:
    return f"the reference {ref}; the candidate {cand}"


def _equivalent(ref: str | None, cand: str | None) -> str:
    """What makes halves and interleaved RoPE equivalent (:mod:`xgrad.pairing.rope`): the
    permutation of Hugging Face's LLaMA conversion, in the direction the candidate needs."""
    rows = {"interleaved": "(heads, 2, head_dim/2)", "half": "(heads, head_dim/2, 2)"}
    if {ref, cand} != set(rows):
        return ""
    return (
        "; the two are equivalent when the candidate's query and key projection rows are "
        "permuted within each head (a port of Meta's LLaMA code holding Hugging Face's "
        "weights, or the other way round): permute q/k rows as Hugging Face's "
        f"convert_llama_weights_to_hf.py does (rows read as {rows[cand]}, the last two axes "
        "swapped; xgrad then pairs them through that permutation), or change the candidate's "
        "RoPE to the reference's"
    )


# -- the causes ------------------------------------------------------------------------------------

FILLS = (-math.inf, -1e9, float(np.finfo(np.float32).min), -1e4)
"""Masked scores seen in code: -inf (``F.scaled_dot_product_attention`` with a bool mask,
Flax), -1e9 (the Annotated Transformer, many tutorials), finfo.min (Hugging Face), -1e4
(older BERT code)."""


def _alternatives(cause: str, f: Fitted) -> Iterator[Convention]:
    c = f.convention
    if cause == "softmax-precision":
        yield from (replace(c, softmax=s) for s in SOFTMAX if s != c.softmax)
        return
    if cause == "mask-fill":
        if f.keep is not None or (c.causal and c.causal_offset < 0):
            yield from (replace(c, fill=v) for v in FILLS if v != c.fill)
        return
    for alt in alternatives(c, f.weights):
        changed = {k for k in vars(c) if getattr(alt, k) != getattr(c, k)}
        if changed and changed <= KNOBS[cause]:
            yield alt


KNOBS = {
    "rope-layout": {"rope"},
    "rope-base": {"rope_base"},
    "attention-scale": {"scale"},
    "causal-mask": {"causal", "causal_offset"},
    "gqa-repeat": {"gqa"},
    "qkv-layout": {"head_axes", "split", "order"},
}


def _words(cause: str, c: Convention, alt: Convention, f: Fitted) -> str:
    dim = f.x.shape[-1]
    if cause == "rope-layout":
        return _sides(ROPE[c.rope], ROPE[alt.rope]) + _equivalent(c.rope, alt.rope)
    if cause == "rope-base":
        return (
            f"the reference's RoPE base (theta) is {c.rope_base:g}, the candidate's "
            f"{alt.rope_base:g} (Hugging Face's LlamaConfig, MistralConfig and GPTNeoXConfig "
            "default to 10000; a checkpoint's config.json sets its own rope_theta)"
        )
    if cause == "attention-scale":
        return f"the reference scales the scores by {_scale(c, dim)}, the candidate by " + _scale(
            alt, dim
        )
    if cause == "causal-mask":
        return _sides(_causal(c), _causal(alt))
    if cause == "gqa-repeat":
        return _sides(GQA[c.gqa], GQA[alt.gqa])
    if cause == "qkv-layout":
        if alt.order != c.order:
            return _sides(_order(c, f.weights.fused), _order(alt, True))
        if alt.split != c.split:
            return _sides(SPLIT[c.split], SPLIT[alt.split])
        return _sides(AXES[c.head_axes], AXES[alt.head_axes])
    if cause == "softmax-precision":
        return _sides(SOFTMAX_WORDS[c.softmax], SOFTMAX_WORDS[alt.softmax])
    return f"the reference fills masked scores with {_fill(c.fill)}, the candidate with " + _fill(
        alt.fill
    )


def _nan_check(ev: Evidence, unit: UnitEvidence, y_alt: np.ndarray, f: Fitted) -> Check:
    """The confirmation rule where the candidate's or the reference's output holds NaN: the
    alternative must put NaN exactly where the candidate has it and agree elsewhere, the
    unchanged re-run likewise with the reference."""
    residual = distance_to(unit.output_cand)(y_alt)
    faithful = distance_to(unit.output_ref)(f.y) <= ev.fit_tol
    return Check(residual, math.inf, ev.fit_tol, ev.tol, faithful and residual < math.inf)


def _tol(ev: Evidence, unit: UnitEvidence, f: Fitted, alt: Convention) -> float:
    """What a re-run must reach: the comparison's tolerance; a re-run in bfloat16, a tenth
    of the difference it explains (bfloat16's own rounding is no finer), at most
    bfloat16's fit."""
    if alt.softmax == "float":
        return ev.fit_tol
    apart = rel(unit.output_cand, f.y)
    return max(ev.fit_tol, min(FIT["bfloat16"], 0.1 * apart))


def _test(cause: str):
    def test(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
        unit, f = _attention_at(ev, unit)
        if f is None:
            return None
        outputs = {"candidate": unit.output_cand, "reference": unit.output_ref}
        nan = next((k for k, a in outputs.items() if not np.all(np.isfinite(a))), None)
        best = None
        for alt in _alternatives(cause, f):
            y_alt, o_alt = attend(f.weights, alt, f.x, f.keep)
            if nan:
                confirmed = _nan_check(ev, unit, y_alt, f)
            else:
                tol = _tol(ev, unit, f, alt)
                confirmed = check(
                    ev, unit.output_cand, y_alt, f.y, reference=unit.output_ref, tol=tol
                )
            if confirmed.confirmed and (best is None or confirmed.residual < best[0].residual):
                best = (confirmed, alt, o_alt)
        if best is None:
            return _rounding_hint(ev, unit, f, before) if cause == "softmax-precision" else None
        confirmed, alt, o_alt = best
        detail = _words(cause, f.convention, alt, f)
        detail += _where(ev, unit, f, alt, o_alt)
        if nan:
            rows = int(np.isnan(outputs[nan]).any(axis=-1).sum())
            detail += (
                f"; {rows} rows of the {nan}'s output are NaN: every key of those queries "
                "is masked, and softmax over scores that are all -inf is 0/0. Fill with a "
                "finite value (finfo.min) or zero those rows"
            )
            return Finding(detail + f"; the rest agrees to {confirmed.residual:.2g}", 0.0, before)
        return Finding(f"{detail}; {drop(before, confirmed.residual)}", confirmed.residual, before)

    test.__name__ = cause.replace("-", "_")
    return test


def _rounding_hint(ev: Evidence, unit: UnitEvidence, f: Fitted, before: float) -> Finding | None:
    """An unconfirmed finding, when the candidate's attention output is apart from the
    reference's by about as much as a bfloat16 softmax moves it (within a factor of ten of
    the re-runs' distances) and no re-run reproduced it: a reduced-precision softmax that
    rounds at steps none of :data:`~xgrad.diagnosis.fit_transformer.SOFTMAX` names."""
    if f.convention.softmax != "float" or not np.all(np.isfinite(unit.output_cand)):
        return None
    apart = rel(unit.output_cand, f.y)
    modes = [m for m in SOFTMAX if m != "float"]
    moved = [
        rel(attend(f.weights, replace(f.convention, softmax=m), f.x, f.keep)[0], f.y) for m in modes
    ]
    low, high = min(moved), max(moved)
    if apart <= ev.tol or not low / 10 <= apart <= 10 * high:
        return None
    detail = (
        f"the attention's output differs from the reference's re-run by {apart:.2g}, the size "
        f"of bfloat16 rounding (the reference's attention re-run with its softmax in bfloat16 "
        f"moves its output by {low:.2g} to {high:.2g}): a reduced-precision softmax is a "
        "candidate, not confirmed: no re-run of it in bfloat16 (output rounded, every step "
        "rounded, or as XLA fuses it) reproduces the candidate's values, so it rounds at "
        "other steps, or the difference has another cause"
    )
    return Finding(detail, None, before, confirmed=False)


def _attention_at(ev: Evidence, unit: UnitEvidence) -> tuple[UnitEvidence, Fitted | None]:
    """The unit whose attention the causes re-run: ``unit`` itself, or, for a projection
    whose input differed too little to place the difference before it (an attention's
    ``o_proj``), the attention module it belongs to."""
    f = fitted(ev, unit)
    if f is not None or unit.kind != "dense" or "." not in unit.path:
        return unit, f
    scope = unit.path.rsplit(".", 1)[0]
    parent = next((u for u in ev.units if u.path == scope), None)
    if parent is None or parent.kind != "module":
        return unit, None
    return parent, fitted(ev, parent)


def _where(ev: Evidence, unit: UnitEvidence, f: Fitted, alt: Convention, o_alt) -> str:
    """`` in heads 1, 2 of 4 (path heads 1, 2)`` when only some heads differ, and how the
    reference's module was read when it was fitted."""
    words = ""
    c = f.convention
    if (alt.head_axes, alt.split, alt.order) == (c.head_axes, c.split, c.order):
        heads = differing_heads(f.o, o_alt, ev.tol)
        if heads and len(heads) < c.heads:
            listed = ", ".join(map(str, heads))
            words += f" (only heads {listed} of {c.heads} differ: {unit.path} heads {listed})"
    if f.identified:
        words += (
            f"; the reference's {unit.path} was read from its values as attention with "
            f"{c.heads} heads, {c.kv_heads} key/value heads, head_dim {c.head_dim}"
        )
    return words


CAUSES = tuple(
    Cause(cause, "forward", ("attention", "module", "dense"), summary, _test(cause))
    for cause, summary in (
        ("rope-layout", "RoPE on halves (LLaMA, GPT-NeoX) against interleaved pairs (GPT-J)"),
        ("rope-base", f"another RoPE base (theta): {', '.join(f'{b:g}' for b in BASES)}"),
        ("attention-scale", "scores not scaled by 1/sqrt(head_dim), scaled twice or by dim"),
        ("causal-mask", "a causal mask missing on one side, or shifted by one"),
        ("mask-fill", "masked scores filled with -inf against -1e9 (NaN on fully masked rows)"),
        ("qkv-layout", "q/k/v split another way: k, q, v parts, (head_dim, heads) or (3, heads)"),
        ("gqa-repeat", "grouped key/value heads tiled instead of repeat_interleave"),
        ("softmax-precision", "the softmax computed in bfloat16 instead of upcast to float32"),
    )
)


NONFINITE = ("mask-fill", "causal-mask")
"""The causes that can explain a candidate's NaN output: tried on the first unit whose output
is not finite on the candidate's side only."""
