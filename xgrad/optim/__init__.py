"""Optimizers below the frameworks: the float64 update rules and the optimizer interface.

* :mod:`xgrad.optim.rules`: each update rule written once in NumPy (:class:`Rule`,
  :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`RMSprop`): the referee of
  :func:`xgrad.compare_training`;
* :mod:`xgrad.optim.base`: the interface a framework's optimizer implements
  (:class:`AbstractOptimizer` starts an :class:`AbstractRun`), and xgrad's NumPy optimizer;
* :mod:`xgrad.optim.spec`: optimizers named in text (:class:`OptimizerSpec`).

Each framework's own optimizers live in its package (``xgrad/frameworks/NAME/optim.py``) and
import only this package; ``xgrad.training`` sits above both. Importing this package imports
no framework. The public names are re-exported by :mod:`xgrad.training`.
"""

from xgrad.optim.base import AbstractOptimizer, AbstractRun, NumpyOptimizer
from xgrad.optim.rules import RULES, SGD, Adam, AdamW, Arrays, LearningRate, RMSprop, Rule
from xgrad.optim.spec import OptimizerSpec

__all__ = [
    "RULES",
    "SGD",
    "AbstractOptimizer",
    "AbstractRun",
    "Adam",
    "AdamW",
    "Arrays",
    "LearningRate",
    "NumpyOptimizer",
    "OptimizerSpec",
    "RMSprop",
    "Rule",
]
