"""Nothing half-written: an interrupted write leaves the old file (or none), and no
temporary file behind; reports of compare_models are deterministic across processes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad._io import atomic_write

SPEC = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2)])


class Interrupted(Exception):
    pass


def _interrupt_after(text):
    def write(f):
        f.write(text)
        f.flush()
        raise Interrupted  # e.g. KeyboardInterrupt, or the disk filling up

    return write


def test_interrupted_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old content\n")
    with pytest.raises(Interrupted):
        atomic_write(target, _interrupt_after('{"half": '), binary=False)
    assert target.read_text() == "old content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_interrupted_first_write_leaves_nothing(tmp_path):
    with pytest.raises(Interrupted):
        atomic_write(tmp_path / "new.md", _interrupt_after("| half"), binary=False)
    assert list(tmp_path.iterdir()) == []


def test_report_and_weight_writers_are_atomic(tmp_path, monkeypatch):
    report = xgrad.compare(SPEC, np.ones((2, 3)), frameworks="numpy")
    paths = {
        "json": tmp_path / "r.json",
        "md": tmp_path / "r.md",
        "png": tmp_path / "r.png",
        "npz": tmp_path / "p.npz",
    }
    report.to_json(paths["json"])
    report.to_markdown(paths["md"])
    report.plot(paths["png"])
    xgrad.save_params(paths["npz"], xgrad.init_params(SPEC))
    before = {k: p.read_bytes() for k, p in paths.items()}

    def boom(*args, **kwargs):
        raise Interrupted

    monkeypatch.setattr(json, "dumps", boom)
    with pytest.raises(Interrupted):
        report.to_json(paths["json"])
    monkeypatch.setattr("matplotlib.figure.Figure.savefig", boom)
    with pytest.raises(Interrupted):
        report.plot(paths["png"])
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(Interrupted):
        xgrad.save_params(paths["npz"], xgrad.init_params(SPEC, seed=1))
    assert {k: p.read_bytes() for k, p in paths.items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths.values())


def test_written_files_get_the_usual_permissions(tmp_path):
    path = xgrad.save_params(tmp_path / "p.npz", xgrad.init_params(SPEC))
    assert path.stat().st_mode & 0o777 == 0o644


_PORT_SCRIPT = """
import json, sys
import numpy as np, jax, jax.numpy as jnp, xgrad
spec = xgrad.MLP(4, [xgrad.Dense(6, "gelu"), xgrad.Dense(3, "softmax")])
def port(p, x):
    return jax.nn.softmax(jax.nn.gelu(x @ p["a"] + p["b"]) @ p["c"] + p["d"])
params = {"a": jnp.zeros((4, 6)), "b": jnp.zeros(6), "c": jnp.zeros((6, 3)), "d": jnp.zeros(3)}
x = np.random.default_rng(0).normal(size=(5, 4))
report = xgrad.compare_models((spec, xgrad.init_params(spec)), (port, params), x)
sys.stdout.write(report.to_json(timing=False))
"""


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
def test_compare_models_json_is_byte_identical_across_processes():
    runs = [
        subprocess.run(
            [sys.executable, "-c", _PORT_SCRIPT],
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    data = json.loads(runs[0])
    # jax's default tanh GELU, and a float32 port of a float64 model: both causes named
    assert [d["cause"] for d in data["diagnoses"]] == ["gelu-approximation", "dtype"]
