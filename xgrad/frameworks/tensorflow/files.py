"""Loading ``.keras`` model files in Keras safe mode: code stored in a file is never run.

Importing this module imports no framework; Keras is imported when a file is loaded.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

from xgrad.errors import ModelFileError

__all__ = ["load_keras_file"]


def load_keras_file(path: str | os.PathLike):
    """Load a ``.keras`` file (Keras 3 format) in safe mode, without its training config.

    Args:
        path: the ``.keras`` file.

    Returns:
        The ``keras.Model``.

    Raises:
        ModelFileError: the file is missing, not a ``.keras`` archive, truncated or
            corrupted, or holds code (a ``Lambda`` layer or another custom object) that safe
            mode refuses to run.
    """
    p = Path(path)
    if p.suffix.lower() != ".keras":
        raise ModelFileError(f"model file {str(p)!r}: expected a .keras file (Keras 3 format)")
    if p.is_dir():
        raise ModelFileError(f"model file {str(p)!r} is a folder, not a .keras file")
    if not p.is_file():
        raise ModelFileError(f"model file {str(p)!r} does not exist")
    if not zipfile.is_zipfile(p):
        raise ModelFileError(
            f"model file {str(p)!r} is not a .keras archive (truncated or corrupted?)"
        )
    from xgrad.frameworks.tensorflow.ops import keras

    try:
        return keras.saving.load_model(p, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError, OSError...
        text = " ".join(str(exc).split())
        if "lambda" in text.lower() or "safe_mode" in text.lower():
            raise ModelFileError(
                f"model file {str(p)!r} was refused: it holds code (a Lambda layer or custom "
                "object) that would have to run to load it; xgrad loads models in Keras safe "
                "mode and never runs code from a file"
            ) from None
        missing = re.findall(r"Could not locate (?:class|function) '([^']+)'", text)
        if missing:
            registered = re.findall(r"'registered_name': '([^']+)'", text)
            name = next((r for r in registered if r.endswith(">" + missing[0])), missing[0])
            raise ModelFileError(
                f"model file {str(p)!r} holds {name!r}, a layer or function of your own that "
                "Keras can rebuild only by running its code; xgrad loads files in safe mode, "
                "with Keras' own layers only, and never runs code from a file"
            ) from None
        raise ModelFileError(
            f"cannot load model file {str(p)!r}: {type(exc).__name__}: {text[:300]}"
        ) from None
