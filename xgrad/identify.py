"""Name what a layer computes from what it computed: numeric identification.

Readers see layers whose configuration the framework does not state: an activation written
as code (``jax.nn.gelu(x)``, ``Dense(activation=my_function)``), a layer norm written by
hand, an epsilon inside a function. These are named by evaluating xgrad's own definitions on
the captured values and keeping the one that reproduces them to rounding level, never by
guessing from names.

Everything here is NumPy in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.layers import BatchNorm, LayerNorm, RMSNorm
from xgrad.layers.base import AbstractLayer

__all__ = [
    "EPSILONS",
    "FIT",
    "PROBE",
    "fit_activation",
    "fit_norm",
    "leaky_slope",
    "probe_activation",
    "rel",
]

FIT = {"float64": 1e-12, "float32": 2e-6, "bfloat16": 2e-2, "float16": 4e-3}
"""How close a definition must reproduce captured values to name them, per dtype."""

EPSILONS = (1e-3, 1e-5, 1e-6, 1e-12, 1e-8, 1e-7, 1e-4, 1e-2, float(np.finfo(np.float32).eps))
"""The norm epsilons tried first: the frameworks' defaults, then other common values."""


def rel(a, b) -> float:
    """``||a - b|| / ||b||`` in float64 (0 when both are zero, inf when only b is)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        num = float(np.linalg.norm(a - b))
        den = float(np.linalg.norm(b))
    if not math.isfinite(num):
        return math.inf
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def leaky_slope(z: np.ndarray, a: np.ndarray) -> float | None:
    """The negative slope if ``a`` is a leaky ReLU of ``z`` with one slope, else ``None``."""
    # Only clearly negative z: near 0, rounding of z makes a / z noisy.
    neg = z < -1e-2 * max(float(np.abs(z).max()), 1e-30)
    if not neg.any():
        return None
    slopes = a[neg] / z[neg]
    slope = float(np.median(slopes))
    if not np.allclose(slopes, slope, rtol=1e-3, atol=0):
        return None
    for common in (0.01, 0.02, 0.1, 0.2, 0.3):  # the frameworks' defaults, exactly
        if abs(slope - common) <= 1e-5 * common:
            return common
    return round(slope, 6)


def fit_activation(z, a, dtype: str = "float64") -> tuple[str | None, float]:
    """The activation that maps ``z`` to ``a`` best: ``(name or None, relative error)``.

    ``None`` when nothing reproduces ``a`` within :data:`FIT` for ``dtype``.

    Example:
        >>> z = np.linspace(-3, 3, 13)
        >>> fit_activation(z, np.maximum(z, 0))[0]
        'relu'
    """
    z = np.asarray(z, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    candidates = list(ACTIVATIONS)
    slope = leaky_slope(z, a)
    if slope is not None:
        candidates.append(f"leaky_relu:{slope!r}")
    best, best_err = None, math.inf
    with np.errstate(all="ignore"):
        for name in candidates:
            err = rel(get_activation(name)(z), a)
            if err < best_err:
                best, best_err = name, err
    return (best if best_err <= FIT.get(dtype, 1e-5) else None), best_err


PROBE = np.linspace(-8.0, 8.0, 65).reshape(1, -1)
"""Where :func:`probe_activation` evaluates a function: steps of 0.25 through the kinks (0,
+-3, 6) and both tails of GELU, where its erf and tanh forms part."""


def probe_activation(fn: Callable[[np.ndarray], object]) -> str | None:
    """Name an activation function from its values on :data:`PROBE` (a float32 array in,
    anything ``np.asarray`` reads out), for a function whose name does not say which form it
    computes: ``keras.ops.gelu`` (the tanh form by default) and ``keras.activations.gelu``
    (erf) are both ``"gelu"`` to Keras. ``None`` when none of xgrad's activations computes it.

    Example:
        >>> probe_activation(lambda z: np.maximum(z, 0.2 * z))
        'leaky_relu:0.2'
    """
    z = PROBE.astype(np.float32)
    with np.errstate(all="ignore"):
        a = np.asarray(fn(z), dtype=np.float64)
    if a.shape != z.shape:
        return None
    return fit_activation(z, a, "float32")[0]


def _shortest(value: float) -> float:
    """A constant read from float32 code (9.99999974e-06) as it was written (1e-05)."""
    short = float(str(np.float32(value)))
    return short if abs(short - value) <= 1e-6 * abs(value) else float(value)


def _norm_candidates(
    kind: str, flags: dict, epsilons: Iterable[float], training: bool = False
) -> list[AbstractLayer]:
    out: list[AbstractLayer] = []
    for eps in epsilons:
        if kind == "layernorm":
            out.append(LayerNorm(eps, center=flags["center"], scale=flags["scale"]))
        elif kind == "rmsnorm":
            out.append(RMSNorm(eps, scale=flags["scale"]))
        else:
            out.append(
                BatchNorm(eps, training=training, center=flags["center"], scale=flags["scale"])
            )
    return out


def fit_norm(
    x,
    y,
    weights: Mapping[str, np.ndarray],
    *,
    dtype: str = "float64",
    kinds: Iterable[str] = ("layernorm", "rmsnorm", "batchnorm"),
    epsilons: Iterable[float] = (),
    training: bool = False,
) -> tuple[AbstractLayer | None, float]:
    """The normalisation layer that maps ``x`` to ``y`` with ``weights`` (local names
    ``scale``, ``bias``, ``mean``, ``var``): ``(layer or None, relative error)``.

    Tries LayerNorm, RMSNorm and inference-mode BatchNorm (when ``mean``/``var`` are given),
    or only training-mode BatchNorm (batch statistics) with ``training=True``, with the
    epsilons in ``epsilons`` (e.g. constants read from the model's code) and then
    :data:`EPSILONS`. ``None`` when nothing fits within :data:`FIT`.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    flags = {"center": "bias" in w, "scale": "scale" in w}
    eps_list = list(dict.fromkeys([*(_shortest(e) for e in epsilons if e > 0), *EPSILONS]))
    best, best_err = None, math.inf
    if training:
        kinds = ("batchnorm",)
        w.setdefault("mean", np.zeros(x.shape[-1]))
        w.setdefault("var", np.ones(x.shape[-1]))
    with np.errstate(all="ignore"):
        for kind in kinds:
            if kind == "batchnorm" and not {"mean", "var"} <= set(w):
                continue
            if kind != "batchnorm" and {"mean", "var"} & set(w):
                continue
            if kind == "rmsnorm" and flags["center"]:
                continue
            for layer in _norm_candidates(kind, flags, eps_list, training):
                local = {f"n.{k}": v for k, v in w.items()}
                err = rel(layer.forward(local, x, path="n").output, y)
                if err < best_err:
                    best, best_err = layer, err
    return (best if best_err <= FIT.get(dtype, 1e-5) else None), best_err
