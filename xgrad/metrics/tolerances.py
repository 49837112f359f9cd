"""The tolerance table and the statuses: what a comparison is judged by, and what it can say.

The status of a comparison is decided by one number, the normwise relative error
``||g - ref||_2 / ||ref||_2``, against a per-dtype tolerance (:data:`TOLERANCES`). Normwise,
because elementwise relative errors explode wherever the reference is near zero (a ReLU
layer has many such entries) while the gradient as a whole is right to rounding level.
"""

from __future__ import annotations

import math

from xgrad.errors import InputError

__all__ = [
    "NOISE_FLOORS",
    "LOW_PRECISION_NOISE",
    "OK_STATUSES",
    "RELATIVE_NOISE",
    "STATUSES",
    "TOLERANCES",
    "UNIT_ROUNDOFF",
    "rtol_note",
    "status_of",
    "tolerance",
    "zero_floor",
]

UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
"""Each dtype's unit roundoff: a normwise tolerance below it fails on rounding alone."""


def rtol_note(rtol: float | None, dtype: str, what: str = "results") -> str | None:
    """A note when a given ``rtol`` is below ``dtype``'s unit roundoff (else ``None``): such
    a comparison mismatches on rounding alone, whatever the frameworks do. ``what`` names
    the things compared (``"cells"`` in a sweep)."""
    if rtol is None or dtype not in UNIT_ROUNDOFF or rtol >= UNIT_ROUNDOFF[dtype]:
        return None
    return (
        f"rtol {rtol:g} is below {dtype}'s unit roundoff ({UNIT_ROUNDOFF[dtype]:.1e}): "
        f"{dtype} {what} mismatch on rounding alone (its default tolerance is "
        f"{TOLERANCES[dtype]:g})"
    )


TOLERANCES: dict[str, float] = {
    "float64": 1e-10,
    "float32": 1e-5,
    "float16": 1e-2,
    "bfloat16": 4e-2,
}
"""Normwise relative tolerance per run dtype.

float32: a dense layer's gradient is a sum of products, each rounded with unit roundoff
u = 6e-8, and the error of such a sum grows like u times the square root of its length,
so for the widths seen in practice (up to a few thousand) it stays near 1e-6. 1e-5 leaves
a margin of about 10 above that and still flags the smallest real convention difference
the frameworks have (GELU tanh vs erf, 4e-5 to 6e-4 normwise). float64: u = 1.1e-16; 1e-10
is a wide margin that still flags a float32 computation, whose error is near 1e-7.
16-bit: u = 4.9e-4 (float16) and 3.9e-3 (bfloat16): about 20 and 10 units of roundoff,
measured on small GELU/LayerNorm/residual models where the frameworks' 16-bit gradients
land between 1e-3 and 2e-2. Override per call with ``rtol=``.
"""

NOISE_FLOORS: dict[str, float] = {
    "float64": 1e-14,
    "float32": 1e-6,
    "float16": 1e-2,
    "bfloat16": 1e-2,
}
"""Root-mean-square absolute difference below which a reference that is itself zero up to
rounding counts as matched (about 10 times the dtype's machine epsilon).

A relative error means nothing when the reference is 0: the gradient of ``sum(softmax(z))``
is exactly 0, and a float32 framework returns rounding noise of about 1e-8 there. Only when
the reference's own RMS is below the floor is the difference judged absolutely; everywhere
else the status is the normwise relative rule, or the relative noise floor below.

This floor is absolute, for terms of order 1. A gradient that is a small sum of large terms
that cancel carries rounding of the terms' size, not of its own: the verdicts measure that
rounding for each gradient (:mod:`xgrad.comparison.spread`) and pass it to
:func:`status_of` as ``noise`` (:data:`RELATIVE_NOISE` times the measured rounding; for a
gradient that is zero up to that rounding, :func:`zero_floor`).
"""

RELATIVE_NOISE = 8.0
"""A difference within this many times a gradient's own measured rounding (the spread of
the reference's gradient when only rounding changes, :mod:`xgrad.comparison.spread`) is
rounding: two correct computations differ by about 1.4 times it (each carries its own),
and one measurement of a short vector's spread can fall to half its typical size."""

LOW_PRECISION_NOISE = 4.0
"""A 16-bit side's difference within this many times the 16-bit rounding of the same model
(xgrad's NumPy model of the spec computed in float16, scaled to the judged dtype's unit
roundoff: :func:`xgrad.comparison.spread.low_precision_rounding`) is rounding. The 16-bit
tolerances are fixed multiples of the unit roundoff, but a 16-bit computation's error grows
with the number of operations each gradient passes through: on a spec of token embeddings,
four pre-LN transformer blocks of width 16 and an LM head, every framework's bfloat16
gradients land at 0.03 to 0.04 of the float64 reference (0.08 with eight blocks), above
0.04. Measured over 9 such specs (1 to 8 blocks, width 8 to 32, RoPE and RMSNorm or not) in
JAX, Flax, PyTorch and Keras, in bfloat16 and float16, each gradient's difference was at
most 2.7 times that rounding (1 to 1.5 typically): 4 leaves a margin. Never a relative
difference above ``4 * sqrt(u)`` (0.25 in bfloat16, 0.088 in float16), whatever the
rounding: a gradient whose 16-bit rounding comes near that has no digit left that a 16-bit
comparison could judge. A convention difference (an attention without its scale, another
RoPE layout) moves the gradients it reaches by up to 10 to 50 times that rounding."""


def zero_floor(rounding: float, dtype: str, tol: float) -> float:
    """The largest difference (a norm) that matches for a gradient that is zero up to its
    measured ``rounding`` (a norm, at ``dtype``).

    Such a gradient is zero in exact arithmetic, or its terms cancel below ``dtype``'s
    resolution (an attention's key bias: the softmax ignores a shift shared by every key),
    so its value, and every side's, is rounding alone: a relative difference means
    nothing. What is left is the difference against the terms it sums, judged as the plain
    rule judges a gradient whose terms do not cancel: ``tol`` times their size. Rounding is
    the unit roundoff times that size, so the size is ``rounding / u(dtype)``. The measured
    rounding is the reference's own, and another algorithm rounds the same terms by a
    different factor (torch's CPU flash-attention backward forms ``rowsum(dO * O)`` where
    xgrad's reference sums ``p * dp``): :data:`RELATIVE_NOISE` times it would be too close, and is
    the floor only when ``tol`` is below the unit roundoff.
    """
    unit = UNIT_ROUNDOFF.get(dtype)
    multiple = tol / unit if unit else 0.0
    return rounding * max(RELATIVE_NOISE, multiple)


STATUSES = ("match", "match-kink", "match-clip", "mismatch", "nonfinite", "uninformative")
"""Every status a comparison can have. ``uninformative``: every reference gradient is zero up
to its own rounding (the loss does not depend on the parameters, e.g. ``sum`` of a softmax
output), so nothing could be seen; the verdicts set it
(:func:`xgrad.comparison.verdicts.mark_uninformative`).
``match-kink`` and ``match-clip``: a difference that rounding at an activation's kink or at
crossentropy's clipping bound explains entirely (:mod:`xgrad.diagnosis.rounding`)."""

OK_STATUSES = ("match", "match-kink", "match-clip")
"""The statuses that count as a pass."""


def tolerance(dtype: str, rtol: float | None = None) -> float:
    """The tolerance for ``dtype``, or ``rtol`` when given.

    Raises:
        InputError: ``rtol`` is not a positive finite number, or the dtype has no entry.
    """
    if rtol is not None:
        if (
            isinstance(rtol, bool)
            or not isinstance(rtol, int | float)
            or not (math.isfinite(rtol) and rtol > 0)
        ):
            raise InputError(f"rtol must be a positive finite number, got {rtol!r}")
        return float(rtol)
    if dtype not in TOLERANCES:
        raise InputError(f"no tolerance for dtype {dtype!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[dtype]


def status_of(
    *, norm: float, diff_norm: float, size: int, dtype: str, tol: float, noise: float = 0.0
) -> str:
    """``match`` or ``mismatch`` for finite arrays, from the two norms that decide it.

    ``rel_norm = diff_norm / norm`` against ``tol``; but when the reference's norm ``norm``
    is itself below the noise floor (:data:`NOISE_FLOORS` times ``sqrt(size)``, i.e. an RMS
    below the floor) the reference is zero up to rounding, and ``diff_norm`` is judged
    against that floor instead. ``noise`` (a norm, 0 when not measured) is the relative
    noise floor: the rounding this gradient carries because its terms cancel (or, for one
    that is zero up to it, :func:`zero_floor`); a ``diff_norm`` within it is a match
    whatever ``rel_norm`` is.
    """
    floor = NOISE_FLOORS.get(dtype, 0.0) * math.sqrt(max(size, 1))
    if diff_norm <= noise:
        return "match"
    if norm <= floor:  # the reference is zero up to rounding: judge absolutely
        return "match" if diff_norm <= floor else "mismatch"
    return "match" if diff_norm / norm <= tol else "mismatch"
