"""Keras optimizers for :func:`xgrad.compare_training`: stepped on ``keras.Variable`` copies,
and read into an :class:`xgrad.training.Rule` for the float64 referee.

The user's optimizer is never built or stepped: each run uses a fresh copy,
``type(opt).from_config(opt.get_config())``, built on new variables holding the weights in
canonical layout.

Keras computes with some hyperparameters rounded to float32 whatever the weights' dtype: it
keeps a constant learning rate in a ``float32`` variable (``base_optimizer.py``,
``dtype=backend.floatx()``), and ``ops.cast(self.momentum, variable.dtype)`` converts the
Python float to a float32 tensor before the cast (SGD's momentum, Adam's betas in the bias
correction, the weight decay). Its rules say so (``float32_constants=True``), so that the
float64 referee follows Keras to rounding level.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

import numpy as np

from xgrad.errors import InputError
from xgrad.frameworks.tensorflow.ops import keras, tf
from xgrad.optim import (
    SGD,
    AbstractOptimizer,
    AbstractRun,
    Adam,
    AdamW,
    OptimizerSpec,
    RMSprop,
    Rule,
)

__all__ = ["KERAS_OPTIONS", "KerasOptimizer", "from_spec", "read_rule"]

KERAS_OPTIONS: dict[str, dict[str, str]] = {
    "sgd": {"learning_rate": "learning_rate", "momentum": "momentum", "nesterov": "nesterov"},
    "adam": {
        "learning_rate": "learning_rate",
        "b1": "beta_1",
        "b2": "beta_2",
        "eps": "epsilon",
        "amsgrad": "amsgrad",
    },
    "rmsprop": {
        "learning_rate": "learning_rate",
        "decay": "rho",
        "eps": "epsilon",
        "momentum": "momentum",
        "centered": "centered",
    },
}
"""xgrad option -> Keras constructor argument, per optimizer (``adamw`` as ``adam``); every
optimizer also takes ``weight_decay``, ``clipnorm``, ``global_clipnorm``, ``clipvalue``."""

COMMON = {
    "weight_decay": "weight_decay",
    "clip_norm": "clipnorm",
    "clip_global_norm": "global_clipnorm",
    "clip_value": "clipvalue",
}

CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}

EAGER_STEPS = 8
"""Steps run eagerly before a run switches to a ``tf.function`` (see ``_KerasRun``)."""


def from_spec(spec: OptimizerSpec) -> keras.optimizers.Optimizer:
    """The Keras optimizer for ``spec``, Keras' defaults for every option not given.

    Raises:
        InputError: an option Keras' optimizer does not have (``dampening``, ``eps_root``...).
    """
    names = {**KERAS_OPTIONS["adam" if spec.name == "adamw" else spec.name], **COMMON}
    unknown = sorted(set(spec.options) - set(names))
    if unknown:
        raise InputError(
            f"optimizer {spec.text()!r}: keras.optimizers.{CLASSES[spec.name]} has no option "
            f"{spec.keys(unknown)}; it takes {', '.join(names.values())}"
        )
    kwargs = {names[k]: v for k, v in spec.options.items()}
    return getattr(keras.optimizers, CLASSES[spec.name])(**kwargs)


def _learning_rate(opt):
    """A constant or the schedule ``count -> lr``. Keras holds a constant in a float32
    variable; the rule gets the shortest decimal that rounds to it (``0.001``), and rounds
    it to float32 again as it computes (``float32_constants``)."""
    lr = opt._learning_rate  # the schedule object itself (opt.learning_rate evaluates it)
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):

        def schedule(count: int) -> float:
            return float(np.float32(np.asarray(lr(count))))

        schedule.__name__ = type(lr).__name__
        return schedule
    if callable(lr) and not isinstance(lr, keras.Variable):
        return None
    held = np.float32(np.asarray(opt.learning_rate))
    return float(np.format_float_positional(held, unique=True, trim="-"))


def read_rule(opt) -> tuple[Rule | None, str | None]:
    """``(rule, None)`` for Keras' ``SGD``, ``Adam``, ``AdamW`` and ``RMSprop``, else
    ``(None, why not)``. Keras' conventions: Adam's epsilon is the "epsilon hat" (added
    before the bias correction, ``keras/src/optimizers/adam.py``); RMSprop adds epsilon
    inside the square root (``rmsprop.py``); SGD's velocity holds ``-lr * g`` (``sgd.py``);
    weight decay is decoupled and scaled by the learning rate (``base_optimizer.py``)."""
    kind = type(opt).__name__
    config = opt.get_config()
    if type(opt).__module__.split(".")[0] != "keras" or kind not in CLASSES.values():
        return None, f"xgrad's referee knows Keras' {', '.join(CLASSES.values())}, not {kind}"
    unsupported = [
        k
        for k, off in (
            ("ema_overwrite_frequency", None),  # use_ema alone: the weights follow the rule
            ("loss_scale_factor", None),
            ("gradient_accumulation_steps", None),
        )
        if config.get(k, off) not in (off, 0)
        and (k != "ema_overwrite_frequency" or config.get("use_ema"))
    ]
    if unsupported:
        return None, f"xgrad's referee does not model Keras' {', '.join(unsupported)}"
    lr = _learning_rate(opt)
    if lr is None:
        return None, "the learning rate is a function of no arguments, which xgrad cannot read"
    common = {
        "learning_rate": lr,
        "weight_decay": float(config.get("weight_decay") or 0.0),
        "decoupled": True,
        "clip_norm": config.get("clipnorm") or None,
        "clip_global_norm": config.get("global_clipnorm") or None,
        "clip_value": config.get("clipvalue") or None,
        "float32_constants": True,
    }
    if kind == "SGD":
        return SGD(
            **common,
            momentum=float(config["momentum"]),
            nesterov=bool(config["nesterov"]),
            lr_in_velocity=True,
        ), None
    if kind in ("Adam", "AdamW"):
        return (AdamW if kind == "AdamW" else Adam)(
            **common,
            b1=float(config["beta_1"]),
            b2=float(config["beta_2"]),
            eps=float(config["epsilon"]),
            epsilon_hat=True,
            amsgrad=bool(config["amsgrad"]),
        ), None
    return RMSprop(
        **common,
        decay=float(config["rho"]),
        eps=float(config["epsilon"]),
        eps_in_sqrt=True,
        centered=bool(config["centered"]),
        momentum=float(config["momentum"]),
        lr_in_momentum=True,
    ), None


class _KerasRun(AbstractRun):
    def __init__(self, optimizer, params, dtype: str) -> None:
        try:
            self._opt = type(optimizer).from_config(optimizer.get_config())
        except Exception as exc:  # Keras raises TypeError, ValueError... for custom objects
            raise InputError(
                f"cannot copy the Keras optimizer {type(optimizer).__name__} to train with it "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); it needs a "
                "get_config() that from_config() accepts"
            ) from None
        self.description = f"keras {type(optimizer).__name__}"
        self._names = list(params)
        self._dtype = dtype
        self._vars = [
            keras.Variable(np.asarray(params[n], dtype=dtype), dtype=dtype, name=f"w{i}")
            for i, n in enumerate(self._names)
        ]
        self._opt.build(self._vars)
        self.rule, self.rule_note = read_rule(self._opt)
        # Eagerly a step costs about 40 ms; a tf.function about 2 ms after a trace of about
        # 0.3 s: short runs stay eager, long ones switch after EAGER_STEPS (same numbers).
        self._steps = 0
        self._traced = tf.function(self._apply)

    def _apply(self, grads) -> None:
        self._opt.apply_gradients(zip(grads, self._vars, strict=True))

    def step(self, grads):
        self._steps += 1
        apply = self._apply if self._steps <= EAGER_STEPS else self._traced
        apply([tf.constant(np.asarray(grads[n]), dtype=self._dtype) for n in self._names])
        return {n: np.array(v.numpy()) for n, v in zip(self._names, self._vars, strict=True)}


class KerasOptimizer(AbstractOptimizer):
    """A ``keras.optimizers.Optimizer`` (see the module docstring).

    Raises:
        InputError: the optimizer cannot be copied from its configuration.
    """

    framework = "tensorflow"

    def __init__(self, optimizer) -> None:
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise InputError(
                f"expected a keras.optimizers.Optimizer, got {type(optimizer).__name__}"
            )
        self._optimizer = optimizer

    def start(self, params, dtype):
        return _KerasRun(self._optimizer, params, dtype)
