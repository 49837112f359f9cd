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
from xgrad.errors import AlignmentError, XgradError
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


UNREADABLE_FIX = (
    "Fix: write that step with the framework's own module (nnx.LayerNorm, nn.GELU, "
    "keras.layers.LayerNormalization, ...) so that it is read by its kind, or pass "
    "mapping={reference parameter: candidate parameter} to compare outputs, loss and mapped "
    "gradients without per-layer localisation"
)
"""What a user can do when a step's captured values cannot be what it was read as."""


def _unreadable(name: str | None, what: str, why: str) -> AlignmentError:
    """The error of a step read as ``what`` (a normalisation, an activation) whose values
    cannot be one: ``why``, then :data:`UNREADABLE_FIX`."""
    step = f"{name!r}" if name else "a step"
    return AlignmentError(f"cannot identify {step} as {what}: {why}. {UNREADABLE_FIX}")


def _elementwise(z: np.ndarray, a: np.ndarray, name: str | None) -> None:
    """Raise :class:`~xgrad.AlignmentError` unless ``a`` has ``z``'s shape (an activation
    keeps it)."""
    if np.shape(z) != np.shape(a):
        why = (
            f"its input has shape {np.shape(z)} and its output {np.shape(a)}, but an "
            "activation keeps the shape of what it is applied to"
        )
        raise _unreadable(name, "an activation", why)


def leaky_slope(z: np.ndarray, a: np.ndarray, *, name: str | None = None) -> float | None:
    """The negative slope if ``a`` is a leaky ReLU of ``z`` with one slope, else ``None``.

    Raises:
        AlignmentError: ``z`` and ``a`` differ in shape (``name``: the step, for the message).
    """
    z, a = np.asarray(z), np.asarray(a)
    _elementwise(z, a, name)
    if z.size == 0:
        return None
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


def fit_activation(
    z, a, dtype: str = "float64", *, name: str | None = None
) -> tuple[str | None, float]:
    """The activation that maps ``z`` to ``a`` best: ``(name or None, relative error)``.

    ``None`` when nothing reproduces ``a`` within :data:`FIT` for ``dtype``.

    Raises:
        AlignmentError: ``z`` and ``a`` differ in shape (``name``: the step read, for the
            message).

    Example:
        >>> z = np.linspace(-3, 3, 13)
        >>> fit_activation(z, np.maximum(z, 0))[0]
        'relu'
    """
    z = np.asarray(z, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    candidates = list(ACTIVATIONS)
    slope = leaky_slope(z, a, name=name)
    if slope is not None:
        candidates.append(f"leaky_relu:{slope!r}")
    best, best_err = None, math.inf
    with np.errstate(all="ignore"):
        for candidate in candidates:
            err = rel(get_activation(candidate)(z), a)
            if err < best_err:
                best, best_err = candidate, err
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
    name: str | None = None,
) -> tuple[AbstractLayer | None, float]:
    """The normalisation layer that maps ``x`` to ``y`` with ``weights`` (local names
    ``scale``, ``bias``, ``mean``, ``var``, each ``(features,)``: the last axis of ``x``):
    ``(layer or None, relative error)``.

    Tries LayerNorm, RMSNorm and inference-mode BatchNorm (when ``mean``/``var`` are given),
    or only training-mode BatchNorm (batch statistics) with ``training=True``, with the
    epsilons in ``epsilons`` (e.g. constants read from the model's code) and then
    :data:`EPSILONS`. ``None`` when nothing fits within :data:`FIT`.

    Raises:
        AlignmentError: ``x`` and ``y`` differ in shape, or a weight does not hold one value
            per feature of ``x`` (``name``: the step read, for the message).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    _per_feature(x, y, w, name)
    try:
        return _fit_norm(x, y, w, dtype, kinds, epsilons, training)
    except XgradError:
        raise
    except (ValueError, IndexError, TypeError) as exc:  # xgrad's own layers refused them
        raise _unreadable(name, "a normalisation", f"{type(exc).__name__}: {exc}") from None


def _per_feature(x: np.ndarray, y: np.ndarray, w: Mapping[str, np.ndarray], name) -> None:
    """Raise :class:`~xgrad.AlignmentError` unless ``y`` has ``x``'s shape and each weight
    ``(features,)`` matches its last axis."""
    if x.shape != y.shape:
        why = (
            f"its input has shape {x.shape} and its output {y.shape}, but a normalisation "
            "keeps the shape of what it normalises"
        )
        raise _unreadable(name, "a normalisation", why)
    for local, v in w.items():
        if x.ndim == 0 or v.shape != (x.shape[-1],):
            why = (
                f"its parameter {local!r} has shape {v.shape}, but a normalisation of an "
                f"input of shape {x.shape} holds one value per feature of its last axis, "
                f"({x.shape[-1] if x.ndim else 0},)"
            )
            raise _unreadable(name, "a normalisation", why)


def _fit_norm(x, y, w, dtype, kinds, epsilons, training) -> tuple[AbstractLayer | None, float]:
    """:func:`fit_norm` on checked float64 arrays."""
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
