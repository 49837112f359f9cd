"""xgrad's benchmark: every figure in one run, on one machine, each beside its baseline.

Sections (targets from issues 6, 12 and 14; a figure is a ratio, or comes with its baseline,
and with the machine's load average when it was taken):

a. overhead    steady-state gradient step of each framework's model vs the same computation
               written by hand in that framework: the large MLP (1024 -> 2048 x 4 -> 10,
               batch 512, float32) and a model of the newer layers (LayerNorm, a residual
               block, RMSNorm; 512 -> 1024, batch 256) <= 1.05, seed example 3 <= 1.5.
b. throughput  achieved GFLOP/s of each framework's step (6 * batch * sum(in * out)) over the
               machine's float32 matmul GFLOP/s on the same shapes (best framework's raw
               matmuls): numpy >= 85%, jax >= 75%, tensorflow >= 60% (torch: shown).
c. compare     xgrad.compare on the large model, all frameworks, vs the sum of the raw
               steps it contains (each framework plus the float64 NumPy reference): <= 1.15
               with explain=False, <= 1.5 with the default explain (float32 rounding at ReLU
               kinks found and explained); the exit status of `xgrad compare` on that model;
               the fused metric pass in ns per element and framework against the memory-
               bandwidth floor; compare_models of a Keras model and a Flax module holding
               the same weights (per-layer capture included) vs their two bare steps: <= 1.3.
d. startup     `xgrad compare` of seed example 3 in a fresh process vs importing the
               frameworks it uses: <= 1.3, for all frameworks and for numpy,jax (TensorFlow
               must then not be imported).
e. memory      peak RSS of a full comparison at about 1M, 10M and 50M float32 parameters,
               beyond the import baseline, over the bytes the comparison must hold
               (params f64 + reference gradients f64 + each framework's gradients f32): <= 3,
               and growing linearly.
f. sweep       a 64-cell grid of the seed-sized model: `xgrad sweep` in one process (warm)
               vs a hand-written loop doing the same gradient steps: <= 1.5 x its time; and
               cells per second with each run in a fresh process: 1 local worker, 2 local
               workers, a 2-worker Dask LocalCluster (loopback); the speed-up against the
               ideal 2 x, the machine's measured 2-process capacity and the measured worker
               start-up; the merged reports must be byte-identical.

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
NORMS = (512, 1024, 10, 256)  # input, width, output, batch of the model with the new layers
SMOKE_NORMS = (16, 32, 4, 8)
TARGETS = {
    "overhead_large": 1.05,
    "overhead_small": 1.5,
    "throughput": {"numpy": 0.85, "jax": 0.75, "flax": 0.75, "tensorflow": 0.60, "torch": None},
    "compare": 1.15,
    "compare_diagnosis": 1.5,
    "compare_models": 1.3,
    "startup": 1.3,
    "memory": 3.0,
    "sweep": 1.5,
}


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    return [round(v, 2) for v in os.getloadavg()]


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


def norms_spec(shape) -> xgrad.MLP:
    """The layers of the second round: LayerNorm, a residual block, RMSNorm."""
    n_in, width, n_out, _ = shape
    return xgrad.MLP(
        n_in,
        [
            xgrad.Dense(width, "relu"),
            xgrad.LayerNorm(),
            xgrad.Residual([xgrad.Dense(width, "relu")]),
            xgrad.RMSNorm(),
            xgrad.Dense(n_out),
        ],
    )


def flops(spec: xgrad.MLP, batch: int) -> float:
    """The matmul work of one gradient step: forward, dW and dX of every Dense."""
    return 6.0 * batch * sum(i * o for i, o in spec.layer_dims())


# -- hand-written baselines: the same step, written directly in each framework ------------
#
# Each raw_<framework>(spec, params, x, y=None, loss="sum", dtype="float32") returns a
# zero-argument step computing the loss, its gradients with respect to every weight and to x,
# the way one would write it by hand in that framework: its own layers and activations, one
# compiled or traced function where the framework has them, inputs already in its tensors.
# They cover what the benchmark's models use: Dense with any of the sweep's activations,
# LayerNorm, RMSNorm and Residual blocks; the losses sum and mse.

LEAKY_SLOPE = 0.2  # xgrad's leaky_relu default (Keras')


def _np_activation(name: str):
    """``(f(z), f'(z) given z and f(z))`` for NumPy, written out."""
    sqrt2 = np.sqrt(2.0)
    alpha, scale = 1.6732632423543772, 1.0507009873554805

    def sigmoid(z):
        return 0.5 * (1 + np.tanh(0.5 * z))

    def erf(z):
        try:
            from scipy.special import erf as _erf
        except ImportError:  # pragma: no cover
            import math

            return np.vectorize(math.erf, otypes=[z.dtype])(z)
        return _erf(z)

    table = {
        "linear": (lambda z: z, None),
        "relu": (lambda z: np.maximum(z, 0), lambda z, a: z > 0),
        "tanh": (np.tanh, lambda z, a: 1 - a * a),
        "sigmoid": (sigmoid, lambda z, a: a * (1 - a)),
        "gelu": (
            lambda z: 0.5 * z * (1 + erf(z / sqrt2)),
            lambda z, a: 0.5 * (1 + erf(z / sqrt2)) + z * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi),
        ),
        "elu": (lambda z: np.where(z > 0, z, np.expm1(z)), lambda z, a: np.where(z > 0, 1, a + 1)),
        "selu": (
            lambda z: scale * np.where(z > 0, z, alpha * np.expm1(z)),
            lambda z, a: np.where(z > 0, scale, a + scale * alpha),
        ),
        "softplus": (lambda z: np.logaddexp(z, 0), lambda z, a: sigmoid(z)),
        "silu": (lambda z: z * sigmoid(z), lambda z, a: sigmoid(z) * (1 + z * (1 - sigmoid(z)))),
        "leaky_relu": (
            lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
            lambda z, a: np.where(z > 0, 1, LEAKY_SLOPE),
        ),
    }
    return table[name.split(":")[0]]


def raw_numpy(spec, params, x, dtype="float32", y=None, loss="sum"):
    w = {k: v.astype(dtype) for k, v in params.items()}
    xs = x.astype(dtype)
    ys = None if y is None else np.asarray(y, dtype=dtype)

    def forward(layers, prefix, a, tape):
        for i, layer in enumerate(layers):
            p = f"{prefix}.{i}"
            if isinstance(layer, xgrad.Dense):
                z = a @ w[f"{p}.kernel"] + w[f"{p}.bias"]
                f, df = _np_activation(layer.activation)
                out = f(z)
                tape.append(("dense", p, a, z, out, df))
            elif isinstance(layer, xgrad.LayerNorm):
                centred = a - a.mean(-1, keepdims=True)
                inv = 1 / np.sqrt((centred * centred).mean(-1, keepdims=True) + layer.epsilon)
                normed = centred * inv
                out = normed * w[f"{p}.scale"] + w[f"{p}.bias"]
                tape.append(("layernorm", p, normed, inv))
            elif isinstance(layer, xgrad.RMSNorm):
                inv = 1 / np.sqrt((a * a).mean(-1, keepdims=True) + layer.epsilon)
                normed = a * inv
                out = normed * w[f"{p}.scale"]
                tape.append(("rmsnorm", p, normed, inv))
            else:  # Residual
                inner: list = []
                out = a + forward(layer.layers, f"{p}.layers", a, inner)
                tape.append(("residual", p, inner))
            a = out
        return a

    def backward(tape, g, grads):
        for op in reversed(tape):
            kind, p = op[0], op[1]
            if kind == "dense":
                _, _, a, z, out, df = op
                d = g if df is None else g * df(z, out)
                grads[f"{p}.kernel"] = a.T @ d
                grads[f"{p}.bias"] = d.sum(0)
                g = d @ w[f"{p}.kernel"].T
            elif kind == "layernorm":
                _, _, normed, inv = op
                grads[f"{p}.scale"] = (g * normed).sum(0)
                grads[f"{p}.bias"] = g.sum(0)
                gn = g * w[f"{p}.scale"]
                g = inv * (
                    gn - gn.mean(-1, keepdims=True) - normed * (gn * normed).mean(-1, keepdims=True)
                )
            elif kind == "rmsnorm":
                _, _, normed, inv = op
                grads[f"{p}.scale"] = (g * normed).sum(0)
                gn = g * w[f"{p}.scale"]
                g = inv * (gn - normed * (gn * normed).mean(-1, keepdims=True))
            else:
                g = g + backward(op[2], g, grads)
        return g

    def step():
        tape: list = []
        out = forward(spec.layers, "layers", xs, tape)
        if loss == "sum":
            value, g = out.sum(), np.ones_like(out)
        else:
            diff = out - ys
            value, g = (diff * diff).mean(), diff * (2 / diff.size)
        grads: dict = {}
        return value, grads, backward(tape, g, grads)

    return step


def _jax_activation(name: str):
    import jax

    kind = name.split(":")[0]
    if kind == "linear":
        return lambda z: z
    if kind == "gelu":
        return lambda z: jax.nn.gelu(z, approximate=False)
    if kind == "leaky_relu":
        return lambda z: jax.nn.leaky_relu(z, LEAKY_SLOPE)
    return getattr(jax.nn, kind)


def raw_jax(spec, params, x, y=None, loss="sum", dtype="float32"):
    import jax
    import jax.numpy as jnp

    def run(fn):
        with jax.enable_x64(dtype == "float64"):
            return fn()

    ws = run(lambda: {k: jnp.asarray(v.astype(dtype)) for k, v in params.items()})
    xs = run(lambda: jnp.asarray(x.astype(dtype)))
    ys = None if y is None else run(lambda: jnp.asarray(np.asarray(y, dtype=dtype)))

    def forward(layers, prefix, w, a):
        for i, layer in enumerate(layers):
            p = f"{prefix}.{i}"
            if isinstance(layer, xgrad.Dense):
                a = _jax_activation(layer.activation)(a @ w[f"{p}.kernel"] + w[f"{p}.bias"])
            elif isinstance(layer, xgrad.LayerNorm):
                mean = a.mean(-1, keepdims=True)
                var = ((a - mean) ** 2).mean(-1, keepdims=True)
                a = (a - mean) / jnp.sqrt(var + layer.epsilon) * w[f"{p}.scale"] + w[f"{p}.bias"]
            elif isinstance(layer, xgrad.RMSNorm):
                ms = (a * a).mean(-1, keepdims=True)
                a = a / jnp.sqrt(ms + layer.epsilon) * w[f"{p}.scale"]
            else:
                a = a + forward(layer.layers, f"{p}.layers", w, a)
        return a

    def objective(w, xx, yy):
        out = forward(spec.layers, "layers", w, xx)
        return out.sum() if loss == "sum" else ((out - yy) ** 2).mean()

    fn = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    def step():
        return run(lambda: jax.block_until_ready(fn(ws, xs, ys)))

    return step


def raw_flax(spec, params, x, y=None, loss="sum", dtype="float32"):
    import jax
    import jax.numpy as jnp
    from flax import nnx

    jdtype = jnp.dtype(dtype)

    def make(layers, shape):
        mods = []
        for layer in layers:
            if isinstance(layer, xgrad.Dense):
                mods.append(
                    (
                        nnx.Linear(
                            shape, layer.units, rngs=nnx.Rngs(0), dtype=jdtype, param_dtype=jdtype
                        ),
                        _jax_activation(layer.activation),
                    )
                )
                shape = layer.units
            elif isinstance(layer, xgrad.LayerNorm):
                mods.append(
                    (
                        nnx.LayerNorm(
                            shape,
                            epsilon=layer.epsilon,
                            rngs=nnx.Rngs(0),
                            dtype=jdtype,
                            param_dtype=jdtype,
                        ),
                        None,
                    )
                )
            elif isinstance(layer, xgrad.RMSNorm):
                mods.append(
                    (
                        nnx.RMSNorm(
                            shape,
                            epsilon=layer.epsilon,
                            rngs=nnx.Rngs(0),
                            dtype=jdtype,
                            param_dtype=jdtype,
                        ),
                        None,
                    )
                )
            else:
                mods.append((Block(layer.layers, shape), "residual"))
        return mods

    class Block(nnx.Module):
        def __init__(self, layers, shape):
            built = make(layers, shape)
            self.layers = nnx.List([m for m, _ in built])
            self.acts = tuple(a for _, a in built)

        def __call__(self, a):
            for module, act in zip(self.layers, self.acts, strict=True):
                if act == "residual":
                    a = a + module(a)
                else:
                    a = module(a)
                    if act is not None:
                        a = act(a)
            return a

    def build():
        net = Block(spec.layers, spec.input_dim)
        return nnx.split(net)

    def run(fn):
        with jax.enable_x64(dtype == "float64"):
            return fn()

    graphdef, state = run(build)
    xs = run(lambda: jnp.asarray(x.astype(dtype)))
    ys = None if y is None else run(lambda: jnp.asarray(np.asarray(y, dtype=dtype)))

    def objective(s, xx, yy):
        out = nnx.merge(graphdef, s)(xx)
        return out.sum() if loss == "sum" else ((out - yy) ** 2).mean()

    fn = jax.jit(jax.value_and_grad(objective, argnums=(0, 1)))

    def step():
        return run(lambda: jax.block_until_ready(fn(state, xs, ys)))

    return step


def _keras_activation(name: str):
    import keras

    kind = name.split(":")[0]
    if kind == "linear":
        return None
    if kind == "gelu":
        return lambda z: keras.activations.gelu(z, approximate=False)
    if kind == "leaky_relu":
        return lambda z: keras.activations.leaky_relu(z, negative_slope=LEAKY_SLOPE)
    return kind


def raw_tensorflow(spec, params, x, y=None, loss="sum", dtype="float32"):
    import keras
    import tensorflow as tf

    def chain(layers, h):
        for layer in layers:
            if isinstance(layer, xgrad.Dense):
                act = _keras_activation(layer.activation)
                h = keras.layers.Dense(layer.units, activation=act, dtype=dtype)(h)
            elif isinstance(layer, xgrad.LayerNorm):
                h = keras.layers.LayerNormalization(epsilon=layer.epsilon, dtype=dtype)(h)
            elif isinstance(layer, xgrad.RMSNorm):
                h = keras.layers.RMSNormalization(epsilon=layer.epsilon, dtype=dtype)(h)
            else:
                h = keras.layers.Add(dtype=dtype)([h, chain(layer.layers, h)])
        return h

    inputs = keras.Input((spec.input_dim,), dtype=dtype)
    model = keras.Model(inputs, chain(spec.layers, inputs))
    xs = tf.constant(x.astype(dtype))
    ys = None if y is None else tf.constant(np.asarray(y, dtype=dtype))

    @tf.function
    def fn(xx, yy):
        with tf.GradientTape() as tape:
            tape.watch(xx)
            out = model(xx)
            value = tf.reduce_sum(out) if loss == "sum" else tf.reduce_mean((out - yy) ** 2)
        return value, tape.gradient(value, (model.trainable_variables, xx))

    def step():
        out = fn(xs, ys if ys is not None else tf.zeros((0,), dtype))
        out[0].numpy()
        return out

    return step


def raw_torch(spec, params, x, y=None, loss="sum", dtype="float32"):
    import torch
    from torch import nn

    tdtype = getattr(torch, dtype)

    def activation(name):
        kind = name.split(":")[0]
        if kind == "linear":
            return None
        if kind == "leaky_relu":
            return nn.LeakyReLU(LEAKY_SLOPE)
        return {
            "relu": nn.ReLU,
            "tanh": nn.Tanh,
            "sigmoid": nn.Sigmoid,
            "gelu": nn.GELU,
            "elu": nn.ELU,
            "selu": nn.SELU,
            "softplus": nn.Softplus,
            "silu": nn.SiLU,
        }[kind]()

    class Res(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, a):
            return a + self.block(a)

    def make(layers, shape):
        mods = []
        for layer in layers:
            if isinstance(layer, xgrad.Dense):
                mods.append(nn.Linear(shape, layer.units, dtype=tdtype))
                act = activation(layer.activation)
                if act is not None:
                    mods.append(act)
                shape = layer.units
            elif isinstance(layer, xgrad.LayerNorm):
                mods.append(nn.LayerNorm(shape, eps=layer.epsilon, dtype=tdtype))
            elif isinstance(layer, xgrad.RMSNorm):
                mods.append(nn.RMSNorm(shape, eps=layer.epsilon, dtype=tdtype))
            else:
                mods.append(Res(make(layer.layers, shape)))
        return nn.Sequential(*mods)

    net = make(spec.layers, spec.input_dim)
    xs = torch.tensor(x.astype(dtype), requires_grad=True)
    ys = None if y is None else torch.tensor(np.asarray(y, dtype=dtype))
    leaves = [*net.parameters(), xs]

    def step():
        out = net(xs)
        value = out.sum() if loss == "sum" else ((out - ys) ** 2).mean()
        grads = torch.autograd.grad(value, leaves)
        return value.item(), grads

    return step


RAW = {
    "numpy": raw_numpy,
    "jax": raw_jax,
    "flax": raw_flax,
    "tensorflow": raw_tensorflow,
    "torch": raw_torch,
}


def adapter_step(framework, spec, params, x, y=None, loss="sum", dtype="float32"):
    model = xgrad.get_framework(framework).build(spec, params, dtype=dtype)
    return lambda: model.gradients(x, y, loss=loss)


# -- sections -----------------------------------------------------------------------------


def section_overhead(frameworks, shapes, repeats):
    rows = []
    for label, spec, x in shapes:
        params = xgrad.init_params(spec, seed=0)
        for fw in frameworks:
            # interleaved, best of three medians: a slow spell of the machine hits both alike
            raw_step, our_step = RAW[fw](spec, params, x), adapter_step(fw, spec, params, x)
            raw_s, ours_s = [], []
            before = loadavg()
            for _ in range(3):
                raw_s.append(median_time(raw_step, repeats, warmup=1))
                ours_s.append(median_time(our_step, repeats, warmup=1))
            raw, ours = min(raw_s), min(ours_s)
            target = TARGETS["overhead_small" if label == "seed-3" else "overhead_large"]
            rows.append(
                {
                    "model": label,
                    "framework": fw,
                    "raw_s": raw,
                    "xgrad_s": ours,
                    "ratio": ours / raw,
                    "target": target,
                    "ok": ours / raw <= target,
                    "loadavg": before,
                }
            )
            del raw_step, our_step
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
    if "torch" in frameworks:
        import torch

        pm = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in mats]
        out["torch"] = total / median_time(lambda: [a @ b for a, b in pm], repeats) / 1e9
    return out


OWN_MATMUL = {"numpy": "numpy", "jax": "jax", "flax": "jax", "tensorflow": "tensorflow"}
OWN_MATMUL["torch"] = "torch"


def section_throughput(frameworks, overhead_rows, spec, batch, repeats):
    limits = matmul_limit(spec, batch, frameworks, repeats)
    limit = max(limits.values())
    work = flops(spec, batch)
    rows = []
    for row in overhead_rows:
        if row["model"] != "large":
            continue
        fw = row["framework"]
        own = limits.get(OWN_MATMUL[fw], limit)
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
                    "ok": gflops / limit >= target if kind == "xgrad" and target else None,
                }
            )
    return {"matmul_gflops": limits, "limit_gflops": limit, "step_gflop": work / 1e9, "rows": rows}


def _timed(fn, repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls of ``fn`` (after none: the caller warms up), and the
    last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def section_compare(frameworks, overhead_rows, spec, x, repeats):
    """The whole comparison, without and with diagnosis, against the raw steps it contains."""
    params = xgrad.init_params(spec, seed=0)
    raw = {r["framework"]: r["raw_s"] for r in overhead_rows if r["model"] == "large"}
    ref64 = median_time(raw_numpy(spec, params, x, "float64"), max(1, repeats // 2))
    baseline = ref64 + sum(raw[fw] for fw in frameworks)
    rounds = max(2, repeats // 2)

    def run(explain):
        return xgrad.compare(spec, x, params=params, frameworks=frameworks, explain=explain)

    run(False)  # first call: framework start-up, compilation, the builds kept for the next
    before = loadavg()
    whole, report = _timed(lambda: run(False), rounds)
    breakdown = dict(report.timing)
    run(None)
    diag_before = loadavg()
    with_diagnosis, explained = _timed(lambda: run(None), rounds)
    statuses = {}
    for entry in explained.entries:
        for m in entry.results.values():
            statuses[m.status] = statuses.get(m.status, 0) + 1
    return {
        "compare_s": whole,
        "raw_sum_s": baseline,
        "raw_reference_f64_s": ref64,
        "raw_s": raw,
        "ratio": whole / baseline,
        "target": TARGETS["compare"],
        "ok": whole / baseline <= TARGETS["compare"],
        "report_ok": report.ok,
        "breakdown_s": breakdown,
        "loadavg": before,
        "diagnosis": {
            "compare_s": with_diagnosis,
            "ratio": with_diagnosis / baseline,
            "target": TARGETS["compare_diagnosis"],
            "ok": with_diagnosis / baseline <= TARGETS["compare_diagnosis"],
            "report_ok": explained.ok,
            "statuses": statuses,
            "notes": list(explained.notes),
            "diagnoses": explained.diagnosis_lines(),
            "breakdown_s": dict(explained.timing),
            "loadavg": diag_before,
        },
    }


def section_exit_status(frameworks, shape) -> dict:
    """``xgrad compare`` of the large ReLU model in float32 (a correct port everywhere): the
    exit status a CI job would gate on."""
    from xgrad.cli import main as cli

    n_in, hidden, n_out, batch = shape
    layers = ",".join([*(f"{h}:relu" for h in hidden), str(n_out)])
    argv = ["compare", "--input-dim", str(n_in), "--layers", layers, "--batch", str(batch)]
    argv += ["--frameworks", ",".join(frameworks), "--quiet"]
    start = time.perf_counter()
    rc = cli(argv)
    return {"argv": argv, "exit_status": rc, "seconds": time.perf_counter() - start}


def section_metrics(frameworks, spec, repeats) -> dict:
    """The fused metric pass alone, per element and framework, against the memory-bandwidth
    floor: one read of every array it must read (the float64 reference and each framework's
    float32 array), measured as a dot product of each array with itself."""
    from xgrad.metrics import PreparedReference

    rng = np.random.default_rng(2)
    shapes = spec.weight_shapes()
    refs = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    cands = {
        name: {
            fw: (ref * (1 + 3e-7 * rng.standard_normal(ref.shape))).astype(np.float32)
            for fw in frameworks
        }
        for name, ref in refs.items()
    }
    n = sum(r.size for r in refs.values())
    k = len(frameworks)

    def fused():
        for name, ref in refs.items():
            PreparedReference(ref, dtype="float32", tol=1e-5).compare_many(cands[name])

    def floor():
        for name, ref in refs.items():
            np.einsum("i,i", ref.reshape(-1), ref.reshape(-1))
            for g in cands[name].values():
                np.einsum("i,i", g.reshape(-1), g.reshape(-1))

    before = loadavg()
    fused_s = median_time(fused, repeats, warmup=1)
    floor_s = median_time(floor, repeats, warmup=1)
    nbytes = sum(r.nbytes for r in refs.values()) + sum(
        g.nbytes for by in cands.values() for g in by.values()
    )
    return {
        "elements": n,
        "frameworks": k,
        "fused_s": fused_s,
        "fused_ns_per_element": fused_s / (n * k) * 1e9,
        "floor_s": floor_s,
        "floor_ns_per_element": floor_s / (n * k) * 1e9,
        "floor_gb_per_s": nbytes / floor_s / 1e9,
        "ratio_to_floor": fused_s / floor_s,
        "loadavg": before,
    }


def section_compare_models(overhead_rows, spec, x, repeats) -> dict | None:
    """``compare_models`` of a Keras model and a Flax NNX module holding the same weights
    (per-layer capture included) against the two models' own bare gradient steps."""
    raw = {r["framework"]: r["raw_s"] for r in overhead_rows if r["model"] == "large"}
    if "tensorflow" not in raw or "flax" not in raw:
        return None
    params = xgrad.init_params(spec, seed=0)
    keras_model = xgrad.get_framework("tensorflow").build(spec, params).native
    flax_module = xgrad.get_framework("flax").build(spec, params).native

    def run():
        return xgrad.compare_models(keras_model, flax_module, x)

    run()
    before = loadavg()
    seconds, report = _timed(run, max(2, repeats // 2))
    baseline = raw["tensorflow"] + raw["flax"]
    return {
        "compare_models_s": seconds,
        "raw_sum_s": baseline,
        "raw_s": {"tensorflow": raw["tensorflow"], "flax": raw["flax"]},
        "ratio": seconds / baseline,
        "target": TARGETS["compare_models"],
        "ok": seconds / baseline <= TARGETS["compare_models"],
        "report_ok": report.ok,
        "layers": len(report.layers),
        "breakdown_s": dict(report.timing),
        "loadavg": before,
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
        mods = {"jax": "jax", "flax": "flax", "tensorflow": "tensorflow", "torch": "torch"}
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
# The baseline (depth 0) imports every framework and runs one tiny comparison, so that it
# holds what any comparison holds whatever its size: the frameworks, their runtimes (XLA's
# client, TensorFlow's), a compiled step each. (get_framework alone imports no framework.)
tiny = xgrad.MLP(width, [xgrad.Dense(2)])
xgrad.compare(tiny, np.ones((2, width)), frameworks=fws, explain=False)
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


def section_sweep_loop(frameworks, smoke, repeats) -> dict:
    """``xgrad sweep`` of the 64-cell grid in this process (warm: the builds of a first run are
    kept), against a hand-written loop doing the same gradient steps: every framework's and
    the float64 NumPy reference's, each prepared (built, compiled) before the timed pass."""
    from xgrad.losses import random_targets
    from xgrad.sweep import SweepGrid, run_sweep

    grid = SweepGrid.from_mapping(
        {**(SMOKE_SWEEP_GRID if smoke else SWEEP_GRID), "frameworks": list(frameworks)}
    )
    steps = []
    for cell in grid.cells():
        spec = grid.spec(cell.activation, cell.loss)
        params = xgrad.init_params(spec, seed=cell.seed)
        x = np.random.default_rng(cell.seed).standard_normal((cell.batch, grid.input_dim))
        y = random_targets(cell.loss, cell.batch, spec.output_dim, cell.seed)
        steps.append(raw_numpy(spec, params, x, "float64", y=y, loss=cell.loss))
        for fw in frameworks:
            steps.append(RAW[fw](spec, params, x, y=y, loss=cell.loss, dtype=cell.dtype))
    for step in steps:  # compile and trace before timing, as a hand-written loop would once
        step()

    def hand():
        for step in steps:
            step()

    run_sweep(grid)  # first run: compilation, and the builds the next runs reuse
    before = loadavg()
    rounds = max(1, repeats)
    sweep_s, result = _timed(lambda: run_sweep(grid), rounds)
    hand_s = statistics.median(_timed(hand, 1)[0] for _ in range(rounds))
    cells = len(result.cells)
    return {
        "cells": cells,
        "frameworks": list(frameworks),
        "sweep_s": sweep_s,
        "hand_s": hand_s,
        "sweep_cells_per_s": cells / sweep_s,
        "hand_cells_per_s": cells / hand_s,
        "ratio": sweep_s / hand_s,
        "target": TARGETS["sweep"],
        "ok": sweep_s / hand_s <= TARGETS["sweep"],
        "sweep_ok": result.ok,
        "loadavg": before,
    }


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
        for col in ("model", "framework", "raw ms", "xgrad ms", "ratio", "target", "met", "load"):
            t.add_column(col)
        for r in results["overhead"]:
            t.add_row(
                r["model"],
                r["framework"],
                f"{1e3 * r['raw_s']:.4g}",
                f"{1e3 * r['xgrad_s']:.4g}",
                f"{r['ratio']:.3f}",
                f"<= {r['target']}",
                verdict(r["ok"]),
                f"{r['loadavg'][0]:.2f}",
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
                f">= {100 * r['target']:.0f}%" if r["kind"] == "xgrad" and r["target"] else "",
                verdict(r["ok"]),
            )
        console.print(t)
    if "compare" in results:
        c = results["compare"]
        d = c["diagnosis"]
        console.print(
            f"c. whole comparison: xgrad.compare {c['compare_s']:.3f} s vs the raw steps it "
            f"contains {c['raw_sum_s']:.3f} s (float64 reference {c['raw_reference_f64_s']:.3f}"
            f" s): ratio {c['ratio']:.3f} (target <= {c['target']}) {verdict(c['ok'])}; "
            f"load {c['loadavg']}"
        )
        parts = ", ".join(f"{k} {v:.3f}" for k, v in c["breakdown_s"].items())
        console.print(Text(f"   where the time goes (s): {parts}"))
        console.print(
            f"   with diagnosis (default explain): {d['compare_s']:.3f} s, ratio "
            f"{d['ratio']:.3f} (target <= {d['target']}) {verdict(d['ok'])}; report.ok "
            f"{d['report_ok']}; statuses {d['statuses']}; load {d['loadavg']}"
        )
        parts = ", ".join(f"{k} {v:.3f}" for k, v in d["breakdown_s"].items())
        console.print(Text(f"   where the time goes (s): {parts}"))
        for line in [*d["notes"], *d["diagnoses"]]:
            console.print(Text(f"   {line}"))
    if "exit_status" in results:
        e = results["exit_status"]
        console.print(Text(f"   `xgrad {' '.join(e['argv'])}`: exit status {e['exit_status']}"))
    if results.get("metrics"):
        m = results["metrics"]
        console.print(
            f"   metrics: {m['fused_ns_per_element']:.2f} ns per element and framework "
            f"({m['elements']:,} elements x {m['frameworks']}); memory-bandwidth floor "
            f"{m['floor_ns_per_element']:.2f} ns ({m['floor_gb_per_s']:.1f} GB/s): "
            f"{m['ratio_to_floor']:.1f} x the floor; load {m['loadavg']}"
        )
    if results.get("compare_models"):
        cm = results["compare_models"]
        console.print(
            f"   compare_models (Keras vs Flax, {cm['layers']} layers captured): "
            f"{cm['compare_models_s']:.3f} s vs the two bare steps {cm['raw_sum_s']:.3f} s: "
            f"ratio {cm['ratio']:.3f} (target <= {cm['target']}) {verdict(cm['ok'])}; "
            f"load {cm['loadavg']}"
        )
        parts = ", ".join(f"{k} {v:.3f}" for k, v in cm["breakdown_s"].items())
        console.print(Text(f"   where the time goes (s): {parts}"))
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
    if "sweep_loop" in results:
        sl = results["sweep_loop"]
        console.print(
            f"f. sweep in one process, {sl['cells']} cells ({', '.join(sl['frameworks'])}): "
            f"{sl['sweep_s']:.2f} s ({sl['sweep_cells_per_s']:.1f} cells/s) vs a hand-written "
            f"loop of the same steps {sl['hand_s']:.2f} s ({sl['hand_cells_per_s']:.1f} "
            f"cells/s): ratio {sl['ratio']:.2f} (target <= {sl['target']}) "
            f"{verdict(sl['ok'])}; load {sl['loadavg']}"
        )
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
    norms = SMOKE_NORMS if args.smoke else NORMS
    n_spec = norms_spec(norms)
    xn = np.random.default_rng(1).standard_normal((norms[3], norms[0])).astype(np.float32)
    from xgrad.examples import SEED_EXAMPLES

    seed = SEED_EXAMPLES[2]
    seed_spec = xgrad.MLP(10, [xgrad.Dense(8, "relu"), xgrad.Dense(5)])  # relu + linear head
    shapes = [
        ("large", spec, x),
        ("norms", n_spec, xn),
        ("seed-3", seed_spec, seed.x.astype(np.float32)),
    ]
    results: dict = {
        "machine": machine(),
        "smoke": args.smoke,
        "frameworks": frameworks,
        "large_model": {"spec": spec.describe(), "params": spec.n_params(), "batch": large[3]},
        "norms_model": {"spec": n_spec.describe(), "params": n_spec.n_params(), "batch": norms[3]},
        "loadavg_start": loadavg(),
    }
    start = time.perf_counter()

    def keep() -> None:  # what is measured so far, should a later section fail
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")

    if sections & {"a", "b", "c"}:
        results["overhead"] = section_overhead(frameworks, shapes, repeats)
    keep()
    if "b" in sections:
        results["throughput"] = section_throughput(
            frameworks, results["overhead"], spec, large[3], repeats
        )
    keep()
    if "c" in sections:
        results["compare"] = section_compare(frameworks, results["overhead"], spec, x, repeats)
        results["exit_status"] = section_exit_status(frameworks, large)
        results["metrics"] = section_metrics(frameworks, spec, repeats)
        results["compare_models"] = section_compare_models(results["overhead"], spec, x, repeats)
    keep()
    if "d" in sections:
        results["startup"] = section_startup(frameworks, 1 if args.smoke else 3, args.smoke)
    keep()
    if "e" in sections:
        sizes = [(32, 1), (64, 2)] if args.smoke else [(1000, 1), (1826, 3), (4083, 3)]
        results["memory"] = section_memory(frameworks if not args.smoke else ["numpy"], sizes)
        results["memory_fit"] = linear_fit(results["memory"])
    keep()
    if "f" in sections:
        results["sweep_loop"] = section_sweep_loop(frameworks, args.smoke, 1 if args.smoke else 3)
        results["sweep"] = section_sweep(
            frameworks, args.smoke, args.repeats or (1 if args.smoke else 3)
        )
    results["machine"] = machine()
    results["loadavg_end"] = loadavg()
    results["seconds"] = time.perf_counter() - start
    print_results(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
