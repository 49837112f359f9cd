"""Benign rounding: a difference that float rounding alone explains is not a mismatch.

Two correct float32 computations can round a pre-activation to opposite sides of a ReLU
kink, or an output to opposite sides of crossentropy's clipping bound (``1 - 1e-7``), and
the derivative there flips: the gradients then differ far beyond any float32 tolerance,
although both are right to their precision. xgrad checks that this is all that happened:
the float64 reference's backward pass is re-run with the candidate's side of every kink and
bound (its captured activations and outputs decide the side), and when the candidate then
agrees with it within tolerance everywhere (and, in ``compare_models``, the reference agrees
with its own such re-run), the failing entries get the passing statuses ``match-kink`` or
``match-clip`` and a note explains why. Anything else stays a mismatch.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from xgrad.activations import get_activation
from xgrad.identify import rel
from xgrad.layers import Activation, Dense, forward_sequence
from xgrad.layers.base import steps_by_path
from xgrad.losses import EPSILON, Loss

__all__ = ["BENIGN", "explain_rounding"]

BENIGN = {"kink": "match-kink", "clip": "match-clip"}
"""The passing status of each benign rounding."""


def numpy_dtype(name: str):
    """The NumPy dtype of a dtype name (bfloat16: ml_dtypes'), or ``None``."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover
            return None
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(name)
    except TypeError:
        return None


def _eps(dtype) -> float:
    if dtype.name == "bfloat16":
        return 2.0**-7
    return float(np.finfo(dtype).eps)


def _backward(weights, steps, g, grads, deltas):
    """The steps' VJP where some layers' activation VJP ``dL/da -> dL/dz`` is given (by
    path), and every other layer runs its own."""
    for step in reversed(steps):
        layer, delta = step.layer, deltas.get(step.path)
        if delta is not None and isinstance(layer, Dense):
            dk, db, g = layer.linear_vjp(weights[f"{step.path}.kernel"], step.input, delta(g))
            grads[f"{step.path}.kernel"] = dk
            if db is not None:
                grads[f"{step.path}.bias"] = db
        elif delta is not None and isinstance(layer, Activation):
            g = delta(g)
        elif step.children:
            g = g + _backward(weights, step.children, g, grads, deltas)
        else:
            g = layer.vjp(weights, step, g, grads)
    return g


_FROM_OUTPUT = {  # activations whose derivative frameworks compute from the output itself
    "sigmoid": lambda a: a * (1 - a),
    "tanh": lambda a: 1 - a * a,
}


def _sides(steps, values: dict, dtype) -> tuple[dict, int]:
    """Each activation's VJP as a side computes it from its own values: on its side of every
    kink, and from its own outputs for sigmoid, tanh and softmax (whose derivatives near
    saturation magnify output rounding). Returns ``(path -> VJP, kinks flipped)``; ``-1``
    when a derivative flips far from any kink (not rounding)."""
    deltas, flipped = {}, 0
    for path, step in steps_by_path(steps).items():
        layer = step.layer
        name = layer.activation if isinstance(layer, Dense) else getattr(layer, "name", None)
        if name is None or path not in values:
            continue
        act = get_activation(name)
        a = np.asarray(values[path], np.float64)
        if act.kind in _FROM_OUTPUT:
            d = _FROM_OUTPUT[act.kind](a)
            deltas[path] = lambda g, d=d: g * d
            continue
        if act.kind == "softmax":
            deltas[path] = lambda g, a=a: a * (g - np.sum(g * a, axis=-1, keepdims=True))
            continue
        if not act.kinks or act.derivative is None:
            continue
        z = step.cache
        side = act.side_derivative(z, a)
        base = act.derivative(z)
        if side is not None and np.any(side != base):
            kinks = np.array(act.kinks)
            near = np.min(np.abs(z[side != base][:, None] - kinks[None, :]), axis=1)
            bound = 1e3 * _eps(dtype) * max(float(np.abs(z).max()), 1.0)
            if float(near.max()) > bound:
                return {}, -1
            deltas[path] = lambda g, d=side: g * d
            flipped += int(np.sum(side != base))
    return deltas, flipped


def _seed(inputs, output64: np.ndarray, output: np.ndarray, dtype) -> tuple[np.ndarray, int]:
    """dL/d output as a side computes it from its own output, in its own dtype (its clipping
    bounds included), as float64; and how many outputs it clips where float64 does not (or
    the other way round)."""
    if inputs.cotangent is not None:
        return inputs.cotangent, 0
    loss = inputs.loss
    own = np.asarray(output).astype(dtype)
    y = None if inputs.y is None else np.asarray(inputs.y).astype(dtype)
    grad = loss.value_and_grad(own, y)[1].astype(np.float64)
    if loss.name not in ("bce", "cce"):
        return grad, 0
    lo, hi = np.asarray(EPSILON, dtype), np.asarray(1 - EPSILON, dtype)
    inside = (own >= lo) & (own <= hi)
    inside64 = (output64 >= EPSILON) & (output64 <= 1 - EPSILON)
    return grad, int(np.sum(inside != inside64))


def _rerun(spec, weights, x, values, output, inputs, dtype):
    """``(params, dinput, kinks flipped, bounds flipped)`` of the float64 reference re-run
    with a side's kinks and clipping; ``None`` when the flips are not rounding."""
    with np.errstate(all="ignore"):
        out, steps = forward_sequence(spec.layers, weights, x)
        derivatives, kinks = _sides(steps, values, dtype)
        if kinks < 0:
            return None
        seed, clips = _seed(inputs, out, output, dtype)
        grads: dict = {}
        dx = _backward(weights, steps, seed, grads, derivatives)
    return grads, dx, kinks, clips


def _reference_seed(inputs, ref) -> np.ndarray:
    if inputs.cotangent is not None:
        return inputs.cotangent
    with np.errstate(all="ignore"):
        return inputs.loss.value_and_grad(np.asarray(ref.grads.output, np.float64), inputs.y)[1]


def explain_rounding(report, ref, side, alignment, inputs, *, tol: float):
    """The report with ``side``'s failures turned into ``match-kink``/``match-clip`` when
    rounding at kinks and clipping bounds explains all of them, and the note saying so;
    ``(report, None)`` otherwise."""
    spec = ref.model.spec()
    failing = [(e, m) for e, fw, m in report.failures() if fw == side.label]
    if spec is None or not failing or side.grads.activations is None:
        return report, None
    if any(
        m.status != "mismatch" or e.kind not in ("parameter", "input", "loss") for e, m in failing
    ):
        return report, None
    if not isinstance(inputs.loss, Loss) and inputs.cotangent is None:
        return report, None
    weights = {k: np.asarray(v, np.float64) for k, v in ref.model.weights().items()}
    x = np.asarray(inputs.x, np.float64)
    dtype = numpy_dtype(side.model.dtype)
    if dtype is None or dtype == np.float64 and ref.model.dtype == "float64":
        return report, None
    by_ref = {r.end: c.end for r, c in alignment.pairs}
    values = {
        p: side.grads.activations[c] for p, c in by_ref.items() if c in side.grads.activations
    }
    rerun = _rerun(spec, weights, x, values, side.grads.output, inputs, dtype)
    if rerun is None:
        return report, None
    grads, dx, kinks, clips = rerun
    kappa = rel(
        _seed(inputs, side.grads.output, side.grads.output, dtype)[0], _reference_seed(inputs, ref)
    )
    worst = rel(side.grads.input, dx)
    if inputs.cotangent is None and side.grads.loss is not None:  # the value, from its own output
        own = np.asarray(side.grads.output).astype(dtype)
        y = None if inputs.y is None else np.asarray(inputs.y).astype(dtype)
        value = float(inputs.loss.value_and_grad(own, y)[0])
        worst = max(worst, abs(side.grads.loss - value) / max(abs(value), 1e-30))
    for name, g in grads.items():
        cand = alignment.names.get(name)
        if cand in side.grads.params:
            got = side.grads.params[cand]
            worst = max(worst, rel(got.T if name in alignment.transposed else got, g))
    if worst > tol:
        return report, None
    if ref.model.dtype != "float64":  # both sides must be right to their own precision
        own = {p: ref.grads.activations[p] for p in by_ref if p in (ref.grads.activations or {})}
        again = _rerun(
            spec, weights, x, own, ref.grads.output, inputs, numpy_dtype(ref.model.dtype)
        )
        if again is None:
            return report, None
        ref_worst = rel(ref.grads.input, again[1])
        for name, g in again[0].items():
            ref_worst = max(ref_worst, rel(ref.grads.params[name], g))
        if ref_worst > tol:
            return report, None
    saturated = (
        isinstance(inputs.loss, Loss)
        and inputs.loss.name in ("bce", "cce")
        and any(e.kind == "loss" for e, _ in failing)
    )
    clips = clips or int(saturated)  # the float32 bound itself is 1 - 1.19e-7, not 1 - 1e-7
    status = BENIGN["kink"] if kinks else BENIGN["clip"] if clips else "match"
    parts = []
    if kinks:
        parts.append(f"{kinks} pre-activation(s) rounded to the other side of a kink")
    if clips:
        parts.append(f"{clips} output(s) rounded to the other side of the clipping bound")
    if not parts:
        parts.append(
            f"the loss is ill-conditioned at these outputs: {side.label}'s output rounding "
            f"moves dL/d output by {kappa:.2g} (relative)"
        )
    note = (
        f"{side.label}: {' and '.join(parts)}; re-run from {side.label}'s own outputs and "
        f"sides, the float64 reference agrees with {side.label} to {worst:.2g} (tolerance "
        f"{tol:g}) everywhere: rounding, not a convention, so the affected entries are "
        f"'{status}' (they pass)"
    )
    failed = {(e.name, side.label) for e, _ in failing}

    def mark(entry):
        if (entry.name, side.label) not in failed:
            return entry
        return replace(
            entry,
            results={
                **entry.results,
                side.label: replace(entry.results[side.label], status=status),
            },
        )

    layers = tuple(
        replace(
            layer,
            backward={
                fw: replace(m, status=status) if fw == side.label and m.status == "mismatch" else m
                for fw, m in layer.backward.items()
            },
        )
        for layer in report.layers
    )
    out = replace(
        report,
        parameters=tuple(mark(e) for e in report.parameters),
        input=mark(report.input),
        loss_value=None if report.loss_value is None else mark(report.loss_value),
        layers=layers,
        divergences=tuple(d for d in report.divergences if d.framework != side.label),
        notes=(*report.notes, note),
    )
    return out, note
