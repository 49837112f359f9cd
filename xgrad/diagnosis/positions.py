"""Position ids in a batch, and the RoPE causes whose re-runs assume positions ``0 .. T-1``.

The attention causes (:mod:`xgrad.diagnosis.transformer`) re-run the reference's attention
with tokens at positions ``0 .. T-1``: position ids are integers and are not captured. RoPE's
scores depend on positions only through their differences, so a row of consecutive positions
(``p .. p+T-1``: a prompt continued after a cache) gives the same attention as ``0 .. T-1``;
any other row (packed sequences, positions restarting after left padding) does not. Where a
batch holds such a row in an integer input named like position ids (Hugging Face's
``position_ids``), the RoPE causes are not re-run: the report says so, and neither names nor
rules out a RoPE convention there (:func:`guarded`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.diagnosis.fit_transformer import attention_weights
from xgrad.diagnosis.records import Cause, Finding
from xgrad.diagnosis.transformer import context, fitted, subtree

__all__ = ["ROPE_CAUSES", "guarded", "other_positions"]

ROPE_CAUSES = ("rope-layout", "rope-base")
"""The causes whose re-run places tokens by position (the others see positions only
through the RoPE the reference's attention was fitted with)."""


def other_positions(batch) -> str | None:
    """Words naming the first row of position ids that is not consecutive, or ``None``.

    Args:
        batch: the compared inputs (a :class:`~xgrad.frameworks.capture.Batch`, or
            ``None``); its integer inputs whose name holds ``position`` are read as position
            ids ``(batch, tokens)`` or ``(tokens,)``.
    """
    leaves = getattr(batch, "leaves", None) or {}
    for name, arr in leaves.items():
        a = np.asarray(arr)
        if "position" not in name.lower() or a.dtype.kind not in "iu" or a.ndim not in (1, 2):
            continue
        rows = a.reshape(-1, a.shape[-1])
        bad = np.flatnonzero((np.diff(rows, axis=-1) != 1).any(axis=-1))
        if bad.size:
            row = rows[bad[0]].tolist()
            shown = ", ".join(map(str, row[:8])) + (", ..." if len(row) > 8 else "")
            return f"{name} row {int(bad[0])} is [{shown}]"
    return None


def _attention_like(ev: Evidence, unit: UnitEvidence) -> bool:
    """Whether the RoPE causes would look at ``unit``: an attention, stated or fitted, or a
    module whose parameters are an attention's (its fit may fail at the wrong positions); a
    projection inside one (``o_proj``) stands for it, as the attention causes take it."""
    if unit.kind == "dense" and "." in unit.path:
        scope = unit.path.rsplit(".", 1)[0]
        unit = next((u for u in ev.units if u.path == scope), unit)
    if unit.kind == "attention" or fitted(ev, unit) is not None:
        return True
    x = unit.input_ref
    if unit.kind != "module" or not unit.path or x is None or x.ndim != 3:
        return False
    return bool(attention_weights(subtree(ev, unit), x.shape[-1]))


def guarded(causes: Iterable[Cause]) -> list[Cause]:
    """``causes`` with those of :data:`ROPE_CAUSES` not re-run where the batch's positions
    are not consecutive (:func:`other_positions`, kept in the evidence's
    :class:`~xgrad.diagnosis.evidence.Context`): an unconfirmed finding says why."""

    def wrap(cause: Cause) -> Cause:
        def test(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
            where = context(ev).positions
            if where is None:
                return cause.test(ev, unit, before)
            if not _attention_like(ev, unit):
                return None
            return Finding(
                f"{cause.id} not re-run: positions other than 0..T-1 ({where}); the re-runs "
                "place tokens at 0..T-1 (position ids are not captured), so RoPE's layout and "
                "base are neither named nor ruled out here. Compare on a batch whose position "
                "ids are 0..T-1 (or leave them out) to test them",
                None,
                before,
                confirmed=False,
            )

        test.__name__ = cause.test.__name__
        return replace(cause, test=test)

    return [wrap(c) if c.id in ROPE_CAUSES else c for c in causes]
