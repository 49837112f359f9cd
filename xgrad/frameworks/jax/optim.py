"""optax for :func:`xgrad.compare_training` (JAX and Flax models train with it).

A run keeps a dict of ``jnp`` arrays (canonical layout) and its optax state, and steps with
``tx.update`` and ``optax.apply_updates``; in float64 inside ``jax.enable_x64(True)``, which
is restored on exit. An optax transformation is a pair of functions and does not expose its
hyperparameters, so its rule is unknown unless you name it: ``(tx, xgrad.training.Adam(...))``.

:func:`keras_adam` is Keras' Adam written as an optax transformation, for a Flax port that
must train exactly as its Keras original.

Importing this module imports JAX and optax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from xgrad.errors import InputError
from xgrad.frameworks.jax.ops import x64
from xgrad.optim import AbstractOptimizer, AbstractRun, OptimizerSpec, Rule
from xgrad.optim.spec import DEFAULT_LEARNING_RATE

__all__ = ["OPTAX_OPTIONS", "OptaxOptimizer", "from_spec", "keras_adam"]

OPTAX_OPTIONS: dict[str, dict[str, str]] = {
    "sgd": {"learning_rate": "learning_rate", "momentum": "momentum", "nesterov": "nesterov"},
    "adam": {
        "learning_rate": "learning_rate",
        "b1": "b1",
        "b2": "b2",
        "eps": "eps",
        "eps_root": "eps_root",
    },
    "adamw": {
        "learning_rate": "learning_rate",
        "b1": "b1",
        "b2": "b2",
        "eps": "eps",
        "eps_root": "eps_root",
        "weight_decay": "weight_decay",
    },
    "rmsprop": {
        "learning_rate": "learning_rate",
        "decay": "decay",
        "eps": "eps",
        "eps_in_sqrt": "eps_in_sqrt",
        "centered": "centered",
        "momentum": "momentum",
    },
}
"""xgrad option -> the argument of ``optax.sgd``, ``adam``, ``adamw``, ``rmsprop``; every one
also takes ``clip_global_norm`` (``optax.clip_by_global_norm`` first) and ``clip_value``
(``optax.clip`` first)."""


def from_spec(spec: OptimizerSpec) -> tuple[optax.GradientTransformation, Rule]:
    """``(optax transformation, its rule)`` for ``spec``, optax's defaults for the options
    not given (``learning_rate`` 1e-3 when not given: optax has no default).

    Raises:
        InputError: an option optax's alias does not take.
    """
    names = OPTAX_OPTIONS[spec.name]
    clips = {"clip_global_norm", "clip_value"}
    unknown = sorted(set(spec.options) - set(names) - clips)
    if unknown:
        raise InputError(
            f"optimizer {spec.text()!r}: optax.{spec.name} has no option {spec.keys(unknown)}; "
            f"it takes {', '.join([*names, *sorted(clips)])}"
        )
    kwargs = {names[k]: v for k, v in spec.options.items() if k in names}
    kwargs.setdefault("learning_rate", DEFAULT_LEARNING_RATE)
    if spec.name == "sgd" and not kwargs.get("momentum"):
        kwargs["momentum"] = None
    if spec.name == "rmsprop" and not kwargs.get("momentum"):
        kwargs["momentum"] = None
    tx = getattr(optax, spec.name)(**kwargs)
    rule = spec.rule()  # optax's defaults are the rules' own
    if "clip_global_norm" in spec.options:
        tx = optax.chain(optax.clip_by_global_norm(spec.options["clip_global_norm"]), tx)
    elif "clip_value" in spec.options:
        tx = optax.chain(optax.clip(spec.options["clip_value"]), tx)
    return tx, rule


def keras_adam(
    learning_rate: float = 0.001,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-7,
) -> optax.GradientTransformation:
    """Keras' ``Adam`` as an optax transformation (``keras/src/optimizers/adam.py``).

    The bias correction is folded into the step size and ``epsilon`` is added to
    ``sqrt(v)`` after that ("epsilon hat"); the learning rate, and the betas in the bias
    correction, are rounded to float32 as Keras rounds them (in float64 too). Train a Flax
    port with it to follow its Keras original step for step.

    Example:
        >>> tx = keras_adam()  # the same rule as keras.optimizers.Adam()
    """
    lr = float(np.float32(learning_rate))
    b1_power, b2_power = float(np.float32(beta_1)), float(np.float32(beta_2))

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return {"count": jnp.zeros([], jnp.int32), "m": zeros, "v": zeros}

    def update(updates, state, params=None):
        del params
        count = state["count"] + 1
        m = jax.tree.map(lambda g, m: m + (g - m) * (1 - beta_1), updates, state["m"])
        v = jax.tree.map(lambda g, v: v + (g * g - v) * (1 - beta_2), updates, state["v"])

        def step(m_, v_):
            t = count.astype(m_.dtype)
            alpha = lr * jnp.sqrt(1 - b2_power**t) / (1 - b1_power**t)
            return -(m_ * alpha) / (jnp.sqrt(v_) + epsilon)

        return jax.tree.map(step, m, v), {"count": count, "m": m, "v": v}

    return optax.GradientTransformation(init, update)


class _OptaxRun(AbstractRun):
    def __init__(self, tx, rule: Rule | None, params, dtype: str) -> None:
        self._tx = tx
        self._dtype = dtype
        self.rule = rule
        self.rule_note = (
            None
            if rule is not None
            else "an optax transformation does not expose its hyperparameters; name its rule: "
            "(tx, xgrad.training.Adam(learning_rate=..., ...))"
        )
        self.description = "optax" + (f" {rule.describe()}" if rule is not None else "")
        with x64(dtype):
            self._params = {k: jnp.asarray(np.asarray(v), dtype=dtype) for k, v in params.items()}
            try:
                self._state = tx.init(self._params)
            except Exception as exc:  # a user's transformation: say which side failed
                raise InputError(
                    f"the optax transformation's init failed: {type(exc).__name__}: {exc}"
                ) from None

    def step(self, grads):
        with x64(self._dtype):
            g = {k: jnp.asarray(np.asarray(grads[k]), dtype=self._dtype) for k in self._params}
            updates, self._state = self._tx.update(g, self._state, self._params)
            self._params = optax.apply_updates(self._params, updates)
            return {k: np.array(v) for k, v in self._params.items()}


class OptaxOptimizer(AbstractOptimizer):
    """An ``optax.GradientTransformation``, with its rule when named (see the module
    docstring)."""

    framework = "jax"

    def __init__(self, tx, *, rule: Rule | None = None) -> None:
        if not isinstance(tx, optax.GradientTransformation):
            raise InputError(f"expected an optax.GradientTransformation, got {type(tx).__name__}")
        self._tx = tx
        self._rule = rule

    def start(self, params, dtype):
        return _OptaxRun(self._tx, self._rule, params, dtype)
