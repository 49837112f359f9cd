"""Framework adapters behind one interface (:mod:`xgrad.adapters.base`).

Importing this package imports no framework; :func:`get_adapter` imports one on demand.
"""

from xgrad.adapters.base import (
    DTYPES,
    AbstractAdapter,
    AbstractModel,
    Gradients,
    LayerValues,
    available_frameworks,
    get_adapter,
    known_frameworks,
)

__all__ = [
    "DTYPES",
    "AbstractAdapter",
    "AbstractModel",
    "Gradients",
    "LayerValues",
    "available_frameworks",
    "get_adapter",
    "known_frameworks",
]
