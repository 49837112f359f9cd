"""Each side's optimizer, in its own framework, behind one small interface.

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

import importlib

from xgrad.errors import InputError
from xgrad.frameworks.base import is_from
from xgrad.optim import (
    AbstractOptimizer,
    AbstractRun,
    NumpyOptimizer,
    OptimizerSpec,
    Rule,
)

__all__ = [
    "AbstractOptimizer",
    "AbstractRun",
    "NumpyOptimizer",
    "OptimizerSpec",
    "as_optimizer",
    "optimizer_for",
]

MODULES = {
    "tensorflow": "xgrad.frameworks.tensorflow.optim",
    "jax": "xgrad.frameworks.jax.optim",
    "flax": "xgrad.frameworks.jax.optim",
    "torch": "xgrad.frameworks.torch.optim",
}
"""Model framework -> the module holding its optimizers (Flax trains with optax)."""

KINDS = (
    "a keras.optimizers.Optimizer, an optax.GradientTransformation (or a (tx, "
    "xgrad.training.Adam(...)) pair naming its rule), a PyTorch factory params -> "
    "torch.optim.Optimizer, or an xgrad.training rule"
)


# -- recognising an optimizer ------------------------------------------------------------


def _module(framework: str):
    from xgrad.frameworks.registry import get_framework

    get_framework(framework)  # installed? (the message names the pip extra)
    return importlib.import_module(MODULES[framework])


def as_optimizer(obj, side: str) -> AbstractOptimizer:
    """The optimizer ``obj`` of one side (see the module docstring for what it may be).

    Args:
        obj: the user's optimizer.
        side: ``reference`` or ``candidate``, for messages.

    Raises:
        InputError: ``obj`` is none of the accepted kinds; the message says what it is.
    """
    if isinstance(obj, AbstractOptimizer):
        return obj
    if isinstance(obj, Rule):
        return NumpyOptimizer(obj)
    if is_from(obj, "keras"):
        return _module("tensorflow").KerasOptimizer(obj)
    if is_from(obj, "optax"):
        return _module("jax").OptaxOptimizer(obj)
    if isinstance(obj, tuple) and len(obj) == 2 and is_from(obj[0], "optax"):
        if not isinstance(obj[1], Rule):
            raise InputError(
                f"the {side} optimizer is an (optax transformation, {type(obj[1]).__name__}) "
                "pair; the second item names the rule: an xgrad.training.Adam, AdamW, SGD or "
                "RMSprop with the transformation's hyperparameters"
            )
        return _module("jax").OptaxOptimizer(obj[0], rule=obj[1])
    if is_from(obj, "torch"):
        if any(c.__name__ == "Optimizer" for c in type(obj).__mro__):
            raise InputError(
                f"the {side} optimizer is a torch.optim.{type(obj).__name__} built on other "
                "parameters; pass a factory instead, e.g. lambda params: "
                f"torch.optim.{type(obj).__name__}(params, lr=...)"
            )
    uncalled = _uncalled(obj)
    if uncalled:
        raise InputError(f"the {side} optimizer is {uncalled}")
    if (callable(obj) and not isinstance(obj, type | tuple)) or _is_torch_class(obj):
        return _module("torch").TorchOptimizer(obj)  # a factory params -> torch optimizer
    raise InputError(f"the {side} optimizer must be {KINDS}; got {type(obj).__name__} {obj!r}")


def _uncalled(obj) -> str | None:
    """What is wrong with an optax function or Keras optimizer class passed uncalled."""
    module = getattr(obj, "__module__", None) or ""
    name = getattr(obj, "__name__", "")
    if module.split(".")[0] == "optax" and callable(obj) and not isinstance(obj, type):
        return f"the function optax.{name}, not a transformation: call it, e.g. optax.{name}(1e-3)"
    if module.split(".")[0] == "keras" and isinstance(obj, type):
        return f"the class keras.optimizers.{name}, not an optimizer: call it, e.g. {name}()"
    return None


def _is_torch_class(obj) -> bool:
    return isinstance(obj, type) and any(
        c.__module__.startswith("torch.optim") for c in obj.__mro__
    )


def optimizer_for(framework: str, spec: OptimizerSpec):
    """The native optimizer a model of ``framework`` trains with, for ``spec``: a Keras
    optimizer (``tensorflow``), an ``(optax transformation, rule)`` pair (``jax``,
    ``flax``), a PyTorch factory (``torch``), or xgrad's NumPy rule (``numpy``), each with
    its own framework's defaults for the options not given.

    Raises:
        InputError: an option the framework's optimizer does not have.
    """
    if framework == "numpy":
        return spec.rule()
    if framework not in MODULES:
        raise InputError(
            f"no optimizer for framework {framework!r}; known: numpy, {', '.join(MODULES)}"
        )
    return _module(framework).from_spec(spec)
