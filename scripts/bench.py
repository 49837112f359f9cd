"""xgrad's benchmark: every figure in one run, on one machine, each beside its baseline.

Sections (targets from issue 6; a figure is a ratio or comes with its baseline):

a. overhead    steady-state gradient step through each adapter vs the same computation
               written by hand in that framework; large MLP (1024 -> 2048 x 4 -> 10,
               batch 512, float32) <= 1.05, seed example 3 <= 1.5.
b. throughput  achieved GFLOP/s of each adapter's step (6 * batch * sum(in * out)) over the
               machine's float32 matmul GFLOP/s on the same shapes (best framework's raw
               matmuls): numpy >= 85%, jax >= 75%, tensorflow >= 60%.
c. compare     xgrad.compare on the large model, all frameworks, vs the sum of the raw
               steps it contains (each framework plus the float64 NumPy reference): <= 1.15.
d. startup     `xgrad compare` of seed example 3 in a fresh process vs importing the
               frameworks it uses: <= 1.3, for all frameworks and for numpy,jax (TensorFlow
               must then not be imported).
e. memory      peak RSS of a full comparison at about 1M, 10M and 50M float32 parameters,
               beyond the import baseline, over the bytes the comparison must hold
               (params f64 + reference gradients f64 + each framework's gradients f32): <= 3,
               and growing linearly.
f. sweep       cells per second of a 64-cell `xgrad sweep` grid, each run in a fresh process:
               1 local worker, 2 local workers, a 2-worker Dask LocalCluster (loopback); the
               speed-up against the ideal 2 x, the machine's measured 2-process capacity and
               the measured worker start-up; the merged reports must be byte-identical.

Usage: ``python scripts/bench.py [--json PATH] [--smoke] [--sections a,b,c,d,e,f]``. ``--smoke``
runs tiny shapes and few repeats: it checks the harness, its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import xgrad

LARGE = (1024, (2048, 2048, 2048, 2048), 10, 512)
SMOKE_LARGE = (32, (64, 64), 10, 16)
TARGETS = {
    "overhead_large": 1.05,
    "overhead_small": 1.5,
    "throughput": {"numpy": 0.85, "jax": 0.75, "flax": 0.75, "tensorflow": 0.60},
    "compare": 1.15,
    "startup": 1.3,
    "memory": 3.0,
}


def median_time(fn, repeats: int, warmup: int = 1, sample_s: float = 0.05) -> float:
    """Median seconds per call of ``fn()`` over ``repeats`` samples, after ``warmup`` calls.

    Each sample loops enough calls to last about ``sample_s``, so that steps of a few
    microseconds are timed as reliably as steps of a second.
    """
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    inner = max(1, int(sample_s / max(once, 1e-9)))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return statistics.median(times)


def make_spec(shape) -> xgrad.MLP:
    n_in, hidden, n_out, _ = shape
    return xgrad.MLP(n_in, [*(xgrad.Dense(h, "relu") for h in hidden), xgrad.Dense(n_out)])


def flops(spec: xgrad.MLP, batch: int) -> float:
    return 6.0 * batch * sum(i * o for i, o in spec.layer_dims())


# -- hand-written baselines: the same step, written directly in each framework ------------


def raw_numpy(spec, params, x, dtype="float32"):
    ws = [
        (params[f"layers.{i}.kernel"].astype(dtype), params[f"layers.{i}.bias"].astype(dtype))
        for i in range(len(spec.layers))
    ]
    xs = x.astype(dtype)
    last = len(ws) - 1

    def step():
        acts = [xs]
        zs = []
        for i, (w, b) in enumerate(ws):
            z = acts[-1] @ w + b
            zs.append(z)
            acts.append(z if i == last else np.maximum(z, 0))
        delta = np.ones_like(acts[-1])
        grads = []
        for i in range(last, -1, -1):
            if i != last:
                delta = delta * (zs[i] > 0)
            grads.append((acts[i].T @ delta, delta.sum(0)))
            delta = delta @ ws[i][0].T
        return acts[-1].sum(), grads, delta

    return step


def raw_jax(spec, params, x):
    import jax
    import jax.numpy as jnp

    ws = [
        (
            jnp.asarray(params[f"layers.{i}.kernel"], jnp.float32),
            jnp.asarray(params[f"layers.{i}.bias"], jnp.float32),
        )
        for i in range(len(spec.layers))
    ]
    xs = jnp.asarray(x, jnp.float32)
    last = len(ws) - 1

    def loss(ws, xs):
        a = xs
        for i, (w, b) in enumerate(ws):
            a = a @ w + b
            if i != last:
                a = jax.nn.relu(a)
        return a.sum()

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

    def step():
        return jax.block_until_ready(fn(ws, xs))

    return step


def raw_flax(spec, params, x):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            dims = [spec.input_dim, *(layer.units for layer in spec.layers)]
            self.layers = nnx.List(
                [
                    nnx.Linear(a, b, rngs=nnx.Rngs(0))
                    for a, b in zip(dims[:-1], dims[1:], strict=True)
                ]
            )

        def __call__(self, x):
            for i, layer in enumerate(self.layers):
                x = layer(x)
                if i != len(self.layers) - 1:
                    x = nnx.relu(x)
            return x

    net = Net()
    graphdef, state = nnx.split(net)
    xs = jnp.asarray(x, jnp.float32)

    @jax.jit
    def fn(state, xs):
        return jax.value_and_grad(lambda s, xx: nnx.merge(graphdef, s)(xx).sum(), argnums=(0, 1))(
            state, xs
        )

    def step():
        return jax.block_until_ready(fn(state, xs))

    return step


def raw_tensorflow(spec, params, x):
    import keras
    import tensorflow as tf

    layers = [keras.Input((spec.input_dim,))]
    layers += [
        keras.layers.Dense(layer.units, activation=None if i == len(spec.layers) - 1 else "relu")
        for i, layer in enumerate(spec.layers)
    ]
    model = keras.Sequential(layers)
    xs = tf.constant(x, tf.float32)

    @tf.function
    def fn(xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            loss = tf.reduce_sum(model(xs))
        return loss, tape.gradient(loss, (model.trainable_variables, xs))

    def step():
        out = fn(xs)
        out[0].numpy()
        return out

    return step


RAW = {"numpy": raw_numpy, "jax": raw_jax, "flax": raw_flax, "tensorflow": raw_tensorflow}


def adapter_step(framework, spec, params, x):
    model = xgrad.get_framework(framework).build(spec, params, dtype="float32")
    return lambda: model.gradients(x, loss="sum")


# -- sections -----------------------------------------------------------------------------


def section_overhead(frameworks, shapes, repeats):
    rows = []
    for label, spec, x in shapes:
        params = xgrad.init_params(spec, seed=0)
        for fw in frameworks:
            # interleaved, best of three medians: a slow spell of the machine hits both alike
            raw_step, our_step = RAW[fw](spec, params, x), adapter_step(fw, spec, params, x)
            raw_s, ours_s = [], []
            for _ in range(3):
                raw_s.append(median_time(raw_step, repeats, warmup=1))
                ours_s.append(median_time(our_step, repeats, warmup=1))
            raw, ours = min(raw_s), min(ours_s)
            target = TARGETS["overhead_large" if label == "large" else "overhead_small"]
            rows.append(
                {
                    "model": label,
                    "framework": fw,
                    "raw_s": raw,
                    "xgrad_s": ours,
                    "ratio": ours / raw,
                    "target": target,
                    "ok": ours / raw <= target,
                }
            )
    return rows


def matmul_limit(spec, batch, frameworks, repeats):
    """Best float32 GFLOP/s of the step's matmuls (forward, dW, dX per layer), per framework."""
    rng = np.random.default_rng(1)
    shapes = []
    for n_in, n_out in spec.layer_dims():
        shapes += [
            ((batch, n_in), (n_in, n_out)),
            ((n_in, batch), (batch, n_out)),
            ((batch, n_out), (n_out, n_in)),
        ]
    mats = [
        (rng.standard_normal(a).astype(np.float32), rng.standard_normal(b).astype(np.float32))
        for a, b in shapes
    ]
    total = sum(2.0 * a[0] * a[1] * b[1] for a, b in shapes)
    out = {}
    out["numpy"] = total / median_time(lambda: [a @ b for a, b in mats], repeats) / 1e9
    if "jax" in frameworks or "flax" in frameworks:
        import jax
        import jax.numpy as jnp

        jm = [(jnp.asarray(a), jnp.asarray(b)) for a, b in mats]
        mm = jax.jit(lambda a, b: a @ b)
        out["jax"] = (
            total
            / median_time(lambda: jax.block_until_ready([mm(a, b) for a, b in jm]), repeats)
            / 1e9
        )
    if "tensorflow" in frameworks:
        import tensorflow as tf

        tm = [(tf.constant(a), tf.constant(b)) for a, b in mats]
        out["tensorflow"] = (
            total / median_time(lambda: [tf.matmul(a, b).numpy() for a, b in tm], repeats) / 1e9
        )
    return out


def section_throughput(frameworks, overhead_rows, spec, batch, repeats):
    limits = matmul_limit(spec, batch, frameworks, repeats)
    limit = max(limits.values())
    work = flops(spec, batch)
    rows = []
    own_matmul = {"numpy": "numpy", "jax": "jax", "flax": "jax", "tensorflow": "tensorflow"}
    for row in overhead_rows:
        if row["model"] != "large":
            continue
        fw = row["framework"]
        own = limits.get(own_matmul[fw], limit)
        for kind in ("xgrad", "raw"):
            gflops = work / row[f"{kind}_s"] / 1e9
            target = TARGETS["throughput"][fw]
            rows.append(
                {
                    "framework": fw,
                    "kind": kind,
                    "gflops": gflops,
                    "fraction_of_limit": gflops / limit,
                    "fraction_of_own_matmul": gflops / own,
                    "target": target,
                    "ok": gflops / limit >= target if kind == "xgrad" else None,
                }
            )
    return {"matmul_gflops": limits, "limit_gflops": limit, "step_gflop": work / 1e9, "rows": rows}


def section_compare(frameworks, overhead_rows, spec, x, repeats):
    params = xgrad.init_params(spec, seed=0)
    raw = {r["framework"]: r["raw_s"] for r in overhead_rows if r["model"] == "large"}
    ref64 = median_time(raw_numpy(spec, params, x, "float64"), max(1, repeats // 2))
    baseline = ref64 + sum(raw[fw] for fw in frameworks)

    def run():
        return xgrad.compare(spec, x, params=params, frameworks=frameworks, explain=False)

    run()  # first call: framework start-up and compilation
    whole = median_time(run, max(1, repeats // 2), warmup=0)
    breakdown = run().timing  # where a comparison's time goes (seconds)
    start = time.perf_counter()
    report = xgrad.compare(spec, x, params=params, frameworks=frameworks)
    with_explain = time.perf_counter() - start
    return {
        "compare_s": whole,
        "raw_sum_s": baseline,
        "raw_reference_f64_s": ref64,
        "raw_s": raw,
        "ratio": whole / baseline,
        "target": TARGETS["compare"],
        "ok": whole / baseline <= TARGETS["compare"],
        "report_ok": report.ok,
        "diagnoses": report.diagnosis_lines(),
        "compare_with_diagnosis_s": with_explain,
        "breakdown_s": breakdown,
    }


def _timed_process(code: str, repeats: int) -> tuple[float, str]:
    times, out = [], ""
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        times.append(time.perf_counter() - start)
        if result.returncode not in (0, 1):
            raise RuntimeError(f"benchmark subprocess failed: {result.stderr[-2000:]}")
        out = result.stdout
    return statistics.median(times), out


def section_startup(frameworks, repeats, smoke):
    cli = (
        "import sys, time\nt0 = time.perf_counter()\n"
        "import xgrad\nfor fw in {fws!r}.split(','): xgrad.get_framework(fw)\n"
        "t1 = time.perf_counter()\nfrom xgrad.cli import main\n"
        "rc = main(['compare', '--input-dim', '10', '--layers', '8:relu,5:sigmoid', "
        "'--batch', '2', '--quiet', '--frameworks', {fws!r}])\n"
        "t2 = time.perf_counter()\n"
        "print('TF_IMPORTED', 'tensorflow' in sys.modules)\n"
        "print('SPLIT', t1 - t0, t2 - t1)\n"
    )
    cases = []
    if smoke:
        cases.append(("numpy", "import numpy", "numpy"))
    else:
        heavy = [f for f in frameworks if f != "numpy"]
        mods = {"jax": "jax", "flax": "flax", "tensorflow": "tensorflow"}
        cases.append(
            (
                ",".join(frameworks),
                "import " + ", ".join(sorted({mods[f] for f in heavy}))
                if heavy
                else "import numpy",
                "all",
            )
        )
        if "jax" in frameworks:
            cases.append(("numpy,jax", "import jax", "numpy,jax"))
    rows = []
    for fws, baseline_code, label in cases:
        ours, out = _timed_process(cli.format(fws=fws), repeats)
        base, _ = _timed_process(baseline_code, repeats)
        tf_imported = "TF_IMPORTED True" in out
        split = next(line.split()[1:] for line in out.splitlines() if line.startswith("SPLIT"))
        rows.append(
            {
                "frameworks": label,
                "xgrad_s": ours,
                "baseline": baseline_code,
                "baseline_s": base,
                "ratio": ours / base,
                "target": TARGETS["startup"],
                "ok": ours / base <= TARGETS["startup"]
                and ("tensorflow" in fws or not tf_imported),
                "tensorflow_imported": tf_imported,
                "imports_s": float(split[0]),
                "comparison_s": float(split[1]),
            }
        )
    return rows


_MEMORY_CHILD = """
import os, sys, json
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np, xgrad
fws = sys.argv[1].split(",")
width, depth = int(sys.argv[2]), int(sys.argv[3])
for fw in fws:
    xgrad.get_framework(fw)  # import every framework first: the baseline includes them
n = 0
if depth:
    spec = xgrad.MLP(width, [xgrad.Dense(width, "relu")] * depth)
    n = spec.n_params()
    x = np.random.default_rng(0).standard_normal((8, width))
    report = xgrad.compare(spec, x, frameworks=fws, explain=False)
# VmHWM: this process image's peak RSS (ru_maxrss would include the parent's, kept across exec)
with open("/proc/self/status") as f:
    hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"maxrss_kb": hwm, "params": n}))
"""


def linear_fit(rows) -> dict:
    """Least-squares ``extra = intercept + slope * params`` over the measured sizes."""
    n = np.array([r["params"] for r in rows], dtype=float)
    extra = np.array([r["extra_mb"] * 2**20 for r in rows])
    slope, intercept = np.polyfit(n, extra, 1)
    fitted = intercept + slope * n
    worst = float(np.max(np.abs(fitted - extra) / np.maximum(extra, 1)))
    return {
        "bytes_per_param": float(slope),
        "intercept_mb": float(intercept / 2**20),
        "max_relative_residual": worst,
    }


def section_memory(frameworks, sizes):
    fws = ",".join(frameworks)

    def child(width, depth):
        result = subprocess.run(
            [sys.executable, "-c", _MEMORY_CHILD, fws, str(width), str(depth)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            raise RuntimeError(f"memory subprocess failed: {result.stderr[-2000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    base = child(8, 0)["maxrss_kb"] * 1024
    n_frameworks = len(frameworks)
    rows = []
    for width, depth in sizes:
        got = child(width, depth)
        n = got["params"]
        needed = n * (8 + 8 + 4 * n_frameworks)
        extra = got["maxrss_kb"] * 1024 - base
        rows.append(
            {
                "params": n,
                "peak_rss_mb": got["maxrss_kb"] / 1024,
                "baseline_rss_mb": base / 2**20,
                "extra_mb": extra / 2**20,
                "needed_mb": needed / 2**20,
                "ratio": extra / needed,
                "bytes_per_param": extra / n,
                "target": TARGETS["memory"],
                "ok": extra / needed <= TARGETS["memory"],
            }
        )
    return rows


# 8 activations x 2 losses x 2 dtypes x 2 batch sizes = 64 cells; smoke: 4 cells, NumPy only
SWEEP_GRID = {
    "activations": ["relu", "tanh", "gelu", "elu", "selu", "softplus", "silu", "leaky_relu"],
    "losses": ["sum", "mse"],
    "dtypes": ["float32", "float64"],
    "batch_sizes": [1, 4],
    "hidden": [16, 16],
}
SMOKE_SWEEP_GRID = {**SWEEP_GRID, "activations": ["relu"], "losses": ["sum"]}

_SWEEP_CHILD = """
import hashlib, json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from xgrad.sweep import SweepGrid, run_sweep
grid = SweepGrid.from_mapping(json.loads(sys.argv[1]))
mode, n = sys.argv[2], int(sys.argv[3])
out = {"mode": mode, "workers": n, "cluster_start_s": None}
if mode == "dask":
    from distributed import Client, LocalCluster
    start = time.perf_counter()
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    out["cluster_start_s"] = time.perf_counter() - start
    start = time.perf_counter()
    result = run_sweep(grid, executor=client.get_executor())
    out["seconds"] = time.perf_counter() - start
    client.close()
    cluster.close()
else:
    start = time.perf_counter()
    result = run_sweep(grid, workers=n)
    out["seconds"] = time.perf_counter() - start
out["cells"] = len(result.cells)
out["ok"] = result.ok
out["report_sha256"] = hashlib.sha256(result.to_json().encode()).hexdigest()
print(json.dumps(out))
"""

_STARTUP_CHILD = """
import json, multiprocessing, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from concurrent.futures import ProcessPoolExecutor
from xgrad.sweep import CellConfig, SweepGrid, run_cells

if __name__ == "__main__":
    n = int(sys.argv[2])
    # one tiny cell per worker: each imports its frameworks and builds one model
    grid = SweepGrid(hidden=(2,), output_dim=2, frameworks=tuple(sys.argv[1].split(",")))
    cell = CellConfig("relu", "sum", "float32", 1, 0)
    start = time.perf_counter()
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_cells, grid, [cell]) for _ in range(n)]
        statuses = [f.result()[0].status for f in futures]
    print(json.dumps({"seconds": time.perf_counter() - start, "statuses": statuses}))
"""

_BURN = "s = 0\nfor i in range({n}):\n    s += i\n"


def burn_capacity(n: int) -> dict:
    """How many times one process's pure-Python work two processes get done at once:
    2.0 on two free cores, less where the cores are shared or throttled."""
    code = _BURN.format(n=n)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600)
    one = time.perf_counter() - start
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    for proc in procs:
        proc.wait(timeout=600)
    two = time.perf_counter() - start
    return {"one_s": one, "two_s": two, "capacity": 2 * one / two}


def _child_json(code: str, *argv: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        raise RuntimeError(f"sweep benchmark subprocess failed: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def section_sweep(frameworks, smoke, repeats):
    """Cells per second of one grid in a fresh process per run (imports, worker start-up and
    compilation included, as a user of `xgrad sweep` meets them); the median of ``repeats``
    runs of each, interleaved."""
    grid = {**(SMOKE_SWEEP_GRID if smoke else SWEEP_GRID)}
    grid["frameworks"] = ["numpy"] if smoke else list(frameworks)
    text = json.dumps(grid)
    runs = [("local", 1), ("local", 2)]
    try:
        import distributed  # noqa: F401

        if not smoke:
            runs.append(("dask", 2))
    except ImportError:
        pass
    load_before = os.getloadavg()  # other work on the machine shows here
    samples = {run: [] for run in runs}
    for _ in range(repeats):
        for mode, n in runs:
            row = _child_json(_SWEEP_CHILD, text, mode, str(n))
            samples[(mode, n)].append(row)
            print(f"f. sweep, {mode} x {n}: {row['seconds']:.1f} s", file=sys.stderr, flush=True)
    rows = []
    for found in samples.values():
        row = sorted(found, key=lambda r: r["seconds"])[len(found) // 2]
        row["samples_s"] = [r["seconds"] for r in found]
        row["report_sha256"] = sorted({r["report_sha256"] for r in found})
        row["cells_per_s"] = row["cells"] / row["seconds"]
        rows.append(row)
    burn = burn_capacity(2_000_000 if smoke else 60_000_000)
    capacity = burn["capacity"]
    startup = _child_json(_STARTUP_CHILD, ",".join(grid["frameworks"]), "2")
    one = rows[0]["seconds"]
    for row in rows:
        row["speedup"] = one / row["seconds"]
        if row["workers"] == 2:
            row["efficiency_vs_ideal"] = row["speedup"] / 2
            # what 2 workers would take with perfect splitting on this machine's capacity,
            # plus the measured start-up of two workers
            row["expected_s"] = one / capacity + startup["seconds"]
            row["overhead_s"] = row["seconds"] - one / 2
    return {
        "grid": grid,
        "cells": rows[0]["cells"],
        "rows": rows,
        "ideal_speedup": 2.0,
        "machine_capacity": capacity,
        "burn": burn,
        "worker_startup_s": startup["seconds"],
        "same_report": len({h for r in rows for h in r["report_sha256"]}) == 1,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


# -- output -------------------------------------------------------------------------------


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    for mod in ("jax", "flax", "tensorflow", "keras"):
        if mod in sys.modules:
            info[mod] = getattr(sys.modules[mod], "__version__", "?")
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: pool.get(k) for k in ("internal_api", "architecture", "num_threads")}
            for pool in threadpool_info()
            if pool.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    return info


def print_results(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(width=140)

    def verdict(ok):
        return "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")

    if "overhead" in results:
        t = Table(title="a. adapter overhead: xgrad step / hand-written step (median)")
        for col in ("model", "framework", "raw ms", "xgrad ms", "ratio", "target", "met"):
            t.add_column(col)
        for r in results["overhead"]:
            t.add_row(
                r["model"],
                r["framework"],
                f"{1e3 * r['raw_s']:.2f}",
                f"{1e3 * r['xgrad_s']:.2f}",
                f"{r['ratio']:.3f}",
                f"<= {r['target']}",
                verdict(r["ok"]),
            )
        console.print(t)
    if "throughput" in results:
        th = results["throughput"]
        lim = ", ".join(f"{k} {v:.1f}" for k, v in th["matmul_gflops"].items())
        t = Table(
            title=f"b. throughput on the large model ({th['step_gflop']:.1f} GFLOP a step); "
            f"matmul limit {th['limit_gflops']:.1f} GFLOP/s (raw matmuls: {lim})"
        )
        for col in ("framework", "code", "GFLOP/s", "of limit", "of own matmul", "target", "met"):
            t.add_column(col)
        for r in th["rows"]:
            t.add_row(
                r["framework"],
                r["kind"],
                f"{r['gflops']:.1f}",
                f"{100 * r['fraction_of_limit']:.0f}%",
                f"{100 * r['fraction_of_own_matmul']:.0f}%",
                f">= {100 * r['target']:.0f}%" if r["kind"] == "xgrad" else "",
                verdict(r["ok"]),
            )
        console.print(t)
    if "compare" in results:
        c = results["compare"]
        console.print(
            f"c. whole comparison: xgrad.compare {c['compare_s']:.3f} s vs the raw steps it "
            f"contains {c['raw_sum_s']:.3f} s (float64 reference {c['raw_reference_f64_s']:.3f}"
            f" s): ratio {c['ratio']:.3f} (target <= {c['target']}) {verdict(c['ok'])}; "
            f"with diagnosis of the mismatches: {c['compare_with_diagnosis_s']:.3f} s"
        )
        parts = ", ".join(f"{k} {v:.3f}" for k, v in c["breakdown_s"].items())
        console.print(Text(f"   where the time goes (s): {parts}"))
        for line in c["diagnoses"]:
            console.print(Text(f"   {line}"))
    if "startup" in results:
        t = Table(title="d. start-up: `xgrad compare` (seed example 3) in a fresh process")
        for col in (
            "frameworks",
            "xgrad s",
            "baseline",
            "baseline s",
            "ratio",
            "TF imported",
            "met",
            "of which: imports s",
            "comparison s",
        ):
            t.add_column(col)
        for r in results["startup"]:
            t.add_row(
                r["frameworks"],
                f"{r['xgrad_s']:.2f}",
                r["baseline"],
                f"{r['baseline_s']:.2f}",
                f"{r['ratio']:.2f}",
                str(r["tensorflow_imported"]),
                verdict(r["ok"]),
                f"{r['imports_s']:.2f}",
                f"{r['comparison_s']:.2f}",
            )
        console.print(t)
    if "memory" in results:
        fit = results["memory_fit"]
        t = Table(
            title="e. memory: peak RSS of a full comparison beyond the import baseline; linear "
            f"fit: {fit['bytes_per_param']:.1f} bytes/param + {fit['intercept_mb']:.0f} MB "
            f"(largest residual {100 * fit['max_relative_residual']:.1f}%)"
        )
        for col in (
            "params",
            "peak MB",
            "baseline MB",
            "extra MB",
            "needed MB",
            "ratio",
            "bytes/param",
            "met",
        ):
            t.add_column(col)
        for r in results["memory"]:
            t.add_row(
                f"{r['params']:,}",
                f"{r['peak_rss_mb']:.0f}",
                f"{r['baseline_rss_mb']:.0f}",
                f"{r['extra_mb']:.0f}",
                f"{r['needed_mb']:.0f}",
                f"{r['ratio']:.2f}",
                f"{r['bytes_per_param']:.1f}",
                verdict(r["ok"]),
            )
        console.print(t)
    if "sweep" in results:
        sw = results["sweep"]
        t = Table(
            title=f"f. sweep: {sw['cells']} cells ({', '.join(sw['grid']['frameworks'])}), each "
            f"run in a fresh process; ideal speed-up {sw['ideal_speedup']:.1f} x, this "
            f"machine's 2-process capacity {sw['machine_capacity']:.2f} x, start-up of 2 "
            f"workers {sw['worker_startup_s']:.1f} s; same merged report: {sw['same_report']} "
            "(median of the runs)"
        )
        for col in ("run", "workers", "s", "cells/s", "speed-up", "expected s", "cluster s"):
            t.add_column(col)
        for r in sw["rows"]:
            expected = r.get("expected_s")
            cluster = r["cluster_start_s"]
            t.add_row(
                r["mode"],
                str(r["workers"]),
                f"{r['seconds']:.1f}",
                f"{r['cells_per_s']:.2f}",
                f"{r['speedup']:.2f}",
                "" if expected is None else f"{expected:.1f}",
                "" if cluster is None else f"{cluster:.1f}",
            )
        console.print(t)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every figure as JSON")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: harness check only")
    parser.add_argument("--sections", default="a,b,c,d,e,f")
    parser.add_argument("--frameworks", default=",".join(xgrad.available_frameworks()))
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    for fw in frameworks:
        xgrad.get_framework(fw)  # imports each framework once, TensorFlow's start-up noise hidden
    sections = set(args.sections.split(","))
    repeats = args.repeats or (2 if args.smoke else 7)
    large = SMOKE_LARGE if args.smoke else LARGE
    spec = make_spec(large)
    x = np.random.default_rng(0).standard_normal((large[3], large[0])).astype(np.float32)
    from xgrad.examples import SEED_EXAMPLES

    seed = SEED_EXAMPLES[2]
    seed_spec = xgrad.MLP(10, [xgrad.Dense(8, "relu"), xgrad.Dense(5)])  # relu + linear head
    shapes = [("large", spec, x), ("seed-3", seed_spec, seed.x.astype(np.float32))]
    results: dict = {
        "machine": machine(),
        "smoke": args.smoke,
        "frameworks": frameworks,
        "large_model": {"spec": spec.describe(), "params": spec.n_params(), "batch": large[3]},
    }
    start = time.perf_counter()
    if sections & {"a", "b", "c"}:
        results["overhead"] = section_overhead(frameworks, shapes, repeats)
    if "b" in sections:
        results["throughput"] = section_throughput(
            frameworks, results["overhead"], spec, large[3], repeats
        )
    if "c" in sections:
        results["compare"] = section_compare(frameworks, results["overhead"], spec, x, repeats)
    if "d" in sections:
        results["startup"] = section_startup(frameworks, 1 if args.smoke else 3, args.smoke)
    if "e" in sections:
        sizes = [(32, 1), (64, 2)] if args.smoke else [(1000, 1), (1826, 3), (4083, 3)]
        results["memory"] = section_memory(frameworks if not args.smoke else ["numpy"], sizes)
        results["memory_fit"] = linear_fit(results["memory"])
    if "f" in sections:
        results["sweep"] = section_sweep(
            frameworks, args.smoke, args.repeats or (1 if args.smoke else 3)
        )
    results["machine"] = machine()
    results["seconds"] = time.perf_counter() - start
    print_results(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
