"""Assertions for pytest users.

Example:
    >>> import numpy as np, xgrad
    >>> from xgrad.testing import assert_gradients_close
    >>> spec = xgrad.MLP(3, [xgrad.Dense(2, "tanh")])
    >>> report = assert_gradients_close(spec, np.ones((1, 3)), frameworks="numpy")
    >>> report.ok
    True
"""

from __future__ import annotations

from xgrad.report import Report
from xgrad.runner import compare

__all__ = ["assert_gradients_close"]


def assert_gradients_close(model, x, y=None, **kwargs) -> Report:
    """Compare like :func:`xgrad.compare` and fail unless every gradient matches.

    Takes exactly :func:`xgrad.compare`'s arguments. The failure is a
    :class:`~xgrad.GradientMismatchError` (an ``AssertionError``) whose message reads like
    ``numpy.testing.assert_allclose``'s: parameter and framework, mismatched elements, max
    absolute and relative difference, the worst index with both values. pytest shows the
    caller's line, not this function's.

    Returns:
        The :class:`~xgrad.Report`, for further checks.
    """
    __tracebackhide__ = True
    report = compare(model, x, y, **kwargs)
    report.raise_for_mismatch()
    return report
