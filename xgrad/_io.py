"""Atomic file output: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from xgrad.errors import OutputError

__all__ = ["atomic_write", "check_writable"]


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any work, when ``path`` cannot be written.

    Raises:
        OutputError: the folder does not exist, is not a folder, is not writable, or
            ``path`` is an existing folder.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(f"output path {str(path)!r} is a folder; give a file name")
    if not folder.is_dir():
        raise OutputError(
            f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist; create it first"
        )
    if not os.access(folder, os.W_OK):
        raise OutputError(f"cannot write {str(path)!r}: folder {str(folder)!r} is not writable")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` and rename it to ``path``.

    An exception in ``write`` (or an interrupt) removes the temporary file and leaves any
    existing ``path`` untouched.

    Raises:
        OutputError: the target folder is missing or not writable.
    """
    path = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    try:
        # mkstemp creates 0600 files; give the result the mode a plain open() would.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(
            fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})
        ) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
