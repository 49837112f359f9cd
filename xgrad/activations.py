"""Activation functions: one definition each, with its derivative and its kink convention.

This module is the single source of truth for what an activation name means in xgrad. The
NumPy functions here are the definition; every adapter implements exactly this function and
this derivative in its own framework (its tests check that, kinks included).

At a kink (a point where the function is not differentiable) xgrad uses the value that
TensorFlow's gradient kernels use, because the seed examples are TensorFlow's:

========================  =============================================================
activation                derivative at the kink
========================  =============================================================
relu                      relu'(0) = 0
leaky_relu:s              leaky'(0) = s
relu6                     relu6'(0) = 0 and relu6'(6) = 0
hard_sigmoid              hard_sigmoid'(-3) = 0 and hard_sigmoid'(3) = 0
selu                      selu'(0) = scale = 1.0507...  (JAX and PyTorch give scale * alpha)
elu                       elu'(0) = 1 (both sides agree for alpha = 1)
========================  =============================================================

Names: ``linear``, ``relu``, ``sigmoid``, ``tanh``, ``softmax`` and ``log_softmax`` (over
the last axis),
``gelu`` (exact erf form), ``gelu_tanh`` (tanh approximation), ``elu`` (alpha 1), ``selu``,
``softplus``, ``silu`` (alias ``swish``), ``leaky_relu`` (default slope 0.2, the slope of
Keras ``Dense(activation="leaky_relu")``; write ``leaky_relu:0.01`` for JAX's and PyTorch's
default), ``relu6``, ``hard_sigmoid`` (Keras 3 definition, ``relu6(x + 3) / 6``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xgrad.errors import SpecError

__all__ = [
    "ACTIVATIONS",
    "DEFAULT_LEAKY_SLOPE",
    "SELU_ALPHA",
    "SELU_SCALE",
    "Activation",
    "get_activation",
]

DEFAULT_LEAKY_SLOPE = 0.2
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
GELU_TANH_COEFF = 0.044715
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

Array = np.ndarray  # any float dtype; the result keeps the input's dtype


def _erf(x: Array) -> Array:
    """Elementwise erf; scipy's when it is installed, else the standard library's."""
    try:
        from scipy.special import erf
    except ImportError:  # pragma: no cover - scipy comes with jax, but numpy-only installs lack it
        return np.vectorize(math.erf, otypes=[x.dtype])(x)
    return erf(x).astype(x.dtype, copy=False)


def _sigmoid(z: Array) -> Array:
    # exp of a non-positive number only: no overflow for large |z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _softmax(z: Array) -> Array:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(z: Array) -> Array:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _gelu(z: Array) -> Array:
    return 0.5 * z * (1 + _erf(z / np.sqrt(z.dtype.type(2))))


def _gelu_grad(z: Array) -> Array:
    cdf = 0.5 * (1 + _erf(z / np.sqrt(z.dtype.type(2))))
    pdf = np.exp(-0.5 * z * z) / np.sqrt(z.dtype.type(2 * math.pi))
    return cdf + z * pdf


def _gelu_tanh(z: Array) -> Array:
    return 0.5 * z * (1 + np.tanh(_SQRT_2_OVER_PI * (z + GELU_TANH_COEFF * z**3)))


def _gelu_tanh_grad(z: Array) -> Array:
    t = np.tanh(_SQRT_2_OVER_PI * (z + GELU_TANH_COEFF * z**3))
    du = _SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_COEFF * z * z)
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * du


def _selu(z: Array) -> Array:
    return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0)))


def _elu(z: Array) -> Array:
    return np.where(z > 0, z, np.expm1(np.minimum(z, 0)))


def _softplus(z: Array) -> Array:
    return np.log1p(np.exp(-np.abs(z))) + np.maximum(z, 0)


def _one(z: Array) -> Array:
    return np.ones_like(z)


@dataclass(frozen=True)
class Activation:
    """One activation: its value, its derivative and where its kinks are.

    Attributes:
        name: canonical name, e.g. ``"relu"`` or ``"leaky_relu:0.01"``.
        kind: the family without parameters, e.g. ``"leaky_relu"``.
        slope: the negative slope of ``leaky_relu``; ``None`` for the others.
        kinks: the inputs where the derivative is a convention, not a limit.
        value: NumPy function ``z -> a``, elementwise except softmax (last axis).
        derivative: NumPy function ``z -> a'(z)`` (elementwise), ``None`` for softmax and
            log_softmax (see :meth:`vjp`).
    """

    name: str
    kind: str
    value: Callable[[Array], Array] = field(repr=False, compare=False)
    derivative: Callable[[Array], Array] | None = field(repr=False, compare=False)
    kinks: tuple[float, ...] = ()
    slope: float | None = None

    def __call__(self, z: Array) -> Array:
        return self.value(z)

    def vjp(self, z: Array, a: Array, grad_a: Array) -> Array:
        """Back-propagate ``grad_a = dL/da`` through the activation: returns ``dL/dz``.

        ``delta = grad_a * a'(z)`` for elementwise activations; for softmax the product
        with its Jacobian, ``a * (grad_a - sum(grad_a * a, axis=-1))``; for log_softmax
        ``grad_a - softmax(z) * sum(grad_a, axis=-1)``.
        """
        if self.kind == "softmax":
            return a * (grad_a - np.sum(grad_a * a, axis=-1, keepdims=True))
        if self.kind == "log_softmax":  # a = z - logsumexp(z): dz = g - softmax(z) * sum(g)
            return grad_a - np.exp(a) * np.sum(grad_a, axis=-1, keepdims=True)
        if self.kind == "linear":  # the same numbers, without multiplying by ones
            return grad_a
        if self.kind == "relu":  # the same numbers, without casting the mask first
            return grad_a * (z > 0)
        return grad_a * self.derivative(z)

    def other_kink_derivatives(self) -> dict[float, tuple[float, ...]]:
        """At each kink, the derivative values frameworks use there, xgrad's included.

        ``0.5`` is what ``jnp.maximum(x, 0)`` and lax's balanced min/max give at a tie; a
        ``>=`` comparison (``jax.nn.leaky_relu``) takes the right-hand slope; JAX's and
        PyTorch's ``selu`` take ``scale * alpha`` at 0.
        """
        if self.kind == "leaky_relu":
            s = self.slope
            return {0.0: (s, 1.0, (1 + s) / 2)}
        return _KINK_ALTERNATIVES.get(self.kind, {})

    def side_derivative(self, z: Array, a: Array) -> Array | None:
        """The derivative on the side of each kink that the activation values ``a`` show
        (``None`` for activations without kinks): how a computation that rounded ``z`` to
        the other side of a kink differentiates there."""
        if self.kind == "relu":
            return (a > 0).astype(np.float64)
        if self.kind == "leaky_relu":
            return np.where(a > 0, 1.0, self.slope)
        if self.kind == "relu6":
            return ((a > 0) & (a < 6)).astype(np.float64)
        if self.kind == "hard_sigmoid":
            return ((a > 0) & (a < 1)).astype(np.float64) / 6
        if self.kind == "selu":
            return np.where(a > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0)))
        return None


_KINK_ALTERNATIVES = {
    "relu": {0.0: (0.0, 1.0, 0.5)},
    "relu6": {0.0: (0.0, 1.0, 0.5), 6.0: (0.0, 1.0, 0.5)},
    "hard_sigmoid": {-3.0: (0.0, 1 / 6, 1 / 12), 3.0: (0.0, 1 / 6, 1 / 12)},
    "selu": {0.0: (SELU_SCALE, SELU_SCALE * SELU_ALPHA, SELU_SCALE * (1 + SELU_ALPHA) / 2)},
}


def _leaky(slope: float) -> Activation:
    return Activation(
        name=f"leaky_relu:{slope!r}",
        kind="leaky_relu",
        value=lambda z: np.where(z > 0, z, z.dtype.type(slope) * z),
        derivative=lambda z: np.where(z > 0, 1, slope).astype(z.dtype),
        kinks=(0.0,),
        slope=slope,
    )


def _make_table() -> dict[str, Activation]:
    def sig_grad(z: Array) -> Array:
        s = _sigmoid(z)
        return s * (1 - s)

    table = [
        Activation("linear", "linear", lambda z: z, _one),
        Activation(
            "relu",
            "relu",
            lambda z: np.maximum(z, 0),
            lambda z: (z > 0).astype(z.dtype),
            kinks=(0.0,),
        ),
        Activation("sigmoid", "sigmoid", _sigmoid, sig_grad),
        Activation("tanh", "tanh", np.tanh, lambda z: 1 - np.tanh(z) ** 2),
        Activation("softmax", "softmax", _softmax, None),
        Activation("log_softmax", "log_softmax", _log_softmax, None),
        Activation("gelu", "gelu", _gelu, _gelu_grad),
        Activation("gelu_tanh", "gelu_tanh", _gelu_tanh, _gelu_tanh_grad),
        Activation(
            "elu",
            "elu",
            _elu,
            lambda z: np.where(z >= 0, 1, np.exp(np.minimum(z, 0))).astype(z.dtype),
            kinks=(0.0,),
        ),
        Activation(
            "selu",
            "selu",
            _selu,
            lambda z: np.where(
                z >= 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0))
            ).astype(z.dtype),
            kinks=(0.0,),
        ),
        Activation("softplus", "softplus", _softplus, _sigmoid),
        Activation(
            "silu",
            "silu",
            lambda z: z * _sigmoid(z),
            lambda z: _sigmoid(z) * (1 + z * (1 - _sigmoid(z))),
        ),
        Activation(
            "relu6",
            "relu6",
            lambda z: np.clip(z, 0, 6),
            lambda z: ((z > 0) & (z < 6)).astype(z.dtype),
            kinks=(0.0, 6.0),
        ),
        Activation(
            "hard_sigmoid",
            "hard_sigmoid",
            lambda z: np.clip(z + 3, 0, 6) / 6,
            lambda z: ((z > -3) & (z < 3)).astype(z.dtype) / 6,
            kinks=(-3.0, 3.0),
        ),
    ]
    return {a.name: a for a in table}


ACTIVATIONS: dict[str, Activation] = _make_table()
"""The parameter-free activations by name (``leaky_relu`` is made per slope)."""

_ALIASES = {"swish": "silu", None: "linear"}
_KNOWN = sorted([*ACTIVATIONS, "leaky_relu", "leaky_relu:<slope>", "swish"])


def get_activation(name: str | None) -> Activation:
    """Return the :class:`Activation` for a name such as ``"relu"`` or ``"leaky_relu:0.01"``.

    Args:
        name: an activation name (case-insensitive); ``None`` means ``"linear"``.

    Raises:
        SpecError: the name is unknown, or a leaky slope is not a finite number.

    Example:
        >>> get_activation("leaky_relu").name
        'leaky_relu:0.2'
        >>> get_activation("swish").name
        'silu'
    """
    if name is not None and not isinstance(name, str):
        raise SpecError(
            f"activation must be a name (str), got {type(name).__name__} {name!r}; "
            f"known names: {', '.join(_KNOWN)}"
        )
    return _lookup(name)


@functools.lru_cache(maxsize=1024)
def _lookup(name: str | None) -> Activation:
    key = "linear" if name is None else name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in ACTIVATIONS:
        return ACTIVATIONS[key]
    if key == "leaky_relu":
        return _leaky(DEFAULT_LEAKY_SLOPE)
    if key.startswith("leaky_relu:"):
        text = key.split(":", 1)[1]
        try:
            slope = float(text)
        except ValueError:
            raise SpecError(
                f"leaky_relu slope must be a number, got {text!r} in {name!r}; "
                "write e.g. 'leaky_relu:0.01'"
            ) from None
        if not math.isfinite(slope):
            raise SpecError(f"leaky_relu slope must be finite, got {slope!r} in {name!r}")
        return _leaky(slope)
    raise SpecError(f"unknown activation {name!r}; known names: {', '.join(_KNOWN)}")
