"""A randomized corpus of hand-written ports, each with one planted bug (or none), and the
scores of xgrad's verdicts and diagnoses on it.

Each case draws a small model (dense layers with an activation each, sometimes a layer norm
and a residual block), writes its port by hand in pure JAX (the way a person writes one:
``jax.nn`` functions, ``x @ W + b``), plants one mistake that people really make, and
compares the port with the reference in float32 (``compare_models``). The families:

* ``mlp``: the reference is xgrad's own (float64), the loss ``projection`` (``--cases``);
* ``saturated``: a sigmoid head (one unit) with ``bce`` or a softmax head with ``cce``, its
  logits scaled to near saturation and the model confidently wrong on two outputs; the
  reference xgrad's own, or built in PyTorch or Keras (float32); exact ports and one bug;
* ``dtype16``: one layer at a random depth computed in bfloat16 or float16 (its matmul and
  bias, or the whole layer): cause ``dtype`` at that layer;
* ``weights``: a convention bug and, in the same layer, a kernel (a norm's scale) off by
  0.1%: the right answer is that the weights differ (``weight-layout``'s finding, never
  confirmed); a confirmed convention is a wrong cause;
* ``batchnorm``: an inference-mode BatchNorm whose moving statistics the port closes over as
  constants; exact ports, another epsilon, batch statistics, an activation bug elsewhere.

The last four draw ``--new-cases`` cases (``--cases / 2`` by default) from streams of their
own, so the ``mlp`` cases of a seed are what they always were. The scores, overall and per
family:

* false alarms: exact ports that do not pass (must be 0);
* wrong causes: a confirmed cause other than the one planted (must be 0);
* crashes: an exception out of ``compare_models`` (must be 0), listed in the JSON;
* named: visible bugs whose planted cause is confirmed at the planted layer (>= 95%);
* localised: visible bugs whose first divergence is the planted layer;
* invisible: planted bugs that change nothing at this batch (e.g. no negative inputs).

Usage: ``python scripts/corpus.py [--cases 200] [--new-cases N] [--seed 0] [--json PATH]``
(``make fuzz``); the test suite runs a small seeded corpus (``tests/test_corpus.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    family: str = "mlp"
    detail: str = ""  # what else was drawn, in words (the new families)


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


# The families of issue 23, each case drawn from its own stream (the cases of the first
# family, "mlp", above, are what they were): saturated losses, a 16-bit layer at a random
# depth, a wrong weight beside a convention bug in the same layer, and a BatchNorm whose
# moving statistics the port closes over as constants.
FAMILIES = {
    "saturated": (
        "exact",
        "gelu-approximation",
        "activation-mismatch",
        "leaky-relu-slope",
        "layernorm-epsilon",
        "dtype",
    ),
    "dtype16": ("dtype",),
    "weights": (
        "gelu-approximation",
        "leaky-relu-slope",
        "activation-mismatch",
        "layernorm-epsilon",
    ),
    "batchnorm": ("exact", "batchnorm-epsilon", "batchnorm-mode", "activation-mismatch"),
}
NEW_CYCLE = (
    ("saturated", "exact"),
    ("dtype16", "dtype"),
    ("weights", "gelu-approximation"),
    ("batchnorm", "exact"),
    ("saturated", "gelu-approximation"),
    ("batchnorm", "batchnorm-epsilon"),
    ("saturated", "exact"),
    ("weights", "leaky-relu-slope"),
    ("dtype16", "dtype"),
    ("saturated", "activation-mismatch"),
    ("batchnorm", "batchnorm-mode"),
    ("saturated", "leaky-relu-slope"),
    ("weights", "activation-mismatch"),
    ("batchnorm", "exact"),
    ("saturated", "layernorm-epsilon"),
    ("dtype16", "dtype"),
    ("weights", "layernorm-epsilon"),
    ("batchnorm", "activation-mismatch"),
    ("saturated", "dtype"),
    ("saturated", "exact"),
)
"""Twenty cases a cycle, five of them exact ports (three saturated, two with a BatchNorm)."""

LOGIT_LO, LOGIT_HI = 14, 16.1
ACTIVATION_BUGS = ("gelu-approximation", "leaky-relu-slope", "activation-mismatch")


@dataclass
class Plan:
    """What a case of the new families draws: the model, and where its bug is."""

    family: str
    bug: str
    width: int
    acts: list[str]
    planted: int  # the Dense layer of the bug or the 16-bit layer (len(acts): the head)
    norm: str | None  # "layernorm" or "batchnorm", after the first Dense layer
    block: bool  # a residual block before the head
    head: str  # the head's activation: linear, sigmoid (loss bce) or softmax (loss cce)
    half: tuple[str, bool] | None  # the 16-bit layer's dtype, and whether all of it is
    reference: str  # the reference: xgrad's own (float64), or built in torch or tensorflow


def _draw(rng: np.random.Generator, family: str, bug: str) -> Plan:
    width = int(rng.choice([6, 8]))
    depth = int(rng.integers(2, 4))
    acts = [str(rng.choice(ACTIVATIONS)) for _ in range(depth)]
    norm = "batchnorm" if family == "batchnorm" else None
    if family != "batchnorm" and (rng.integers(0, 2) or bug == "layernorm-epsilon"):
        norm = "layernorm"
    block = bool(rng.integers(0, 2))
    head = str(rng.choice(["sigmoid", "softmax"])) if family == "saturated" else "linear"
    planted = int(rng.integers(0, depth + (bug == "dtype")))  # the head may be 16-bit too
    host = {"gelu-approximation": "gelu", "leaky-relu-slope": "leaky_relu"}.get(bug)
    if host:
        acts[planted] = host
    if bug == "activation-mismatch" and acts[planted] in ("gelu", "leaky_relu"):
        acts[planted] = str(rng.choice(["relu", "tanh", "sigmoid", "elu", "silu", "softplus"]))
    half = None
    if bug == "dtype":
        half = (str(rng.choice(["bfloat16", "float16"])), bool(rng.integers(0, 2)))
    reference = "xgrad"
    if family == "saturated":  # the trials: float32 Keras and PyTorch references
        reference = str(rng.choice(["xgrad", "torch", "tensorflow"]))
    return Plan(family, bug, width, acts, planted, norm, block, head, half, reference)


def _spec(plan: Plan) -> tuple[xgrad.MLP, dict]:
    """The reference's spec, and the canonical path of each layer (Dense layers by index,
    the head as ``len(acts)``)."""
    layers, path_of = [], {}
    for i, act in enumerate(plan.acts):
        path_of[i] = f"layers.{len(layers)}"
        layers.append(xgrad.Dense(plan.width, act))
        if i == 0 and plan.norm:
            path_of["norm"] = f"layers.{len(layers)}"
            norm = xgrad.LayerNorm if plan.norm == "layernorm" else xgrad.BatchNorm
            layers.append(norm(1e-3))
    if plan.block:
        path_of["block"] = f"layers.{len(layers)}"
        layers.append(xgrad.Residual([xgrad.Dense(plan.width, "tanh")]))
    path_of[len(plan.acts)] = f"layers.{len(layers)}"
    layers.append(
        xgrad.Dense(1 if plan.head == "sigmoid" else 3, plan.head)
    )  # a binary classifier: one unit
    return xgrad.MLP(5, layers), path_of


def _native_names(plan: Plan, path_of: dict) -> dict[str, str]:
    """Canonical parameter path -> the port's own name (the head's ``w{len(acts)}``)."""
    names = {}
    for i in range(len(plan.acts) + 1):
        names[f"{path_of[i]}.kernel"], names[f"{path_of[i]}.bias"] = f"w{i}", f"b{i}"
    if plan.norm:
        names[f"{path_of['norm']}.scale"], names[f"{path_of['norm']}.bias"] = "g", "beta"
    if plan.block:
        names[f"{path_of['block']}.layers.0.kernel"] = "rw"
        names[f"{path_of['block']}.layers.0.bias"] = "rb"
    return names


def _port_of(plan: Plan, stats):
    """The hand-written port ``(params, x) -> output``, and its head's pre-activation;
    ``stats``: the BatchNorm's moving mean and variance, closed over as constants."""
    import jax
    import jax.numpy as jnp

    depth = len(plan.acts)
    fns = [
        _jax_activation(a, plan.bug if i == plan.planted and plan.bug in ACTIVATION_BUGS else None)
        for i, a in enumerate(plan.acts)
    ]
    head = {"linear": lambda z: z, "sigmoid": jax.nn.sigmoid, "softmax": jax.nn.softmax}

    def dense(p, i, h, f):
        w, b = p[f"w{i}"], p[f"b{i}"]
        if plan.half is None or i != plan.planted:
            return f(h @ w + b)
        low, whole = plan.half  # in 16 bits: the matmul and bias, or the activation too
        z = h.astype(low) @ w.astype(low) + b.astype(low)
        return f(z).astype(jnp.float32) if whole else f(z.astype(jnp.float32))

    def norm(p, h):
        if plan.norm == "layernorm":
            eps = 1e-5 if plan.bug == "layernorm-epsilon" else 1e-3
            mean = h.mean(-1, keepdims=True)
            var = ((h - mean) ** 2).mean(-1, keepdims=True)
        else:
            eps = 1e-5 if plan.bug == "batchnorm-epsilon" else 1e-3
            mean, var = stats
            if plan.bug == "batchnorm-mode":  # the batch's own statistics
                mean = h.mean(0)
                var = ((h - mean) ** 2).mean(0)
        return (h - mean) * jax.lax.rsqrt(var + eps) * p["g"] + p["beta"]

    def body(p, x):
        h = x
        for i, f in enumerate(fns):
            h = dense(p, i, h, f)
            if i == 0 and plan.norm:
                h = norm(p, h)
        if plan.block:
            h = h + jnp.tanh(h @ p["rw"] + p["rb"])
        return h

    def port(p, x):
        return dense(p, depth, body(p, x), head[plan.head])

    def logits(p, x):
        return dense(p, depth, body(p, x), head["linear"])

    return port, logits


def _moving_statistics(rng, plan: Plan, params: dict, path_of: dict):
    """Moving statistics as training leaves them: those of the first layer's outputs on
    another batch; written into the reference's ``params``, returned as JAX constants."""
    import jax.numpy as jnp

    other = (2 * rng.standard_normal((32, 5))).astype(np.float32)
    first = path_of[0]
    z = other @ params[f"{first}.kernel"] + params[f"{first}.bias"]
    h = np.asarray(_jax_activation(plan.acts[0], None)(jnp.asarray(z)), dtype=np.float32)
    norm = path_of["norm"]
    params[f"{norm}.mean"] = h.mean(0)
    params[f"{norm}.var"] = np.maximum(h.var(0), 0.05).astype(np.float32)
    return jnp.asarray(params[f"{norm}.mean"]), jnp.asarray(params[f"{norm}.var"])


def _saturate(rng, plan: Plan, params, own, logits, x, head: str):
    """Scale the head so that its most saturated output lies where float32 keeps only a few
    digits of ``1 - p`` (a logit, or a softmax row's spread, drawn in [LOGIT_LO, LOGIT_HI]:
    float32's sigmoid reaches the clipping bound 1 - 1.2e-7 near 16), and make the model
    confidently wrong on the two most saturated outputs (dL/d output ~ 1 / (1 - p) or
    1 / p); returns the loss and its
    targets (the others drawn at random)."""
    import jax.numpy as jnp

    depth = len(plan.acts)
    z = np.asarray(logits(own, x), np.float64)
    spread = np.abs(z) if plan.head == "sigmoid" else z.max(-1) - z.min(-1)
    scale = rng.uniform(LOGIT_LO, LOGIT_HI) / float(spread.max())
    for name, native in ((f"{head}.kernel", f"w{depth}"), (f"{head}.bias", f"b{depth}")):
        params[name] = (params[name] * scale).astype(np.float32)
        own[native] = jnp.asarray(params[name])
    top = np.argsort(spread, axis=None)[-2:]  # confidently wrong on the two most saturated
    if plan.head == "sigmoid":
        y = rng.integers(0, 2, size=z.shape).astype(np.float32)
        for i, j in zip(*np.unravel_index(top, z.shape), strict=True):
            y[i, j] = float(z[i, j] < 0)
        return "bce", y
    classes = rng.integers(0, 3, size=len(x))
    classes[top] = np.argmin(z[top], axis=-1)
    return "cce", np.eye(3, dtype=np.float32)[classes]


def make_family_case(seed: int, family: str, bug: str) -> Case:
    """A case of one of the new families (:data:`FAMILIES`) with ``bug`` planted."""
    import jax.numpy as jnp

    rng = np.random.default_rng(
        [seed, 23, list(FAMILIES).index(family), FAMILIES[family].index(bug)]
    )
    plan = _draw(rng, family, bug)
    spec, path_of = _spec(plan)
    params = {k: v.astype(np.float32) for k, v in xgrad.init_params(spec, seed=seed).items()}
    x = (2 * rng.standard_normal((8, 5))).astype(np.float32)
    stats = _moving_statistics(rng, plan, params, path_of) if plan.norm == "batchnorm" else None
    own = {native: jnp.asarray(params[c]) for c, native in _native_names(plan, path_of).items()}
    port, logits = _port_of(plan, stats)
    loss, y = "projection", None
    if plan.head != "linear":
        loss, y = _saturate(rng, plan, params, own, logits, x, path_of[len(plan.acts)])
    on_norm = bug in ("layernorm-epsilon", "batchnorm-epsilon", "batchnorm-mode")
    layer = None if bug == "exact" else path_of["norm" if on_norm else plan.planted]
    if family == "weights":  # the same layer's kernel (a norm's scale) off by 0.1%
        native = "g" if on_norm else f"w{plan.planted}"
        noise = 1 + 1e-3 * rng.standard_normal(own[native].shape)
        own[native] = jnp.asarray((np.asarray(own[native]) * noise).astype(np.float32))
    reference = (spec, params)
    if plan.reference in xgrad.available_frameworks():
        reference = xgrad.get_framework(plan.reference).build(spec, params, dtype="float32").native
    return Case(seed, bug, layer, reference, (port, own), x, loss, y, family, _detail(plan))


def _detail(plan: Plan) -> str:
    words = [f"{plan.reference} reference", f"{'-'.join(plan.acts)}", f"head {plan.head}"]
    if plan.norm:
        words.append(plan.norm)
    if plan.half:
        words.append(f"{plan.half[0]} {'whole layer' if plan.half[1] else 'operands'}")
    return ", ".join(words)


EXPECTED_CAUSE = {
    "backward-derivative": "activation-mismatch",
}


WEIGHTS_DIFFER = re.compile(r"weights of layer \S+ differ")
"""How a finding says that a layer's weights differ (``weight-layout``'s test words it so)."""


def expected_cause(case: Case) -> str:
    """The cause a right diagnosis names: the planted convention, or for a port whose weights
    differ too (family ``weights``) that they differ (``weight-layout``)."""
    if case.family == "weights":
        return "weight-layout"
    return EXPECTED_CAUSE.get(case.bug, case.bug)


def _right(case: Case, cause: str, d) -> bool:
    """Whether diagnosis ``d`` names what was planted: the cause, confirmed at the planted
    layer; for family ``weights``, that the weights differ at that layer, which no convention
    confirms (``weight-layout``'s finding, or an unexplained one that says so)."""
    if d.layer != case.layer:
        return False
    if case.family == "weights":
        return d.cause == cause or bool(WEIGHTS_DIFFER.search(d.detail))
    return d.cause == cause and d.confirmed


def run_case(case: Case) -> dict:
    """The verdict and diagnosis on one case, and how they score; an exception out of
    ``compare_models`` is a crash, with its message."""
    row = {"seed": case.seed, "family": case.family, "bug": case.bug, "layer": case.layer}
    if case.detail:
        row["detail"] = case.detail
    try:
        report = xgrad.compare_models(case.reference, case.port, case.x, case.y, loss=case.loss)
    except Exception as error:  # noqa: BLE001 - any exception is what is counted
        message = f"{type(error).__name__}: {error}"
        return {**row, "ok": None, "outcome": "crash", "error": message[:600], "localised": False}
    cause = expected_cause(case)
    confirmed = [d for d in report.diagnoses if d.confirmed]
    first = report.divergences[0].path if report.divergences else None
    row.update(
        ok=report.ok,
        causes=[f"{d.cause}@{d.layer}" for d in report.diagnoses],
        confirmed=[f"{d.cause}@{d.layer}" for d in confirmed],
        first_divergence=first,
    )
    right = [d for d in report.diagnoses if _right(case, cause, d)]
    if case.bug == "exact":
        row["outcome"] = "pass" if report.ok else "false-alarm"
    elif report.ok:
        row["outcome"] = "invisible"
    elif any(d.cause not in (cause, "dtype") for d in confirmed):
        row["outcome"] = "wrong-cause"
    elif right:
        row["outcome"] = "named"
    else:
        row["outcome"] = "unnamed"
    row["localised"] = case.layer is None or first == case.layer
    if row["outcome"] not in ("pass", "named", "invisible"):
        row["said"] = [report.summary(), *report.diagnosis_lines()[:3]]
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
        "crashes": sum(r["outcome"] == "crash" for r in rows),
        "named": sum(r["outcome"] == "named" for r in visible),
        "named_rate": sum(r["outcome"] == "named" for r in visible) / max(len(visible), 1),
        "localised_rate": sum(r["localised"] for r in visible) / max(len(visible), 1),
    }


def family_scores(rows: list[dict]) -> dict[str, dict]:
    """:func:`scores` of each family's rows, in the order the families first appear."""
    families = dict.fromkeys(r["family"] for r in rows)
    return {f: scores([r for r in rows if r["family"] == f]) for f in families}


CYCLE = ("exact",) * 4 + BUGS[1:]
"""Exact ports are a quarter of the corpus: false alarms are what a CI job suffers from."""


def corpus(cases: int, seed: int = 0, new_cases: int = 0) -> list[Case]:
    """``cases`` of the first family (``mlp``, drawn as they always were), then ``new_cases``
    of the families of :data:`FAMILIES`, in the order of :data:`NEW_CYCLE`."""
    out = []
    for k in range(cases):
        case = make_case(seed * 100_000 + k, CYCLE[k % len(CYCLE)])
        if case is not None:
            out.append(case)
    for k in range(new_cases):
        family, bug = NEW_CYCLE[k % len(NEW_CYCLE)]
        out.append(make_family_case(seed * 100_000 + 50_000 + k, family, bug))
    return out


def _print(result: dict) -> None:
    for row in result["rows"]:
        if row["outcome"] not in ("pass", "named", "invisible"):
            print(row)
    keys = ("cases", "false_alarms", "wrong_causes", "crashes", "visible", "named_rate")
    print(f"{'family':<10}" + "".join(f"{k:>15}" for k in (*keys, "localised_rate")))
    for family, s in {**result["families"], "all": result["scores"]}.items():
        cells = [f"{s[k]:.3f}" if isinstance(s[k], float) else str(s[k]) for k in keys]
        cells.append(f"{s['localised_rate']:.3f}")
        print(f"{family:<10}" + "".join(f"{c:>15}" for c in cells))
    print(json.dumps(result["scores"], indent=2))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=200, help="cases of the first family")
    parser.add_argument(
        "--new-cases", type=int, default=None, help="cases of the other families (--cases / 2)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    new_cases = args.cases // 2 if args.new_cases is None else args.new_cases
    rows = [run_case(case) for case in corpus(args.cases, args.seed, new_cases)]
    crashes = [
        {k: r[k] for k in ("seed", "family", "bug", "error")}
        for r in rows
        if r["outcome"] == "crash"
    ]
    result = {
        "scores": scores(rows),
        "families": family_scores(rows),
        "crashes": crashes,
        "rows": rows,
    }
    _print(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    s = result["scores"]
    good = s["false_alarms"] == 0 and s["wrong_causes"] == 0 and s["crashes"] == 0
    return 0 if good and s["named_rate"] >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
