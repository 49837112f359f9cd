"""Each side's optimizer, in its own framework, behind one small interface
(:mod:`xgrad.optim`); the framework that claims an optimizer wraps it
(:func:`xgrad.frameworks.registry.read_optimizer`).

An optimizer given to :func:`xgrad.compare_training` is one of:

* a ``keras.optimizers.Optimizer`` (:mod:`xgrad.frameworks.tensorflow.optim`): a fresh copy
  (``from_config(get_config())``) is built on ``keras.Variable`` copies of the weights and
  stepped with ``apply_gradients``; its rule is read from its configuration;
* an ``optax.GradientTransformation`` (:mod:`xgrad.frameworks.jax.optim`): ``init`` /
  ``update`` / ``optax.apply_updates`` on a dict of ``jnp`` arrays (float64 inside
  ``jax.enable_x64(True)``); optax does not expose hyperparameters, so its rule is unknown
  unless you name it: ``(tx, xgrad.training.Adam(1e-3))``;
* a PyTorch factory ``params -> torch.optim.Optimizer`` (:mod:`xgrad.frameworks.torch.optim`),
  such as ``lambda p: torch.optim.Adam(p, lr=1e-3)`` or ``torch.optim.SGD`` itself: it gets
  fresh ``torch.nn.Parameter`` copies whose ``.grad`` is set before each ``step()``; its rule
  is read from the optimizer it returns;
* an :class:`~xgrad.training.Rule` (``xgrad.training.Adam(1e-3)``): xgrad's NumPy
  implementation of the rule, computing in the model's dtype.

Every side works on canonical-layout copies of the weights (kernel ``(in, out)``); no
framework is imported here.
"""

from __future__ import annotations

from xgrad.frameworks.registry import get_framework, read_optimizer
from xgrad.optim import AbstractOptimizer, AbstractRun, NumpyOptimizer, OptimizerSpec

__all__ = [
    "AbstractOptimizer",
    "AbstractRun",
    "NumpyOptimizer",
    "OptimizerSpec",
    "as_optimizer",
    "optimizer_for",
]


def as_optimizer(obj, side: str) -> AbstractOptimizer:
    """The optimizer ``obj`` of one side (see the module docstring for what it may be), as
    the framework that claims it wraps it.

    Args:
        obj: the user's optimizer.
        side: ``reference`` or ``candidate``, for messages.

    Raises:
        InputError: ``obj`` is none of the accepted kinds; the message says what it is.
        FrameworkNotInstalledError: its framework is not installed.
    """
    return read_optimizer(obj, side=side)


def optimizer_for(framework: str, spec: OptimizerSpec):
    """The native optimizer a model of ``framework`` trains with, for ``spec``: a Keras
    optimizer (``tensorflow``), an ``(optax transformation, rule)`` pair (``jax``,
    ``flax``), a PyTorch factory (``torch``), or xgrad's NumPy rule (``numpy``), each with
    its own framework's defaults for the options not given.

    Raises:
        InputError: an option the framework's optimizer does not have.
        FrameworkError: an unknown framework, or one that does not train.
    """
    return get_framework(framework).native_optimizer(spec)
