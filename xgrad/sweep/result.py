"""The result of a sweep: every cell in grid order, as a report (:class:`SweepResult`), and
the interrupt that keeps what was finished (:class:`SweepInterrupted`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xgrad.report.base import AbstractReport
from xgrad.report.format import fmt
from xgrad.sweep.cells import STATUSES, SweepCell
from xgrad.sweep.grid import SweepGrid

__all__ = ["SCHEMA", "SweepInterrupted", "SweepResult"]

SCHEMA = "xgrad.sweep/2"
"""The merged report's JSON schema name and version; bumped on any incompatible change."""


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


@dataclass(frozen=True)
class SweepResult(AbstractReport):
    """Every cell of a grid, in grid order: what ``xgrad sweep`` prints and writes.

    A report (:class:`~xgrad.report.base.AbstractReport`): :meth:`to_json` and
    :meth:`to_markdown` write the merged report and its table (atomically) when given a path.

    Attributes:
        grid: the grid, its frameworks spelled out (:meth:`SweepGrid.resolved`).
        cells: one :class:`SweepCell` per cell of the grid, in grid order.
        computed: how many cells this run computed.
        resumed: how many it took from ``out/cells/`` instead.
    """

    grid: SweepGrid
    cells: tuple[SweepCell, ...]
    computed: int = field(default=0, compare=False)
    resumed: int = field(default=0, compare=False)

    @property
    def ok(self) -> bool:
        """Whether every cell matches."""
        return all(c.ok for c in self.cells)

    def counts(self) -> dict[str, int]:
        """Cells per status, every status listed (in :data:`STATUSES` order)."""
        return {s: sum(c.status == s for c in self.cells) for s in STATUSES}

    def summary(self) -> str:
        counts = {s: n for s, n in self.counts().items() if n and s != "match"}
        bad = sum(counts.values())
        if not bad:
            return f"OK: every cell matches ({_cells(len(self.cells))})"
        verdict = "MISMATCH" if counts.keys() & {"mismatch", "nonfinite"} else "FAILED"
        what = ", ".join(f"{n} {s}" for s, n in counts.items())
        return f"{verdict}: {bad} of {_cells(len(self.cells))} ({what})"

    def diagnosis_lines(self) -> list[str]:
        lines = [line for c in self.cells for line in c.diagnoses]
        lines += [f"{c.status}: {c.config.title}: {c.cause}" for c in self.cells if c.error]
        return lines

    def rows(self) -> Iterator[tuple[SweepCell, str, str]]:
        """``(cell, worst rel norm, where)`` per cell, formatted for tables."""
        for c in self.cells:
            if c.worst is None:
                yield c, "-", "-"
            else:
                value, fw, label = c.worst
                yield c, fmt(value), f"{fw}: {label}"

    def print(self, console=None) -> None:
        """The table of cells and the verdict, on a ``rich`` console (a new one when
        ``None``)."""
        from xgrad.sweep.render import print_sweep

        print_sweep(self, console)

    def markdown(self) -> str:
        """A Markdown table: the worst normwise error, where, the status and the cause per
        cell, then the verdict."""
        from xgrad.sweep.render import sweep_markdown

        return sweep_markdown(self)

    def to_dict(self, *, timing: bool = True) -> dict:
        """The merged report (schema :data:`SCHEMA`): the same bytes for the same grid,
        whichever workers ran it and whether it was resumed. It holds no timing and no host,
        so ``timing`` changes nothing."""
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "grid": self.grid.to_dict(),
            "counts": {"cells": len(self.cells), **self.counts()},
            "cells": [c.to_dict() for c in self.cells],
        }


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was interrupted (Ctrl-C); the cells it finished are kept in ``out``.

    Attributes:
        finished: cells finished (computed or resumed) before the interrupt.
        total: cells in the grid.
        out: the output folder, or ``None``.
    """

    def __init__(self, finished: int, total: int, out: Path | None):
        self.finished, self.total, self.out = finished, total, out
        if out is None:
            where = "not kept (no output folder); run with --out DIR to make a sweep resumable"
        else:
            where = f"kept in {str(out)!r}; run the same sweep again to resume"
        super().__init__(f"{finished} of {total} cells finished, {where}")
