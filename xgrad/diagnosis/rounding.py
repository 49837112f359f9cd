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

import math
from dataclasses import dataclass, replace

import numpy as np

from xgrad.activations import get_activation
from xgrad.diagnosis.evidence import ReferenceValues
from xgrad.frameworks.kinds import to_canonical
from xgrad.identify import rel
from xgrad.layers import Activation, BatchNorm, Dense, Dropout, forward_sequence
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


def _backward(weights, steps, g, grads, deltas, factors=None):
    """The steps' VJP where some layers' activation VJP ``dL/da -> dL/dz`` is given (by
    path), and every other layer runs its own. With ``factors`` (a dict), a Dense kernel's
    gradient ``input.T @ delta`` is not formed: ``(input, delta)`` is put there instead."""
    for step in reversed(steps):
        layer, delta = step.layer, deltas.get(step.path)
        if isinstance(layer, Dense) and (delta is not None or factors is not None):
            d = delta(g) if delta is not None else layer.act.vjp(step.cache, step.output, g)
            kernel = weights[f"{step.path}.kernel"]
            if factors is None:
                dk, db, g = layer.linear_vjp(kernel, step.input, d)
                grads[f"{step.path}.kernel"] = dk
            else:
                factors[f"{step.path}.kernel"] = (step.input, d)
                db, g = (d.sum(axis=0) if layer.use_bias else None), d @ kernel.T
            if db is not None:
                grads[f"{step.path}.bias"] = db
        elif delta is not None and isinstance(layer, Activation):
            g = delta(g)
        elif step.children:
            g = g + _backward(weights, step.children, g, grads, deltas, factors)
        else:
            g = layer.vjp(weights, step, g, grads)
    return g


class _Gradient:
    """One re-run gradient, ``factor * (full + extra + X.T @ D)``: the reference's float64
    gradient ``full``, a small dense change ``extra``, and the low-rank change of a Dense
    kernel re-run on a few rows (``X``: their inputs, ``D``: the change of ``dL/dz`` there),
    which is never formed as a whole array."""

    def __init__(self, full, factor=1.0, extra=None, X=None, D=None) -> None:
        self.full, self.factor, self.extra, self.X, self.D = full, factor, extra, X, D

    def rel(self, got, squares: tuple[float, float] | None = None) -> float:
        """``||got - g|| / ||g||`` (as :func:`xgrad.identify.rel`). ``squares``:
        ``(||got - full||^2, ||full||^2)`` when known (the entry's metric pass measured them),
        used when ``factor`` is 1."""
        if self.X is None:
            g = self.full if self.extra is None else self.full + self.extra
            return rel(got, g if self.factor == 1.0 else g * self.factor)
        c, X, D = self.factor, self.X, self.D
        got = np.asarray(got)
        if squares is None or c != 1.0:
            squares = _squares(got, self.full, c)
        e2, f2 = squares  # ||got - c full||^2, ||full||^2
        with np.errstate(all="ignore"):
            A = X @ got  # (rows, out): rows of got seen through the rows' inputs
            B = X @ self.full
            cross = float(np.sum((A - c * B) * D))  # <got - c full, X.T D>
            gram = float(np.sum((X @ X.T) * (D @ D.T)))  # ||X.T D||^2
            fd = float(np.sum(B * D))  # <full, X.T D>
        num2 = e2 - 2 * c * cross + c * c * gram
        den2 = c * c * (f2 + 2 * fd + gram)
        if not (math.isfinite(num2) and math.isfinite(den2)):
            return math.inf
        if den2 <= 0:
            return 0.0 if num2 <= 0 else math.inf
        return math.sqrt(max(num2, 0.0) / den2)


def _squares(got: np.ndarray, full: np.ndarray, c: float) -> tuple[float, float]:
    """``||got - c * full||^2`` and ``||full||^2`` in float64, in blocks of rows (no
    full-size temporaries; ``got`` may be a transposed view)."""
    rows = max(1, (1 << 15) // max(1, full.size // max(1, full.shape[0])))
    e2, f2 = [], []
    with np.errstate(all="ignore"):
        for lo in range(0, full.shape[0], rows):
            f = full[lo : lo + rows].reshape(-1)
            e = np.subtract(got[lo : lo + rows], c * full[lo : lo + rows], dtype=np.float64)
            e = e.reshape(-1)
            e2.append(float(np.einsum("i,i", e, e)))
            f2.append(float(np.einsum("i,i", f, f)))
    return math.fsum(e2), math.fsum(f2)


_FROM_OUTPUT = {  # activations whose derivative frameworks compute from the output itself
    "sigmoid": lambda a: a * (1 - a),
    "tanh": lambda a: 1 - a * a,
}


@dataclass(frozen=True)
class _Derivative:
    """An activation's VJP as a side computes it: ``g * side`` (``kind="mul"``) or softmax's
    ``a * (g - sum(g * a))`` with the side's own outputs ``a`` (``kind="softmax"``); ``base``
    is the reference's own derivative where the side's differs only at kinks."""

    kind: str
    side: np.ndarray
    base: np.ndarray | None = None

    def vjp(self, rows=None, *, base: bool = False):
        d = self.base if base else self.side
        d = d if rows is None else d[rows]
        if self.kind == "softmax":
            return lambda g: d * (g - np.sum(g * d, axis=-1, keepdims=True))
        return lambda g: g * d


def _sides(steps, values: dict, dtype):
    """Each activation's VJP as a side computes it from its own values: on its side of every
    kink, and from its own outputs for sigmoid, tanh and softmax (whose derivatives near
    saturation magnify output rounding). Returns ``(path -> _Derivative, kinks flipped,
    dense, rows)``: ``dense`` when some derivative differs from the reference's everywhere
    (one taken from outputs), ``rows`` the batch rows holding a flipped kink (``None``: none);
    or ``None`` when a derivative flips far from any kink (not rounding)."""
    derivatives, flipped, dense, rows = {}, 0, False, None
    for path, step in steps_by_path(steps).items():
        layer = step.layer
        name = layer.activation if isinstance(layer, Dense) else getattr(layer, "name", None)
        if name is None or path not in values:
            continue
        act = get_activation(name)
        a = np.asarray(values[path])
        if act.kind in _FROM_OUTPUT:
            d = _FROM_OUTPUT[act.kind](a.astype(np.float64))
            derivatives[path], dense = _Derivative("mul", d), True
            continue
        if act.kind == "softmax":
            derivatives[path], dense = _Derivative("softmax", a.astype(np.float64)), True
            continue
        if not act.kinks or act.derivative is None:
            continue
        z = step.cache
        if act.kind == "relu" and not np.any(np.not_equal(a > 0, z > 0)):
            continue  # the common case, in three passes: no pre-activation changed side
        side = act.side_derivative(z, a)
        if side is None:
            continue
        base = act.derivative(z)
        differs = side != base
        if np.any(differs):
            kinks = np.array(act.kinks)
            near = np.min(np.abs(z[differs][:, None] - kinks[None, :]), axis=1)
            bound = 1e3 * _eps(dtype) * max(float(np.abs(z).max()), 1.0)
            if float(near.max()) > bound:
                return None
            derivatives[path] = _Derivative("mul", side, base)
            flipped += int(np.sum(differs))
            here = differs.reshape(differs.shape[0], -1).any(axis=1)
            rows = here if rows is None else rows | here
    return derivatives, flipped, dense, rows


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


def _separable(spec) -> bool:
    """Whether each example goes through the model on its own (no batch statistics, no
    dropout mask drawn for the batch's shape): then a few rows can be re-run apart."""
    return not any(
        (isinstance(layer, BatchNorm) and layer.training)
        or (isinstance(layer, Dropout) and layer.active)
        for _, layer in spec.walk()
    )


def _constant(a: np.ndarray) -> bool:
    flat = a.reshape(-1)
    return bool(flat.size) and bool(np.all(flat == flat[0]))


MAX_ROWS = 0.25
"""The share of the batch up to which a side's re-run is made on its differing rows only."""


def _rerun(reference, values, output, inputs, dtype):
    """``(params, dinput, kinks flipped, bounds flipped)`` of the float64 reference re-run
    with a side's kinks and clipping; ``None`` when the flips are not rounding.

    The reference's forward pass is made once per call (:class:`ReferenceValues`). When the
    side's derivatives differ from the reference's only on a few batch rows (a flipped kink)
    and its ``dL/d output`` equals the reference's there elsewhere (or is a constant multiple
    of it, as for ``sum`` and ``mean``), only those rows are re-run: the reference's own
    gradients, less those rows' share, plus the rows' share with the side's derivatives.
    Otherwise the whole backward pass is re-run on the shared forward steps.
    """
    spec, weights = reference.spec, reference.weights
    with np.errstate(all="ignore"):
        out, steps = reference.forward()
        found = _sides(steps, values, dtype)
        if found is None:
            return None
        derivatives, kinks, dense, rows = found
        seed, clips = _seed(inputs, out, output, dtype)
        result = None
        if not dense and _separable(spec):
            result = _rerun_rows(reference, derivatives, rows, seed)
        if result is None:
            grads: dict = {}
            deltas = {path: d.vjp() for path, d in derivatives.items()}
            dx = _backward(weights, steps, seed, grads, deltas)
            result = {k: _Gradient(v) for k, v in grads.items()}, dx
    return (*result, kinks, clips)


def _rerun_rows(reference, derivatives, rows, seed):
    """The re-run of :func:`_rerun` made on the differing rows only, or ``None`` when too many
    rows differ for that to pay."""
    seed_ref = reference.seed()
    batch = seed_ref.shape[0]
    factor = 1.0
    same = seed == seed_ref
    if not np.all(same):
        if _constant(seed) and _constant(seed_ref) and seed_ref.reshape(-1)[0] != 0:
            factor = float(seed.reshape(-1)[0] / seed_ref.reshape(-1)[0])  # sum, mean
            seed = seed_ref
        else:
            differ = ~same.reshape(batch, -1).all(axis=1)
            rows = differ if rows is None else rows | differ
    index = np.flatnonzero(rows) if rows is not None else np.zeros(0, dtype=np.intp)
    if index.size > MAX_ROWS * batch:
        return None
    full, full_dx = reference.gradients()
    if not index.size:
        return {k: _Gradient(v, factor) for k, v in full.items()}, _times(full_dx, factor)
    weights = reference.weights
    _, steps = forward_sequence(reference.spec.layers, weights, reference.x[index])
    own_part, side_part, own_low, side_low = {}, {}, {}, {}
    base = {p: d.vjp(index, base=True) for p, d in derivatives.items() if d.base is not None}
    _backward(weights, steps, seed_ref[index], own_part, base, own_low)
    side = {p: d.vjp(index) for p, d in derivatives.items()}
    dx_rows = _backward(weights, steps, seed[index], side_part, side, side_low)
    grads = {}
    for name, (X, d_side) in side_low.items():
        grads[name] = _Gradient(full[name], factor, X=X, D=d_side - own_low[name][1])
    for name, g in side_part.items():
        grads[name] = _Gradient(full[name], factor, extra=g - own_part[name])
    if full_dx is None:  # token ids: no dL/dinput
        return grads, None
    dx = np.array(full_dx, dtype=np.float64)
    dx[index] = dx_rows
    return grads, dx * factor


def _times(dx: np.ndarray | None, factor: float) -> np.ndarray | None:
    return None if dx is None else dx * factor


def _input_rel(got, want) -> float:
    """:func:`~xgrad.identify.rel` of two ``dL/dinput``: 0 when neither exists (token ids),
    inf when only one does."""
    if got is None or want is None:
        return 0.0 if got is None and want is None else math.inf
    return rel(got, want)


def _measured(reference, entry, label) -> tuple[float, float] | None:
    """``(||got - ref||^2, ||ref||^2)`` of a parameter from its entry's metrics (normwise
    error times the reference's norm, which is computed once per call), or ``None``."""
    m = None if entry is None else entry.results.get(label)
    if m is None or m.status == "nonfinite" or not math.isfinite(m.rel_norm):
        return None
    key = ("norm", entry.name)
    if key not in reference.memo:
        full = reference.gradients()[0][entry.name].reshape(-1)
        reference.memo[key] = float(np.einsum("i,i", full, full))
    f2 = reference.memo[key]
    return (m.rel_norm * math.sqrt(f2)) ** 2, f2


def _reference_rounds(reference, by_ref, inputs, tol) -> bool:
    """Whether a reference computing below float64 is right to its own precision: the float64
    re-run with its own kinks and outputs agrees with its gradients (once per call)."""
    key = ("reference rounds", tol)
    if key not in reference.memo:
        ref = reference.ref
        own = {p: ref.grads.activations[p] for p in by_ref if p in (ref.grads.activations or {})}
        again = _rerun(reference, own, ref.grads.output, inputs, numpy_dtype(ref.model.dtype))
        ok = again is not None
        if ok:
            ref_worst = _input_rel(ref.grads.input, again[1])
            for name, g in again[0].items():
                ref_worst = max(ref_worst, g.rel(ref.grads.params[name]))
            ok = ref_worst <= tol
        reference.memo[key] = ok
    return reference.memo[key]


def _reference_seed(inputs, ref) -> np.ndarray:
    if inputs.cotangent is not None:
        return inputs.cotangent
    with np.errstate(all="ignore"):
        return inputs.loss.value_and_grad(np.asarray(ref.grads.output, np.float64), inputs.y)[1]


def _applies(report, ref, side, inputs) -> list | None:
    """``side``'s failing entries when the rounding rule may explain them (mismatches of
    gradients or the loss value only, a loss of xgrad's or a cotangent), else ``None``."""
    failing = [(e, m) for e, fw, m in report.failures() if fw == side.label]
    if not failing or side.grads.activations is None:
        return None
    if any(
        m.status != "mismatch" or e.kind not in ("parameter", "input", "loss") for e, m in failing
    ):
        return None
    if not isinstance(inputs.loss, Loss) and inputs.cotangent is None:
        return None
    return failing


def _agreement(report, side, alignment, inputs, reference, rerun, dtype) -> float:
    """How far ``side``'s gradients (and loss value) are from the float64 reference re-run
    from ``side``'s own outputs (``rerun``)."""
    grads, dx, _, _ = rerun
    worst = _input_rel(side.grads.input, dx)
    if inputs.cotangent is None and side.grads.loss is not None:  # the value, from its own output
        own = np.asarray(side.grads.output).astype(dtype)
        y = None if inputs.y is None else np.asarray(inputs.y).astype(dtype)
        value = float(inputs.loss.value_and_grad(own, y)[0])
        worst = max(worst, abs(side.grads.loss - value) / max(abs(value), 1e-30))
    entries = {e.name: e for e in report.parameters}
    for name, g in grads.items():
        cand = alignment.names.get(name)
        if cand in side.grads.params:
            got = to_canonical(side.grads.params[cand], alignment.layouts.get(name))
            worst = max(worst, g.rel(got, _measured(reference, entries.get(name), side.label)))
    return worst


def _benign_report(report, side, failing, status: str, note: str):
    """The report with ``side``'s ``failing`` entries (and mismatching layer gradients) given
    the passing ``status``, its divergences dropped and ``note`` added."""
    failed = {(e.name, side.label) for e, _ in failing}

    def mark(entry):
        if (entry.name, side.label) not in failed:
            return entry
        result = replace(entry.results[side.label], status=status)
        return replace(entry, results={**entry.results, side.label: result})

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
    return replace(
        report,
        parameters=tuple(mark(e) for e in report.parameters),
        input=None if report.input is None else mark(report.input),
        loss_value=None if report.loss_value is None else mark(report.loss_value),
        layers=layers,
        divergences=tuple(d for d in report.divergences if d.framework != side.label),
        notes=(*report.notes, note),
    )


def explain_rounding(report, ref, side, alignment, inputs, *, tol: float, reference=None):
    """The report with ``side``'s failures turned into ``match-kink``/``match-clip`` when
    rounding at kinks and clipping bounds explains all of them, and the note saying so;
    ``(report, None)`` otherwise. ``reference`` (:class:`ReferenceValues`) is shared by the
    sides of one call."""
    failing = _applies(report, ref, side, inputs)
    if failing is None:
        return report, None
    reference = reference or ReferenceValues(ref, inputs)
    if reference.spec is None:
        return report, None
    dtype = numpy_dtype(side.model.dtype)
    if dtype is None or dtype == np.float64 and ref.model.dtype == "float64":
        return report, None
    by_ref = {r.end: c.end for r, c in alignment.pairs}
    values = {
        p: side.grads.activations[c] for p, c in by_ref.items() if c in side.grads.activations
    }
    rerun = _rerun(reference, values, side.grads.output, inputs, dtype)
    if rerun is None:
        return report, None
    worst = _agreement(report, side, alignment, inputs, reference, rerun, dtype)
    if worst > tol:
        return report, None
    if ref.model.dtype != "float64" and not _reference_rounds(reference, by_ref, inputs, tol):
        return report, None  # both sides must be right to their own precision
    kinks, clips = rerun[2], rerun[3]
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
        kappa = rel(
            _seed(inputs, side.grads.output, side.grads.output, dtype)[0],
            _reference_seed(inputs, ref),
        )
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
    return _benign_report(report, side, failing, status, note), note
