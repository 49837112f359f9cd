"""The seed article's three examples ("How are gradients calculated in TensorFlow's dense
layers?"), as xgrad specs and inputs.

1. input ``[[1, 2, 3], [4, 5, 6]]``, ``Dense(4, sigmoid)``, loss = sum of outputs;
2. input ``[[1, 2, 3, 4, 5]]``, ``Dense(3, relu)``, loss = sum;
3. input random normal of shape ``(2, 10)``, ``Dense(8, relu)`` then ``Dense(5, sigmoid)``,
   loss = sum.

The article lets Keras draw the weights; xgrad uses :func:`xgrad.init_params` with a fixed
seed instead, so every framework gets the same ones, and the third input is drawn from a
fixed-seed generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.spec import MLP, Dense

__all__ = ["SEED_EXAMPLES", "Example"]


@dataclass(frozen=True)
class Example:
    """A named spec, input batch and loss."""

    name: str
    title: str
    spec: MLP
    x: np.ndarray
    loss: str = "sum"


def _examples() -> tuple[Example, ...]:
    return (
        Example(
            "seed-1",
            "Example 1: a single Dense layer with sigmoid activation",
            MLP(3, [Dense(4, "sigmoid")]),
            np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]),
        ),
        Example(
            "seed-2",
            "Example 2: the impact of input shape (one sample, ReLU)",
            MLP(5, [Dense(3, "relu")]),
            np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]),
        ),
        Example(
            "seed-3",
            "Example 3: multiple layers and gradient propagation",
            MLP(10, [Dense(8, "relu"), Dense(5, "sigmoid")]),
            np.random.default_rng(0).standard_normal((2, 10)),
        ),
    )


SEED_EXAMPLES: tuple[Example, ...] = _examples()
"""The three examples, in the article's order."""
