"""Test helpers: random cases and finite differences, computed independently of the
frameworks under test."""

from __future__ import annotations

import functools

import numpy as np

import xgrad
from xgrad.activations import get_activation
from xgrad.losses import get_loss

ACTIVATION_NAMES = [
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "gelu",
    "gelu_tanh",
    "elu",
    "selu",
    "softplus",
    "silu",
    "leaky_relu",
    "leaky_relu:0.01",
    "relu6",
    "hard_sigmoid",
]
LOSS_NAMES = ["sum", "mean", "projection", "mse", "bce_logits", "bce", "cce_logits", "cce"]

# A model with every layer kind: the one most tests run through every framework.
EVERY_LAYER = xgrad.MLP(
    (2, 3),
    [
        xgrad.Flatten(),
        xgrad.Dense(8, "relu"),
        xgrad.LayerNorm(),
        # no bias before a batch norm: its gradient all but cancels (rounding, magnified)
        xgrad.Residual([xgrad.Dense(8, "gelu", use_bias=False), xgrad.BatchNorm(training=True)]),
        xgrad.Dropout(0.5, active=True),
        xgrad.RMSNorm(),
        xgrad.Dropout(0.25),
        xgrad.BatchNorm(),
        xgrad.Activation("tanh"),
        xgrad.Dense(3, "selu"),
    ],
)


def make_target(loss: str, rng, shape):
    if not get_loss(loss).needs_target:
        return None
    if loss in ("bce", "bce_logits"):
        return rng.uniform(0.05, 0.95, size=shape)
    if loss in ("cce", "cce_logits"):
        return np.eye(shape[1])[rng.integers(0, shape[1], size=shape[0])]
    return rng.normal(size=shape)


def last_activation_for(loss: str) -> str:
    return {"bce": "sigmoid", "cce": "softmax"}.get(loss, "linear")


def _plain_forward(spec, params, x):
    """A dense-only forward pass written again here, from the formulas."""
    a = x
    zs = []
    for i, layer in enumerate(spec.layers):
        z = a @ params[f"layers.{i}.kernel"]
        if layer.use_bias:
            z = z + params[f"layers.{i}.bias"]
        zs.append((layer.activation, z))
        a = get_activation(layer.activation)(z)
    return a, zs


def kink_distance(spec, params, x) -> float:
    """How close any pre-activation comes to its activation's kinks (inf if none)."""
    _, zs = _plain_forward(spec, params, x)
    best = np.inf
    for name, z in zs:
        for k in get_activation(name).kinks:
            best = min(best, float(np.abs(z - k).min()))
    return best


@functools.cache
def case(kind: str, name: str, seed: int = 0):
    """A dense (spec, params, x, y, loss) case away from kinks, for an activation or a loss."""
    for attempt in range(50):
        rng = np.random.default_rng(1000 * seed + attempt)
        if kind == "activation":
            spec = xgrad.MLP(
                4, [xgrad.Dense(5, name), xgrad.Dense(3, name, use_bias=False), xgrad.Dense(2)]
            )
            loss = "mse"
        else:
            spec = xgrad.MLP(4, [xgrad.Dense(5, "tanh"), xgrad.Dense(3, last_activation_for(name))])
            loss = name
        params = xgrad.init_params(spec, seed=attempt)
        x = rng.normal(size=(3, 4))
        y = make_target(loss, rng, (3, spec.output_dim))
        if kink_distance(spec, params, x) > 1e-3:
            return spec, params, x, y, loss
    raise AssertionError(f"no kink-free case for {kind} {name}")


def numeric_gradients(f, params: dict, x: np.ndarray, h: float = 1e-6):
    """Central differences of a scalar ``f(params, x)``: ``(dparams, dx)``, float64.

    ``params`` entries not to differentiate (state) should be left out by the caller's
    ``f`` closure; every entry given here is differentiated.
    """
    grads = {}
    for name, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = dict(params), dict(params)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][idx] += h
            minus[name][idx] -= h
            g[idx] = (f(plus, x) - f(minus, x)) / (2 * h)
        grads[name] = g
    gx = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[idx] += h
        xm[idx] -= h
        gx[idx] = (f(params, xp) - f(params, xm)) / (2 * h)
    return grads, gx


def finite_differences(spec, params, x, y, loss, h=1e-6):
    """Central differences of a dense spec's loss in float64: (dL/dparams, dL/dx)."""
    loss_obj = get_loss(loss)
    y_arr = loss_obj.prepare_target(y, (x.shape[0], spec.output_dim))

    def f(p, xx):
        out, _ = _plain_forward(spec, p, xx)
        return float(loss_obj.value_and_grad(out, y_arr)[0])

    return numeric_gradients(f, params, x, h)


def rel_norm(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den else float(np.linalg.norm(a - b))
