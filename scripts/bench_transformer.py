"""Issue 21's scale figures: ``xgrad.compare_models`` of a GPT-2-small-sized transformer,
Hugging Face ``LlamaForCausalLM`` (torch) against its hand-written Flax NNX port
(``tests/_transformer_ports.py``), float32, sequence 128, batch 2.

Two figures, each beside its baseline and measured in one run:

* time: the whole ``compare_models`` call (a correct port, default settings) over the two
  frameworks' own forward + backward steps on the same ids (torch eager; the NNX port's
  ``nnx.value_and_grad`` step, jitted, after its compile), target <= 3x; the median of
  ``--rounds`` interleaved rounds, with the range;
* memory: the peak RSS of a fresh process running ``compare_models``, minus its RSS after
  both models are built, over the bytes of both models' parameters and gradients (float32:
  4 bytes x 4 x parameters), target <= 3x.

Usage: ``python scripts/bench_transformer.py [--json PATH] [--smoke] [--rounds N]``. ``--smoke``
runs a tiny model: it checks the harness, its figures mean nothing. ``make bench`` runs the
full size (about 134M parameters: 12 layers, width 768, 12 heads, MLP 2048, vocabulary 32000,
an untied LM head).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the NNX port the tests compare lives there

import numpy as np  # noqa: E402

FULL = {"vocab": 32000, "dim": 768, "heads": 12, "kv_heads": 12, "hidden": 2048, "layers": 12}
SMOKE = {"vocab": 64, "dim": 32, "heads": 4, "kv_heads": 2, "hidden": 64, "layers": 2}
SEQUENCE, BATCH = 128, 2
SMOKE_SEQUENCE = 8
TARGETS = {"time": 3.0, "memory": 3.0}


def build(sizes: dict, ids: np.ndarray):
    """The Hugging Face model and its NNX port holding the same weights."""
    from _transformer_ports import hf_llama, llama_port

    import xgrad

    reference = hf_llama(**sizes)
    port = llama_port(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xgrad.convert(reference, into=port, x=ids)
    return reference, port


def ids_for(sizes: dict, sequence: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, sizes["vocab"], size=(BATCH, sequence))


def n_params(reference) -> int:
    return sum(p.numel() for p in reference.parameters())


def torch_step(reference, ids):
    """The torch model's own forward + backward on the ids (a fixed projection of the
    logits as the loss, as compare_models' default loss does)."""
    import torch

    tokens = torch.as_tensor(ids)

    def step():
        reference.zero_grad(set_to_none=True)
        logits = reference(tokens).logits
        logits.float().mean().backward()

    return step


def nnx_step(port, ids):
    """The NNX port's own jitted value-and-gradient step on the ids (compiled once here)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    tokens = jnp.asarray(ids)

    @nnx.jit
    def grads(model):
        return nnx.value_and_grad(lambda m: m(tokens).astype(jnp.float32).mean())(model)

    def step():
        loss, g = grads(port)
        jax.block_until_ready((loss, g))

    step()  # compile
    return step


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_figures(sizes: dict, sequence: int, rounds: int) -> dict:
    import xgrad

    ids = ids_for(sizes, sequence)
    reference, port = build(sizes, ids)
    steps = {"torch": torch_step(reference, ids), "flax": nnx_step(port, ids)}

    def compare():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return xgrad.compare_models(reference, port, ids)

    first_s = timed(steps["torch"]) + timed(compare)  # warm-up; the first call, for the record
    rows = {"torch": [], "flax": [], "compare_models": []}
    report = None
    for _ in range(rounds):  # interleaved, so that load drifts touch every figure alike
        rows["torch"].append(timed(steps["torch"]))
        rows["flax"].append(timed(steps["flax"]))
        start = time.perf_counter()
        report = compare()
        rows["compare_models"].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in rows.items()}
    baseline = med["torch"] + med["flax"]
    return {
        "params": n_params(reference),
        "first_call_s": first_s,
        "median_s": med,
        "range_s": {k: [min(v), max(v)] for k, v in rows.items()},
        "ratio": med["compare_models"] / baseline,
        "target": TARGETS["time"],
        "met": med["compare_models"] / baseline <= TARGETS["time"],
        "report_ok": bool(report.ok),
        "timing_s": dict(getattr(report, "timing", {}) or {}),
        "loadavg": list(os.getloadavg()),
    }


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(sizes_json: str, sequence: int) -> None:
    """Run in a fresh process: RSS after the models are built, peak RSS after one call."""
    import xgrad

    sizes = json.loads(sizes_json)
    ids = ids_for(sizes, sequence)
    reference, port = build(sizes, ids)
    built = rss_mb()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = xgrad.compare_models(reference, port, ids)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"built_mb": built, "peak_mb": peak, "params": n_params(reference),
                      "report_ok": bool(report.ok)}))  # fmt: skip


def memory_figures(sizes: dict, sequence: int) -> dict:
    code = [sys.executable, __file__, "--memory-child", json.dumps(sizes), "--sequence",
            str(sequence)]  # fmt: skip
    out = subprocess.run(code, capture_output=True, text=True, check=True, timeout=3600)
    child = json.loads(out.stdout.strip().splitlines()[-1])
    must_hold_mb = 4 * 4 * child["params"] / 2**20  # params + grads, both models, float32
    ratio = (child["peak_mb"] - child["built_mb"]) / must_hold_mb
    return {
        **child,
        "must_hold_mb": must_hold_mb,
        "ratio": ratio,
        "target": TARGETS["memory"],
        "met": ratio <= TARGETS["memory"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--memory-child")
    parser.add_argument("--sequence", type=int)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.sequence)
        return 0
    sizes = SMOKE if args.smoke else FULL
    sequence = SMOKE_SEQUENCE if args.smoke else SEQUENCE
    rounds = 2 if args.smoke else args.rounds
    results = {
        "sizes": {**sizes, "sequence": sequence, "batch": BATCH},
        "time": time_figures(sizes, sequence, rounds),
        "memory": memory_figures(sizes, sequence),
    }
    t, m = results["time"], results["memory"]
    print(f"transformer scale: {t['params'] / 1e6:.1f}M parameters, sequence {sequence}, "
          f"batch {BATCH}, float32, load {t['loadavg'][0]:.1f}")  # fmt: skip
    print(f"  compare_models {t['median_s']['compare_models']:.2f} s vs torch step "
          f"{t['median_s']['torch']:.2f} s + NNX step {t['median_s']['flax']:.2f} s: "
          f"{t['ratio']:.2f}x (target {t['target']}x, {'met' if t['met'] else 'MISSED'}); "
          f"report ok: {t['report_ok']}")  # fmt: skip
    print(f"  peak memory beyond the built models {m['peak_mb'] - m['built_mb']:.0f} MB vs "
          f"params + grads of both {m['must_hold_mb']:.0f} MB: {m['ratio']:.2f}x "
          f"(target {m['target']}x, {'met' if m['met'] else 'MISSED'})")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
