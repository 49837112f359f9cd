"""The rounding each reference gradient carries, measured by re-running the reference.

A gradient is a sum of terms (a kernel's ``input.T @ delta`` sums over the batch; a gradient
through a softmax sums over its outputs). When the terms cancel, the sum is far smaller than
they are, while its rounding error is still of their size times the unit roundoff: a
learnable scale before a ReLU and a training-mode BatchNorm has a gradient 1e-4 of its
terms (the normalisation takes the scale away, up to its epsilon), so float32 rounding is
1e-3 of that gradient; the gradient of ``sum(softmax(z))`` cancels entirely and is rounding
alone. Neither the sum nor ``dL/d output`` says how large the terms are.

:func:`reference_spread` measures it: the reference is evaluated again with every floating
input moved by :data:`NUDGE` units of roundoff (a seeded random sign per element), once each
way. That changes every rounding the forward and backward passes make, while it changes the
exact gradients by a few units of roundoff of themselves: each gradient then moves by about
its own rounding error, the size of its terms times the unit roundoff. The verdicts
(:mod:`xgrad.comparison.verdicts`) judge with it twice: a reference whose gradients are all
within their own rounding is degenerate (``uninformative``), and a side's gradient that
differs from the reference's by no more than a few times that rounding matches. A single
gradient that is zero up to its rounding (:meth:`Spread.zero`; an attention's key bias,
which the softmax cancels exactly) is judged absolutely, against the tolerance applied to
the size of its terms: its rounding over the unit roundoff
(:func:`~xgrad.metrics.tolerances.zero_floor`).

A 16-bit side is judged by a second measurement, :func:`low_precision_rounding`: how far
the reference's gradients move when the same model is computed in float16, every weight and
every operation rounded to 11 bits. Scaling the float64 measurement above by
``u(bfloat16) / u(float64)`` misses what matters there: the weights themselves are rounded
to 8 bits before anything is computed (token ids, the input of a language model, cannot be
moved at all), and a deep model's error is the sum of every operation's rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from xgrad.comparison.inputs import Inputs
from xgrad.comparison.sides import Side, evaluate
from xgrad.errors import XgradError
from xgrad.frameworks.numpy import NumpyModel
from xgrad.metrics import RELATIVE_NOISE, TOLERANCES, UNIT_ROUNDOFF

__all__ = ["LOW_PRECISION", "NUDGE", "Spread", "low_precision_rounding", "reference_spread"]

LOW_PRECISION = ("float16", "bfloat16")
"""The dtypes whose sides :func:`low_precision_rounding` measures the rounding of."""

NUDGE = 4
"""Units of roundoff (of the reference's dtype) each floating input is moved by: one to
four units in the last place, enough that no input rounds back to itself."""


@dataclass(frozen=True)
class Spread:
    """How far each reference gradient moved when only rounding changed.

    Attributes:
        norms: gradient entry name (a parameter, ``input``, ``input.0``) ->
            ``||g(nudged inputs) - g||_2`` in float64: the rounding the reference's own
            gradient carries, at the reference's dtype.
        factor: from the reference's dtype to the judged dtype: ``u(judged) / u(reference)``
            (1 when they are the same; ``2**29`` for xgrad's float64 referee judging
            float32 frameworks, whose rounding is that much coarser).
        unit: the judged dtype's unit roundoff (0 when not known: then no gradient counts
            as :meth:`zero`).
    """

    norms: dict[str, float]
    factor: float = 1.0
    unit: float = 0.0

    def noise(self, name: str) -> float | None:
        """The rounding a gradient ``name`` carries at the judged dtype, or ``None``."""
        norm = self.norms.get(name)
        return None if norm is None else norm * self.factor

    def zero(self, name: str, norm: float, total: float) -> bool:
        """Whether the gradient ``name`` (reference norm ``norm``) is zero up to rounding at
        the judged dtype: its value is rounding alone, and only an absolute difference can
        be judged there (:func:`~xgrad.metrics.tolerances.zero_floor`).

        Two conditions. Its norm is at most :data:`~xgrad.metrics.RELATIVE_NOISE` times its
        rounding at the judged dtype (:meth:`noise`): it is zero in exact arithmetic (an
        attention's key bias: the softmax ignores a shift shared by every key) or its
        terms cancel below the judged dtype's resolution. And that rounding is rounding at
        all: at most ``sqrt(unit)`` times ``total``, the norm of every reference gradient
        together. Rounding is the unit roundoff times the terms a gradient sums; a kink
        crossed in both measuring runs moves a gradient by a fraction of itself, which
        :attr:`factor` (``2**29`` from float64 to float32) would make a floor that hides
        anything.
        """
        noise = self.noise(name)
        if noise is None or not self.unit > 0 or not math.isfinite(total):
            return False
        return noise <= math.sqrt(self.unit) * total and norm <= RELATIVE_NOISE * noise


def reference_spread(ref: Side, inputs: Inputs, names: Iterable[str], dtype: str, tol: float):
    """The :class:`Spread` of the gradients ``names`` of ``ref``, judged in ``dtype``, or
    ``None`` when it cannot be measured or is not rounding.

    Two more evaluations of the reference model (without capture), with the inputs moved
    one way and the opposite way; each gradient's spread is the smaller of its two moves. A
    pre-activation within a few units of roundoff of a ReLU's kink may cross it in one of
    them, which moves the gradient by far more than rounding (the derivative flips); it
    crosses in one direction only, so the other move is rounding alone.

    ``None``: the reference's dtype has no unit roundoff, no input is floating (token ids
    cannot be moved), or an output moved by more than the tolerance, which rounding alone
    cannot do (a dropout drawing new masks, a model that reads its input's last bits).
    """
    names = list(names)
    u_ref = UNIT_ROUNDOFF.get(ref.model.dtype)
    u_judged = UNIT_ROUNDOFF.get(dtype)
    if u_ref is None or u_judged is None:
        return None
    limit = max(tol, TOLERANCES.get(dtype, tol))
    before = np.asarray(ref.grads.output, np.float64)
    moves = []
    for direction in (1.0, -1.0):
        nudged = _nudged(inputs, direction * NUDGE * u_ref)
        if nudged is None:
            return None
        again = evaluate("reference", ref.model, nudged, capture=False, side=0).grads
        after = np.asarray(again.output, np.float64)
        if before.shape != after.shape or not _within(after, before, limit):
            return None
        moves.append(_moves(ref.grads, again, names))
    norms = {n: min(m[n] for m in moves) for n in moves[0] if all(n in m for m in moves)}
    return Spread(norms, max(1.0, u_judged / u_ref), u_judged)


def low_precision_rounding(
    ref: Side, inputs: Inputs, names: Iterable[str], dtype: str, ends: Iterable[str] = ()
):
    """The rounding each gradient ``names`` carries in a ``dtype`` (16-bit) computation of
    the reference's model, as a :class:`Spread`, or ``None``.

    The reference, xgrad's float64 NumPy model of the spec, is evaluated once more in
    float16, from its weights rounded to float16, on the same inputs and loss: a correct
    computation whose every weight and every operation is rounded to 11 bits (its matmuls
    accumulate in float32, as the frameworks' 16-bit matmuls do on CPU). Each gradient's
    rounding is how far it lands from the float64 one; :attr:`Spread.factor` scales it to
    ``dtype`` (``u(bfloat16) / u(float16) = 8``; 1 for float16, where it is the rounding of
    another float16 computation itself). This measures what the float64 re-run cannot: the
    rounding of the weights every 16-bit side starts from, and the sum of the roundings of
    every operation a gradient passes through, which grows with depth.

    ``ends``: layer outputs the reference captured (:attr:`Gradients.activations` keys);
    each gets two more entries, ``"<end>:output"`` and ``"<end>:grad"`` (``dL/d`` it).

    ``None``: ``dtype`` is not 16-bit, or the reference is not a float64 NumPy model
    (:func:`xgrad.compare_models`' reference is your own model, which xgrad cannot
    recompute in another dtype), or the float16 output is not finite (float16 overflowed:
    range, not rounding). A value that is not finite in float16 has no entry.
    """
    u_judged, u_half = UNIT_ROUNDOFF.get(dtype), UNIT_ROUNDOFF["float16"]
    model, ends = ref.model, list(ends)
    if dtype not in LOW_PRECISION or not isinstance(model, NumpyModel):
        return None
    if model.dtype != "float64" or u_judged is None:
        return None
    half = NumpyModel(model.spec(), model.weights(), "float16")  # weights cast to float16
    try:
        again = evaluate("reference", half, inputs, capture=bool(ends), side=0).grads
    except XgradError:
        return None
    if not np.all(np.isfinite(np.asarray(again.output, np.float64))):
        return None
    norms = _moves(ref.grads, again, list(names))
    for end in ends:
        for key, values in (("output", "activations"), ("grad", "activation_grads")):
            a, b = getattr(ref.grads, values) or {}, getattr(again, values) or {}
            if end in a and end in b and np.shape(a[end]) == np.shape(b[end]):
                with np.errstate(all="ignore"):
                    moved = float(np.linalg.norm(np.subtract(b[end], a[end], dtype=np.float64)))
                if math.isfinite(moved):
                    norms[f"{end}:{key}"] = moved
    return Spread(norms, u_judged / u_half, u_judged)


def _moves(grads, again, names) -> dict[str, float]:
    """``||g(again) - g||`` of each gradient ``names`` both evaluations hold."""
    out = {}
    for name in names:
        a, b = _gradient(grads, name), _gradient(again, name)
        if a is None or b is None or np.shape(a) != np.shape(b):
            continue
        with np.errstate(all="ignore"):
            norm = float(np.linalg.norm(np.subtract(b, a, dtype=np.float64)))
        if math.isfinite(norm):
            out[name] = norm
    return out


def _within(a: np.ndarray, b: np.ndarray, limit: float) -> bool:
    with np.errstate(all="ignore"):
        diff = float(np.linalg.norm(a - b))
        norm = float(np.linalg.norm(b))
    return math.isfinite(diff) and diff <= limit * norm


def _nudged(inputs: Inputs, step: float) -> Inputs | None:
    """``inputs`` with every floating input moved by ``step`` relative to itself (a seeded
    random sign per element; a negative ``step`` moves each the other way); ``None`` when
    none is floating."""
    rng = np.random.default_rng(0)

    def move(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        moved = a.astype(np.float64) * (1 + step * rng.choice((-1.0, 1.0), size=a.shape))
        fine = a.dtype.kind == "f" and float(np.finfo(a.dtype).eps) <= abs(step) / 2
        return moved.astype(a.dtype) if fine else moved  # else the model casts it once

    if inputs.batch is None:
        if np.asarray(inputs.x).dtype.kind != "f":
            return None
        return replace(inputs, x=move(inputs.x))
    floating = inputs.batch.floating
    if not floating:
        return None
    leaves = inputs.batch.leaves
    batch = inputs.batch.with_leaves({n: move(leaves[n]) for n in floating})
    return replace(inputs, x=batch.first, batch=batch)


def _gradient(grads, name: str):
    """The gradient entry ``name`` of an evaluation: a parameter's, or an input's."""
    if name in grads.params:
        return grads.params[name]
    if grads.inputs is not None:
        return grads.inputs.get(name)
    return grads.input if name == "input" else None
