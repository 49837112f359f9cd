"""PyTorch ``state_dict`` files: ``.pt`` (``torch.save``) and ``.safetensors``.

Reading never runs code from the file: ``.pt`` files are opened with
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only, and
anything but a flat mapping of names to tensors is refused. ``.safetensors`` holds tensors
only, by design.

Importing this module imports no framework; torch (and safetensors) when a file is read or
written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from xgrad._io import atomic_write
from xgrad.errors import ModelFileError, OutputError

__all__ = ["STATE_DICT_SUFFIXES", "load_state_dict", "save_state_dict"]

STATE_DICT_SUFFIXES = (".pt", ".safetensors")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".pth":
        suffix = ".pt"
    if suffix not in STATE_DICT_SUFFIXES:
        raise ModelFileError(
            f"state_dict file {str(path)!r}: the name must end in .pt (or .pth) or .safetensors"
        )
    return suffix


def _safetensors():
    try:
        import safetensors.torch
    except ImportError:
        raise ModelFileError(
            "reading or writing .safetensors needs the 'safetensors' package: "
            "pip install 'xgrad[io]'"
        ) from None
    return safetensors.torch


def save_state_dict(path: str | os.PathLike, state_dict: Mapping) -> None:
    """Write a ``state_dict`` (names to tensors) as ``.pt`` or ``.safetensors``, chosen by
    the file name; the file is written whole or not at all.

    Raises:
        ModelFileError: another suffix, or a value that is not a tensor.
        OutputError: the file cannot be written there.
    """
    import torch

    p = Path(path)
    suffix = _suffix(p)
    bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelFileError(f"state_dict entries {bad} are not tensors")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    if suffix == ".pt":

        def write(f):
            torch.save(tensors, f)
    else:
        data = _safetensors().save(tensors)

        def write(f):
            f.write(data)

    try:
        atomic_write(p, write, binary=True)
    except OutputError:
        raise
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        raise OutputError(f"cannot write {str(p)!r}: {' '.join(str(exc).split())[:200]}") from None


def load_state_dict(path: str | os.PathLike) -> dict:
    """Read a ``state_dict`` written by ``torch.save`` (``.pt``/``.pth``) or safetensors.

    Raises:
        ModelFileError: missing file, another suffix, a file that is not a state_dict, or a
            ``.pt`` file holding objects other than tensors (a pickled module, code), which
            ``torch.load(weights_only=True)`` refuses.
    """
    import torch

    p = Path(path)
    suffix = _suffix(p)
    if not p.is_file():
        raise ModelFileError(f"state_dict file {str(p)!r} does not exist")
    try:
        if suffix == ".pt":
            data = torch.load(p, map_location="cpu", weights_only=True)
        else:
            data = _safetensors().load_file(str(p))
    except Exception as exc:  # UnpicklingError, RuntimeError, SafetensorError...
        text = " ".join(str(exc).split())
        if "Unsupported global" in text:
            raise ModelFileError(
                f"state_dict file {str(p)!r} was refused: it holds objects other than tensors "
                "(a pickled module or code); xgrad reads .pt files with "
                "torch.load(weights_only=True) and never runs code from a file; save "
                "model.state_dict() instead"
            ) from None
        raise ModelFileError(
            f"cannot read {str(p)!r}: {type(exc).__name__}: {text[:300]}"
        ) from None
    if not isinstance(data, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()
    ):
        raise ModelFileError(
            f"{str(p)!r} is not a state_dict (a flat mapping of names to tensors); save "
            "model.state_dict()"
        )
    return dict(data)
