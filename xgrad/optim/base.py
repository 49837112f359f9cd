"""The optimizer interface every framework's optimizer implements, and xgrad's NumPy one.

An optimizer given to :func:`xgrad.compare_training` becomes an :class:`AbstractOptimizer`
(each framework recognises and wraps its own: see
:meth:`xgrad.frameworks.base.AbstractFramework.read_optimizer`). Started on a set of weights
it is an :class:`AbstractRun`, which steps copies of them; the user's objects never change.
Every run works on canonical-layout arrays (kernel ``(in, out)``), keyed by weight name.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.optim.rules import Arrays, Rule

__all__ = ["AbstractOptimizer", "AbstractRun", "NumpyOptimizer"]


class AbstractRun(abc.ABC):
    """One optimizer stepping one set of weights (a copy; the user's objects never change).

    Attributes:
        rule: the optimizer's rule as read from it, or ``None`` when it cannot be read.
        rule_note: why the rule is unknown (``None`` when it is known).
        description: the optimizer in a few words (``keras Adam``, ``optax``, ...).
    """

    rule: Rule | None = None
    rule_note: str | None = None
    description: str = ""

    @abc.abstractmethod
    def step(self, grads: Mapping[str, np.ndarray]) -> Arrays:
        """Apply one update with ``grads`` (by weight name, canonical layout); returns the
        new weights as NumPy arrays of the run's dtype."""


class AbstractOptimizer(abc.ABC):
    """An optimizer of one framework, ready to start on a set of weights.

    Attributes:
        framework: the framework whose optimizer it is (``tensorflow``, ``jax``, ``torch``,
            ``numpy``).
    """

    framework: str = ""

    @abc.abstractmethod
    def start(self, params: Mapping[str, np.ndarray], dtype: str) -> AbstractRun:
        """A fresh run on copies of ``params`` (canonical layout), computing in ``dtype``."""


class _NumpyRun(AbstractRun):
    def __init__(self, rule: Rule, params: Mapping[str, np.ndarray], dtype: str) -> None:
        self.rule = rule
        self.description = f"xgrad {rule.describe()} (numpy {dtype})"
        self._params = {k: np.array(v, dtype=dtype) for k, v in params.items()}
        self._state = rule.init(self._params)
        self._count = 0
        self._dtype = dtype

    def step(self, grads):
        g = {k: np.asarray(grads[k], dtype=self._dtype) for k in self._params}
        with np.errstate(all="ignore"):  # an overflow is a result to report
            updates, self._state = self.rule.update(g, self._params, self._state, self._count)
            self._params = {k: (self._params[k] + updates[k]).astype(self._dtype) for k in g}
        self._count += 1
        return {k: v.copy() for k, v in self._params.items()}


@dataclass(frozen=True)
class NumpyOptimizer(AbstractOptimizer):
    """xgrad's NumPy implementation of a rule, computing in the model's dtype."""

    rule: Rule
    framework: str = field(default="numpy", init=False)

    def start(self, params, dtype):
        return _NumpyRun(self.rule, params, dtype)
