"""The one vocabulary of diagnosis, gradient and training alike: what a cause is (a record),
what its test found, and what a diagnosis says, ``unexplained`` included; and the helpers
every gradient cause's test shares.

* :class:`AbstractCause`: a cause record, an id and a summary, and what it applies to. The
  gradient causes are :class:`Cause` records (:data:`xgrad.diagnosis.CAUSES`); the optimizer
  conventions of training parity are :class:`xgrad.training.OptimizerCause` records.
* :class:`Finding`: what a test found, in words, with the error before and after.
* :class:`Explanation`: one tested explanation in a report, or :data:`UNEXPLAINED`; a
  gradient report's :class:`Diagnosis` says where (layer, forward or backward, framework), a
  training report's :class:`xgrad.training.OptimizerDiagnosis` at which step.
* :func:`in_order`: the causes of a family in the order of an explicit list of ids.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.identify import rel
from xgrad.layers import Dense
from xgrad.metrics import json_float

__all__ = [
    "UNEXPLAINED",
    "AbstractCause",
    "Cause",
    "Diagnosis",
    "Explanation",
    "Finding",
    "drop",
    "grads_residual",
    "in_order",
]

UNEXPLAINED = "unexplained"
"""The cause id of a diagnosis that no known cause confirms."""


@dataclass(frozen=True)
class Finding:
    """What a test found: the words, and the error before and after.

    Attributes:
        detail: what was found, in words.
        residual: the normwise error left under the alternative (``None`` if untested).
        before: the normwise error that was to be explained.
        confirmed: the alternative brings the error within tolerance; ``False`` for a
            specific but unconfirmed finding.
    """

    detail: str
    residual: float | None
    before: float | None
    confirmed: bool = True


class AbstractCause(abc.ABC):
    """A known cause, as a record: what every family's cause states.

    Attributes:
        id: the cause's name in reports (``gelu-approximation``, ``adam-epsilon``, ...).
        summary: one line for the docs' table of causes.
    """

    id: str
    summary: str

    @abc.abstractmethod
    def applies(self, subject) -> bool:
        """Whether the cause can explain a difference in ``subject`` (a unit of a model, an
        optimizer's rule)."""


Test = Callable[[Evidence, UnitEvidence | None, float], Finding | None]


@dataclass(frozen=True)
class Cause(AbstractCause):
    """One known cause of a gradient discrepancy, as a record.

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


E = TypeVar("E", bound="Explanation")


@dataclass(frozen=True)
class Explanation:
    """One tested explanation of a difference, as a report states it.

    Attributes:
        cause: a cause id, or :data:`UNEXPLAINED`.
        detail: what was found, in words, with the before and after errors.
        confirmed: the re-evaluation under the alternative convention brought the error
            within tolerance (``False`` for ``unexplained``, and for a cause that fits but
            is not confirmed).
        residual: the normwise error left after the re-evaluation (``None`` if untested).
        before: the normwise error that was to be explained.
    """

    cause: str
    detail: str
    confirmed: bool
    residual: float | None = None
    before: float | None = None

    KEYS: ClassVar[tuple[str, ...]] = ("cause", "detail", "confirmed", "residual", "before")
    """The keys of :meth:`to_dict`, in order (each subclass states its own)."""

    @classmethod
    def of(cls: type[E], cause: str, finding: Finding, **at) -> E:
        """The explanation ``finding`` gives for ``cause``; ``at`` says where (the
        subclass's own fields)."""
        return cls(
            cause,
            finding.detail,
            finding.confirmed,
            finding.residual,
            finding.before,
            **at,
        )

    @classmethod
    def unexplained(cls: type[E], detail: str, *, before=None, residual=None, **at) -> E:
        """No known cause explains it: ``detail`` says what was tried."""
        return cls(UNEXPLAINED, detail, False, residual, before, **at)

    @property
    def verdict(self) -> str:
        """``confirmed cause`` or ``no cause confirmed``."""
        return "confirmed cause" if self.confirmed else "no cause confirmed"

    def to_dict(self) -> dict:
        """JSON-ready, keys in the order of :attr:`KEYS` (NaN and infinities as strings)."""
        out = {key: getattr(self, key) for key in self.KEYS}
        for key in ("residual", "before"):
            out[key] = json_float(out[key])
        return out


@dataclass(frozen=True)
class Diagnosis(Explanation):
    """One tested explanation of a gradient discrepancy.

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

    layer: str | None = field(kw_only=True)
    where: str | None = field(kw_only=True)
    framework: str = field(kw_only=True)

    KEYS: ClassVar[tuple[str, ...]] = (
        "cause",
        "layer",
        "detail",
        "confirmed",
        "residual",
        "before",
        "where",
        "framework",
    )

    def text(self, layer_label: str | None = None) -> str:
        where = f"{self.where} diverges; " if self.where else ""
        head = layer_label or (self.layer if self.layer is not None else "model")
        return f"{head} [{self.framework}]: {where}{self.verdict}: {self.cause}: {self.detail}"


C = TypeVar("C", bound=AbstractCause)


def in_order(
    order: Sequence[Hashable],
    causes: Iterable[C],
    key: Callable[[C], Hashable] = lambda cause: cause.id,
) -> tuple[C, ...]:
    """``causes`` in the order ``order`` lists their keys (their ids by default).

    Raises:
        ValueError: ``order`` names a key no cause has or names one twice, or a cause is
            not in it (a slip in xgrad's own lists, caught when the package is imported).
    """
    by_key: dict[Hashable, C] = {}
    for cause in causes:
        if key(cause) in by_key:
            raise ValueError(f"two causes have the key {key(cause)!r}")
        by_key[key(cause)] = cause
    unknown = [k for k in order if k not in by_key]
    twice = sorted({repr(k) for k in order if list(order).count(k) > 1})
    missing = [k for k in by_key if k not in order]
    if unknown or twice or missing:
        raise ValueError(
            f"the order of causes names unknown {unknown}, twice {twice}, and leaves out {missing}"
        )
    return tuple(by_key[k] for k in order)


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
