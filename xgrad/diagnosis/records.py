"""What a cause is (a record), what a test returns, and the helpers every test shares."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.identify import rel
from xgrad.layers import Dense

__all__ = ["Cause", "Diagnosis", "Finding", "drop", "grads_residual"]


@dataclass(frozen=True)
class Finding:
    """What a confirmed test found: the words, and the error before and after."""

    detail: str
    residual: float | None
    before: float | None
    confirmed: bool = True


Test = Callable[[Evidence, UnitEvidence | None, float], Finding | None]


@dataclass(frozen=True)
class Cause:
    """One known cause of a discrepancy, as a record.

    Attributes:
        id: the cause's name in reports (``gelu-approximation``, ...).
        where: the evidence it needs: ``forward`` (a unit whose output differs first),
            ``backward`` (outputs agree, a unit's gradients differ), ``state`` (updated
            moving statistics differ) or ``model`` (every gradient at once).
        kinds: the unit kinds it applies to (empty: any).
        summary: one line for ``docs/pitfalls.md``.
        test: re-evaluates under the alternative convention; a :class:`Finding` when the
            difference then falls within tolerance, else ``None``.
    """

    id: str
    where: str
    kinds: tuple[str, ...]
    summary: str
    test: Test

    def applies(self, unit: UnitEvidence | None) -> bool:
        return not self.kinds or (unit is not None and unit.kind in self.kinds)


@dataclass(frozen=True)
class Diagnosis:
    """One tested explanation of a discrepancy.

    Attributes:
        cause: a cause id (:data:`xgrad.diagnosis.CAUSES`) or ``unexplained``.
        layer: the canonical path of the layer it concerns, or ``None`` for the whole model.
        detail: what was found, in words, with the before and after errors.
        confirmed: the re-evaluation under the alternative convention brought the error
            within tolerance (``False`` for ``unexplained``).
        residual: the normwise error left after the re-evaluation (``None`` if untested).
        before: the normwise error that was to be explained.
        where: ``forward``, ``backward``, ``state`` or ``None``.
        framework: the compared framework (the candidate).
    """

    cause: str
    layer: str | None
    detail: str
    confirmed: bool
    residual: float | None
    before: float | None
    where: str | None
    framework: str

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("residual", "before"):
            value = out[key]
            if value is not None and not math.isfinite(value):
                out[key] = "inf" if value > 0 else "nan"
        return out

    def text(self, layer_label: str | None = None) -> str:
        where = f"{self.where} diverges; " if self.where else ""
        head = layer_label or (self.layer if self.layer is not None else "model")
        verdict = "confirmed cause" if self.confirmed else "no cause confirmed"
        return f"{head} [{self.framework}]: {where}{verdict}: {self.cause}: {self.detail}"


def drop(before: float, after: float) -> str:
    return f"the error drops from {before:.2g} to {after:.2g}"


def grads_residual(unit: UnitEvidence, delta: np.ndarray) -> float:
    """How far the candidate's kernel and bias gradients are from those a Dense unit's own
    VJP gives for ``delta = dL/dz`` on the reference's input."""
    main = unit.main_ref
    layer = main if isinstance(main, Dense) else Dense(unit.weights_ref["kernel"].shape[1])
    dk, db, _ = layer.linear_vjp(unit.weights_ref["kernel"], unit.input_ref, delta)
    parts = [rel(unit.dweights_cand.get("kernel"), dk)]
    if db is not None and "bias" in unit.dweights_cand:
        parts.append(rel(unit.dweights_cand["bias"], db))
    return max(parts)
