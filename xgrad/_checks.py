"""Shared input checks."""

from __future__ import annotations

import numpy as np

from xgrad.errors import XgradError


def require_finite(arr: np.ndarray, subject: str, error: type[XgradError], fix: str) -> None:
    """Raise ``error`` naming how many NaN/Inf values ``arr`` holds and where the first is.

    ``subject`` starts the message and carries its verb (``"x contains"``, ``"targets y
    contain"``); ``fix`` ends it.
    """
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise error(
            f"{subject} {int(bad.sum())} NaN/Inf value(s), the first at index {first}; {fix}"
        )
