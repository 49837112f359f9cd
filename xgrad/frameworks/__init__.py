"""Frameworks behind one model interface (:mod:`xgrad.frameworks.base`), listed once in
:mod:`xgrad.frameworks.registry`. Importing this package imports no framework."""

from xgrad.frameworks.base import (
    DTYPES,
    AbstractFramework,
    AbstractModel,
    Gradients,
    LayerInfo,
)
from xgrad.frameworks.registry import (
    available_frameworks,
    get_framework,
    known_frameworks,
    read_model,
)

__all__ = [
    "DTYPES",
    "AbstractFramework",
    "AbstractModel",
    "Gradients",
    "LayerInfo",
    "available_frameworks",
    "get_framework",
    "known_frameworks",
    "read_model",
]
