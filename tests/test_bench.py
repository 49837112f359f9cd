"""The benchmark harness runs (tiny shapes, no timing assertions: figures are not tested)."""

import importlib.util
import json
from pathlib import Path

from conftest import INSTALLED

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_writes_every_section(tmp_path):
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    frameworks = [f for f in ("numpy", "jax") if f in INSTALLED]
    out = tmp_path / "bench.json"
    assert bench.main(["--smoke", "--frameworks", ",".join(frameworks), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {"overhead", "throughput", "compare", "startup", "memory", "machine"} <= set(data)
    assert {r["framework"] for r in data["overhead"]} == set(frameworks)
    for row in data["overhead"]:
        assert row["raw_s"] > 0 and row["xgrad_s"] > 0 and row["ratio"] > 0
    assert data["compare"]["raw_sum_s"] > 0
    assert data["startup"][0]["tensorflow_imported"] is False
    assert [r["params"] for r in data["memory"]] == [1056, 8320]
