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
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from xgrad._io import atomic_write
from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.errors import FrameworkError, InputError, OutputError
from xgrad.frameworks.base import ALL_DTYPES, AbstractFramework
from xgrad.frameworks.registry import available_frameworks, known_frameworks, lookup_framework
from xgrad.losses import get_loss, random_targets
from xgrad.metrics import OK_STATUSES, UNIT_ROUNDOFF, rtol_note
from xgrad.workers import AbstractJob, Outcome, WorkerPool, describe_error

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

SCHEMA = "xgrad.sweep/2"
"""The merged report's JSON schema name and version; bumped on any incompatible change."""

CELL_SCHEMA = "xgrad.sweep-cell/1"
"""The schema of one finished cell's file in ``out/cells/``; part of every cell's key."""

STATUSES = ("match", "mismatch", "nonfinite", "error", "timeout", "lost")
"""A cell's status: its report's verdict (``match``, ``mismatch``, ``nonfinite``), or why it
has no report: it raised (``error``), ran past ``cell_timeout`` (``timeout``), or its worker
died or could not run it (``lost``)."""

KEPT = ("match", "mismatch", "nonfinite")
"""The statuses a re-run keeps from ``out/cells/``; the others are run again."""

HEADS = {"bce": "sigmoid", "cce": "softmax"}
CHUNK_CELLS = 4  # at most this many cells of one model go to a worker as one task


def _default_activations() -> tuple[str, ...]:
    return (*ACTIVATIONS, "leaky_relu")


class CellConfig(NamedTuple):
    """One point of the grid (a tuple, as :meth:`SweepGrid.cells` always returned)."""

    activation: str
    loss: str
    dtype: str
    batch: int
    seed: int

    @property
    def title(self) -> str:
        return (
            f"{self.activation} / {self.loss} / {self.dtype} / batch {self.batch} / "
            f"seed {self.seed}"
        )


# -- the grid ---------------------------------------------------------------------------------


_LISTS = {  # list setting -> (kind of item, smallest integer, what one item is)
    "activations": (str, None, "activation"),
    "losses": (str, None, "loss"),
    "dtypes": (str, None, "dtype"),
    "batch_sizes": (int, 1, "batch size"),
    "seeds": (int, 0, "seed"),
    "hidden": (int, 1, "width"),
}


def _setting(key: str) -> str:
    """``batch_sizes (--batch-sizes)``: a setting as Python and TOML, and the CLI, name it."""
    return f"sweep {key} (--{key.replace('_', '-')})"


def _integer(key: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        what = "positive integers" if low == 1 else "non-negative integers (0, 1, ...)"
        raise InputError(f"{_setting(key)} must hold {what}, got {value!r}")
    return int(value)


def _list_setting(key: str, value) -> tuple:
    """One axis (or ``hidden``) as a tuple, checked: a string is split on commas."""
    kind, low, what = _LISTS[key]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if kind is int:
            try:
                parts = [int(p) for p in parts]
            except ValueError:
                raise InputError(
                    f"{_setting(key)} takes comma-separated integers, got {value!r}"
                ) from None
        value = parts
    if not isinstance(value, list | tuple | range):
        example = "['relu', 'tanh']" if kind is str else "[1, 4]"
        raise InputError(f"{_setting(key)} must be a list, got {value!r}; write e.g. {example}")
    if not value:
        raise InputError(f"{_setting(key)} is empty; give at least one {what}")
    out: list = []
    for item in value:
        if kind is str:
            if not isinstance(item, str) or not item.strip():
                raise InputError(f"{_setting(key)} must hold {what} names, got {item!r}")
            item = item.strip()
        else:
            item = _integer(key, item, low)
        if item in out and key != "hidden":  # an axis: a repeated value repeats cells
            raise InputError(f"{_setting(key)} lists {item!r} twice; give each {what} once")
        out.append(item)
    return tuple(out)


def _frameworks_setting(value) -> tuple[str | AbstractFramework, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, AbstractFramework):
        value = [value]
    if not isinstance(value, list | tuple):
        raise InputError(
            f"{_setting('frameworks')} must be a list of names, got {value!r}; write e.g. "
            "['numpy', 'jax']"
        )
    if not value:
        raise InputError(
            f"{_setting('frameworks')} is empty; name at least one framework, or leave it out "
            "for every installed one"
        )
    return tuple(value)


def _framework(entry) -> AbstractFramework:
    """The framework an entry of ``frameworks`` names, whether or not it is installed here
    (importing no framework)."""
    if isinstance(entry, AbstractFramework):
        return entry
    try:
        return lookup_framework(entry)
    except FrameworkError as exc:
        raise FrameworkError(f"{_setting('frameworks')}: {exc}") from None


def _check_rtol(value) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not (math.isfinite(value) and value > 0)
    ):
        raise InputError(
            f"{_setting('rtol')} must be a positive finite number such as 1e-5, got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class SweepGrid:
    """The axes of a sweep and the fixed model shape around them, checked on construction.

    Attributes:
        activations, losses, dtypes, batch_sizes, seeds: the axes; the cells are their
            product (:meth:`cells`). Each is a list (a tuple once built) of distinct
            values; a string is split on commas (``"relu,tanh"``).
        input_dim, hidden, output_dim: the model of each cell (``hidden`` widths use the
            cell's activation), unless ``layers`` gives a template (see the module).
        frameworks: names (``"numpy"``, ``"jax"``, ...) or
            :class:`~xgrad.frameworks.AbstractFramework` instances, as for
            :func:`xgrad.compare`; ``None`` means every installed framework. Instances must
            pickle (a class importable by name) to run in worker processes.
        rtol: overrides the per-dtype normwise tolerance.

    Raises:
        InputError: an empty axis, a repeated value, a value of the wrong kind or out of
            range, a dtype not every framework computes in.
        SpecError: an unknown activation or loss, or a template that does not build.
        FrameworkError: an unknown framework name.
    """

    activations: tuple[str, ...] = field(default_factory=_default_activations)
    losses: tuple[str, ...] = ("sum", "mse")
    dtypes: tuple[str, ...] = ("float32", "float64")
    batch_sizes: tuple[int, ...] = (1, 4)
    seeds: tuple[int, ...] = (0,)
    input_dim: int = 6
    hidden: tuple[int, ...] = (8, 8)
    output_dim: int = 4
    layers: str | None = None
    frameworks: tuple[str | AbstractFramework, ...] | None = None
    rtol: float | None = None

    def __post_init__(self) -> None:
        values = {key: _list_setting(key, getattr(self, key)) for key in _LISTS}
        for key in ("input_dim", "output_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"{_setting(key)} must be a positive integer, got {value!r}")
            values[key] = int(value)
        if self.layers is not None and (not isinstance(self.layers, str) or not self.layers):
            raise InputError(
                f"{_setting('layers')} must be a text template such as "
                f"'8:ACT,layernorm,4:HEAD', got {self.layers!r}"
            )
        values["frameworks"] = _frameworks_setting(self.frameworks)
        values["rtol"] = _check_rtol(self.rtol)
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self.validate()

    @classmethod
    def from_mapping(cls, values: Mapping) -> SweepGrid:
        """Build and validate a grid from flag values or a TOML table.

        Raises:
            InputError: an unknown key, an empty axis, or a value of the wrong kind.
            SpecError: an unknown activation or loss.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown sweep setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def validate(self) -> None:
        """Check every name and build every cell's model (no framework is imported; the
        values themselves were checked on construction).

        Raises:
            InputError: a dtype xgrad does not compute in, or one a framework lacks.
            SpecError: an unknown activation or loss, or a template that does not build.
            FrameworkError: an unknown framework name.
        """
        for name in self.activations:
            get_activation(name)
        for name in self.losses:
            get_loss(name)
        for dtype in self.dtypes:
            if dtype not in ALL_DTYPES:
                raise InputError(
                    f"{_setting('dtypes')}: {dtype!r} is not a dtype xgrad computes in; use "
                    f"{', '.join(ALL_DTYPES)}"
                )
        frameworks = [_framework(e) for e in self._framework_entries()]
        names = [fw.name for fw in frameworks]
        for name in names:
            if names.count(name) > 1:
                raise InputError(
                    f"{_setting('frameworks')} lists {name!r} twice; name each framework once"
                )
        for dtype in self.dtypes:
            lacking = [fw.name for fw in frameworks if dtype not in fw.dtypes]
            if lacking:
                having = [n for n in known_frameworks() if dtype in _framework(n).dtypes]
                raise InputError(
                    f"dtype {dtype!r} is not supported by {', '.join(lacking)}; drop it from "
                    f"{_setting('dtypes')} or run it on frameworks that have it "
                    f"({', '.join(having)})"
                )
        for activation in self.activations:
            for loss in self.losses:
                self.spec(activation, loss)

    def notes(self) -> list[str]:
        """Settings that run but cannot mean what they seem: an ``rtol`` below the unit
        roundoff of one of the dtypes, whose cells then mismatch on rounding alone."""
        notes = (rtol_note(self.rtol, dtype, "cells") for dtype in self.dtypes)
        return [note for note in notes if note is not None]

    def spec(self, activation: str, loss: str):
        """The model of the cells with this activation and loss."""
        from xgrad.layers.text import parse_layers
        from xgrad.spec import MLP, Dense

        head = HEADS.get(get_loss(loss).name, "linear")
        if self.layers is None:
            layers = [*(Dense(h, activation) for h in self.hidden), Dense(self.output_dim, head)]
        else:
            text = re.sub(r"\bHEAD\b", head, re.sub(r"\bACT\b", activation, self.layers))
            layers = parse_layers(text)
        return MLP(self.input_dim, layers)

    def cells(self) -> list[CellConfig]:
        """Every cell, in grid order: activations, then losses, dtypes, batch sizes, seeds."""
        return [
            CellConfig(*c)
            for c in itertools.product(
                self.activations, self.losses, self.dtypes, self.batch_sizes, self.seeds
            )
        ]

    def _framework_entries(self) -> list[str | AbstractFramework]:
        return available_frameworks() if self.frameworks is None else list(self.frameworks)

    def framework_names(self) -> list[str]:
        """The frameworks' names, in order (``None`` lists the installed ones)."""
        return [
            e.name if isinstance(e, AbstractFramework) else str(e)
            for e in self._framework_entries()
        ]

    def resolved(self) -> SweepGrid:
        """This grid with ``frameworks`` checked and spelled out (``None`` -> the installed
        ones, ``tf`` -> ``tensorflow``), importing none of them.

        Raises:
            FrameworkError: an unknown or repeated name, or none.
            FrameworkNotInstalledError: a named framework is not installed here.
        """
        from xgrad.runner import resolve_frameworks

        entries = self._framework_entries()
        checked = resolve_frameworks(entries)
        names = tuple(
            e if isinstance(e, AbstractFramework) else fw.name
            for e, fw in zip(entries, checked, strict=True)
        )
        return replace(self, frameworks=names)

    def model_config(self) -> dict:
        """What every cell's result depends on besides its own axes (JSON-ready)."""
        return {
            "input_dim": self.input_dim,
            "hidden": list(self.hidden),
            "output_dim": self.output_dim,
            "layers": self.layers,
            "frameworks": self.framework_names(),
            "rtol": self.rtol,
        }

    def to_dict(self) -> dict:
        """The grid as JSON-ready data (the merged report's ``grid``)."""
        return {
            "activations": list(self.activations),
            "losses": list(self.losses),
            "dtypes": list(self.dtypes),
            "batch_sizes": list(self.batch_sizes),
            "seeds": list(self.seeds),
            **self.model_config(),
        }

    def cell_key(self, cell: CellConfig) -> str:
        """A stable name for ``cell`` of this grid: a hash of everything its result depends
        on (the cell's axes, :meth:`model_config`, the xgrad version and :data:`CELL_SCHEMA`),
        the same in every process and on every machine. The other axes are not part of it,
        so a cell keeps its key when the grid around it grows."""
        digest = hashlib.sha256(_canonical(self._key_payload(cell)).encode()).hexdigest()
        return digest[:20]

    def _key_payload(self, cell: CellConfig) -> dict:
        from xgrad import __version__

        return {
            "schema": CELL_SCHEMA,
            "xgrad": __version__,
            "model": self.model_config(),
            "cell": dict(cell._asdict()),
        }


def _canonical(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


# -- one cell -----------------------------------------------------------------------------------


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


def _cells(n: int) -> str:
    return f"{n} cell" if n == 1 else f"{n} cells"


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


def _failed(grid: SweepGrid, cell: CellConfig, status: str, error: dict, cause: str) -> SweepCell:
    """The record of a cell without a report."""
    return SweepCell(*cell, key=grid.cell_key(cell), status=status, cause=cause, error=error)


def _errored(grid: SweepGrid, cell: CellConfig, error: dict) -> SweepCell:
    return _failed(grid, cell, "error", error, f"{error['type']}: {error['message']}")


def _run_guarded(grid: SweepGrid, cell: CellConfig) -> SweepCell:
    """:func:`run_cell`, with an exception recorded as the cell's ``error``."""
    try:
        return run_cell(grid, cell)
    except Exception as exc:
        return _errored(grid, cell, describe_error(exc))


def run_cells(
    grid: SweepGrid, cells: Sequence[CellConfig], cell_timeout: float | None = None
) -> list[SweepCell]:
    """Run ``cells`` one after another: the task an executor's worker runs.

    A cell that raises is recorded as ``error``; the next cell runs either way. Without
    ``cell_timeout`` the cells run in this process. With it they run in a worker process of
    this process's own, started (and its frameworks imported and warmed up) before any
    clock starts, and kept for the next task: a cell that runs past ``cell_timeout`` seconds
    is recorded as ``timeout`` and its process killed and replaced, and a cell whose process
    dies is recorded as ``lost``; the rest of the task runs in the replacement.
    """
    cells = [CellConfig(*c) for c in cells]
    if cell_timeout is None:
        return [_run_guarded(grid, c) for c in cells]
    job = _CellJob(grid, warm=True)
    outcomes = _EXECUTOR_POOL.run(job, [cells], timeout=cell_timeout)
    return [_cell_of(grid, outcome, cell_timeout) for outcome in outcomes]


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


# -- cells on worker processes --------------------------------------------------------------------

WORKER_IDLE_S = 600.0
"""A worker process that :func:`run_cells` keeps for later tasks exits after this many
seconds unused (or as soon as the process that started it ends)."""

WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # TensorFlow's start-up logging stays quiet

_EXECUTOR_POOL = WorkerPool(idle_s=WORKER_IDLE_S, env=WORKER_ENV)
"""The worker processes :func:`run_cells` keeps between the tasks an executor gives this
process. Those tasks share nothing but the process they run in, and a worker that has
imported and warmed up a grid's frameworks (seconds each) is worth keeping for the next task
of the same grid; so this pool lives as long as the process. Its idle workers exit after
:data:`WORKER_IDLE_S` seconds, and :func:`run_sweep` stops them when it ends (an executor's
threads may run in the sweep's own process)."""


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
    (with a ``cell_timeout``: ``warm``) its frameworks warmed up before any clock starts."""

    def __init__(self, grid: SweepGrid, warm: bool):
        self.grid, self.warm = grid, warm

    def setup(self) -> None:
        if self.warm:
            _warm_up(self.grid)

    def run(self, item: CellConfig) -> SweepCell:
        return _run_guarded(self.grid, item)


def _cell_of(grid: SweepGrid, outcome: Outcome, cell_timeout: float | None) -> SweepCell:
    """The record of the cell a worker ran, or of why none could."""
    cell = outcome.item
    if outcome.status == "done":
        return outcome.value
    if outcome.status == "raised":  # the grid could not be loaded in the worker
        return _errored(grid, cell, outcome.error)
    if outcome.status == "timeout":
        cause = f"timed out after {cell_timeout:g} s"
        error = {"type": "CellTimeout", "message": cause, "where": ""}
        return _failed(grid, cell, "timeout", error, cause)
    if outcome.status == "lost":
        message = f"the worker process running this cell died ({outcome.reason})"
    else:  # unstarted
        message = outcome.reason
    error = {"type": "WorkerDied", "message": message, "where": ""}
    return _failed(grid, cell, "lost", error, f"worker lost: WorkerDied: {message}")


def _on_workers(
    pool: WorkerPool,
    grid: SweepGrid,
    tasks: Sequence[Sequence[CellConfig]],
    size: int,
    cell_timeout: float | None,
    finish: Callable[[list[SweepCell]], None],
) -> None:
    """Run ``tasks`` on at most ``size`` workers of ``pool``, calling ``finish`` with each
    cell as it comes."""
    pool.run(
        _CellJob(grid, warm=cell_timeout is not None),
        tasks,
        size=size,
        timeout=cell_timeout,
        on_outcome=lambda outcome: finish([_cell_of(grid, outcome, cell_timeout)]),
    )


# -- the result ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """Every cell of a grid, in grid order: what ``xgrad sweep`` prints and writes.

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
        from xgrad.report.data import fmt

        for c in self.cells:
            if c.worst is None:
                yield c, "-", "-"
            else:
                value, fw, label = c.worst
                yield c, fmt(value), f"{fw}: {label}"

    def print(self, console) -> None:
        from rich.markup import escape
        from rich.table import Table

        table = Table(title="xgrad sweep: worst normwise error per cell", title_justify="left")
        columns = ("activation", "loss", "dtype", "batch", "seed", "worst rel norm", "where")
        for col in (*columns, "status", "cause"):
            table.add_column(
                col, justify="right" if col in ("batch", "seed", "worst rel norm") else "left"
            )
        for c, value, where in self.rows():
            style = {"match": "green", "mismatch": "bold red"}.get(c.status, "bold magenta")
            table.add_row(
                c.activation,
                c.loss,
                c.dtype,
                str(c.batch),
                str(c.seed),
                value,
                escape(where),
                f"[{style}]{c.status}[/]",
                escape(c.cause),
            )
        console.print(table)
        style = "green" if self.ok else "bold red"
        console.print(f"[{style}]{escape(self.summary())}[/]")

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """A Markdown table: the worst normwise error, where, the status and the cause per
        cell; also written to ``path`` (atomically) when given."""

        def cell_text(text: str) -> str:
            return text.replace("|", "\\|")

        lines = [
            "| activation | loss | dtype | batch | seed | worst rel norm | where | status "
            "| cause |",
            "|---|---|---|---:|---:|---:|---|---|---|",
        ]
        for c, value, where in self.rows():
            status = c.status if c.ok else f"**{c.status}**"
            lines.append(
                f"| {c.activation} | {c.loss} | {c.dtype} | {c.batch} | {c.seed} | {value} | "
                f"{cell_text(where)} | {status} | {cell_text(c.cause)} |"
            )
        text = "\n".join([*lines, "", f"**{self.summary()}**", ""])
        if path is not None:
            atomic_write(path, lambda f: f.write(text), binary=False)
        return text

    def to_dict(self) -> dict:
        """The merged report (schema :data:`SCHEMA`): the same bytes for the same grid,
        whichever workers ran it and whether it was resumed (no timing, no host)."""
        return {
            "schema": SCHEMA,
            "ok": self.ok,
            "grid": self.grid.to_dict(),
            "counts": {"cells": len(self.cells), **self.counts()},
            "cells": [c.to_dict() for c in self.cells],
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        if path is not None:
            atomic_write(path, lambda f: f.write(text), binary=False)
        return text


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


# -- the output folder --------------------------------------------------------------------------


class _Store:
    """``out/cells/<cell>-<key>.json`` per finished cell; ``out/sweep.json`` and
    ``out/sweep.md`` once all are done."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.cells = self.folder / "cells"
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"output folder {str(self.folder)!r} is a file; give a folder")
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {str(self.cells)!r}: {exc.strerror}") from None

    def path(self, cell: CellConfig, key: str) -> Path:
        name = f"{cell.activation}-{cell.loss}-{cell.dtype}-b{cell.batch}-s{cell.seed}"
        return self.cells / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{key}.json"

    def load(self, grid: SweepGrid, cell: CellConfig, key: str) -> SweepCell | None:
        """The cell's file if it holds a report of exactly this cell; else ``None``."""
        try:
            data = json.loads(self.path(cell, key).read_text(encoding="utf-8"))
            if (
                data["schema"] != CELL_SCHEMA
                or data["key"] != key
                or _canonical(data["config"]) != _canonical(grid._key_payload(cell))
            ):
                return None
            found = SweepCell.from_dict(data["cell"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, half-written by another tool, or from another version
        return found if found.status in KEPT and found.config == cell else None

    def write(self, grid: SweepGrid, cell: SweepCell) -> None:
        data = {
            "schema": CELL_SCHEMA,
            "key": cell.key,
            "config": grid._key_payload(cell.config),
            "cell": cell.to_dict(),
        }
        text = json.dumps(data, indent=2, allow_nan=False) + "\n"
        atomic_write(self.path(cell.config, cell.key), lambda f: f.write(text), binary=False)

    def write_merged(self, result: SweepResult) -> None:
        result.to_json(self.folder / "sweep.json")
        result.to_markdown(self.folder / "sweep.md")


# -- running the grid ---------------------------------------------------------------------------


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


def _run_here(grid, todo, finish) -> None:
    for cell in todo:
        finish([_run_guarded(grid, cell)])


def _run_local(grid, todo, workers, cell_timeout, finish) -> None:
    with WorkerPool(env=WORKER_ENV) as pool:  # fresh workers, stopped at the end
        _on_workers(pool, grid, chunks(todo), workers, cell_timeout, finish)


def _run_on(executor: Executor, grid, todo, cell_timeout, finish) -> None:
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
                    cells = [_failed(grid, c, "lost", error, cause) for c in task]
                finish(cells)
    finally:
        for future in pending:
            future.cancel()


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
    grid = grid.resolved()
    store = None if out is None else _Store(out)
    configs = grid.cells()
    keys = [grid.cell_key(c) for c in configs]
    found: dict[str, SweepCell] = {}
    if store is not None:
        for cell, key in zip(configs, keys, strict=True):
            loaded = store.load(grid, cell, key)
            if loaded is not None:
                found[key] = loaded
    resumed = len(found)
    todo = [c for c, k in zip(configs, keys, strict=True) if k not in found]
    try:
        with _Bar(progress, len(configs), list(found.values())) as bar:

            def finish(cells: list[SweepCell]) -> None:
                for cell in cells:
                    if store is not None:
                        store.write(grid, cell)
                    found[cell.key] = cell
                bar.advance(cells)
                for cell in cells:
                    if on_cell is not None:
                        on_cell(cell)

            if not todo:
                pass
            elif executor is not None:
                _run_on(executor, grid, todo, cell_timeout, finish)
            elif workers == 1 and cell_timeout is None:
                _run_here(grid, todo, finish)
            else:
                _run_local(grid, todo, workers, cell_timeout, finish)
    except KeyboardInterrupt:
        folder = None if store is None else store.folder
        raise SweepInterrupted(len(found), len(configs), folder) from None
    finally:
        _EXECUTOR_POOL.close()  # kept by run_cells when the executor's threads are in this process
    result = SweepResult(
        grid,
        tuple(found[k] for k in keys),
        computed=len(configs) - resumed,
        resumed=resumed,
    )
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
