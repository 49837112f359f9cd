"""``Dropout``: the identity when inactive; when active, one mask drawn by xgrad.

Frameworks draw dropout masks from their own random generators, so two frameworks never
drop the same units. xgrad draws the mask itself, from the layer's ``seed``, its path in the
model and the batch's shape, and every framework applies that same mask
(``x * mask / (1 - rate)``, the "inverted dropout" all of them use): gradients stay
comparable. Inactive (the default, as in inference), it is the identity in every framework.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from xgrad.layers.base import AbstractLayer, Shape, Step, check_bool, check_float

__all__ = ["Dropout"]


@dataclass(frozen=True)
class Dropout(AbstractLayer):
    """Inverted dropout with a mask that xgrad draws.

    Args:
        rate: the fraction of units dropped, in [0, 1).
        active: drop units (training); ``False`` is the identity (inference).
        seed: seed of the mask, a non-negative integer.

    Example:
        >>> Dropout(0.5, active=True).mask("layers.0", (2, 4)).astype(int)
        array([[0, 1, 0, 1],
               [0, 1, 1, 1]])
    """

    kind = "dropout"
    token_wise = True

    rate: float
    active: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        rate = check_float(self.rate, "Dropout rate", low=0)
        if rate >= 1:
            from xgrad.errors import SpecError

            raise SpecError(f"Dropout rate must be in [0, 1), got {self.rate!r}")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "active", check_bool(self.active, "Dropout active"))
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int | np.integer)
            or self.seed < 0
        ):
            from xgrad.errors import SpecError

            raise SpecError(f"Dropout seed must be a non-negative integer, got {self.seed!r}")

    def output_shape(self, input_shape: Shape) -> Shape:
        return tuple(input_shape)

    def describe(self) -> str:
        return f"dropout({self.rate:g}{', active' if self.active else ''})"

    def mask(self, path: str, shape: tuple[int, ...]) -> np.ndarray:
        """The boolean keep-mask for a batch of ``shape`` at ``path`` (True = kept).

        The same ``(seed, path, shape)`` always gives the same mask, in every process.
        """
        rng = np.random.default_rng([int(self.seed), zlib.crc32(path.encode()), *shape])
        return rng.random(shape) >= self.rate

    def scaled_mask(self, path: str, shape: tuple[int, ...], dtype) -> np.ndarray:
        """``mask / (1 - rate)`` in ``dtype``: what an active layer multiplies by."""
        return self.mask(path, shape).astype(dtype) / np.asarray(1 - self.rate, dtype=dtype)

    def forward(self, weights, x, *, path):
        if not self.active:
            return Step(path, self, x, x)
        factor = self.scaled_mask(path, x.shape, x.dtype)
        return Step(path, self, x, x * factor, cache=factor)

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        return grad_output if step.cache is None else grad_output * step.cache
