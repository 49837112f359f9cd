"""Reading the values of flags: shapes, lists, arrays from files, a ``.keras`` file's path.

Each refusal is an :class:`~xgrad.errors.InputError` that names the flag and the value.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from xgrad.errors import InputError

__all__ = ["check_keras_path", "csv", "ints", "load_array", "shape"]


def shape(text: str) -> int | tuple[int, ...]:
    """``--input-dim``: a width (``"10"`` -> ``10``) or an example shape (``"28x28"`` ->
    ``(28, 28)``)."""
    try:
        dims = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise InputError(
            f"--input-dim takes a width (10) or an example shape (28x28), got {text!r}"
        ) from None
    if any(d <= 0 for d in dims):
        raise InputError(f"--input-dim must be positive, got {text!r}")
    return dims[0] if len(dims) == 1 else dims


def csv(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [p.strip() for p in text.split(",") if p.strip()]


def ints(text: str, flag: str) -> list[int]:
    """Comma-separated integers, ``flag`` naming the flag in the error."""
    try:
        return [int(p) for p in csv(text)]
    except ValueError:
        raise InputError(f"{flag} takes comma-separated integers, got {text!r}") from None


def load_array(path: str, flag: str, key: str | None = None) -> np.ndarray | None:
    """An array from ``.npy`` (or key ``key`` of ``.npz``; ``None`` when the file lacks it),
    never unpickling anything."""
    p = Path(path)
    if p.suffix.lower() not in (".npy", ".npz"):
        raise InputError(f"{flag} {path!r}: expected a .npy or .npz file")
    if not p.is_file():
        raise InputError(f"{flag} {path!r}: no such file")
    try:
        with open(p, "rb") as f:  # our handle, closed even when np.load fails half-way
            if p.suffix.lower() == ".npy":
                return np.load(f, allow_pickle=False)
            with np.load(f, allow_pickle=False) as data:
                if key is None:
                    raise InputError(f"{flag} {path!r}: give a .npy file")
                if key not in data.files:
                    return None
                return data[key]
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{flag} {path!r} cannot be read: {exc}") from None


def check_keras_path(path: str) -> None:
    """Refuse a ``MODEL.keras`` argument that is a folder, missing, or not a ``.keras`` file
    (before anything else is done; the file's contents are checked when it is loaded)."""
    p = Path(path)
    if p.is_dir():
        raise InputError(f"model file {path!r} is a folder, not a .keras file")
    if not p.is_file():
        raise InputError(f"model file {path!r} does not exist")
    if p.suffix.lower() != ".keras":
        raise InputError(f"model file {path!r}: expected a .keras file (Keras 3 format)")
