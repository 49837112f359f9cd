"""One cell of a sweep: what came of it (:class:`SweepCell`, its JSON form), how it is
computed (:func:`run_cell`, a pure function of the grid and the cell), and the one-line cause
a table shows beside it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xgrad.losses import random_targets
from xgrad.metrics import OK_STATUSES, UNIT_ROUNDOFF
from xgrad.sweep.grid import CellConfig, SweepGrid
from xgrad.workers import describe_error

__all__ = ["STATUSES", "SweepCell", "errored", "failed", "run_cell", "run_guarded"]

STATUSES = ("match", "mismatch", "nonfinite", "error", "timeout", "lost")
"""A cell's status: its report's verdict (``match``, ``mismatch``, ``nonfinite``), or why it
has no report: it raised (``error``), ran past ``cell_timeout`` (``timeout``), or its worker
died or could not run it (``lost``)."""


@dataclass(frozen=True)
class SweepCell:
    """One cell's configuration and what came of it, as plain data (its JSON form).

    Attributes:
        activation, loss, dtype, batch, seed: the cell (:class:`CellConfig`).
        key: :meth:`SweepGrid.cell_key`.
        status: one of :data:`STATUSES`.
        worst: ``(rel_norm, framework, entry label)`` of the worst comparison
            (``inf`` for a non-finite one), or ``None`` without a report.
        cause: one line: the confirmed causes, where it diverges, or the error.
        error: ``{"type", "message", "where"}`` for ``error``, ``timeout`` and ``lost``.
        diagnoses: the report's diagnosis lines.
        report: the cell's :meth:`xgrad.Report.to_dict` ``(timing=False)``, or ``None``.
    """

    activation: str
    loss: str
    dtype: str
    batch: int
    seed: int
    key: str
    status: str
    worst: tuple[float, str, str] | None = None
    cause: str = ""
    error: dict | None = None
    diagnoses: tuple[str, ...] = ()
    report: dict | None = None

    @property
    def config(self) -> CellConfig:
        return CellConfig(self.activation, self.loss, self.dtype, self.batch, self.seed)

    @property
    def ok(self) -> bool:
        return self.status == "match"

    def to_dict(self) -> dict:
        worst = None
        if self.worst is not None:
            value, fw, label = self.worst
            worst = {
                "rel_norm": value if math.isfinite(value) else "inf",
                "framework": fw,
                "entry": label,
            }
        return {
            "key": self.key,
            **self.config._asdict(),
            "status": self.status,
            "ok": self.ok,
            "worst": worst,
            "cause": self.cause,
            "error": self.error,
            "diagnoses": list(self.diagnoses),
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> SweepCell:
        """The cell :meth:`to_dict` wrote (``KeyError``/``TypeError`` when it is not one)."""
        worst = data["worst"]
        if worst is not None:
            value = worst["rel_norm"]
            worst = (
                math.inf if value == "inf" else float(value),
                worst["framework"],
                worst["entry"],
            )
        status = data["status"]
        if status not in STATUSES:
            raise KeyError(status)
        return cls(
            data["activation"],
            data["loss"],
            data["dtype"],
            int(data["batch"]),
            int(data["seed"]),
            key=data["key"],
            status=status,
            worst=worst,
            cause=data["cause"],
            error=data["error"],
            diagnoses=tuple(data["diagnoses"]),
            report=data["report"],
        )


def _worst(report) -> tuple[float, str, str]:
    """The largest normwise error: over the failing entries when the cell fails (a passing
    ``match-kink`` entry can be larger than the failure it stands beside), else over all."""
    best = (-1.0, "", "")
    for entry in report.entries:
        for fw, m in entry.results.items():
            if not report.ok and m.status in OK_STATUSES:
                continue
            value = math.inf if m.status == "nonfinite" else m.rel_norm
            if value > best[0]:
                best = (value, fw, entry.label)
    return best


def _cause(report) -> str:
    if report.ok:
        return _rounding(report)
    confirmed = [d for d in report.diagnoses if d.confirmed]
    if confirmed:
        return "; ".join(
            dict.fromkeys(f"{d.cause} at {d.layer or 'model'} [{d.framework}]" for d in confirmed)
        )
    if report.divergences:
        first = report.divergences[0]
        found = "unexplained, " if report.diagnoses else ""
        return f"{found}diverges at {first.path} ({first.where}) [{first.framework}]"
    failures = report.failures()
    if failures:  # no layer comparison to localise it: name the first failing entry
        entry, fw, m = failures[0]
        return f"{m.status} of {entry.label} [{fw}]"
    return ""


def _rounding(report) -> str:
    """For a passing cell: which entries pass only because rounding explains them."""
    found: dict[str, list[str]] = {}
    for entry in report.entries:
        for fw, m in entry.results.items():
            if m.status in ("match-kink", "match-clip"):
                found.setdefault(m.status, []).append(fw)
    what = {"match-kink": "rounding at a kink", "match-clip": "rounding onto a clipping bound"}
    return "; ".join(
        f"{status}: {what[status]} explains {len(fws)} entr{'y' if len(fws) == 1 else 'ies'} "
        f"[{', '.join(dict.fromkeys(fws))}]"
        for status, fws in found.items()
    )


def run_cell(grid: SweepGrid, cell: CellConfig) -> SweepCell:
    """Compare every framework on one cell: a pure function of ``grid`` and ``cell``.

    The params, inputs and targets are drawn from ``cell.seed``, so the result is the same
    in every process. Exceptions propagate (:func:`run_cells` records them).
    """
    from xgrad.runner import compare

    spec = grid.spec(cell.activation, cell.loss)
    x = np.random.default_rng(cell.seed).standard_normal((cell.batch, grid.input_dim))
    y = random_targets(cell.loss, cell.batch, spec.output_dim, cell.seed)
    report = compare(
        spec,
        x,
        y,
        loss=cell.loss,
        frameworks=list(grid.frameworks) if grid.frameworks is not None else None,
        dtype=cell.dtype,
        seed=cell.seed,
        rtol=grid.rtol,
        title=cell.title,
    )
    failures = report.failures()
    status = "match" if report.ok else (failures[0][2].status if failures else "mismatch")
    cause = _cause(report)
    roundoff = UNIT_ROUNDOFF[cell.dtype]
    if status == "mismatch" and grid.rtol is not None and grid.rtol < roundoff:
        # the tolerance, not the frameworks: say so rather than "unexplained"
        cause = (
            f"rtol {grid.rtol:g} is below {cell.dtype}'s unit roundoff ({roundoff:.1e}); "
            + cause.removeprefix("unexplained, ")
        )
    return SweepCell(
        *cell,
        key=grid.cell_key(cell),
        status=status,
        worst=_worst(report),
        cause=cause,
        diagnoses=tuple(report.diagnosis_lines()),
        report=report.to_dict(timing=False),
    )


def failed(grid: SweepGrid, cell: CellConfig, status: str, error: dict, cause: str) -> SweepCell:
    """The record of a cell without a report."""
    return SweepCell(*cell, key=grid.cell_key(cell), status=status, cause=cause, error=error)


def errored(grid: SweepGrid, cell: CellConfig, error: dict) -> SweepCell:
    """The record of a cell that raised; ``error`` as :func:`~xgrad.workers.describe_error`
    gives it."""
    return failed(grid, cell, "error", error, f"{error['type']}: {error['message']}")


def run_guarded(grid: SweepGrid, cell: CellConfig) -> SweepCell:
    """:func:`run_cell`, with an exception recorded as the cell's ``error``."""
    try:
        return run_cell(grid, cell)
    except Exception as exc:
        return errored(grid, cell, describe_error(exc))
