"""The evaluation phase: each model evaluated once, on the checked batch, into a :class:`Side`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xgrad.comparison.inputs import Inputs
from xgrad.frameworks.base import AbstractModel, Gradients

__all__ = ["Side", "evaluate"]


@dataclass
class Side:
    """One evaluated model: its label in the report, the model, its gradients.

    ``trace`` (the float64 NumPy referee of :func:`xgrad.compare` only): the forward steps
    its evaluation made, which diagnosis re-uses instead of running the forward pass again;
    ``weights``: the float64 canonical weights it holds, when the runner has them.
    """

    label: str
    model: AbstractModel
    grads: Gradients
    seconds: float = 0.0
    trace: list | None = None
    weights: Mapping[str, np.ndarray] | None = None


def evaluate(
    label: str, model: AbstractModel, inputs: Inputs, *, capture: bool, side: int = 1
) -> Side:
    """Evaluate ``model`` on ``inputs`` (timed); ``side`` picks the loss function of a pair
    (0: the reference's, 1: the candidate's)."""
    start = time.perf_counter()
    x = inputs.model_input
    if inputs.cotangent is not None:
        grads = model.evaluate(x, cotangent=inputs.cotangent, capture=capture)
    else:
        grads = model.evaluate(x, inputs.y, loss=inputs.loss_for(side), capture=capture)
    return Side(label, model, grads, time.perf_counter() - start)
