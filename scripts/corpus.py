"""A randomized corpus of hand-written ports, each with one planted bug (or none), and the
scores of xgrad's verdicts and diagnoses on it.

Each case draws a small model (dense layers with an activation each, sometimes a layer norm
and a residual block), writes its port by hand in pure JAX (the way a person writes one:
``jax.nn`` functions, ``x @ W + b``), plants one mistake that people really make, and
compares the port with the xgrad reference in float32 (``compare_models``). The scores:

* false alarms: exact ports that do not pass (must be 0);
* wrong causes: a confirmed cause other than the one planted (must be 0);
* named: visible bugs whose planted cause is confirmed at the planted layer (>= 95%);
* localised: visible bugs whose first divergence is the planted layer;
* invisible: planted bugs that change nothing at this batch (e.g. no negative inputs).

Usage: ``python scripts/corpus.py [--cases 200] [--seed 0] [--json PATH]`` (``make fuzz``);
the test suite runs a small seeded corpus (``tests/test_corpus.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

import xgrad

BUGS = (
    "exact",
    "gelu-approximation",
    "leaky-relu-slope",
    "activation-mismatch",
    "layernorm-epsilon",
    "kink-convention",
    "weight-layout",
    "loss-reduction",
    "backward-derivative",
    "residual-missing",
    "norm-affine",
    "matmul-precision",
)
ACTIVATIONS = ("relu", "tanh", "gelu", "sigmoid", "leaky_relu", "elu", "silu", "softplus")


@dataclass
class Case:
    """One port: the reference, the hand-written port, the planted bug and where."""

    seed: int
    bug: str
    layer: str | None  # the canonical path of the planted layer
    reference: object
    port: tuple
    x: np.ndarray
    loss: object
    y: np.ndarray | None


def _jax_activation(name: str, bug: str | None):
    import jax
    import jax.numpy as jnp

    if name == "gelu":
        return lambda z: jax.nn.gelu(z, approximate=bug == "gelu-approximation")
    if name.startswith("leaky_relu"):
        slope = 0.01 if bug == "leaky-relu-slope" else 0.2
        return lambda z: jnp.where(z > 0, z, slope * z)
    if name == "relu" and bug == "kink-convention":
        return lambda z: jnp.maximum(z, 0)  # derivative 0.5 at 0
    table = {
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
        "sigmoid": jax.nn.sigmoid,
        "elu": jax.nn.elu,
        "silu": jax.nn.silu,
        "softplus": jax.nn.softplus,
        "linear": lambda z: z,
    }
    other = {
        "relu": "elu",
        "tanh": "sigmoid",
        "sigmoid": "tanh",
        "elu": "relu",
        "silu": "tanh",
        "softplus": "relu",
    }
    if bug == "activation-mismatch":
        return table[other.get(name, "tanh")]
    if bug == "backward-derivative":  # the right function, another one's derivative
        f, g = table[name], table[other.get(name, "tanh")]

        @jax.custom_jvp
        def wrong(z):
            return f(z)

        @wrong.defjvp
        def _(primals, tangents):
            (z,), (dz,) = primals, tangents
            return f(z), jax.jvp(g, (z,), (dz,))[1]

        return wrong
    return table[name]


def make_case(seed: int, bug: str) -> Case | None:
    """The port of a random model with ``bug`` planted (None when the model cannot host it)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng([seed, BUGS.index(bug)])
    width = int(rng.choice([6, 8]))
    depth = int(rng.integers(2, 4))
    acts = [str(rng.choice(ACTIVATIONS)) for _ in range(depth)]
    with_norm = bool(rng.integers(0, 2)) or bug in ("layernorm-epsilon", "norm-affine")
    with_block = bool(rng.integers(0, 2)) or bug == "residual-missing"
    hosts = {
        "gelu-approximation": "gelu",
        "leaky-relu-slope": "leaky_relu",
        "kink-convention": "relu",
    }
    planted = int(rng.integers(0, depth))
    if bug in hosts:
        acts[planted] = hosts[bug]
    layers, path_of = [], {}
    for i, act in enumerate(acts):
        path_of[i] = f"layers.{len(layers)}"
        layers.append(xgrad.Dense(width, act))
        if i == 0 and with_norm:
            path_of["norm"] = f"layers.{len(layers)}"
            layers.append(xgrad.LayerNorm(1e-3))
    if with_block:
        path_of["block"] = f"layers.{len(layers)}"
        layers.append(xgrad.Residual([xgrad.Dense(width, "tanh")]))
    path_of["head"] = f"layers.{len(layers)}"
    layers.append(xgrad.Dense(3))
    spec = xgrad.MLP(5, layers)
    params = {k: v.astype(np.float32) for k, v in xgrad.init_params(spec, seed=seed).items()}
    x = (2 * rng.standard_normal((8, 5))).astype(np.float32)
    if bug == "kink-convention":
        x[::2] = 0.0  # zero rows and zero biases: pre-activations exactly at the kink
        for k in params:
            if k.endswith(".bias"):
                params[k][:] = 0
    fns = [_jax_activation(a, bug if i == planted else None) for i, a in enumerate(acts)]
    eps = 1e-5 if bug == "layernorm-epsilon" else 1e-3
    affine = bug != "norm-affine"
    skip = bug != "residual-missing"

    def rounded(t):
        if bug != "matmul-precision":
            return t
        return jax.lax.reduce_precision(t, exponent_bits=8, mantissa_bits=10)

    def port(p, x):
        h = x
        for i, f in enumerate(fns):
            h = f(rounded(h) @ rounded(p[f"w{i}"]) + p[f"b{i}"])
            if i == 0 and with_norm:
                mean = h.mean(-1, keepdims=True)
                var = ((h - mean) ** 2).mean(-1, keepdims=True)
                h = (h - mean) * jax.lax.rsqrt(var + eps)
                if affine:
                    h = h * p["g"] + p["beta"]
        if with_block:
            inner = jnp.tanh(h @ p["rw"] + p["rb"])
            h = h + inner if skip else inner
        return h @ p["wo"] + p["bo"]

    names = {}
    for i in range(depth):
        names[f"{path_of[i]}.kernel"], names[f"{path_of[i]}.bias"] = f"w{i}", f"b{i}"
    if with_norm and affine:
        names[f"{path_of['norm']}.scale"], names[f"{path_of['norm']}.bias"] = "g", "beta"
    if with_block:
        names[f"{path_of['block']}.layers.0.kernel"] = "rw"
        names[f"{path_of['block']}.layers.0.bias"] = "rb"
    names[f"{path_of['head']}.kernel"], names[f"{path_of['head']}.bias"] = "wo", "bo"
    own = {native: jnp.asarray(params[canonical]) for canonical, native in names.items()}
    reference, loss, y = (spec, params), "projection", None
    if bug == "weight-layout":  # a loader that forgot to transpose a square kernel
        own["w1"] = jnp.asarray(np.ascontiguousarray(params[f"{path_of[1]}.kernel"].T))
    if bug == "loss-reduction":  # the port's own loss sums where the reference's means
        y = rng.standard_normal((8, 3)).astype(np.float32)
        reference = xgrad.get_framework("jax").build(spec, params, dtype="float32").native
        loss = (
            lambda out, y: jnp.mean((out - y) ** 2),
            lambda out, y: jnp.sum((out - y) ** 2),
        )
    layer = {
        "gelu-approximation": path_of[planted],
        "leaky-relu-slope": path_of[planted],
        "activation-mismatch": path_of[planted],
        "kink-convention": path_of[planted],
        "backward-derivative": path_of[planted],
        "matmul-precision": path_of[0],
        "layernorm-epsilon": path_of.get("norm"),
        "norm-affine": path_of.get("norm"),
        "residual-missing": path_of.get("block"),
        "weight-layout": path_of[1],
        "loss-reduction": None,
        "exact": None,
    }[bug]
    return Case(seed, bug, layer, reference, (port, own), x, loss, y)


EXPECTED_CAUSE = {
    "backward-derivative": "activation-mismatch",
}


def run_case(case: Case) -> dict:
    """The verdict and diagnosis on one case, and how they score."""
    report = xgrad.compare_models(case.reference, case.port, case.x, case.y, loss=case.loss)
    cause = EXPECTED_CAUSE.get(case.bug, case.bug)
    confirmed = [d for d in report.diagnoses if d.confirmed]
    first = report.divergences[0].path if report.divergences else None
    row = {
        "seed": case.seed,
        "bug": case.bug,
        "layer": case.layer,
        "ok": report.ok,
        "causes": [f"{d.cause}@{d.layer}" for d in report.diagnoses],
        "first_divergence": first,
    }
    if case.bug == "exact":
        row["outcome"] = "pass" if report.ok else "false-alarm"
    elif report.ok:
        row["outcome"] = "invisible"
    elif any(d.cause not in (cause, "dtype") for d in confirmed):
        row["outcome"] = "wrong-cause"
    elif any(d.cause == cause and d.layer == case.layer for d in confirmed):
        row["outcome"] = "named"
    else:
        row["outcome"] = "unnamed"
    row["localised"] = case.layer is None or first == case.layer
    return row


def scores(rows: list[dict]) -> dict:
    visible = [r for r in rows if r["bug"] != "exact" and r["outcome"] != "invisible"]
    exact = [r for r in rows if r["bug"] == "exact"]
    return {
        "cases": len(rows),
        "exact": len(exact),
        "false_alarms": sum(r["outcome"] == "false-alarm" for r in exact),
        "visible": len(visible),
        "invisible": sum(r["outcome"] == "invisible" for r in rows),
        "wrong_causes": sum(r["outcome"] == "wrong-cause" for r in rows),
        "named": sum(r["outcome"] == "named" for r in visible),
        "named_rate": sum(r["outcome"] == "named" for r in visible) / max(len(visible), 1),
        "localised_rate": sum(r["localised"] for r in visible) / max(len(visible), 1),
    }


CYCLE = ("exact",) * 4 + BUGS[1:]
"""Exact ports are a quarter of the corpus: false alarms are what a CI job suffers from."""


def corpus(cases: int, seed: int = 0) -> list[Case]:
    out = []
    for k in range(cases):
        case = make_case(seed * 100_000 + k, CYCLE[k % len(CYCLE)])
        if case is not None:
            out.append(case)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = [run_case(case) for case in corpus(args.cases, args.seed)]
    result = {"scores": scores(rows), "rows": rows}
    for row in rows:
        if row["outcome"] not in ("pass", "named", "invisible"):
            print(row)
    print(json.dumps(result["scores"], indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    s = result["scores"]
    return 0 if s["false_alarms"] == 0 and s["wrong_causes"] == 0 and s["named_rate"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
