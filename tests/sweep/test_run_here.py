"""Sweeps run in this process (NumPy only): keys, tasks, the merged report, timeouts and
resuming from an output folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool

import pytest
from sweep.faulty import CrashingNumpy, DyingNumpy, SlowNumpy, StuckNumpy

from xgrad.errors import InputError, OutputError, XgradError
from xgrad.sweep import (
    SCHEMA,
    STATUSES,
    CellConfig,
    SweepGrid,
    SweepInterrupted,
    chunks,
    run_sweep,
)

GRID = SweepGrid(
    activations=("relu", "tanh", "gelu"),
    losses=("sum", "mse"),
    dtypes=("float32", "float64"),
    batch_sizes=(1, 3),
    seeds=(0,),
    hidden=(5,),
    frameworks=("numpy",),
)  # 24 cells


def _files(folder) -> dict[str, tuple[int, int]]:
    """cell file name -> (inode, mtime in ns): a rewritten file changes both."""
    cells = folder / "cells"
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in cells.glob("*.json")}


# -- keys and tasks -----------------------------------------------------------------------------


def test_cell_key_is_the_same_in_another_process():
    cell = CellConfig("relu", "sum", "float32", 3, 7)
    code = (
        "from xgrad.sweep import SweepGrid, CellConfig\n"
        "grid = SweepGrid(hidden=(5,), frameworks=('numpy',))\n"
        "print(grid.cell_key(CellConfig('relu', 'sum', 'float32', 3, 7)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == GRID.cell_key(cell)
    assert re.fullmatch(r"[0-9a-f]{20}", GRID.cell_key(cell))


def test_cell_key_follows_what_the_cell_depends_on():
    cell = CellConfig("relu", "sum", "float32", 3, 0)
    key = GRID.cell_key(cell)
    # the other axes are not part of a cell's key: a grown grid keeps its finished cells
    assert SweepGrid(**{**GRID.__dict__, "seeds": (0, 1, 2)}).cell_key(cell) == key
    for change in ({"hidden": (6,)}, {"rtol": 1e-3}, {"frameworks": ("numpy", "jax")}):
        assert SweepGrid(**{**GRID.__dict__, **change}).cell_key(cell) != key, change
    assert GRID.cell_key(cell._replace(seed=1)) != key


def test_tasks_hold_cells_of_one_model_in_grid_order():
    grid = SweepGrid(**{**GRID.__dict__, "seeds": (0, 1, 2)})
    tasks = chunks(grid.cells())
    assert [c for task in tasks for c in task] == grid.cells()
    assert all(len(task) <= 4 for task in tasks)
    assert all(len({(c.activation, c.loss) for c in task}) == 1 for task in tasks)
    assert len(tasks) == 3 * 2 * 3  # 12 cells per model: 3 tasks of 4


# -- the merged report ----------------------------------------------------------------------------


def test_merged_report_is_versioned_and_byte_identical_across_runs(tmp_path):
    first = run_sweep(GRID, out=tmp_path / "a")
    second = run_sweep(GRID)
    assert first.to_json() == second.to_json()
    assert (tmp_path / "a" / "sweep.json").read_text() == first.to_json()
    assert (tmp_path / "a" / "sweep.md").read_text() == first.to_markdown()
    data = json.loads(first.to_json())
    assert data["schema"] == SCHEMA == "xgrad.sweep/2"
    assert data["grid"]["frameworks"] == ["numpy"]
    assert data["counts"] == {"cells": 24, **dict.fromkeys(STATUSES, 0), "match": 24}
    cell = data["cells"][0]
    assert [cell[k] for k in ("activation", "loss", "dtype", "batch", "seed")] == [
        "relu",
        "sum",
        "float32",
        1,
        0,
    ]
    assert cell["status"] == "match" and cell["error"] is None
    assert cell["report"]["schema"] == "xgrad.report/3" and "timing" not in cell["report"]
    assert first.summary() == "OK: every cell matches (24 cells)"


def test_markdown_table_has_the_worst_error_status_and_cause():
    grid = SweepGrid(**{**GRID.__dict__, "dtypes": ("float32",), "rtol": 1e-12})
    text = run_sweep(grid).to_markdown()
    lines = text.splitlines()
    assert lines[0] == (
        "| activation | loss | dtype | batch | seed | worst rel norm | where | status | cause |"
    )
    mismatched = [line for line in lines if "**mismatch**" in line]
    assert mismatched, text
    assert all("diverges at layers." in line for line in mismatched)
    assert lines[-1].startswith("**MISMATCH: ")


def test_a_sweep_result_is_a_report():
    from rich.console import Console

    from xgrad.report.base import AbstractReport

    result = run_sweep(SweepGrid(**{**GRID.__dict__, "activations": ("relu",)}))
    assert isinstance(result, AbstractReport)
    assert result.to_dict(timing=False) == result.to_dict()
    console = Console(record=True, width=160)
    result.print(console)
    text = console.export_text()
    assert text.startswith("xgrad sweep: worst normwise error per cell")
    assert text.rstrip().endswith(result.summary())
    result.raise_for_mismatch()  # every cell matches: nothing raised


# -- crashes and timeouts -------------------------------------------------------------------------


def test_a_crashing_cell_is_recorded_and_the_others_run():
    grid = SweepGrid(**{**GRID.__dict__, "frameworks": ("numpy", CrashingNumpy())})
    result = run_sweep(grid)
    crashed = [c for c in result.cells if c.status == "error"]
    assert {c.activation for c in crashed} == {"tanh"} and len(crashed) == 8
    assert all(c.status == "match" for c in result.cells if c.activation != "tanh")
    error = crashed[0].error
    assert error["type"] == "RuntimeError"
    assert error["message"] == "planted crash in a tanh cell"
    assert error["where"].startswith("sweep.faulty:_build:")
    assert crashed[0].cause == "RuntimeError: planted crash in a tanh cell"
    assert crashed[0].report is None and crashed[0].worst is None
    assert not result.ok
    assert result.summary() == "FAILED: 8 of 24 cells (8 error)"


def test_a_cell_past_its_time_limit_is_recorded_and_the_others_run():
    grid = SweepGrid(
        activations=("relu", "tanh"), losses=("sum",), dtypes=("float64",), batch_sizes=(2,),
        hidden=(5,), frameworks=("numpy", SlowNumpy()),
    )  # fmt: skip
    result = run_sweep(grid, cell_timeout=0.5)
    assert [c.status for c in result.cells] == ["match", "timeout"]
    slow = result.cells[1]
    assert slow.cause == "timed out after 0.5 s"
    assert slow.error["type"] == "CellTimeout"
    assert "timeout: tanh / sum / float64 / batch 2 / seed 0" in result.diagnosis_lines()[0]


def test_a_cell_stuck_in_one_native_call_is_stopped_at_its_limit():
    # one time.sleep(60): no Python instruction runs, so only killing the process stops it
    grid = SweepGrid(
        activations=("tanh", "relu"), losses=("sum",), dtypes=("float64",), batch_sizes=(2,),
        hidden=(5,), frameworks=("numpy", StuckNumpy()),
    )  # fmt: skip
    start = time.monotonic()
    result = run_sweep(grid, cell_timeout=1.0)
    assert time.monotonic() - start < 45
    assert [c.status for c in result.cells] == ["timeout", "match"]
    assert result.cells[0].cause == "timed out after 1 s"


def test_a_cell_that_kills_its_worker_is_lost_and_the_others_run():
    grid = SweepGrid(
        activations=("tanh", "relu"), losses=("sum",), dtypes=("float64",), batch_sizes=(2,),
        seeds=(0, 1), hidden=(5,), frameworks=("numpy", DyingNumpy()),
    )  # fmt: skip
    result = run_sweep(grid, workers=2)
    by_activation = {(c.activation, c.seed): c.status for c in result.cells}
    assert by_activation == {
        ("tanh", 0): "lost", ("tanh", 1): "lost", ("relu", 0): "match", ("relu", 1): "match"
    }  # fmt: skip
    lost = next(c for c in result.cells if c.status == "lost")
    assert "killed by SIGKILL" in lost.cause


class _DeadWorkers(Executor):
    """An executor whose every task fails as when its worker process dies."""

    def submit(self, fn, /, *args, **kwargs):
        future = Future()
        future.set_exception(BrokenProcessPool("a worker process died"))
        return future


def test_cells_of_a_dead_worker_are_lost_and_run_again(tmp_path):
    lost = run_sweep(GRID, executor=_DeadWorkers(), out=tmp_path, progress=True)
    assert lost.counts()["lost"] == 24 and not lost.ok
    assert lost.cells[0].cause == "worker lost: BrokenProcessPool: a worker process died"
    assert not (tmp_path / "sweep.json").read_text().count('"status": "match"')
    again = run_sweep(GRID, out=tmp_path)
    assert (again.resumed, again.computed) == (0, 24) and again.ok


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be a positive integer, got 0"),
        ({"cell_timeout": 0}, "cell_timeout must be a positive number of seconds, got 0"),
        (
            {"workers": 2, "executor": object()},
            "conflicting options: executor and workers=2",
        ),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        run_sweep(GRID, **kwargs)


# -- resuming ------------------------------------------------------------------------------------


def test_an_interrupted_sweep_resumes_without_recomputing_finished_cells(tmp_path):
    seen = []

    def interrupt_after_five(cell):
        seen.append(cell.key)
        if len(seen) == 5:
            raise KeyboardInterrupt

    with pytest.raises(SweepInterrupted, match="5 of 24 cells finished, kept in"):
        run_sweep(GRID, out=tmp_path, on_cell=interrupt_after_five)
    kept = _files(tmp_path)
    assert len(kept) == 5 and not (tmp_path / "sweep.json").exists()

    computed = []
    result = run_sweep(GRID, out=tmp_path, on_cell=lambda c: computed.append(c.key))
    assert (result.resumed, result.computed) == (5, 19)
    assert not set(computed) & set(seen)
    after = _files(tmp_path)
    assert {name: after[name] for name in kept} == kept  # not rewritten
    assert len(after) == 24
    assert (tmp_path / "sweep.json").read_text() == run_sweep(GRID).to_json()


def test_a_subset_then_the_full_grid_reuses_the_subset(tmp_path):
    subset = SweepGrid(**{**GRID.__dict__, "activations": ("gelu",), "batch_sizes": (3,)})
    run_sweep(subset, out=tmp_path)
    kept = _files(tmp_path)
    assert len(kept) == 4
    result = run_sweep(GRID, out=tmp_path)
    assert (result.resumed, result.computed) == (4, 20)
    after = _files(tmp_path)
    assert {name: after[name] for name in kept} == kept


def test_cells_without_a_report_and_unreadable_files_are_run_again(tmp_path):
    crashing = SweepGrid(**{**GRID.__dict__, "frameworks": ("numpy", CrashingNumpy())})
    first = run_sweep(crashing, out=tmp_path)
    assert first.counts()["error"] == 8
    victim = sorted((tmp_path / "cells").glob("relu-*.json"))[0]
    victim.write_text('{"schema": "xgrad.sweep-cell/1", "key": "trunc')
    again = run_sweep(crashing, out=tmp_path)
    assert (again.resumed, again.computed) == (15, 9)  # 8 errors + 1 unreadable file
    assert again.to_json() == first.to_json()


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is a file; give a folder"):
        run_sweep(GRID, out=tmp_path / "file")


# -- the grid's own checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"activations": ()}, "sweep activations (--activations) is empty"),
        ({"activations": "relu"}, None),  # a string is split on commas
        ({"activations": ("relu", "relu")}, "lists 'relu' twice"),
        ({"seeds": (-1,)}, "non-negative integers (0, 1, ...), got -1"),
        ({"batch_sizes": (True,)}, "must hold positive integers, got True"),
        ({"batch_sizes": 4}, "must be a list, got 4"),
        ({"rtol": float("nan")}, "must be a positive finite number such as 1e-5, got nan"),
        ({"rtol": -1e-5}, "got -1e-05"),
        ({"rtol": True}, "got True"),
        ({"rtol": "1e-5"}, "got '1e-5'"),
        ({"dtypes": ("float8",)}, "'float8' is not a dtype xgrad computes in"),
        ({"frameworks": ()}, "sweep frameworks (--frameworks) is empty"),
        ({"frameworks": ("numpy", "np")}, "lists 'numpy' twice"),
        ({"dtypes": ("bfloat16",)}, "dtype 'bfloat16' is not supported by numpy"),
    ],
)
def test_bad_grid_settings_are_named_on_construction(change, message):
    values = {**GRID.__dict__, **change}
    if message is None:
        assert SweepGrid(**values).activations == ("relu",)
        return
    with pytest.raises(XgradError, match=re.escape(message)):
        SweepGrid(**values)


def test_an_unknown_framework_is_named_without_importing_any():
    with pytest.raises(XgradError, match="unknown framework 'pytorch2'"):
        SweepGrid(**{**GRID.__dict__, "frameworks": ("numpy", "pytorch2")})


def test_an_rtol_below_the_unit_roundoff_is_noted():
    grid = SweepGrid(**{**GRID.__dict__, "rtol": 1e-9})
    notes = grid.notes()
    assert len(notes) == 1 and notes[0].startswith("rtol 1e-09 is below float32's unit roundoff")
    assert SweepGrid(**{**GRID.__dict__, "rtol": 1e-3}).notes() == []


def test_a_passing_cell_says_which_entries_only_rounding_explains():
    from xgrad.sweep.cells import _cause, _worst

    class M:
        def __init__(self, status, rel_norm):
            self.status, self.rel_norm = status, rel_norm

    class E:
        def __init__(self, label, results):
            self.label, self.results = label, results

    class R:
        def __init__(self, ok, entries):
            self.ok, self.entries, self.diagnoses, self.divergences = ok, entries, (), ()

        def failures(self):
            return [(e, fw, m) for e in self.entries for fw, m in e.results.items()
                    if m.status == "mismatch"]  # fmt: skip

    kink = E("dL/d input", {"torch": M("match-kink", 6e-2), "jax": M("match", 1e-3)})
    ok = R(True, [kink])
    assert _cause(ok) == "match-kink: rounding at a kink explains 1 entry [torch]"
    assert _worst(ok)[:2] == (6e-2, "torch")
    failing = R(False, [kink, E("dL/d w", {"jax": M("mismatch", 4e-2)})])
    assert _worst(failing) == (4e-2, "jax", "dL/d w")  # not the larger, passing kink entry
