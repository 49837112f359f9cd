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
* :class:`Check`, :func:`check`, :func:`rerun`, :func:`backward_check`: the one rule that
  confirms a gradient cause (below).

**The confirmation rule.** A cause is confirmed only when the *reference's* unit, re-run with
the reference's own weights and input under the alternative convention, reproduces the
candidate's output (and its gradients, where the cause changes them) within tolerance, while
the unchanged reference, re-run the same way, does not, and is the reference's own
computation (at least ten times closer to the reference's captured values than to the
candidate's: a unit read wrongly confirms nothing). The candidate's own weights or
pre-activations never enter the re-run, so a candidate that also differs in its weights is
reproduced by no alternative (it gets ``weights differ`` first, from ``weight-layout``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit_grads
from xgrad.identify import rel
from xgrad.layers import Dense
from xgrad.metrics import json_float

__all__ = [
    "UNEXPLAINED",
    "AbstractCause",
    "Cause",
    "Check",
    "Diagnosis",
    "Explanation",
    "Finding",
    "backward_check",
    "check",
    "drop",
    "grads_residual",
    "in_order",
    "rerun",
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


# -- the confirmation rule ----------------------------------------------------------------------

FAITHFUL = 0.1
"""How much closer to the reference's own values than to the candidate's the unchanged
re-run must be: a re-run that is not the reference's computation confirms nothing."""


@dataclass(frozen=True)
class Check:
    """The confirmation rule, measured once for one alternative convention.

    Attributes:
        residual: the reference re-run under the alternative against the candidate (its
            output, and its gradients where compared: the largest normwise error).
        unchanged: the reference re-run unchanged against the candidate.
        tol: what ``residual`` must reach: the comparison's tolerance (``Evidence.fit_tol``),
            or a re-run's own precision where it computes in a lower one.
        apart: what ``unchanged`` must exceed: the comparison's own tolerance.
        faithful: the unchanged re-run is the reference's own computation.
    """

    residual: float
    unchanged: float
    tol: float
    apart: float
    faithful: bool = True

    @property
    def confirmed(self) -> bool:
        """The alternative reproduces the candidate, the unchanged reference does not."""
        return self.faithful and self.residual <= self.tol and self.unchanged > self.apart

    def finding(self, detail: str, before: float | None) -> Finding | None:
        """A confirmed :class:`Finding` with ``detail``, else ``None``."""
        return Finding(detail, self.residual, before) if self.confirmed else None


def _pairs(a) -> list:
    return list(a) if isinstance(a, list | tuple) else [a]


def _worst(candidate, other) -> float:
    """The largest normwise error of ``other`` against ``candidate``, pair by pair (a pair
    with ``None`` is skipped)."""
    errs = [rel(c, o) for c, o in zip(candidate, other, strict=True) if c is not None]
    return max(errs) if errs else np.inf


def check(
    ev: Evidence, candidate, alternative, unchanged, *, reference=None, tol: float | None = None
) -> Check:
    """The confirmation rule on values: ``candidate``, ``alternative`` and ``unchanged`` are
    arrays, or lists of arrays in the same order (an output, then gradients).

    Args:
        ev: the evidence (its ``fit_tol`` and ``tol``).
        candidate: what the candidate computed.
        alternative: the reference re-run under the alternative convention, with its own
            weights and inputs.
        unchanged: the reference re-run the same way under its own convention.
        reference: what the reference itself computed, when ``unchanged`` is a re-run of it
            (``None``: ``unchanged`` is the reference's captured values).
        tol: what the alternative must reach (default ``ev.fit_tol``).
    """
    candidate, alternative, unchanged = _pairs(candidate), _pairs(alternative), _pairs(unchanged)
    tol = ev.fit_tol if tol is None else tol
    apart = _worst(candidate, unchanged)
    faithful = True
    if reference is not None:
        own = _worst(_pairs(reference), unchanged[: len(_pairs(reference))])
        faithful = own <= max(tol, FAITHFUL * apart)
    return Check(_worst(candidate, alternative), apart, tol, ev.tol, faithful)


def rerun(
    ev: Evidence,
    unit: UnitEvidence,
    layers=None,
    weights: dict[str, np.ndarray] | None = None,
    *,
    grads: bool = True,
    tol: float | None = None,
) -> Check:
    """The confirmation rule for one unit: the reference's unit re-run on the reference's
    input with ``layers`` (the reference's own layers under the alternative convention) and
    ``weights`` (default: the reference's own), against the candidate's output and, with
    ``grads``, against its weight gradients (the VJP of the candidate's own ``dL/d output``);
    the unchanged unit is the reference's layers and weights (and the alternative's arrays of
    names the reference does not hold: a BatchNorm in training mode keeps no statistics).

    A unit that cannot be re-run (a layer of unknown configuration) confirms nothing.
    """
    layers = unit.layers_ref if layers is None else layers
    weights = unit.weights_ref if weights is None else weights
    names = [k for k in unit.dweights_cand if grads and k in unit.dweights_ref]
    try:
        alt_out, alt_grads = run_unit_grads(layers, weights, unit.input_ref, unit.grad_cand)
        own_out, own_grads = run_unit_grads(  # arrays the reference lacks: the alternative's
            unit.layers_ref, {**weights, **unit.weights_ref}, unit.input_ref, unit.grad_cand
        )
    except (ValueError, KeyError):
        return Check(np.inf, np.inf, 0.0, ev.tol, False)
    if any(k not in alt_grads or k not in own_grads for k in names):
        names = []
    return check(
        ev,
        [unit.output_cand, *(unit.dweights_cand[k] for k in names)],
        [alt_out, *(alt_grads[k] for k in names)],
        [own_out, *(own_grads[k] for k in names)],
        reference=unit.output_ref,
        tol=tol,
    )


def dense_grads(unit: UnitEvidence, delta: np.ndarray) -> list[np.ndarray]:
    """A Dense unit's kernel and bias gradients for ``delta = dL/dz`` on the reference's
    input (the bias's only where the candidate has one)."""
    main = unit.main_ref
    layer = main if isinstance(main, Dense) else Dense(unit.weights_ref["kernel"].shape[1])
    dk, db, _ = layer.linear_vjp(unit.weights_ref["kernel"], unit.input_ref, delta)
    return [dk] if db is None or "bias" not in unit.dweights_cand else [dk, db]


def backward_check(ev: Evidence, unit: UnitEvidence, delta: np.ndarray, own: np.ndarray) -> Check:
    """The confirmation rule for a backward cause of a Dense unit: its weight gradients from
    ``delta`` (``dL/dz`` under the alternative) against the candidate's, and from ``own``
    (the reference's own ``dL/dz``) against the candidate's and the reference's."""
    candidate = [unit.dweights_cand.get("kernel"), unit.dweights_cand.get("bias")]
    reference = [unit.dweights_ref.get("kernel"), unit.dweights_ref.get("bias")]
    alt, unchanged = dense_grads(unit, delta), dense_grads(unit, own)
    n = len(alt)
    return check(ev, candidate[:n], alt, unchanged, reference=reference[:n])
