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

import abc
import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.errors import InputError
from xgrad.frameworks.base import is_from
from xgrad.training.rules import RULES, Arrays, Rule

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
        """Apply one update with ``grads`` (by weight name); returns the new weights as
        NumPy arrays of the run's dtype."""


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


# -- the NumPy rule as an optimizer -------------------------------------------------------


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
    """xgrad's NumPy implementation of a rule, in the model's dtype."""

    rule: Rule
    framework: str = field(default="numpy", init=False)

    def start(self, params, dtype):
        return _NumpyRun(self.rule, params, dtype)


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


# -- optimizers named on the command line ---------------------------------------------------

ALIASES = {
    "lr": "learning_rate",
    "learning_rate": "learning_rate",
    "b1": "b1",
    "beta1": "b1",
    "beta_1": "b1",
    "b2": "b2",
    "beta2": "b2",
    "beta_2": "b2",
    "eps": "eps",
    "epsilon": "eps",
    "eps_root": "eps_root",
    "wd": "weight_decay",
    "weight_decay": "weight_decay",
    "momentum": "momentum",
    "nesterov": "nesterov",
    "dampening": "dampening",
    "amsgrad": "amsgrad",
    "rho": "decay",
    "alpha": "decay",
    "decay": "decay",
    "centered": "centered",
    "eps_in_sqrt": "eps_in_sqrt",
    "clipnorm": "clip_norm",
    "clip_norm": "clip_norm",
    "global_clipnorm": "clip_global_norm",
    "clip_global_norm": "clip_global_norm",
    "clipvalue": "clip_value",
    "clip_value": "clip_value",
}
"""The option names of ``--optimizer NAME:KEY=VALUE,...`` -> xgrad's rule field names."""

FLAGS = ("nesterov", "amsgrad", "centered", "eps_in_sqrt")


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer named in text, ``adam:lr=1e-3,eps=1e-7``: a rule name and the options
    given; every option left out takes the default of the framework that realises it.

    Attributes:
        name: ``sgd``, ``adam``, ``adamw`` or ``rmsprop``.
        options: xgrad field name -> value (``learning_rate``, ``eps``, ``decay``, ...).
    """

    name: str
    options: dict[str, float | bool]
    spelled: dict[str, str] = field(default_factory=dict, compare=False)

    def key(self, field_name: str) -> str:
        """The option's name as the user wrote it (``rho`` for ``decay``)."""
        return self.spelled.get(field_name, field_name)

    def keys(self, field_names) -> str:
        """``rho, beta_1``: field names as the user wrote them, comma-separated."""
        return ", ".join(sorted(self.key(f) for f in field_names))

    @classmethod
    def parse(cls, text: str) -> OptimizerSpec:
        """Parse ``NAME[:KEY=VALUE,...]``.

        Raises:
            InputError: an unknown name or option, or a value that is not a number (or
                ``true``/``false`` for flags).
        """
        name, _, rest = text.strip().partition(":")
        name = name.strip().lower()
        if name not in RULES:
            raise InputError(f"unknown optimizer {name!r} in {text!r}; known: {', '.join(RULES)}")
        options: dict[str, float | bool] = {}
        spelled: dict[str, str] = {}
        fields = {f.name for f in dataclasses.fields(RULES[name])}
        takes = sorted(k for k, f in ALIASES.items() if f in fields)
        for item in (p.strip() for p in rest.split(",") if p.strip()):
            key, eq, value = item.partition("=")
            key = key.strip().lower()
            if not eq or key not in ALIASES:
                raise InputError(
                    f"optimizer option {item!r} in {text!r}: write KEY=VALUE with KEY one of "
                    f"{', '.join(takes)}"
                )
            field_name = ALIASES[key]
            if field_name not in fields:
                raise InputError(
                    f"optimizer option {key!r} in {text!r}: {name} has no {key}; its options "
                    f"are {', '.join(takes)}"
                )
            options[field_name] = _value(value.strip(), field_name, key, text)
            spelled[field_name] = key
        return cls(name, options, spelled)

    def text(self) -> str:
        opts = ",".join(f"{self.key(k)}={_plain(v)}" for k, v in self.options.items())
        return self.name + (f":{opts}" if opts else "")


def _plain(value: float | bool) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"


def _value(text: str, field_name: str, key: str, spec: str) -> float | bool:
    if field_name in FLAGS:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise InputError(f"optimizer option {key}={text!r} in {spec!r}: use true or false")
    try:
        return float(text)
    except ValueError:
        raise InputError(f"optimizer option {key}={text!r} in {spec!r} is not a number") from None


def optimizer_for(framework: str, spec: OptimizerSpec):
    """The native optimizer a model of ``framework`` trains with, for ``spec``: a Keras
    optimizer (``tensorflow``), an ``(optax transformation, rule)`` pair (``jax``,
    ``flax``), a PyTorch factory (``torch``), or xgrad's NumPy rule (``numpy``), each with
    its own framework's defaults for the options not given.

    Raises:
        InputError: an option the framework's optimizer does not have.
    """
    if framework == "numpy":
        try:
            return RULES[spec.name](**{"learning_rate": 1e-3, **spec.options})
        except TypeError as exc:
            raise InputError(f"optimizer {spec.text()!r}: {exc}") from None
    if framework not in MODULES:
        raise InputError(
            f"no optimizer for framework {framework!r}; known: numpy, {', '.join(MODULES)}"
        )
    return _module(framework).from_spec(spec)
