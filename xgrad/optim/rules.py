"""Optimizer update rules written once, in NumPy, from their published form: the referee.

A :class:`Rule` is an optimizer's configuration (its hyperparameters and the conventions in
which the frameworks differ) and its update, as plain functions of NumPy arrays:

* :meth:`Rule.init` ``(params) -> state``;
* :meth:`Rule.update` ``(grads, params, state, count) -> (updates, state)``, where
  ``count`` is the number of updates made before this one (0 at the first step, the index
  Keras and optax give a learning-rate schedule) and ``params + updates`` are the new
  weights.

Each is a dict of arrays keyed by weight name; the math is elementwise (the global norm of
gradient clipping excepted, taken over every array given), so it gives the same numbers on
canonical-layout copies of the weights as on the frameworks' own. Run on float64 arrays it
is the float64 referee of :func:`xgrad.compare_training`; run on float32 arrays it is a
NumPy optimizer of its own.

Order of one update (every rule): clip the gradients (``clip_value``, ``clip_norm`` per
array, or ``clip_global_norm``); add ``weight_decay * w`` to the gradient when the decay is
L2 (``decoupled=False``); the rule's own step, which includes the learning rate; subtract
``lr * weight_decay * w`` when the decay is decoupled (``decay_scaled_by_lr=False``:
``weight_decay * w``).

The defaults of every field are optax's (``optax.adam``, ``optax.adamw``, ``optax.sgd``,
``optax.rmsprop``), since a rule is what names an optax transformation's hyperparameters;
the readers of Keras and PyTorch optimizers fill every field from the optimizer itself.
See ``docs/training.md`` for each framework's defaults and where they come from.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from xgrad.errors import InputError

__all__ = ["RULES", "SGD", "Adam", "AdamW", "Arrays", "LearningRate", "RMSprop", "Rule"]

Arrays = dict[str, np.ndarray]  # weight name -> array (canonical names in xgrad's runner)
LearningRate = float | Callable[[int], float]  # a constant, or a schedule of the update count


def _number(value, what: str, *, low: float = 0.0, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise InputError(f"{what} must be {bound}, got {value!r}")


def _fmt(value) -> str:
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if isinstance(value, bool):
        return str(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Rule:
    """What every optimizer rule shares: learning rate, weight decay and gradient clipping.

    Attributes:
        learning_rate: a constant, or a schedule ``count -> lr`` (``count`` = updates made
            before this one, from 0, as Keras and optax call their schedules).
        weight_decay: the decay coefficient (0: none).
        decoupled: ``True``: decoupled decay, ``w -= lr * weight_decay * w`` beside the
            update (Keras ``weight_decay=``, ``optax.adamw``, ``torch.optim.AdamW``);
            ``False``: L2, ``weight_decay * w`` added to the gradient (``torch.optim.Adam``,
            ``SGD`` and ``RMSprop`` ``weight_decay=``).
        decay_scaled_by_lr: decoupled decay multiplied by the learning rate (all three
            frameworks' optimizers do); ``False`` for ``optax.add_decayed_weights`` chained
            after the learning rate.
        clip_value: clip each gradient element to ``[-clip_value, clip_value]``.
        clip_norm: rescale each gradient array to norm at most ``clip_norm`` (Keras
            ``clipnorm``).
        clip_global_norm: rescale all gradients together to global norm at most this (Keras
            ``global_clipnorm``, ``optax.clip_by_global_norm``).
        float32_constants: compute with some hyperparameters rounded to float32, as Keras
            does in every dtype: its learning rate is a float32 variable, and
            ``ops.cast(python_float, "float64")`` converts the number to a float32 tensor
            first. Rounded: the learning rate, the weight decay, SGD's momentum and Adam's
            betas in the bias correction (``1 - b^t``); Adam's moment averages use ``1 - b``
            exactly.
    """

    learning_rate: LearningRate
    weight_decay: float = 0.0
    decoupled: bool = True
    decay_scaled_by_lr: bool = True
    clip_value: float | None = None
    clip_norm: float | None = None
    clip_global_norm: float | None = None
    float32_constants: bool = False

    name: ClassVar[str] = "rule"

    def __post_init__(self) -> None:
        if type(self) is Rule:
            raise InputError("Rule is what the rules share; use SGD, Adam, AdamW or RMSprop")
        if not callable(self.learning_rate):
            _number(self.learning_rate, f"{self.name} learning_rate")
        _number(self.weight_decay, f"{self.name} weight_decay")
        for field in ("clip_value", "clip_norm", "clip_global_norm"):
            value = getattr(self, field)
            if value is not None:
                _number(value, f"{self.name} {field}")
        clips = [f for f in ("clip_value", "clip_norm", "clip_global_norm") if getattr(self, f)]
        if len(clips) > 1:
            raise InputError(f"{self.name}: give at most one of {', '.join(clips)}")

    # -- the update -------------------------------------------------------------------------

    def lr(self, count: int) -> float:
        """The learning rate of the update made after ``count`` others."""
        if callable(self.learning_rate):
            return self.constant(float(np.asarray(self.learning_rate(count))))
        return self.constant(float(self.learning_rate))

    def constant(self, value: float) -> float:
        """``value`` as the rule computes with it (see ``float32_constants``)."""
        return float(np.float32(value)) if self.float32_constants else value

    def init(self, params: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The state before the first update (moment estimates at zero)."""
        return {}

    def update(
        self, grads: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray], state, count
    ) -> tuple[Arrays, dict[str, Any]]:
        """``(updates, new state)``: the new weights are ``params + updates``.

        Args:
            grads: ``dL/dw`` for each weight.
            params: the weights before the update (for weight decay).
            state: from :meth:`init` or the previous update.
            count: the number of updates made before this one (0 first).
        """
        lr = self.lr(count)
        g = self._clip(grads)
        dtype = {k: np.asarray(v).dtype for k, v in params.items()}
        if self.weight_decay and not self.decoupled:
            g = {k: v + self.weight_decay * params[k] for k, v in g.items()}
        updates, new_state = self._step(g, state, count + 1, lr)
        if self.weight_decay and self.decoupled:
            wd = self.constant(self.weight_decay)
            scale = lr * wd if self.decay_scaled_by_lr else wd
            updates = {k: u - scale * params[k] for k, u in updates.items()}
        return {k: np.asarray(u, dtype=dtype[k]) for k, u in updates.items()}, new_state

    def _clip(self, grads: Mapping[str, np.ndarray]) -> Arrays:
        g = {k: np.asarray(v) for k, v in grads.items()}
        if self.clip_value:
            c = self.clip_value
            return {k: np.clip(v, -c, c) for k, v in g.items()}
        if self.clip_norm:
            c = self.clip_norm
            return {k: v * (c / max(float(np.linalg.norm(v)), c)) for k, v in g.items()}
        if self.clip_global_norm:
            c = self.clip_global_norm
            norm = math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in g.values()))
            return {k: v * (c / norm) for k, v in g.items()} if norm > c else g
        return g

    def _step(self, g: Arrays, state, t: int, lr: float) -> tuple[Arrays, dict[str, Any]]:
        """The rule's own update (learning rate included) at step ``t`` (from 1)."""
        raise NotImplementedError

    # -- description ------------------------------------------------------------------------

    def replace(self, **changes) -> Rule:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def options(self) -> dict[str, Any]:
        """Every field that differs from a plain rule (no decay, no clipping)."""
        out = {"learning_rate": self.learning_rate}
        for f in dataclasses.fields(self):
            if f.name == "learning_rate":
                continue
            value = getattr(self, f.name)
            if f.name in ("decoupled", "decay_scaled_by_lr") and not self.weight_decay:
                continue
            if value != f.default or f.name in self._always:
                out[f.name] = value
        if "float32_constants" in out:  # last: it qualifies the numbers before it
            out["float32_constants"] = out.pop("float32_constants")
        return out

    _always: ClassVar[tuple[str, ...]] = ()

    def describe(self) -> str:
        """``adam(learning_rate=0.001, b1=0.9, ..., eps=1e-07, epsilon_hat=True)``."""
        return (
            f"{self.name}(" + ", ".join(f"{k}={_fmt(v)}" for k, v in self.options().items()) + ")"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the rule's name and every field (a schedule by its name)."""
        out: dict[str, Any] = {"rule": self.name}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = _fmt(value) if callable(value) else value
        return out


@dataclass(frozen=True)
class SGD(Rule):
    """Stochastic gradient descent, with momentum.

    Attributes:
        momentum: the momentum coefficient (0: plain SGD).
        nesterov: Nesterov momentum (``g + momentum * buf``).
        dampening: PyTorch's ``buf = momentum * buf + (1 - dampening) * g``; its first step
            is ``buf = g``, undampened, as PyTorch does.
        lr_in_velocity: Keras' form, ``v = momentum * v - lr * g; w += v``, where the
            learning rate enters the velocity; PyTorch and optax multiply the trace by the
            learning rate at the end. Equal for a constant learning rate.
    """

    momentum: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0
    lr_in_velocity: bool = False

    name: ClassVar[str] = "sgd"
    _always: ClassVar[tuple[str, ...]] = ("momentum",)

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self.momentum, "sgd momentum")
        _number(self.dampening, "sgd dampening", high=1.0)
        if self.lr_in_velocity and self.dampening:
            raise InputError("sgd: dampening is PyTorch's; Keras' velocity form has none")

    def init(self, params):
        return {"buf": {k: np.zeros_like(np.asarray(v)) for k, v in params.items()}}

    def _step(self, g, state, t, lr):
        if not self.momentum:
            return {k: -lr * v for k, v in g.items()}, state
        m, buf, updates = self.constant(self.momentum), {}, {}
        for k, v in g.items():
            old = state["buf"][k]
            if self.lr_in_velocity:  # Keras: the velocity holds -lr * g
                buf[k] = m * old - lr * v
                updates[k] = m * buf[k] - lr * v if self.nesterov else buf[k]
            else:
                buf[k] = v.copy() if t == 1 else m * old + (1 - self.dampening) * v
                updates[k] = -lr * (v + m * buf[k] if self.nesterov else buf[k])
        return updates, {"buf": buf}


@dataclass(frozen=True)
class Adam(Rule):
    """Adam (Kingma and Ba), and AdamW with ``weight_decay`` and ``decoupled=True``.

    Attributes:
        b1, b2: the decay rates of the first and second moment estimates.
        eps: the epsilon added to the denominator.
        eps_root: an epsilon inside the square root, ``sqrt(v_hat + eps_root)`` (optax).
        epsilon_hat: ``False``: Algorithm 1 of the paper, ``m_hat / (sqrt(v_hat) + eps)``
            (optax, PyTorch); ``True``: Keras' form, the bias correction folded into the
            step size, ``lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``: the
            paper's "epsilon hat", equal to ``eps / sqrt(1 - b2^t)`` in Algorithm 1's
            terms (``eps * 31.6`` at the first step with ``b2 = 0.999``).
        bias_correction: divide the moments by ``1 - b^t`` (all three frameworks do).
        amsgrad: use the running maximum of ``v`` (Keras and PyTorch ``amsgrad=True``).
    """

    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    eps_root: float = 0.0
    epsilon_hat: bool = False
    bias_correction: bool = True
    amsgrad: bool = False

    name: ClassVar[str] = "adam"
    _always: ClassVar[tuple[str, ...]] = ("b1", "b2", "eps")

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self.b1, f"{self.name} b1", high=1.0)
        _number(self.b2, f"{self.name} b2", high=1.0)
        _number(self.eps, f"{self.name} eps")
        _number(self.eps_root, f"{self.name} eps_root")

    def init(self, params):
        zeros = {k: np.zeros_like(np.asarray(v)) for k, v in params.items()}
        state = {"m": zeros, "v": dict(zeros)}
        if self.amsgrad:
            state["v_max"] = dict(zeros)
        return state

    def _step(self, g, state, t, lr):
        b1, b2 = self.b1, self.b2
        m = {k: b1 * state["m"][k] + (1 - b1) * v for k, v in g.items()}
        v2 = {k: b2 * state["v"][k] + (1 - b2) * np.square(v) for k, v in g.items()}
        new_state = {"m": m, "v": v2}
        vv = v2
        if self.amsgrad:
            vv = {k: np.maximum(state["v_max"][k], v2[k]) for k in g}
            new_state["v_max"] = vv
        c1 = 1 - self.constant(b1) ** t if self.bias_correction else 1.0
        c2 = 1 - self.constant(b2) ** t if self.bias_correction else 1.0
        updates = {}
        for k in g:
            if self.epsilon_hat:
                alpha = lr * math.sqrt(c2) / c1
                denom = np.sqrt(vv[k] + self.eps_root) + self.eps
                updates[k] = -(alpha * m[k]) / denom
            else:
                denom = np.sqrt(vv[k] / c2 + self.eps_root) + self.eps
                updates[k] = -lr * (m[k] / c1) / denom
        return updates, new_state


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay (``optax.adamw``'s default ``weight_decay=1e-4``)."""

    weight_decay: float = 1e-4
    decoupled: bool = True

    name: ClassVar[str] = "adamw"
    _always: ClassVar[tuple[str, ...]] = ("weight_decay", "b1", "b2", "eps")


@dataclass(frozen=True)
class RMSprop(Rule):
    """RMSprop (Tieleman and Hinton), centered or not, with momentum.

    Attributes:
        decay: the decay of the mean square (Keras ``rho``, PyTorch ``alpha``, optax
            ``decay``).
        eps: the epsilon of the denominator.
        eps_in_sqrt: ``True``: ``g / sqrt(nu + eps)`` (Keras, optax's default); ``False``:
            ``g / (sqrt(nu) + eps)`` (PyTorch, optax ``eps_in_sqrt=False``).
        centered: subtract the squared mean gradient from the mean square.
        momentum: momentum on the scaled step (0: none).
        nesterov: Nesterov momentum (optax).
        initial_scale: the mean square's starting value (optax).
        bias_correction: divide the averages by ``1 - decay^t`` (optax option).
        lr_in_momentum: ``True``: the momentum accumulates ``lr * g / rms`` (Keras, optax);
            ``False``: it accumulates ``g / rms`` and is multiplied by the learning rate at
            the end (PyTorch). Equal for a constant learning rate.
    """

    decay: float = 0.9
    eps: float = 1e-8
    eps_in_sqrt: bool = True
    centered: bool = False
    momentum: float = 0.0
    nesterov: bool = False
    initial_scale: float = 0.0
    bias_correction: bool = False
    lr_in_momentum: bool = True

    name: ClassVar[str] = "rmsprop"
    _always: ClassVar[tuple[str, ...]] = ("decay", "eps", "eps_in_sqrt")

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self.decay, "rmsprop decay", high=1.0)
        _number(self.eps, "rmsprop eps")
        _number(self.momentum, "rmsprop momentum")
        _number(self.initial_scale, "rmsprop initial_scale")

    def init(self, params):
        state = {
            "nu": {k: np.full_like(np.asarray(v), self.initial_scale) for k, v in params.items()}
        }
        zeros = {k: np.zeros_like(np.asarray(v)) for k, v in params.items()}
        if self.centered:
            state["mu"] = zeros
        if self.momentum:
            state["buf"] = dict(zeros)
        return state

    def _step(self, g, state, t, lr):
        d = self.decay
        nu = {k: d * state["nu"][k] + (1 - d) * np.square(v) for k, v in g.items()}
        new_state: dict[str, Any] = {"nu": nu}
        c = 1 - d**t if self.bias_correction else 1.0
        var = {k: nu[k] / c for k in g}
        if self.centered:
            mu = {k: d * state["mu"][k] + (1 - d) * v for k, v in g.items()}
            new_state["mu"] = mu
            var = {k: var[k] - np.square(mu[k] / c) for k in g}
        if self.eps_in_sqrt:
            scaled = {k: v / np.sqrt(var[k] + self.eps) for k, v in g.items()}
        else:
            scaled = {k: v / (np.sqrt(var[k]) + self.eps) for k, v in g.items()}
        if not self.momentum:
            return {k: -lr * s for k, s in scaled.items()}, new_state
        m, buf, updates = self.momentum, {}, {}
        for k, s in scaled.items():
            if self.lr_in_momentum:
                step = lr * s
                buf[k] = m * state["buf"][k] + step
                updates[k] = -(step + m * buf[k]) if self.nesterov else -buf[k]
            else:
                buf[k] = m * state["buf"][k] + s
                updates[k] = -lr * (s + m * buf[k] if self.nesterov else buf[k])
        new_state["buf"] = buf
        return updates, new_state


RULES: dict[str, type[Rule]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}
"""Rule name -> class (the names of ``--optimizer``)."""
