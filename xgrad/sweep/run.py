"""Running a sweep: :func:`run_sweep` resumes from the output folder, runs the cells left (here,
on local worker processes, or on any executor), records each as it finishes, and merges them;
:func:`dask_executor` opens an executor on a Dask cluster."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from functools import partial

from xgrad.errors import InputError
from xgrad.sweep.cells import SweepCell, failed, run_guarded
from xgrad.sweep.grid import CellConfig, SweepGrid
from xgrad.sweep.result import SweepInterrupted, SweepResult
from xgrad.sweep.store import Store
from xgrad.sweep.tasks import EXECUTOR_POOL, WORKER_ENV, chunks, run_cells, run_on_pool
from xgrad.workers import WorkerPool, describe_error

__all__ = ["dask_executor", "run_sweep"]

Finish = Callable[[list[SweepCell]], None]  # takes each batch of finished cells


class _Bar:
    """A rich progress bar over the cells, with the running count of mismatches."""

    def __init__(self, enabled: bool, total: int, done: Sequence[SweepCell]):
        self.progress = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn("sweep"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("cells, {task.fields[bad]} mismatched, {task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        self.task = self.progress.add_task("sweep", total=total, bad=0, failed=0)
        self.bad = self.failed = 0
        self.advance(done)

    def advance(self, cells: Sequence[SweepCell]) -> None:
        if self.progress is None:
            return
        self.bad += sum(c.status in ("mismatch", "nonfinite") for c in cells)
        self.failed += sum(c.status in ("error", "timeout", "lost") for c in cells)
        self.progress.update(self.task, advance=len(cells), bad=self.bad, failed=self.failed)

    def __enter__(self) -> _Bar:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def _run_here(grid: SweepGrid, todo: Sequence[CellConfig], finish: Finish) -> None:
    for cell in todo:
        finish([run_guarded(grid, cell)])


def _run_local(
    grid: SweepGrid,
    todo: Sequence[CellConfig],
    workers: int,
    cell_timeout: float | None,
    finish: Finish,
) -> None:
    with WorkerPool(env=WORKER_ENV) as pool:  # fresh workers, stopped at the end
        run_on_pool(pool, grid, chunks(todo), workers, cell_timeout, finish)


def _run_on(
    executor: Executor,
    grid: SweepGrid,
    todo: Sequence[CellConfig],
    cell_timeout: float | None,
    finish: Finish,
) -> None:
    pending: dict[Future, list[CellConfig]] = {
        executor.submit(run_cells, grid, task, cell_timeout): task for task in chunks(todo)
    }
    try:
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                try:
                    cells = future.result()
                except Exception as exc:  # the worker died, or the task could not be sent
                    error = describe_error(exc)
                    cause = f"worker lost: {error['type']}: {error['message']}"
                    cells = [failed(grid, c, "lost", error, cause) for c in task]
                finish(cells)
    finally:
        for future in pending:
            future.cancel()


def _run_todo(
    grid: SweepGrid,
    todo: Sequence[CellConfig],
    executor: Executor | None,
    workers: int,
    cell_timeout: float | None,
    finish: Finish,
) -> None:
    """Run the cells not found in the output folder, where the options say."""
    if not todo:
        return
    if executor is not None:
        _run_on(executor, grid, todo, cell_timeout, finish)
    elif workers == 1 and cell_timeout is None:
        _run_here(grid, todo, finish)
    else:
        _run_local(grid, todo, workers, cell_timeout, finish)


def _record(
    cells: list[SweepCell],
    *,
    grid: SweepGrid,
    store: Store | None,
    found: dict[str, SweepCell],
    bar: _Bar,
    on_cell: Callable[[SweepCell], None] | None,
) -> None:
    """Keep finished cells: write each to the output folder, count it, then tell ``on_cell``."""
    for cell in cells:
        if store is not None:
            store.write(grid, cell)
        found[cell.key] = cell
    bar.advance(cells)
    for cell in cells:
        if on_cell is not None:
            on_cell(cell)


def _check_options(executor: Executor | None, workers: int, cell_timeout: float | None) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}")
    if executor is not None and workers != 1:
        raise InputError(
            f"conflicting options: executor and workers={workers} (the executor's workers "
            "run the cells); give one"
        )
    if cell_timeout is not None and (
        isinstance(cell_timeout, bool)
        or not isinstance(cell_timeout, int | float)
        or not (math.isfinite(cell_timeout) and cell_timeout > 0)
    ):
        raise InputError(f"cell_timeout must be a positive number of seconds, got {cell_timeout!r}")


def run_sweep(
    grid: SweepGrid,
    *,
    executor: Executor | None = None,
    workers: int = 1,
    out: str | os.PathLike | None = None,
    cell_timeout: float | None = None,
    progress: bool = False,
    on_cell: Callable[[SweepCell], None] | None = None,
) -> SweepResult:
    """Run :func:`xgrad.compare` on every cell of ``grid``.

    Args:
        grid: the grid.
        executor: any :class:`concurrent.futures.Executor` to run the cells on, e.g.
            ``dask.distributed.Client(address).get_executor()`` (see :func:`dask_executor`);
            the caller owns it. Cells of one model go as one task (:func:`chunks`).
        workers: with no ``executor``: ``1`` runs the cells here, one after another (in one
            worker process with a ``cell_timeout``); ``N`` runs them on ``N`` local worker
            processes (fresh interpreters, stopped at the end). The frameworks are imported
            in the workers only.
        out: a folder. Each finished cell is written to ``out/cells/`` as it completes
            (atomically); cells already there with a report are not run again (a cell is
            found by :meth:`SweepGrid.cell_key`); ``out/sweep.json`` and ``out/sweep.md``
            are written once every cell is done.
        cell_timeout: wall-clock seconds a cell may take in its worker process, from the
            moment the worker is handed the cell (its frameworks already imported and
            warmed up) until its result is back: building its model, every framework's
            passes and the diagnosis. One that takes longer is recorded as ``timeout``, its
            process is killed and replaced, and the sweep goes on. The cells then always run
            in worker processes (one with ``workers=1``; on an ``executor``, one per
            executor worker).
        progress: show a progress bar counting cells and mismatches.
        on_cell: called here with each cell this run computes, once it is written.

    Returns:
        A :class:`SweepResult` with every cell in grid order.

    Raises:
        InputError: conflicting or out-of-range options.
        FrameworkError: an unknown framework, or one not installed here.
        OutputError: ``out`` cannot be created.
        SweepInterrupted: on Ctrl-C (a ``KeyboardInterrupt``), once the workers are
            stopped; the cells finished so far are in ``out``.

    Example:
        >>> from xgrad.sweep import SweepGrid, run_sweep
        >>> grid = SweepGrid(activations=("relu",), losses=("mse",), frameworks=("numpy",))
        >>> run_sweep(grid).summary()
        'OK: every cell matches (4 cells)'
    """
    _check_options(executor, workers, cell_timeout)
    grid = grid.resolved()
    store = None if out is None else Store(out)
    configs = grid.cells()
    keys = [grid.cell_key(c) for c in configs]
    found = {} if store is None else store.load_all(grid, configs, keys)
    resumed = len(found)
    todo = [c for c, k in zip(configs, keys, strict=True) if k not in found]
    try:
        with _Bar(progress, len(configs), list(found.values())) as bar:
            record = partial(_record, grid=grid, store=store, found=found, bar=bar, on_cell=on_cell)
            _run_todo(grid, todo, executor, workers, cell_timeout, record)
    except KeyboardInterrupt:
        folder = None if store is None else store.folder
        raise SweepInterrupted(len(found), len(configs), folder) from None
    finally:
        EXECUTOR_POOL.close()  # kept by run_cells when the executor's threads are in this process
    cells = tuple(found[k] for k in keys)
    result = SweepResult(grid, cells, computed=len(configs) - resumed, resumed=resumed)
    if store is not None:
        store.write_merged(result)
    return result


@contextlib.contextmanager
def dask_executor(address: str, *, timeout: float = 10.0) -> Iterator[Executor]:
    """An executor on the running Dask scheduler at ``address``, closed afterwards.

    Args:
        address: the scheduler's address, e.g. ``tcp://10.0.0.5:8786``.
        timeout: seconds to wait for the scheduler to answer.

    Raises:
        InputError: ``dask.distributed`` is not installed, or the scheduler cannot be
            reached.
    """
    try:
        from distributed import Client
    except ImportError:
        raise InputError(
            "--scheduler needs dask.distributed; install it with: pip install 'xgrad[dask]'"
        ) from None
    try:
        client = Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError, ValueError) as exc:
        message = " ".join(str(exc).split())
        raise InputError(
            f"cannot reach the Dask scheduler at {address!r}: {message}; start one with "
            "'dask scheduler' and check the address it prints"
        ) from None
    try:
        yield client.get_executor()
    finally:
        client.close()
