"""Gradient clipping: per array, by global norm (its norm fitted to the first update) or by
value, or none.
"""

from __future__ import annotations

import math

import numpy as np

from xgrad.training.causes.base import Alternative, Context, OptimizerCause, same_kind, uniq

__all__ = ["CAUSES"]


def _clip_text(kind: str | None, c: float | None) -> str:
    if kind == "clip_norm":
        return f"clipping each gradient array to norm {c:g}"
    if kind == "clip_global_norm":
        return f"clipping all gradients to global norm {c:g}"
    if kind == "clip_value":
        return f"clipping each gradient element to [-{c:g}, {c:g}]"
    return "no gradient clipping"


def _fitted_clip(ctx: Context) -> list[float]:
    """Global norms that would shrink the first update as the candidate's is shrunk: a
    smaller fitted learning rate times the first gradients' global norm (to 1, 2 and 3
    significant digits)."""
    ref, g = ctx.reference, ctx.first_grads
    if g is None or ctx.fitted_lr is None or callable(ref.learning_rate) or not ref.lr(0):
        return []
    scale = ctx.fitted_lr / ref.lr(0)
    norm = math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in g.values()))
    if not 0 < scale < 1 or not math.isfinite(norm):
        return []
    return [c for c in uniq(float(f"{scale * norm:.{d}g}") for d in (1, 2, 3)) if c > 0]


def _clipping(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    kinds = ("clip_norm", "clip_global_norm", "clip_value")
    ref_kind = next((k for k in kinds if getattr(ref, k)), None)
    ref_c = getattr(ref, ref_kind) if ref_kind else None
    combos = []
    cand = same_kind(ctx) or ctx.candidate
    if cand is not None:
        ck = next((k for k in kinds if getattr(cand, k)), None)
        combos.append((ck, getattr(cand, ck) if ck else None))
    if ref_kind:
        combos.append((None, None))
        combos += [(k, ref_c) for k in kinds]
    else:
        combos += [("clip_global_norm", c) for c in _fitted_clip(ctx)]
        combos += [(k, 1.0) for k in kinds]
    out = []
    for kind, c in uniq(combos):
        if (kind, c) == (ref_kind, ref_c):
            continue
        changes = {k: (c if k == kind else None) for k in kinds}
        out.append(
            Alternative(
                "gradient-clipping",
                changes,
                f"the candidate applies {_clip_text(kind, c)}; the reference "
                f"{_clip_text(ref_kind, ref_c)}",
            )
        )
    return out


CAUSES: tuple[OptimizerCause, ...] = (
    OptimizerCause(
        "gradient-clipping",
        (),
        "gradients clipped per array, by global norm or by value, or not at all",
        _clipping,
    ),
)
