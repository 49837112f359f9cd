"""Sweeps on local worker processes: the same merged report as one process, a planted crash
recorded from inside a worker, and a killed ``xgrad sweep --workers 2`` that resumes."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from conftest import INSTALLED
from sweep.faulty import CrashingNumpy

from xgrad.sweep import SweepGrid, run_sweep

ROOT = Path(__file__).resolve().parents[2]


def _cli(*argv: str) -> subprocess.Popen:
    """``xgrad`` in a fresh process that reports which frameworks it imported itself."""
    code = (
        "import sys\nfrom xgrad.cli import main\nrc = main(sys.argv[1:])\n"
        "print('IMPORTED', ','.join(m for m in ('jax', 'tensorflow') if m in sys.modules))\n"
        "sys.exit(rc)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
def test_two_local_workers_give_the_same_bytes_as_one(tmp_path):
    flags = {
        "--activations": "relu,tanh",
        "--losses": "mse",
        "--dtypes": "float32,float64",
        "--batch-sizes": "2",
        "--hidden": "5",
        "--frameworks": "numpy,jax",
    }
    argv = [x for item in flags.items() for x in item]
    proc = _cli("sweep", *argv, "--workers", "2", "--quiet", "--json", str(tmp_path / "w2.json"))
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert "IMPORTED \n" in out  # the parent left JAX to the workers
    grid = SweepGrid.from_mapping(
        {
            "activations": "relu,tanh",
            "losses": "mse",
            "dtypes": "float32,float64",
            "batch_sizes": [2],
            "hidden": [5],
            "frameworks": "numpy,jax",
        }
    )
    here = run_sweep(grid)  # one process, this one
    assert (tmp_path / "w2.json").read_text() == here.to_json()
    assert len(here.cells) == 4 and here.ok


def test_a_planted_crash_in_a_worker_is_recorded_and_the_others_finish():
    grid = SweepGrid(
        activations=("relu", "tanh", "gelu"),
        losses=("sum",),
        dtypes=("float64",),
        batch_sizes=(1, 2),
        hidden=(5,),
        frameworks=("numpy", CrashingNumpy()),
    )
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        on_workers = run_sweep(grid, executor=pool)
    statuses = [(c.activation, c.status) for c in on_workers.cells]
    assert statuses == [
        ("relu", "match"),
        ("relu", "match"),
        ("tanh", "error"),
        ("tanh", "error"),
        ("gelu", "match"),
        ("gelu", "match"),
    ]
    assert on_workers.cells[2].error["message"] == "planted crash in a tanh cell"
    assert on_workers.to_json() == run_sweep(grid).to_json()  # errors are data too


def _cells(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.glob("*.json")}


SEEDS = 8  # 384 numpy cells: two were few enough to finish between the first cell file
# and the Ctrl-C on a fast machine


def test_a_killed_sweep_resumes_without_recomputing_finished_cells(tmp_path):
    out = tmp_path / "out"
    argv = [
        "sweep",
        "--activations", "relu,tanh,gelu,elu,selu,silu",
        "--seeds", ",".join(map(str, range(SEEDS))),
        "--hidden", "5",
        "--frameworks", "numpy",
        "--workers", "2",
        "--out", str(out),
        "--quiet",
    ]  # fmt: skip
    proc = _cli(*argv)  # 48 cells a seed: enough that Ctrl-C comes before the last one
    deadline = time.monotonic() + 120
    while not _cells(out / "cells") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: " in err and "run the same sweep again to resume" in err
    kept = _cells(out / "cells")
    assert 0 < len(kept) < 48 * SEEDS
    assert not (out / "sweep.json").exists()  # written only once every cell is done

    proc = _cli(*argv, "--json", str(tmp_path / "all.json"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    after = _cells(out / "cells")
    assert len(after) == 48 * SEEDS
    assert {name: after[name] for name in kept} == kept  # not computed or written again
    grid = SweepGrid.from_mapping(
        {
            "activations": "relu,tanh,gelu,elu,selu,silu",
            "seeds": list(range(SEEDS)),
            "hidden": [5],
            "frameworks": "numpy",
        }
    )
    expected = run_sweep(grid).to_json()
    assert (out / "sweep.json").read_text() == expected
    assert (tmp_path / "all.json").read_text() == expected
