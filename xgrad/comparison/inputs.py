"""The first phase of every comparison: one checked batch, and the dtype it is judged in.

:class:`Inputs` is what every side is evaluated on: inputs, targets, the loss (or a
cotangent instead). :func:`judged_dtype` is the one rule for which dtype a comparison's
tolerance comes from, shared by every entry point.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractModel, check_cotangent, check_input, prepare_loss
from xgrad.frameworks.capture import Batch, CapturedModel, as_batch
from xgrad.losses import Loss
from xgrad.metrics import TOLERANCES

__all__ = ["Inputs", "judged_dtype", "loss_scale", "prepare_inputs"]


@dataclass(frozen=True)
class Inputs:
    """One batch, checked: inputs, targets, the loss (or a cotangent instead)."""

    x: np.ndarray
    y: np.ndarray | None
    loss: Loss | object | None  # a Loss, a pair of loss functions, or None with a cotangent
    cotangent: np.ndarray | None
    batch: Batch | None = None  # every input, for a model read module by module

    @property
    def size(self) -> int:
        """The batch size."""
        return self.batch.size if self.batch is not None else int(self.x.shape[0])

    @property
    def model_input(self):
        """What a model's ``evaluate`` takes: the batch of every input, else ``x``."""
        return self.batch if self.batch is not None else self.x

    @property
    def loss_name(self) -> str | None:
        if self.cotangent is not None:
            return None
        return self.loss.name if isinstance(self.loss, Loss) else "custom"

    def loss_for(self, side: int):
        """The loss argument of :meth:`AbstractModel.evaluate` for side 0 or 1."""
        if isinstance(self.loss, tuple):
            return self.loss[side]
        return self.loss


def prepare_inputs(model: AbstractModel, x, y=None, loss="projection", cotangent=None) -> Inputs:
    """The checked batch for ``model``: ``x`` of its input shape (every input of a model read
    module by module, as the user passes them), targets checked against the loss (or a
    cotangent of its output shape instead); a pair of loss functions is kept."""
    batch = None
    if isinstance(model, CapturedModel):
        batch = model.check_batch(as_batch(x))
        xs = batch.first
    else:
        xs = check_input(model.input_shape, x, vocab=model.vocab)
    size = batch.size if batch is not None else xs.shape[0]
    if cotangent is not None:
        cot = check_cotangent(model.output_shape, cotangent, size)
        return Inputs(xs, None, None, cot, batch)
    if isinstance(loss, tuple):
        if len(loss) != 2 or not all(callable(f) for f in loss):
            raise InputError("loss=(reference_fn, candidate_fn) takes two loss functions")
        return Inputs(xs, None if y is None else np.asarray(y), loss, None, batch)
    loss_fn, ys = prepare_loss(loss, y, size, model.output_shape)
    return Inputs(xs, ys, loss_fn, None, batch)


def judged_dtype(dtype: str) -> str:
    """The dtype whose tolerance judges a comparison of models computing in ``dtype``: the
    dtype itself when :data:`xgrad.TOLERANCES` has it, else float32 (the one rule every
    entry point uses, for the reference model's dtype)."""
    return dtype if dtype in TOLERANCES else "float32"


def loss_scale(loss_name: str | None, output: np.ndarray, y=None) -> float | None:
    """The scale a loss value is judged against when its terms can cancel.

    ``sum``, ``mean`` and ``projection`` add terms of either sign (``out``, or ``out * y``):
    their value can be far smaller than its terms, and its rounding error scales with the
    terms, so it is compared relative to the sum (or mean) of their magnitudes. The other
    losses add non-negative terms, for which ``|loss|`` is that scale already (``None``).
    """
    if loss_name == "sum":
        return float(np.abs(output).sum())
    if loss_name == "mean":
        return float(np.abs(output).mean())
    if loss_name == "projection" and y is not None and np.shape(y) == np.shape(output):
        return float(np.abs(np.multiply(output, y, dtype=np.float64)).sum())
    return None
