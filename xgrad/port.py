"""Port a saved model to another framework through a weights file, and check the port.

:func:`port_model_file` loads a model file (a Keras 3 ``.keras`` file, in safe mode), writes
its weights to a file (canonical names, or the target framework's own file such as a PyTorch
``state_dict``: :attr:`~xgrad.frameworks.base.AbstractFramework.native_files`), reads the file
back, rebuilds the model in the target framework from what was read, and compares the two on
a seeded random batch (:func:`sample_batch`: token ids for a model starting with an
``Embedding``) with :func:`xgrad.compare_models` (``transfer=False``: the written weights
themselves are checked). Both sides are compared layer by layer in canonical names (the
model read from the file, and the target's model of the same spec), so the pairing never has
to guess among weights of equal shapes. The round trip is bit-exact when every name written
reads back with exactly its array (whatever order the file keeps). ``xgrad port`` is this
function on the command line.

Which framework reads a model file, and which writes which weight files, is asked of the
frameworks (:mod:`xgrad.frameworks.registry`), never listed here.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xgrad.convert import read_sum_notes, spec_of, split_notes
from xgrad.errors import InputError, XgradError
from xgrad.frameworks.base import AbstractFramework, AbstractModel
from xgrad.frameworks.registry import get_framework, known_frameworks, lookup_framework, read_model
from xgrad.layers import Embedding
from xgrad.losses import get_loss, random_targets
from xgrad.params import FILE_SUFFIXES, load_params, save_params
from xgrad.report import Report
from xgrad.runner import compare_models
from xgrad.spec import MLP

__all__ = [
    "Port",
    "is_native_weight_file",
    "model_file_framework",
    "port_model_file",
    "sample_batch",
    "sample_inputs",
]


@dataclass(frozen=True)
class Port:
    """A saved model, its port rebuilt from the weights file written for it, and the check.

    Attributes:
        spec: the model.
        reference: the model loaded from the model file (a ``keras.Model``).
        candidate: the target framework's native model, holding the weights read back.
        path: the weights file written.
        count: the number of arrays written.
        kind: what the file holds: ``canonical names``, or the target framework's
            :attr:`~xgrad.frameworks.base.AbstractFramework.native_file_kind`.
        round_trip: whether the file read back holds exactly what was written, bit for bit.
        report: the comparison of ``reference`` with ``candidate``; its notes include
            :attr:`notes`.
        notes: what the port did that is not a copy: a weight the target holds as a sum of
            arrays (PyTorch's LSTM ``bias_ih_l0 + bias_hh_l0``) written as ``(bias, 0)``.
    """

    spec: MLP
    reference: object
    candidate: object
    path: Path
    count: int
    kind: str
    round_trip: bool
    report: Report
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """The round trip is bit-exact and every gradient matches."""
        return self.round_trip and self.report.ok

    def summary(self) -> str:
        """``weights written to PATH (N arrays, KIND); round trip bit-exact`` (the notes are
        the report's)."""
        exact = "bit-exact" if self.round_trip else "NOT bit-exact"
        return (
            f"weights written to {self.path} ({self.count} arrays, {self.kind}); round trip {exact}"
        )


def model_file_framework(suffix: str) -> AbstractFramework:
    """The framework that reads model files ending in ``suffix`` (``.keras``: tensorflow),
    installed or not.

    Raises:
        InputError: no framework reads such files.
    """
    suffix = suffix.lower()
    readable = []
    for name in known_frameworks():
        framework = lookup_framework(name)
        if suffix in framework.model_files:
            return framework
        readable += framework.model_files
    raise InputError(
        f"no framework reads {suffix!r} model files; xgrad reads {', '.join(readable)}"
    )


def is_native_weight_file(to: str, path: str | os.PathLike) -> bool:
    """Whether a weights file named like ``path`` for framework ``to`` holds the framework's
    own weights (``True``: a suffix of its ``native_files``) or canonical ones (``False``).

    Raises:
        InputError: ``path`` has neither kind of suffix for ``to``.
        FrameworkError: ``to`` is not a framework.
    """
    framework = lookup_framework(to)
    suffix = Path(path).suffix.lower()
    if suffix in framework.native_files:
        return True
    if suffix in FILE_SUFFIXES:
        return False
    allowed = [*FILE_SUFFIXES, *(s for s in framework.native_files if s not in FILE_SUFFIXES)]
    raise InputError(
        f"weights file {str(path)!r} for {framework.name}: the name must end in "
        f"{', '.join(allowed)}"
    )


def _write(framework: AbstractFramework, out: Path, spec: MLP, source) -> tuple:
    """Write ``source``'s weights to ``out``, read them back and build ``framework``'s model
    from what was read: ``(native model, model compared, round trip bit-exact, arrays written,
    kind)``; the model compared is an :class:`AbstractModel` in canonical names wherever one
    is known to hold what the file holds (see :func:`_compared`)."""
    weights = source.weights()
    if is_native_weight_file(framework.name, out):  # its own names, layout and loader
        native, exact, count = framework.write_native_file(out, spec, weights, dtype=source.dtype)
        compared = _compared(framework, spec, native, weights, exact, source.dtype)
        return native, compared, exact, count, framework.native_file_kind
    save_params(out, weights)
    loaded = load_params(out)
    exact = set(loaded) == set(weights) and all(  # names to arrays, whatever the file's order
        np.array_equal(loaded[k], np.asarray(weights[k], dtype=np.float64)) for k in weights
    )
    model = framework.build(spec, loaded, dtype=source.dtype)
    return model.native, model, exact, len(weights), "canonical names"


def _compared(framework: AbstractFramework, spec: MLP, native, weights, exact: bool, dtype):
    """What a native file's port is compared as: the native model read back, read into
    xgrad's layer kinds when its reader reads it as ``spec``; else, when the file read back is
    bit-exact (so the native model holds exactly the tensors of ``spec`` built from
    ``weights``, loaded strictly), that build, whose weights are named canonically: the pairing
    then goes by name, never by guessing among parameters of equal shapes (attention's
    kernels); else the native model itself, read module by module."""
    try:
        model = read_model(native, input_shape=spec.input_shape)
    except XgradError:
        model = None
    if model is not None and model.spec() == spec:
        return model
    return framework.build(spec, weights, dtype=dtype) if exact else native


def sample_inputs(
    input_shape: tuple, batch: int, seed: int, *, vocab: int | None = None
) -> np.ndarray:
    """Seeded inputs ``(batch, *input_shape)``: standard-normal floats, or with ``vocab`` (a
    model whose first layer is an :class:`~xgrad.Embedding`) integer token ids in ``[0,
    vocab)``."""
    rng = np.random.default_rng(seed)
    shape = (batch, *input_shape)
    return rng.standard_normal(shape) if vocab is None else rng.integers(0, vocab, size=shape)


def sample_batch(spec: MLP, batch: int, seed: int, loss: str) -> tuple[np.ndarray, object]:
    """The seeded inputs (:func:`sample_inputs`) and targets a port of ``spec`` is compared
    on: :func:`~xgrad.losses.random_targets` for an output of shape ``(batch,
    *spec.output_shape)`` (``None`` for a loss that takes none)."""
    first = spec.layers[0] if spec.layers else None
    vocab = first.vocab if isinstance(first, Embedding) else None
    x = sample_inputs(spec.input_shape, batch, seed, vocab=vocab)
    out = spec.output_shape
    y = random_targets(
        loss, batch, spec.output_dim, seed, shape=(batch, *out) if len(out) > 1 else None
    )
    return x, y


def port_model_file(
    path: str | os.PathLike,
    *,
    to: str,
    out: str | os.PathLike,
    batch: int = 8,
    seed: int = 0,
    loss: str = "projection",
) -> Port:
    """Port the model saved at ``path`` to framework ``to`` through the weights file ``out``,
    and compare the port with the model on a seeded random batch.

    Args:
        path: the model file (``.keras``, loaded in safe mode: code stored in the file is
            refused, never run).
        to: the framework to rebuild the model in (``numpy``, ``jax``, ``flax``, ...).
        out: the weights file to write: ``.npz`` or ``.safetensors`` in canonical names
            (kernel ``(in, out)``, in the model's dtype), or one of the target framework's
            own files (:func:`is_native_weight_file`; with ``torch``, ``.pt`` or
            ``.safetensors`` hold its ``state_dict``, weights ``(out, in)``).
        batch: rows of the random input (standard-normal floats, or token ids in ``[0,
            vocab)`` for a model whose first layer is an ``Embedding``; :func:`sample_batch`).
        seed: seed of the input (and targets).
        loss: the loss compared (default ``projection``, whose gradients are never degenerate).

    Returns:
        The :class:`Port`; ``port.ok`` when the round trip is bit-exact and every gradient
        matches.

    Raises:
        FrameworkError: ``to`` is not a framework; FrameworkNotInstalledError: it is not
            installed.
        InputError: ``out`` is not a weights file for ``to``, or ``batch`` is not positive.
        ModelFileError: the model file is missing, damaged or holds code.
    """
    if batch <= 0:
        raise InputError(f"batch must be a positive integer, got {batch}")
    get_loss(loss)
    framework = get_framework(to)
    out = Path(out)
    is_native_weight_file(framework.name, out)  # refused before anything is loaded or written
    reader = get_framework(model_file_framework(Path(path).suffix).name)  # installed?
    reference = reader.load_model_file(path)
    source = read_model(reference)
    spec = spec_of(source)
    candidate, compared, exact, count, kind = _write(framework, out, spec, source)
    x, y = sample_batch(spec, batch, seed, loss)
    report = compare_models(
        source,  # read already: layer by layer, canonical names (token ids included)
        compared,
        x,
        y,
        loss=loss,
        transfer=False,
        title=f"{path} -> {to} ({out.name})",
        read="layers" if isinstance(compared, AbstractModel) else "auto",
    )
    notes = read_sum_notes(source)
    if isinstance(compared, AbstractModel):
        notes += split_notes(compared)
    if notes:
        report = dataclasses.replace(report, notes=(*report.notes, *notes))
    return Port(spec, reference, candidate, out, count, kind, exact, report, notes)
