"""Optimizer conventions as cause records: each proposes alternatives to the reference's rule.

A cause is a record (as in :mod:`xgrad.diagnosis.records`): an id, the rules it applies to,
a summary line, what it needs, and the alternatives it proposes. Each alternative changes a
few fields of the reference's :class:`~xgrad.training.Rule`; :mod:`xgrad.training.replay`
tests it by replaying the candidate's gradients through the changed rule. What every cause
needs: the reference's rule (read from its optimizer, or named by the user) and the
candidate's gradients up to the diverging step; the candidate's rule, when it can be read,
puts its own values first.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.optim.rules import SGD, Adam, RMSprop, Rule

__all__ = [
    "FIELD_CAUSES",
    "OPTIMIZER_CAUSES",
    "Alternative",
    "Context",
    "OptimizerCause",
    "alternatives",
    "learning_rates",
    "rule_differences",
]


# -- alternatives --------------------------------------------------------------------------


@dataclass(frozen=True)
class Alternative:
    """One alternative to the reference's rule.

    Attributes:
        cause: the cause id it would confirm.
        changes: the rule's fields it changes.
        detail: the candidate's convention in words.
    """

    cause: str
    changes: dict
    detail: str

    def apply(self, rule: Rule) -> Rule | None:
        try:
            return rule.replace(**self.changes)
        except Exception:  # an impossible combination (e.g. dampening in Keras' form)
            return None


@dataclass(frozen=True)
class Context:
    """What the alternatives are drawn from.

    Attributes:
        reference: the reference's rule.
        candidate: the candidate's rule when it could be read, else ``None``.
        fitted_lr: the learning rate that best maps the reference rule's first update onto
            the candidate's (least squares), or ``None``.
        first_grads: the candidate's gradients at the first step (to fit a clipping norm),
            or ``None``.
    """

    reference: Rule
    candidate: Rule | None = None
    fitted_lr: float | None = None
    first_grads: Mapping[str, np.ndarray] | None = None


def _family(rule: Rule) -> type[Rule]:
    return next((k for k in (SGD, Adam, RMSprop) if isinstance(rule, k)), type(rule))


def _same_kind(ctx: Context) -> Rule | None:
    """The candidate's rule when it is known and of the reference's family (AdamW is Adam)."""
    c = ctx.candidate
    return c if c is not None and _family(c) is _family(ctx.reference) else None


def _known(ctx: Context, field_name: str):
    c = _same_kind(ctx)
    if c is None:
        return None
    try:
        return getattr(c, field_name)
    except AttributeError:
        return None


def _uniq(values) -> list:
    out = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


PLACEMENTS = {
    "paper": "to sqrt(v_hat), after the bias correction (Algorithm 1 of the paper: optax, PyTorch)",
    "hat": "to sqrt(v) before the bias correction (Keras' epsilon hat: eps / sqrt(1 - b2^t) in "
    "Algorithm 1's terms)",
    "root": "inside the square root, sqrt(v_hat + eps) (optax eps_root)",
}


def _placement(rule: Adam) -> tuple[str, float]:
    if rule.eps_root and not rule.eps:
        return "root", rule.eps_root
    return ("hat" if rule.epsilon_hat else "paper"), rule.eps


def _adam_epsilon(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    ref_place, ref_eps = _placement(ref)
    cand = _same_kind(ctx)
    cand_pv = _placement(cand) if isinstance(cand, Adam) else None
    values = _uniq([cand_pv[1] if cand_pv else None, 1e-8, 1e-7, ref_eps])
    out = []
    combos = [(p, v) for v in values for p in PLACEMENTS]
    if cand_pv:
        combos.insert(0, cand_pv)
    for place, value in _uniq(combos):
        if (place, value) == (ref_place, ref_eps):
            continue
        changes = {
            "paper": {"eps": value, "epsilon_hat": False, "eps_root": 0.0},
            "hat": {"eps": value, "epsilon_hat": True, "eps_root": 0.0},
            "root": {"eps": 0.0, "epsilon_hat": False, "eps_root": value},
        }[place]
        out.append(
            Alternative(
                "adam-epsilon",
                changes,
                f"the candidate adds eps {value:g} {PLACEMENTS[place]}; the reference adds "
                f"{ref_eps:g} {PLACEMENTS[ref_place]}",
            )
        )
    if not ref.eps_root and ref.eps:  # optax's adam(eps_root=...) keeps its eps as well
        for value in _uniq([cand.eps_root if isinstance(cand, Adam) else None, 1e-8, 1e-7]):
            out.append(
                Alternative(
                    "adam-epsilon",
                    {"eps_root": value},
                    f"the candidate adds eps_root {value:g} inside the square root, "
                    f"sqrt(v_hat + {value:g}) (optax eps_root), besides the eps {ref_eps:g} "
                    "both add",
                )
            )
    return out


def _decay_text(wd: float, decoupled: bool, scaled: bool = True) -> str:
    if not wd:
        return "no weight decay"
    if not decoupled:
        return f"L2 weight decay {wd:g} added to the gradient"
    return f"decoupled weight decay {wd:g}" + (" times the learning rate" if scaled else "")


def _weight_decay(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    now = _decay_text(ref.weight_decay, ref.decoupled, ref.decay_scaled_by_lr)
    combos = []
    known = _known(ctx, "weight_decay")
    if known is not None:
        combos.append((known, _known(ctx, "decoupled"), _known(ctx, "decay_scaled_by_lr")))
    combos += [(wd, True, True) for wd in (1e-4, 0.004, 0.01)]  # the frameworks' defaults
    if ref.weight_decay:
        combos += [
            (ref.weight_decay, not ref.decoupled, True),
            (ref.weight_decay, True, not ref.decay_scaled_by_lr),
            (0.0, ref.decoupled, True),
        ]
    combos += [(wd, False, True) for wd in (1e-4, 0.004, 0.01)]
    out = []
    for wd, dec, scaled in _uniq(combos):
        if (wd, dec, scaled) == (ref.weight_decay, ref.decoupled, ref.decay_scaled_by_lr):
            continue
        if not wd and not ref.weight_decay:
            continue
        out.append(
            Alternative(
                "weight-decay",
                {"weight_decay": wd, "decoupled": dec, "decay_scaled_by_lr": scaled},
                f"the candidate applies {_decay_text(wd, dec, scaled)}; the reference {now}",
            )
        )
    return out


def _momentum(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    out = []
    if isinstance(ref, SGD):
        known = _known(ctx, "momentum")
        for m in _uniq([known, 0.9, 0.99, 0.0]):
            if m != ref.momentum:
                out.append(
                    Alternative(
                        "momentum-convention",
                        {"momentum": m},
                        f"the candidate's momentum is {m:g}, the reference's {ref.momentum:g}",
                    )
                )
        if not ref.momentum:
            return out
        if not ref.lr_in_velocity:
            damp = ref.momentum if not ref.dampening else 0.0
            out.append(
                Alternative(
                    "momentum-convention",
                    {"dampening": damp},
                    f"the candidate dampens the momentum by {damp:g} (PyTorch's dampening: "
                    f"buf = m * buf + (1 - {damp:g}) * g); the reference by {ref.dampening:g}",
                )
            )
        out.append(
            Alternative(
                "momentum-convention",
                {"nesterov": not ref.nesterov},
                f"the candidate {'uses' if not ref.nesterov else 'does not use'} Nesterov "
                f"momentum; the reference {'does' if ref.nesterov else 'does not'}",
            )
        )
        if not ref.dampening:
            inside = not ref.lr_in_velocity
            out.append(
                Alternative(
                    "momentum-convention",
                    {"lr_in_velocity": inside},
                    "the candidate's velocity "
                    + (
                        "holds -lr * g (Keras)"
                        if inside
                        else "is multiplied by the learning rate at the end (PyTorch, optax)"
                    )
                    + "; they differ when the learning rate changes",
                )
            )
    elif isinstance(ref, RMSprop):
        known = _known(ctx, "momentum")
        for m in _uniq([known, 0.9, 0.0]):
            if m != ref.momentum:
                out.append(
                    Alternative(
                        "momentum-convention",
                        {"momentum": m},
                        f"the candidate's RMSprop momentum is {m:g}, the reference's "
                        f"{ref.momentum:g}",
                    )
                )
        if ref.momentum:
            out.append(
                Alternative(
                    "momentum-convention",
                    {"lr_in_momentum": not ref.lr_in_momentum},
                    "the candidate's momentum "
                    + (
                        "accumulates lr * g / rms (Keras, optax)"
                        if not ref.lr_in_momentum
                        else "is multiplied by the learning rate at the end (PyTorch)"
                    ),
                )
            )
            out.append(
                Alternative(
                    "momentum-convention",
                    {"nesterov": not ref.nesterov},
                    f"the candidate {'uses' if not ref.nesterov else 'does not use'} Nesterov "
                    "momentum",
                )
            )
    return out


def _rms_text(decay: float, eps: float, inside: bool) -> str:
    where = "inside the root, g / sqrt(nu + eps)" if inside else "outside, g / (sqrt(nu) + eps)"
    return f"decay {decay:g} and eps {eps:g} {where}"


def _rmsprop(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    now = _rms_text(ref.decay, ref.eps, ref.eps_in_sqrt)
    decays = _uniq([_known(ctx, "decay"), ref.decay, 0.9, 0.99])
    epss = _uniq([_known(ctx, "eps"), ref.eps, 1e-7, 1e-8])
    out = []
    for decay, eps, inside in itertools.product(decays, epss, (True, False)):
        if (decay, eps, inside) == (ref.decay, ref.eps, ref.eps_in_sqrt):
            continue
        out.append(
            Alternative(
                "rmsprop-convention",
                {"decay": decay, "eps": eps, "eps_in_sqrt": inside},
                f"the candidate's RMSprop has {_rms_text(decay, eps, inside)}; the "
                f"reference's {now}",
            )
        )
    out.append(
        Alternative(
            "rmsprop-convention",
            {"centered": not ref.centered},
            f"the candidate's RMSprop is {'' if not ref.centered else 'not '}centered; the "
            f"reference's is {'' if ref.centered else 'not '}centered",
        )
    )
    if ref.initial_scale != 1.0:
        out.append(
            Alternative(
                "rmsprop-convention",
                {"initial_scale": 1.0},
                "the candidate starts the mean square at 1 (TensorFlow 1's RMSProp); the "
                f"reference at {ref.initial_scale:g}",
            )
        )
    return out


def _bias_correction(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    flip = not ref.bias_correction
    return [
        Alternative(
            "bias-correction",
            {"bias_correction": flip},
            f"the candidate {'divides' if flip else 'does not divide'} the moment estimates by "
            f"1 - b^t; the reference {'does' if ref.bias_correction else 'does not'}",
        )
    ]


def _clip_text(kind: str | None, c: float | None) -> str:
    if kind == "clip_norm":
        return f"clipping each gradient array to norm {c:g}"
    if kind == "clip_global_norm":
        return f"clipping all gradients to global norm {c:g}"
    if kind == "clip_value":
        return f"clipping each gradient element to [-{c:g}, {c:g}]"
    return "no gradient clipping"


def _fitted_clip(ctx: Context) -> list[float]:
    """Global norms that would shrink the first update as the candidate's is shrunk: a
    smaller fitted learning rate times the first gradients' global norm (to 1, 2 and 3
    significant digits)."""
    ref, g = ctx.reference, ctx.first_grads
    if g is None or ctx.fitted_lr is None or callable(ref.learning_rate) or not ref.lr(0):
        return []
    scale = ctx.fitted_lr / ref.lr(0)
    norm = math.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64))) for v in g.values()))
    if not 0 < scale < 1 or not math.isfinite(norm):
        return []
    return [c for c in _uniq(float(f"{scale * norm:.{d}g}") for d in (1, 2, 3)) if c > 0]


def _clipping(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    kinds = ("clip_norm", "clip_global_norm", "clip_value")
    ref_kind = next((k for k in kinds if getattr(ref, k)), None)
    ref_c = getattr(ref, ref_kind) if ref_kind else None
    combos = []
    cand = _same_kind(ctx) or ctx.candidate
    if cand is not None:
        ck = next((k for k in kinds if getattr(cand, k)), None)
        combos.append((ck, getattr(cand, ck) if ck else None))
    if ref_kind:
        combos.append((None, None))
        combos += [(k, ref_c) for k in kinds]
    else:
        combos += [("clip_global_norm", c) for c in _fitted_clip(ctx)]
        combos += [(k, 1.0) for k in kinds]
    out = []
    for kind, c in _uniq(combos):
        if (kind, c) == (ref_kind, ref_c):
            continue
        changes = {k: (c if k == kind else None) for k in kinds}
        out.append(
            Alternative(
                "gradient-clipping",
                changes,
                f"the candidate applies {_clip_text(kind, c)}; the reference "
                f"{_clip_text(ref_kind, ref_c)}",
            )
        )
    return out


def _schedule(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    if not callable(ref.learning_rate):
        return []
    schedule = ref.learning_rate
    out = []
    for shift in (1, -1):

        def shifted(count: int, _s=shift) -> float:
            return float(np.asarray(schedule(max(count + _s, 0))))

        shifted.__name__ = f"{getattr(schedule, '__name__', 'schedule')}(count{shift:+d})"
        out.append(
            Alternative(
                "schedule-offset",
                {"learning_rate": shifted},
                f"the candidate evaluates the learning-rate schedule at count {shift:+d} (the "
                "reference, like Keras and optax, at the number of updates made before, "
                "from 0)",
            )
        )
    return out


def learning_rates(fitted: float | None, ref: Rule) -> list[Alternative]:
    """Learning-rate alternatives for a fitted rate: the rate rounded to 1, 2 and 3
    significant digits (the rate the user typed, when the fit is disturbed by another
    convention) and the fit itself."""
    if fitted is None or callable(ref.learning_rate) or not math.isfinite(fitted):
        return []
    values = [float(f"{fitted:.{d}g}") for d in (1, 2, 3)] + [fitted]
    out = []
    for lr in _uniq(values):
        if lr == ref.learning_rate or lr <= 0:
            continue
        out.append(
            Alternative(
                "learning-rate",
                {"learning_rate": lr},
                f"the candidate's learning rate is {_short(lr)}; the reference's "
                f"{ref.learning_rate!r}",
            )
        )
    return out


def _learning_rate(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    if callable(ref.learning_rate):
        return []
    known = _known(ctx, "learning_rate")
    out = []
    if known is not None and not callable(known):
        out += learning_rates(known, ref)[-1:]
    for alt in learning_rates(ctx.fitted_lr, ref):
        if alt not in out:
            out.append(alt)
    return out


def _short(value: float) -> str:
    for digits in range(1, 16):
        text = f"{value:.{digits}g}"
        if abs(float(text) - value) <= 1e-9 * abs(value):
            return text
    return repr(value)


def _float32(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    if ref.float32_constants:
        detail = (
            "the candidate computes with its hyperparameters as given; the reference (Keras) "
            "rounds its learning rate, weight decay, SGD momentum and Adam's betas in the bias "
            f"correction to float32, in float64 too (learning rate {ref.lr(0)!r})"
        )
    else:
        detail = (
            "the candidate rounds its learning rate, weight decay, SGD momentum and Adam's "
            "betas in the bias correction to float32, as Keras does in float64 too"
        )
    return [
        Alternative(
            "float32-hyperparameters", {"float32_constants": not ref.float32_constants}, detail
        )
    ]


def _adam_variant(ctx: Context) -> list[Alternative]:
    ref = ctx.reference
    out = []
    cand = _same_kind(ctx)
    if isinstance(cand, Adam) and (cand.b1, cand.b2) != (ref.b1, ref.b2):
        out.append(
            Alternative(
                "adam-betas",
                {"b1": cand.b1, "b2": cand.b2},
                f"the candidate's betas are ({cand.b1:g}, {cand.b2:g}), the reference's "
                f"({ref.b1:g}, {ref.b2:g})",
            )
        )
    for b1 in (0.9, 0.95, 0.8, 0.0):
        if b1 != ref.b1 and not (isinstance(cand, Adam) and (b1, ref.b2) == (cand.b1, cand.b2)):
            out.append(
                Alternative(
                    "adam-betas",
                    {"b1": b1},
                    f"the candidate's b1 is {b1:g}, the reference's {ref.b1:g}",
                )
            )
    for b2 in (0.999, 0.99, 0.98, 0.95):
        if b2 != ref.b2 and not (isinstance(cand, Adam) and (ref.b1, b2) == (cand.b1, cand.b2)):
            out.append(
                Alternative(
                    "adam-betas",
                    {"b2": b2},
                    f"the candidate's b2 is {b2:g}, the reference's {ref.b2:g}",
                )
            )
    out.append(
        Alternative(
            "adam-betas",
            {"amsgrad": not ref.amsgrad},
            f"the candidate {'uses' if not ref.amsgrad else 'does not use'} AMSGrad (the "
            "running maximum of v)",
        )
    )
    return out


@dataclass(frozen=True)
class OptimizerCause:
    """One optimizer convention, as a record.

    Attributes:
        id: the cause's name in reports.
        rules: the rule classes it applies to (empty: every rule).
        summary: one line for ``docs/training.md``.
        propose: the alternatives to the reference's rule it asks to replay.
        needs: the evidence it needs.
    """

    id: str
    rules: tuple[type[Rule], ...]
    summary: str
    propose: Callable[[Context], list[Alternative]]
    needs: str = field(
        default="the reference's rule and the candidate's gradients up to the diverging step"
    )

    def applies(self, rule: Rule) -> bool:
        return not self.rules or isinstance(rule, self.rules)


OPTIMIZER_CAUSES: tuple[OptimizerCause, ...] = (
    OptimizerCause(
        "adam-epsilon",
        (Adam,),
        "Adam's epsilon: its value (Keras 1e-7, optax and PyTorch 1e-8) and where it is added "
        "(Keras' epsilon hat before the bias correction, sqrt(v_hat) + eps, optax eps_root)",
        _adam_epsilon,
    ),
    OptimizerCause(
        "weight-decay",
        (),
        "decoupled decay vs L2 in the gradient, and its value (Keras AdamW 0.004, PyTorch "
        "0.01, optax 1e-4)",
        _weight_decay,
    ),
    OptimizerCause(
        "momentum-convention",
        (SGD, RMSprop),
        "SGD momentum: PyTorch's dampening, Nesterov, the learning rate inside Keras' velocity",
        _momentum,
    ),
    OptimizerCause(
        "rmsprop-convention",
        (RMSprop,),
        "RMSprop: decay (rho 0.9, alpha 0.99), epsilon inside or outside the root, centered",
        _rmsprop,
    ),
    OptimizerCause(
        "bias-correction",
        (Adam, RMSprop),
        "the moment estimates divided by 1 - b^t, or not",
        _bias_correction,
    ),
    OptimizerCause(
        "gradient-clipping",
        (),
        "gradients clipped per array, by global norm or by value, or not at all",
        _clipping,
    ),
    OptimizerCause(
        "schedule-offset",
        (),
        "a learning-rate schedule counted from step 0 on one side and from 1 on the other",
        _schedule,
    ),
    OptimizerCause("learning-rate", (), "a different learning rate", _learning_rate),
    OptimizerCause(
        "float32-hyperparameters",
        (),
        "Keras rounds its learning rate, momentum, weight decay and Adam's bias-correction "
        "betas to float32, in float64 too",
        _float32,
    ),
    OptimizerCause(
        "adam-betas",
        (Adam,),
        "Adam's betas, or AMSGrad on one side",
        _adam_variant,
    ),
)
"""Every optimizer cause, in the order they are tried."""


def alternatives(ctx: Context) -> list[Alternative]:
    """Every alternative the causes propose for ``ctx.reference``."""
    return [a for c in OPTIMIZER_CAUSES if c.applies(ctx.reference) for a in c.propose(ctx)]


FIELD_CAUSES = {
    "eps": "adam-epsilon",
    "epsilon_hat": "adam-epsilon",
    "eps_root": "adam-epsilon",
    "weight_decay": "weight-decay",
    "decoupled": "weight-decay",
    "decay_scaled_by_lr": "weight-decay",
    "momentum": "momentum-convention",
    "nesterov": "momentum-convention",
    "dampening": "momentum-convention",
    "lr_in_velocity": "momentum-convention",
    "lr_in_momentum": "momentum-convention",
    "decay": "rmsprop-convention",
    "eps_in_sqrt": "rmsprop-convention",
    "centered": "rmsprop-convention",
    "initial_scale": "rmsprop-convention",
    "bias_correction": "bias-correction",
    "clip_norm": "gradient-clipping",
    "clip_global_norm": "gradient-clipping",
    "clip_value": "gradient-clipping",
    "learning_rate": "learning-rate",
    "float32_constants": "float32-hyperparameters",
    "b1": "adam-betas",
    "b2": "adam-betas",
    "amsgrad": "adam-betas",
}
"""Rule field -> the cause it belongs to (RMSprop's ``eps`` is ``rmsprop-convention``)."""


def rule_differences(reference: Rule, candidate: Rule) -> list[Alternative]:
    """The causes in which two known rules differ, one :class:`Alternative` each (with the
    fields that differ, both ways, in words); one ``optimizer`` when they are different
    algorithms."""
    if _family(reference) is not _family(candidate):
        return [
            Alternative(
                "optimizer",
                {},
                f"the candidate runs {candidate.describe()}, the reference {reference.describe()}",
            )
        ]
    by_cause: dict[str, list[str]] = {}
    changes: dict[str, dict] = {}
    for f in dataclasses.fields(reference):
        a, b = getattr(reference, f.name), getattr(candidate, f.name)
        if a == b or (f.name == "learning_rate" and callable(a) and callable(b)):
            continue
        if _inert(reference, f.name) and _inert(candidate, f.name):
            continue
        cause = FIELD_CAUSES.get(f.name, "optimizer")
        if f.name == "eps" and isinstance(reference, RMSprop):
            cause = "rmsprop-convention"
        by_cause.setdefault(cause, []).append(f"{f.name} {_text(b)} vs {_text(a)}")
        changes.setdefault(cause, {})[f.name] = b
    return [
        Alternative(cause, changes[cause], "the candidate's rule as read has " + ", ".join(diffs))
        for cause, diffs in by_cause.items()
    ]


def _inert(rule: Rule, name: str) -> bool:
    """Whether field ``name`` cannot change ``rule``'s arithmetic: how weight decay is
    applied when there is none, how momentum is kept when there is none, where the learning
    rate enters the momentum when it is constant."""
    if name in ("decoupled", "decay_scaled_by_lr"):
        return not rule.weight_decay
    if name in ("nesterov", "dampening", "lr_in_velocity", "lr_in_momentum"):
        if not getattr(rule, "momentum", 0.0):
            return True
        return name in ("lr_in_velocity", "lr_in_momentum") and not callable(rule.learning_rate)
    return False


def _text(value) -> str:
    if callable(value):
        return getattr(value, "__name__", "a schedule")
    return _short(value) if isinstance(value, float) else str(value)
