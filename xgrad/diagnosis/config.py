"""Configuration differences between paired layers that xgrad reads on both sides
(``config-diff``): an epsilon, a GELU form, a slope, a momentum, a mode.

Every difference is reported, even when the numbers pass. It makes the verdict not ok when it
would change the layer's output or gradients by more than the tolerance at other inputs: the
reference's layer is re-run (forward, and back from a seeded random ``dL/d output``), with
its own weights, on its own captured input scaled by 0.1, 1 and 10 and shifted by one
standard deviation, once with its configuration and once with the candidate's
(docs/tolerances.md, "Configuration differences"). A difference that changes
nothing there (a dropout rate of an inactive dropout, a momentum in inference mode) is a note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from xgrad.diagnosis.evidence import Evidence
from xgrad.layers import Activation, Dense, Dropout

__all__ = ["STRUCTURAL", "ConfigDiff", "config_diffs", "normal_layers"]

STRUCTURAL = frozenset({"units", "use_bias", "scale", "center", "layers", "seed"})
"""Fields that say which weights a layer has (compared as parameters, paired or not), or
where its random mask comes from, rather than how it computes."""

SCALES = (0.1, 1.0, 10.0)
"""The factors the captured input is scaled by when a difference's effect is measured."""


@dataclass(frozen=True)
class ConfigDiff:
    """One configuration difference between paired layers.

    Attributes:
        path: the unit's path on the reference side.
        names: side -> the layer's own name.
        kind: the layer kind.
        fields: field -> ``(reference value, candidate value)``.
        effect: the largest normwise relative change of the layer's output when the
            reference computes with the candidate's configuration (over :data:`SCALES` and a
            shifted input); ``None`` when it cannot be re-run.
        matters: whether ``effect`` exceeds the tolerance (the verdict is then not ok).
    """

    path: str
    names: dict[str, str]
    kind: str
    fields: dict[str, tuple]
    effect: float | None
    matters: bool

    def text(self) -> str:
        what = ", ".join(f"{f} {a!r} vs {b!r}" for f, (a, b) in self.fields.items())
        names = " <-> ".join(dict.fromkeys(self.names.values()))
        if self.effect is None:
            tail = "(not re-run: noted only)"
        elif self.matters:
            tail = f"changes its output or gradients by up to {self.effect:.2g} at other inputs"
        else:
            tail = f"changes nothing beyond rounding ({self.effect:.2g}): noted only"
        return f"config-diff at {self.path} {self.kind} ({names}): {what}; {tail}"

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "names": dict(self.names),
            "kind": self.kind,
            "fields": {f: [_json(a), _json(b)] for f, (a, b) in self.fields.items()},
            "effect": self.effect,
            "matters": self.matters,
        }


def _json(value):
    return value if isinstance(value, bool | int | float | str) or value is None else repr(value)


def _differences(a, b) -> dict[str, tuple]:
    if a is None or b is None or type(a) is not type(b) or not dataclasses.is_dataclass(a):
        return {}
    return {
        f.name: (getattr(a, f.name), getattr(b, f.name))
        for f in dataclasses.fields(a)
        if f.name not in STRUCTURAL and getattr(a, f.name) != getattr(b, f.name)
    }


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    den = float(np.linalg.norm(a))
    diff = float(np.linalg.norm(b - a))
    return diff / den if den else diff


def _forward_vjp(layers, weights: dict, x: np.ndarray, seed: int = 0):
    """``(output, dL/dinput, dL/dweights)`` of a unit's layers (the main one holding
    ``weights`` by local name; dropout skipped) for a seeded random ``dL/d output``."""
    flat = {f"u.{k}": v for k, v in weights.items()}
    steps, a = [], x
    with np.errstate(all="ignore"):
        for k, layer in enumerate(layers):
            if layer is None:
                raise ValueError("unknown layer")
            if layer.kind == "dropout":
                continue
            step = layer.forward(flat if k == 0 else {}, a, path="u")
            steps.append((k, step))
            a = step.output
        # a stream of its own: users draw their inputs from default_rng(0) too, and a dL/d
        # output equal to a LayerNorm's input is one its VJP maps to almost nothing
        g = np.random.default_rng([seed, 0xC0F16]).standard_normal(a.shape)
        grads: dict = {}
        for k, step in reversed(steps):
            g = step.layer.vjp(flat if k == 0 else {}, step, g, grads)
    return a, g, grads


def _effect(layers, k: int, other, weights: dict, x: np.ndarray) -> float | None:
    """How far the unit's output and gradients move when its ``k``-th layer takes the
    candidate's configuration, over scaled and shifted copies of ``x``."""
    if x is None or not np.all(np.isfinite(x)):
        return None
    alt = list(layers)
    alt[k] = other
    spread = float(np.std(x)) or 1.0
    worst = 0.0
    for xx in [s * x for s in SCALES] + [x + spread]:
        try:
            a = _forward_vjp(layers, weights, xx)
            b = _forward_vjp(alt, weights, xx)
        except (ValueError, TypeError, KeyError, IndexError):
            return None
        worst = max(worst, _rel(a[0], b[0]), _rel(a[1], b[1]))
        for name, grad in a[2].items():
            if name in b[2]:
                worst = max(worst, _rel(grad, b[2][name]))
    return worst


def normal_layers(layers) -> list | None:
    """A unit's layers in one form whatever the framework's: a Dense's activation as a layer
    of its own, identity layers (a ``linear`` activation, an inactive dropout) left out;
    ``None`` when a layer is unknown."""
    out = []
    for layer in layers:
        if layer is None:
            return None
        if isinstance(layer, Dense) and layer.activation != "linear":
            out += [Dense(layer.units, "linear", layer.use_bias), Activation(layer.activation)]
        elif isinstance(layer, Activation) and layer.name == "linear":
            continue
        elif isinstance(layer, Dropout) and not layer.active:
            continue
        else:
            out.append(layer)
    return out


def config_diffs(ev: Evidence) -> list[ConfigDiff]:
    """Every configuration difference between the units of ``ev`` whose configurations both
    sides state (in one form: :func:`normal_layers`), with its effect at other inputs; units whose
    layers differ in number or kind are left to the comparison of their values."""
    out = []
    for u in ev.units:
        ref, cand = normal_layers(u.layers_ref), normal_layers(u.layers_cand)
        if ref is None or cand is None or [a.kind for a in ref] != [b.kind for b in cand]:
            continue
        for k, (a, b) in enumerate(zip(ref, cand, strict=True)):
            fields = _differences(a, b)
            if not fields:
                continue
            effect = _effect(ref, k, b, u.weights_ref, u.input_ref)
            names = dict(
                zip(
                    ("reference", ev.framework),
                    u.label.split("(")[-1].rstrip(")").split(" <-> "),
                    strict=False,
                )
            )
            out.append(
                ConfigDiff(
                    path=u.path,
                    names=names,
                    kind=a.kind,
                    fields=fields,
                    effect=effect,
                    matters=effect is not None and effect > ev.tol,
                )
            )
    return out
