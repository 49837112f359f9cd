"""Cells as tasks: grouped by model (:func:`chunks`), run on worker processes of a
:class:`~xgrad.workers.WorkerPool`, and :func:`run_cells`, the task an executor's worker runs.

A worker is handed the grid once; its cells then run one at a time, each with its own clock
when there is a ``cell_timeout``. What the pool reports of a task that did not return (killed
past its limit, its worker dead, no worker at all) becomes the cell's record here."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence

import numpy as np

from xgrad.sweep.cells import SweepCell, errored, failed, run_guarded
from xgrad.sweep.grid import CellConfig, SweepGrid
from xgrad.workers import AbstractJob, Outcome, WorkerPool

__all__ = [
    "CHUNK_CELLS",
    "EXECUTOR_POOL",
    "WORKER_ENV",
    "WORKER_IDLE_S",
    "cell_of",
    "chunks",
    "run_cells",
    "run_on_pool",
]

CHUNK_CELLS = 4  # at most this many cells of one model go to a worker as one task

WORKER_IDLE_S = 600.0
"""A worker process that :func:`run_cells` keeps for later tasks exits after this many
seconds unused (or as soon as the process that started it ends)."""

WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # TensorFlow's start-up logging stays quiet

EXECUTOR_POOL = WorkerPool(idle_s=WORKER_IDLE_S, env=WORKER_ENV)
"""The worker processes :func:`run_cells` keeps between the tasks an executor gives this
process. Those tasks share nothing but the process they run in (an executor's worker pickles
each call anew), and a worker that has imported and warmed up a grid's frameworks (seconds)
is worth keeping for the next task of the same grid; so this one pool lives as long as the
process. Its idle workers exit by themselves after :data:`WORKER_IDLE_S` seconds, and
:func:`~xgrad.sweep.run_sweep` stops them when it ends (an executor's threads may run in the
sweep's own process)."""


def chunks(cells: Sequence[CellConfig], size: int = CHUNK_CELLS) -> list[list[CellConfig]]:
    """``cells`` (of one grid, so of one set of frameworks) in tasks of at most ``size``,
    each holding cells of one model (activation and loss), in order: a worker builds and
    compiles a model once for the cells of its task, and keeps those builds for later
    tasks."""
    out: list[list[CellConfig]] = []
    for _, group in itertools.groupby(cells, key=lambda c: (c.activation, c.loss)):
        group = list(group)
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


def _warm_up(grid: SweepGrid) -> None:
    """Import the grid's frameworks and run each once on a tiny model in each of the grid's
    dtypes, so that no cell is charged for that. An error is left for the cells to record."""
    from xgrad.runner import compare
    from xgrad.spec import MLP, Dense

    frameworks = None if grid.frameworks is None else list(grid.frameworks)
    for dtype in grid.dtypes:
        with contextlib.suppress(Exception):
            compare(MLP(2, [Dense(2)]), np.ones((1, 2)), frameworks=frameworks, dtype=dtype)


class _CellJob(AbstractJob):
    """The cells of one grid in a worker process: the grid is sent once per worker, and
    (``warm``, with a ``cell_timeout``) its frameworks warmed up before any clock starts."""

    def __init__(self, grid: SweepGrid, warm: bool):
        self.grid, self.warm = grid, warm

    def setup(self) -> None:
        if self.warm:
            _warm_up(self.grid)

    def run(self, item: CellConfig) -> SweepCell:
        return run_guarded(self.grid, item)


def cell_of(grid: SweepGrid, outcome: Outcome, cell_timeout: float | None) -> SweepCell:
    """The record of the cell a worker ran, or of why none could."""
    cell = outcome.item
    if outcome.status == "done":
        return outcome.value
    if outcome.status == "raised":  # the grid could not be loaded in the worker
        return errored(grid, cell, outcome.error)
    if outcome.status == "timeout":
        cause = f"timed out after {cell_timeout:g} s"
        error = {"type": "CellTimeout", "message": cause, "where": ""}
        return failed(grid, cell, "timeout", error, cause)
    if outcome.status == "lost":
        message = f"the worker process running this cell died ({outcome.reason})"
    else:  # unstarted: no worker process could start
        message = outcome.reason
    error = {"type": "WorkerDied", "message": message, "where": ""}
    return failed(grid, cell, "lost", error, f"worker lost: WorkerDied: {message}")


def run_on_pool(
    pool: WorkerPool,
    grid: SweepGrid,
    tasks: Sequence[Sequence[CellConfig]],
    size: int,
    cell_timeout: float | None,
    finish: Callable[[list[SweepCell]], None],
) -> None:
    """Run ``tasks`` on at most ``size`` workers of ``pool``, calling ``finish`` with each
    cell as it comes; the frameworks are warmed up first when there is a ``cell_timeout``."""
    pool.run(
        _CellJob(grid, warm=cell_timeout is not None),
        tasks,
        size=size,
        timeout=cell_timeout,
        on_outcome=lambda outcome: finish([cell_of(grid, outcome, cell_timeout)]),
    )


def run_cells(
    grid: SweepGrid, cells: Sequence[CellConfig], cell_timeout: float | None = None
) -> list[SweepCell]:
    """Run ``cells`` one after another: the task an executor's worker runs.

    A cell that raises is recorded as ``error``; the next cell runs either way. Without
    ``cell_timeout`` the cells run in this process. With it they run in a worker process of
    this process's own (:data:`EXECUTOR_POOL`), started (and its frameworks imported and
    warmed up) before any clock starts, and kept for the next task: a cell that runs past
    ``cell_timeout`` seconds is recorded as ``timeout`` and its process killed and replaced,
    and a cell whose process dies is recorded as ``lost``; the rest of the task runs in the
    replacement.
    """
    cells = [CellConfig(*c) for c in cells]
    if cell_timeout is None:
        return [run_guarded(grid, c) for c in cells]
    outcomes = EXECUTOR_POOL.run(_CellJob(grid, warm=True), [cells], timeout=cell_timeout)
    return [cell_of(grid, outcome, cell_timeout) for outcome in outcomes]
