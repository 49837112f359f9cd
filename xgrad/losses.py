"""Losses: one documented formula each, with an explicit reduction.

``out`` is the model output of shape ``(batch, units)``; ``y`` the targets, same shape (class
labels of shape ``(batch,)`` are accepted by the categorical losses and turned into one-hot
rows). ``N = batch * units`` is the element count, ``B = batch``. The reductions are those of
Keras' default ``sum_over_batch_size`` for the matching Keras loss.

=============  ==========================================================  ===========
name           formula                                                     needs ``y``
=============  ==========================================================  ===========
sum            ``sum(out)`` (the seed's ``tf.reduce_sum(output)``)         no
projection     ``sum(out * y)``: a fixed random direction ``y``             yes (drawn)
mean           ``sum(out) / N``                                            no
mse            ``sum((out - y)**2) / N``                                   yes
bce_logits     ``sum(max(out,0) - out*y + log1p(exp(-|out|))) / N``        yes
bce            ``-sum(y*log(p) + (1-y)*log(1-p)) / N``, ``p = clip(out)``  yes
cce_logits     ``-sum(y * log_softmax(out)) / B``                          yes
cce            ``-sum(y * log(clip(out))) / B``                            yes
=============  ==========================================================  ===========

``projection`` is the loss whose gradients are never degenerate: ``dL/d output = y``, a
seeded random direction, so every parameter receives a non-zero, informative gradient
(``sum`` of a softmax output is constant and gives gradients of pure rounding noise).
It is the default of :func:`xgrad.compare_models` and ``xgrad port``; ``y`` is drawn from
the seed when not given.

``clip`` limits probabilities to ``[EPSILON, 1 - EPSILON]`` with ``EPSILON = 1e-7`` (Keras'
``backend.epsilon()``); the gradient passes through where ``EPSILON <= p <= 1 - EPSILON`` and is
0 outside. In float32 the upper limit ``1 - 1e-7`` rounds to ``1 - 1.19e-7``, so a saturated
float32 loss differs from the float64 one by the definition itself. Unlike Keras, ``cce``
does not first divide ``out`` by its row sum (for softmax outputs that changes nothing), and
no framework's logits shortcut is taken: xgrad's adapters all evaluate these formulas
literally.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xgrad._checks import require_finite
from xgrad.errors import InputError, SpecError

__all__ = ["EPSILON", "LOSSES", "Loss", "get_loss", "random_targets"]

EPSILON = 1e-7

Array = np.ndarray


def _clip(p: Array) -> tuple[Array, Array]:
    """Clipped probabilities and the mask where the gradient passes."""
    lo, hi = p.dtype.type(EPSILON), p.dtype.type(1 - EPSILON)
    inside = (p >= lo) & (p <= hi)
    return np.where(p < lo, lo, np.where(p > hi, hi, p)), inside


def _log_softmax(z: Array) -> Array:
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _sum(out, y):
    return out.sum(), np.ones_like(out)


def _projection(out, y):
    return (out * y).sum(), y.astype(out.dtype, copy=True)


def _mean(out, y):
    return out.mean(), np.full_like(out, 1 / out.size)


def _mse(out, y):
    d = out - y
    return (d * d).sum() / out.size, 2 * d / out.size


def _bce_logits(out, y):
    value = (np.maximum(out, 0) - out * y + np.log1p(np.exp(-np.abs(out)))).sum() / out.size
    e = np.exp(-np.abs(out))
    sig = np.where(out >= 0, 1 / (1 + e), e / (1 + e))
    return value, (sig - y) / out.size


def _bce(out, y):
    p, inside = _clip(out)
    value = -(y * np.log(p) + (1 - y) * np.log(1 - p)).sum() / out.size
    grad = np.where(inside, (-y / p + (1 - y) / (1 - p)) / out.size, 0)
    return value, grad.astype(out.dtype)


def _cce_logits(out, y):
    logp = _log_softmax(out)
    batch = out.shape[0]
    value = -(y * logp).sum() / batch
    grad = (np.exp(logp) * y.sum(axis=-1, keepdims=True) - y) / batch
    return value, grad


def _cce(out, y):
    p, inside = _clip(out)
    batch = out.shape[0]
    value = -(y * np.log(p)).sum() / batch
    return value, np.where(inside, -y / p / batch, 0).astype(out.dtype)


@dataclass(frozen=True)
class Loss:
    """One loss: its formula as a NumPy function and whether it needs targets.

    Attributes:
        name: the loss name, e.g. ``"mse"``.
        needs_target: whether ``y`` is required.
        categorical: whether ``y`` may be class labels of shape ``(batch,)``.
        reduction: how elements are combined, in words.
        value_and_grad: NumPy ``(out, y) -> (loss, dL/dout)`` in ``out``'s dtype.
    """

    name: str
    needs_target: bool
    categorical: bool
    reduction: str
    value_and_grad: Callable[[Array, Array | None], tuple[Array, Array]] = field(
        repr=False, compare=False
    )

    def prepare_target(self, y, out_shape: tuple[int, ...]) -> Array | None:
        """Check ``y`` against the model output shape ``(batch, ..., units)`` and return it
        as a float64 array.

        Class labels (integers of the output's shape without its last axis: ``(batch,)``,
        or ``(batch, tokens)`` for a sequence) become one-hot along the last axis for the
        categorical losses. Losses without targets return ``None`` and ignore ``y``.

        Raises:
            InputError: ``y`` is missing, mis-shaped, not numeric, or has labels out of range.
        """
        if not self.needs_target:
            return None
        if y is None:
            raise InputError(
                f"loss {self.name!r} needs targets y of shape {out_shape}; pass y=..., "
                "or use loss='sum' or 'mean' which need none"
            )
        arr = np.asarray(y)
        out_shape = tuple(out_shape)
        units = out_shape[-1]
        labels = out_shape[:-1]
        if self.categorical and arr.shape == labels:
            if not np.issubdtype(arr.dtype, np.integer):
                raise InputError(
                    f"class labels for loss {self.name!r} must be integers, got dtype "
                    f"{arr.dtype}; pass integer labels of shape {labels} or one-hot "
                    f"targets of shape {out_shape}"
                )
            bad = (arr < 0) | (arr >= units)
            if bad.any():
                where = np.unravel_index(int(np.argmax(bad)), arr.shape)
                position = where[0] if len(where) == 1 else tuple(int(i) for i in where)
                raise InputError(
                    f"class label {int(arr[bad][0])} at position {position} is out "
                    f"of range for {units} output units (labels must be in 0..{units - 1})"
                )
            return np.eye(units, dtype=np.float64)[arr]
        if not (
            np.issubdtype(arr.dtype, np.floating)
            or np.issubdtype(arr.dtype, np.integer)
            or arr.dtype == np.bool_
        ):
            raise InputError(f"targets y must be numeric, got dtype {arr.dtype}")
        if arr.shape != out_shape:
            hint = f" or integer labels of shape {labels}" if self.categorical else ""
            axes = "(batch, units)" if len(out_shape) == 2 else "(the output's shape)"
            raise InputError(
                f"targets y have shape {arr.shape} but loss {self.name!r} needs shape "
                f"{out_shape} {axes}{hint}"
            )
        out = arr.astype(np.float64)
        require_finite(out, "targets y contain", InputError, "targets must be finite")
        return out


_TABLE = [
    Loss("sum", False, False, "sum over all elements", _sum),
    Loss("projection", True, False, "sum over all elements of output * y", _projection),
    Loss("mean", False, False, "mean over all elements", _mean),
    Loss("mse", True, False, "mean over all elements", _mse),
    Loss("bce_logits", True, False, "mean over all elements", _bce_logits),
    Loss("bce", True, False, "mean over all elements", _bce),
    Loss("cce_logits", True, True, "sum over classes, mean over the batch", _cce_logits),
    Loss("cce", True, True, "sum over classes, mean over the batch", _cce),
]

LOSSES: dict[str, Loss] = {loss.name: loss for loss in _TABLE}
"""Every loss by name."""


def get_loss(name: str) -> Loss:
    """Return the :class:`Loss` called ``name``.

    Raises:
        SpecError: the name is not one of :data:`LOSSES`.

    Example:
        >>> get_loss("mse").reduction
        'mean over all elements'
    """
    if isinstance(name, str) and name.strip().lower() in LOSSES:
        return LOSSES[name.strip().lower()]
    raise SpecError(f"unknown loss {name!r}; known losses: {', '.join(LOSSES)}")


def random_targets(loss: str, batch: int, units: int, seed: int, *, shape=None):
    """Deterministic targets for a loss when none are given: normal for mse, uniform in
    [0, 1] for the binary crossentropies, class labels for the categorical ones; for an
    output of ``shape`` (batch included), else ``(batch, units)``."""
    loss_obj = get_loss(loss)
    if not loss_obj.needs_target:
        return None
    shape = (batch, units) if shape is None else tuple(shape)
    rng = np.random.default_rng([seed, 1])
    if loss_obj.categorical:
        return rng.integers(0, shape[-1], size=shape[:-1])
    if loss_obj.name.startswith("bce"):
        return rng.uniform(0.0, 1.0, size=shape)
    if loss_obj.name == "projection":  # a direction of its own stream, whatever the loss
        return np.random.default_rng([seed, 2]).standard_normal(shape)
    return rng.standard_normal(shape)
