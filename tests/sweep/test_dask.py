"""A sweep on a Dask ``LocalCluster`` (two worker processes, loopback only, started and torn
down here) gives the same merged report as one process, through the API and through
``xgrad sweep --scheduler``."""

from __future__ import annotations

import pytest

from xgrad.cli import main
from xgrad.errors import InputError
from xgrad.sweep import SweepGrid, dask_executor, run_sweep

distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")

AXES = {
    "activations": "relu,tanh,gelu",
    "losses": "sum,mse",
    "dtypes": "float32,float64",
    "batch_sizes": [1, 3],
    "hidden": [5],
    "frameworks": "numpy",
}  # 24 cells


@pytest.fixture(scope="module")
def scheduler():
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def test_a_local_cluster_gives_the_same_report_as_one_process(scheduler, tmp_path):
    grid = SweepGrid.from_mapping(AXES)
    with dask_executor(scheduler) as executor:
        on_cluster = run_sweep(grid, executor=executor, out=tmp_path)
    here = run_sweep(grid)
    assert on_cluster.to_json() == here.to_json()
    assert (tmp_path / "sweep.json").read_text() == here.to_json()
    assert len(list((tmp_path / "cells").glob("*.json"))) == 24


def test_xgrad_sweep_scheduler_runs_the_grid_on_the_cluster(scheduler, tmp_path, capsys):
    argv = ["sweep", "--scheduler", scheduler, "--no-progress", "--quiet"]
    argv += ["--activations", AXES["activations"], "--losses", AXES["losses"]]
    argv += ["--dtypes", AXES["dtypes"], "--batch-sizes", "1,3", "--hidden", "5"]
    argv += ["--frameworks", "numpy", "--json", str(tmp_path / "s.json")]
    assert main(argv) == 0, capsys.readouterr().err
    expected = run_sweep(SweepGrid.from_mapping(AXES)).to_json()
    assert (tmp_path / "s.json").read_text() == expected
    assert main([*argv[:3], "--workers", "2", *argv[3:]]) == 2
    assert "conflicting flags: --workers and --scheduler" in capsys.readouterr().err


def test_an_unreachable_scheduler_is_a_usage_error():
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        with dask_executor("tcp://127.0.0.1:9", timeout=0.5):
            pass
