"""Optimizers named in text (``--optimizer adam:lr=1e-3,eps=1e-7``).

An :class:`OptimizerSpec` is a rule name and the options the user gave, in xgrad's field
names (:mod:`xgrad.optim.rules`); each framework realises it with its own defaults for the
options left out (:meth:`xgrad.frameworks.base.AbstractFramework.native_optimizer`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from xgrad.errors import InputError
from xgrad.optim.rules import RULES, Rule

__all__ = ["ALIASES", "FLAGS", "OptimizerSpec"]

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
"""The options that take ``true`` or ``false``."""

DEFAULT_LEARNING_RATE = 1e-3
"""The learning rate of xgrad's rule (and of optax's) when the text gives none: optax has no
default."""


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
        """The spec as the user could have typed it (``rmsprop:rho=0.5``)."""
        opts = ",".join(f"{self.key(k)}={_plain(v)}" for k, v in self.options.items())
        return self.name + (f":{opts}" if opts else "")

    def rule(self) -> Rule:
        """xgrad's rule of this name with the options given, its own defaults for the others
        (optax's; learning rate :data:`DEFAULT_LEARNING_RATE` when not given).

        Raises:
            InputError: the options do not make a valid rule.
        """
        try:
            return RULES[self.name](**{"learning_rate": DEFAULT_LEARNING_RATE, **self.options})
        except TypeError as exc:
            raise InputError(f"optimizer {self.text()!r}: {exc}") from None


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
