"""How reports write numbers and shapes, shared by every rendering (no report imported)."""

from __future__ import annotations

import math

from xgrad.metrics import OK_STATUSES, Metrics

__all__ = ["fmt", "fmt_cos", "fmt_shape", "sort_key"]


def sort_key(m: Metrics) -> tuple[bool, float]:
    """How bad a comparison is, for picking the worst one: failures first, then the largest
    normwise error among the passing ones judged by it (not those that pass by the noise
    floor of a zero reference, or because rounding explains them)."""
    failing = m.status not in OK_STATUSES
    if m.status == "nonfinite" or math.isnan(m.rel_norm):
        return failing, math.inf
    if not failing and (m.status != "match" or m.rel_norm > m.tol):
        return failing, 0.0
    return failing, m.rel_norm


def fmt(value: float) -> str:
    """A metric in short scientific form (``0``, ``nan``, ``inf`` as such)."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return "0" if value == 0 else f"{value:.2e}"


def fmt_cos(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.9f}".rstrip("0").rstrip(".")


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
