"""``xgrad sweep``: :func:`xgrad.compare` over a grid of configurations, on any executor.

A cell is one (activation, loss, dtype, batch size, seed). Its model is
``MLP(input_dim, [Dense(h, activation) for h in hidden] + [Dense(output_dim, head)])`` with
the head the loss expects: ``sigmoid`` for ``bce``, ``softmax`` for ``cce``, else ``linear``;
or, with ``layers``, a template in the text form of :mod:`xgrad.layers.text` where ``ACT``
and ``HEAD`` stand for the cell's activation and head
(``8:ACT,layernorm,residual(8:ACT),4:HEAD``). Inputs are standard normal and targets drawn
as in ``xgrad compare``, all from the seed.

A cell is a pure function of its configuration (:func:`run_cell`), so a sweep gives the
same merged report whichever worker ran which cell, in whatever order. :func:`run_sweep`
runs the cells here, on ``workers`` local processes, or on any
:class:`concurrent.futures.Executor` (a Dask cluster's ``Client(...).get_executor()``).
Cells of one model travel together (:func:`chunks`), so a worker reuses what it built and
compiled for the first. With ``out``, each finished cell is written at once
(``out/cells/*.json``, atomically) and a re-run skips the cells found there; the merged
report (``out/sweep.json``, schema :data:`SCHEMA`, and ``out/sweep.md``) is written when
every cell is done. See ``docs/sweeps.md``.

The package, one module per idea: :mod:`~xgrad.sweep.grid` (the axes and their checks),
:mod:`~xgrad.sweep.cells` (one cell: its record, its computation, its cause),
:mod:`~xgrad.sweep.tasks` (cells as tasks on worker processes, :mod:`xgrad.workers`),
:mod:`~xgrad.sweep.store` (the resumable output folder), :mod:`~xgrad.sweep.result` (the
merged report), :mod:`~xgrad.sweep.render` (its table) and :mod:`~xgrad.sweep.run`
(:func:`run_sweep` and the executors).
"""

from xgrad.sweep.cells import STATUSES, SweepCell, run_cell
from xgrad.sweep.grid import CELL_SCHEMA, CellConfig, SweepGrid
from xgrad.sweep.result import SCHEMA, SweepInterrupted, SweepResult
from xgrad.sweep.run import dask_executor, run_sweep
from xgrad.sweep.tasks import chunks, run_cells

__all__ = [
    "CELL_SCHEMA",
    "SCHEMA",
    "STATUSES",
    "CellConfig",
    "SweepCell",
    "SweepGrid",
    "SweepInterrupted",
    "SweepResult",
    "chunks",
    "dask_executor",
    "run_cell",
    "run_cells",
    "run_sweep",
]
