"""Canonical weights: names, layout, deterministic initialisation, save and load.

Canonical params are an ordered ``dict`` from name to a float64 NumPy array. Layer ``i``
owns ``layers.{i}.{local}`` (nested: ``layers.{i}.layers.{j}.{local}``):

* Dense ``kernel``: shape ``(in, out)``, so a layer computes ``x @ kernel + bias`` (Keras
  and Flax store the kernel the same way; PyTorch stores ``(out, in)``); ``bias``: ``(out,)``,
  absent for layers with ``use_bias=False``;
* LayerNorm / RMSNorm / BatchNorm ``scale`` and ``bias``: ``(features,)``;
* BatchNorm state ``mean`` and ``var``: ``(features,)``; they travel with the parameters
  (one dict, one file) but have no gradient;
* Embedding ``embedding`` ``(vocab, dim)``; Attention ``query_kernel`` ``(dim, heads,
  head_dim)`` ... ``out_kernel`` ``(heads, head_dim, dim)``; GatedMLP ``gate_kernel`` ``(dim,
  hidden)`` ...: each kind's own names and shapes (``xgrad/layers/<kind>.py``).

Every framework maps its native names and layout to and from this form.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from xgrad._checks import require_finite
from xgrad._io import atomic_write
from xgrad.errors import ModelFileError, ParamsError
from xgrad.spec import MLP

__all__ = [
    "FILE_SUFFIXES",
    "Params",
    "check_params",
    "init_params",
    "load_params",
    "save_params",
]

Params = dict[str, np.ndarray]  # canonical name -> array; kernel (in, out), bias (out,), ...


def init_params(spec: MLP, seed: int = 0, *, bias_scale: float = 0.1) -> Params:
    """Deterministic float64 weights for ``spec``: parameters and state.

    Each layer draws its own weights (see its ``init``) from one generator, in layer order:
    Dense kernels are Glorot-uniform, ``U(-l, l)`` with ``l = sqrt(6 / (in + out))``, and
    biases (Dense and norm ``bias``) ``U(-bias_scale, bias_scale)``, non-zero by default so
    that bias gradients and the ``+ bias`` path are exercised (pass ``bias_scale=0`` for
    Keras' zero biases); norm scales are drawn around 1 and BatchNorm's moving statistics
    around (0, 1). The same
    ``(spec, seed, bias_scale)`` always gives the same arrays, on every platform; the global
    NumPy random state is neither read nor changed.

    Args:
        spec: the model.
        seed: a non-negative integer.
        bias_scale: half-width of the bias distribution, ``>= 0``.

    Returns:
        Canonical weights in canonical order (see :meth:`MLP.weight_shapes`).

    Example:
        >>> from xgrad import MLP, Dense
        >>> p = init_params(MLP(3, [Dense(4, "sigmoid")]), seed=0)
        >>> {k: v.shape for k, v in p.items()}
        {'layers.0.kernel': (3, 4), 'layers.0.bias': (4,)}
    """
    if not isinstance(spec, MLP):
        raise ParamsError(f"init_params needs an xgrad.MLP, got {type(spec).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ParamsError(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(bias_scale, int | float) and math.isfinite(bias_scale) and bias_scale >= 0):
        raise ParamsError(f"bias_scale must be a finite number >= 0, got {bias_scale!r}")
    rng = np.random.default_rng(int(seed))
    inputs = spec.layer_input_shapes()
    params: Params = {}
    for path, layer in spec.walk():
        for name, value in layer.init(rng, inputs[path], bias_scale=float(bias_scale)).items():
            params[f"{path}.{name}"] = value
    return {name: params[name] for name in spec.weight_shapes()}


def check_params(spec: MLP, params: Mapping[str, object]) -> Params:
    """Validate ``params`` (parameters and state) against ``spec``; float64 copies, in order.

    The arrays are copied, so later changes to the caller's arrays change nothing here.

    Raises:
        ParamsError: a name is missing or unexpected, a shape differs from the spec, an
            array is not of a real floating dtype, or holds NaN/Inf.
    """
    if not isinstance(params, Mapping):
        raise ParamsError(
            f"params must be a mapping of canonical names to arrays, got {type(params).__name__}"
        )
    shapes = spec.weight_shapes()
    missing = [k for k in shapes if k not in params]
    extra = [k for k in params if k not in shapes]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing}")
        if extra:
            parts.append(f"unexpected {extra}")
        raise ParamsError(
            f"params do not match the spec {spec.describe()}: {'; '.join(parts)}; "
            f"expected exactly {list(shapes)}"
        )
    out: Params = {}
    for name, shape in shapes.items():
        arr = np.asarray(params[name])
        if not np.issubdtype(arr.dtype, np.floating):
            raise ParamsError(
                f"param {name!r} has dtype {arr.dtype}; parameters must be floating point "
                "(float16, float32 or float64)"
            )
        if arr.shape != shape:
            hint = (
                " (transposed? canonical kernels are (in, out))" if arr.shape == shape[::-1] else ""
            )
            raise ParamsError(
                f"param {name!r} has shape {arr.shape} but the spec needs {shape}{hint}"
            )
        require_finite(arr, f"param {name!r} contains", ParamsError, "parameters must be finite")
        out[name] = np.array(arr, dtype=np.float64, copy=True)
    return out


FILE_SUFFIXES = (".npz", ".safetensors")
"""The weight files :func:`save_params` writes and :func:`load_params` reads, by suffix."""


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ModelFileError(
            f"unsupported weight file {str(path)!r}: the name must end in .npz or .safetensors"
        )
    return suffix


def save_params(path: str | os.PathLike, params: Mapping[str, np.ndarray]) -> Path:
    """Write canonical params to ``.npz`` or ``.safetensors`` (chosen by the file name).

    The file is written under a temporary name and renamed, so an interrupted call leaves
    either the old file or the new one, never half of one.

    Returns:
        The path written.

    Raises:
        ModelFileError: the suffix is neither ``.npz`` nor ``.safetensors``.
        OutputError: the file cannot be written there.
    """
    path = Path(path)
    fmt = _format_of(path)
    arrays = {str(k): np.ascontiguousarray(np.asarray(v)) for k, v in params.items()}
    for name, arr in arrays.items():
        if not np.issubdtype(arr.dtype, np.floating):
            raise ParamsError(f"param {name!r} has dtype {arr.dtype}; only floats can be saved")
    if fmt == ".npz":

        def write(f):
            np.savez(f, **arrays)
    else:
        try:
            from safetensors.numpy import save
        except ImportError:  # pragma: no cover - exercised only without the io extra
            from xgrad.errors import FrameworkNotInstalledError

            raise FrameworkNotInstalledError(
                "writing .safetensors needs the 'safetensors' package: pip install 'xgrad[io]'"
            ) from None

        def write(f):
            f.write(save(arrays, metadata={"format": "xgrad-canonical"}))

    atomic_write(path, write, binary=True)
    return path


def load_params(path: str | os.PathLike) -> Params:
    """Read canonical params from ``.npz`` (``allow_pickle=False``) or ``.safetensors``.

    Returns:
        A dict of float64 arrays: canonical names (``layers.{i}.kernel``/``bias``) in
        canonical order, other names in the file's order.

    Raises:
        ModelFileError: the file is missing, truncated, corrupted, holds pickled objects or
            non-float arrays, or has another suffix.
    """
    path = Path(path)
    fmt = _format_of(path)
    if not path.is_file():
        raise ModelFileError(f"weight file {str(path)!r} does not exist")
    try:
        if fmt == ".npz":
            # our own file handle: np.load leaves its own open when the archive is truncated
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
                raw = {k: data[k] for k in data.files}
        else:
            from safetensors.numpy import load_file

            raw = load_file(str(path))
    except ImportError:  # pragma: no cover
        from xgrad.errors import FrameworkNotInstalledError

        raise FrameworkNotInstalledError(
            "reading .safetensors needs the 'safetensors' package: pip install 'xgrad[io]'"
        ) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as exc:
        raise ModelFileError(
            f"cannot read weight file {str(path)!r}: {type(exc).__name__}: {exc} "
            "(is it truncated or not a weight file?)"
        ) from None
    except Exception as exc:  # safetensors raises its own SafetensorError
        raise ModelFileError(
            f"cannot read weight file {str(path)!r}: {type(exc).__name__}: {exc}"
        ) from None
    out: Params = {}
    for name, arr in raw.items():
        if not np.issubdtype(arr.dtype, np.floating):
            raise ModelFileError(
                f"weight file {str(path)!r}: array {name!r} has dtype {arr.dtype}, not a float"
            )
        out[name] = arr.astype(np.float64)
    if not out:
        raise ModelFileError(f"weight file {str(path)!r} holds no arrays")
    return _canonical_order(out)


_CANONICAL = re.compile(r"layers\.\d+(\.layers\.\d+)*\.[a-z_]+")
_LOCAL_NAMES = (
    *("kernel", "recurrent_kernel", "scale", "bias", "mean", "var", "embedding"),
    *(f"{p}_{s}" for p in ("query", "key", "value", "qkv", "out") for s in ("kernel", "bias")),
    *(f"{p}_{s}" for p in ("gate", "up", "down") for s in ("kernel", "bias")),
)
_LOCAL_ORDER = {name: i for i, name in enumerate(_LOCAL_NAMES)}
"""Each layer kind's local names in the order of its ``param_names`` then ``state_names``
(Dense/norms/Conv, LSTM/GRU, Embedding, Attention, GatedMLP), so a file read back keeps
canonical order."""


def _canonical_order(params: Params) -> Params:
    """Canonical names in canonical order (safetensors stores keys sorted); others as read."""
    keys = list(params)
    if not all(_CANONICAL.fullmatch(k) for k in keys):
        return params

    def key(name: str):
        parts = name.split(".")
        return (
            tuple(int(p) for p in parts[1:-1:2]),
            _LOCAL_ORDER.get(parts[-1], len(_LOCAL_ORDER)),
            parts[-1],
        )

    return {k: params[k] for k in sorted(keys, key=key)}
