"""The xgrad exception hierarchy.

Every mistake a user can make surfaces as a subclass of :class:`XgradError`, with a message
that names the offending value and says what to do. Each subclass also derives from the
built-in exception a Python user would expect (``ValueError``, ``ImportError``, ...), so
existing ``except ValueError`` code keeps working.

    XgradError
    ├── SpecError                 a Dense/MLP spec, activation or loss that cannot be built
    ├── InputError                x, y, cotangent, params or options that do not fit the spec
    │   └── ParamsError           canonical params with missing, extra or mis-shaped entries
    ├── FrameworkError            an unknown framework name or a bad adapter object
    │   └── FrameworkNotInstalledError   a known framework whose package is not installed
    ├── AlignmentError            two models whose layers cannot be paired
    ├── GradientMismatchError     gradients that differ beyond tolerance (an AssertionError)
    ├── ModelFileError            an unreadable, corrupted or unsafe model / weight file
    └── OutputError               a report or weight file that cannot be written
"""

from __future__ import annotations

__all__ = [
    "AlignmentError",
    "FrameworkError",
    "FrameworkNotInstalledError",
    "GradientMismatchError",
    "InputError",
    "ModelFileError",
    "OutputError",
    "ParamsError",
    "SpecError",
    "XgradError",
]


class XgradError(Exception):
    """Base class of every error xgrad raises on purpose."""


class SpecError(XgradError, ValueError):
    """A model spec, activation name or loss name is invalid."""


class InputError(XgradError, ValueError):
    """An input array or option does not fit the spec (shape, dtype, missing targets, ...)."""


class ParamsError(InputError):
    """Canonical params do not match the spec: missing, extra or mis-shaped entries."""


class FrameworkError(XgradError, ValueError):
    """An unknown framework name, or an object that is not an adapter."""


class FrameworkNotInstalledError(FrameworkError, ImportError):
    """A known framework whose Python package is not installed."""


class AlignmentError(XgradError, ValueError):
    """The layers of two models cannot be paired one to one."""


class GradientMismatchError(XgradError, AssertionError):
    """Gradients differ by more than the tolerance."""


class ModelFileError(XgradError, OSError):
    """A model or weight file is unreadable, corrupted, or would need code execution to load."""


class OutputError(XgradError, OSError):
    """A report or weight file cannot be written where asked."""
