"""The reading phase of a comparison between two models: read both, pair them, and give the
candidate the reference's weights where it should have them.

:func:`read_pair` is shared by :func:`xgrad.compare_models`, :func:`xgrad.convert`
(``into=``) and :func:`xgrad.compare_training`: each reads a user's reference and candidate
the same way and gets the same notes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.align import Alignment, align
from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractModel
from xgrad.frameworks.registry import read_model

__all__ = ["ModelPair", "input_shape_of", "loaded_from", "model_text", "read_pair", "transfer"]


def input_shape_of(x) -> tuple[int, ...] | None:
    """The shape of one example of a batch ``x`` (``None`` for fewer than two axes)."""
    shape = np.shape(x)
    return tuple(shape[1:]) if len(shape) >= 2 else None


def model_text(model: AbstractModel) -> str:
    """The model in short text form (``10 -> 8:relu -> ...``), ``?`` where unknown."""
    shape = model.input_shape
    dims = str(shape[0]) if len(shape) == 1 else "x".join(map(str, shape))
    return " -> ".join([dims, *(info.describe() for info in model.layers)])


def _holds(b: np.ndarray, pool) -> bool:
    from xgrad.identify import rel

    return any(
        (other.shape == b.shape and rel(b, other) <= 1e-2)
        or (other.ndim == 2 and other.T.shape == b.shape and rel(b, other.T) <= 1e-2)
        for other in pool
    )


def loaded_from(ref: AbstractModel, cand: AbstractModel, alignment: Alignment) -> str | None:
    """Whether the candidate's weights came from the reference's: how many of the
    reference's non-constant arrays it holds, in place, transposed or at another place
    (``None``: none of them, an unrelated initialisation)."""
    ref_w = {k: np.asarray(v, np.float64) for k, v in ref.weights().items()}
    cand_w = {k: np.asarray(v, np.float64) for k, v in cand.weights().items()}
    pool = [a for a in ref_w.values() if a.size > 1 and np.ptp(a) > 0]
    found = informative = 0
    for ref_name, cand_name in alignment.names.items():
        a, b = ref_w.get(ref_name), cand_w.get(cand_name)
        if a is None or b is None or a.size < 2 or np.ptp(a) == 0:
            continue
        informative += 1
        found += _holds(b, pool)
    return f"{found} of {informative} arrays" if found else None


@dataclass
class ModelPair:
    """Two read models, paired.

    Attributes:
        reference: the reference model.
        candidate: the candidate (a copy holding the reference's weights after
            :func:`transfer` copied them).
        alignment: how the candidate's units and weights correspond to the reference's.
        notes: what the readers and the pairing noticed (layers in training mode, per-layer
            localisation unavailable, ...), each naming its side.
        transferred: whether the reference's weights were copied into the candidate.
    """

    reference: AbstractModel
    candidate: AbstractModel
    alignment: Alignment
    notes: list[str] = field(default_factory=list)
    transferred: bool = False


def read_pair(
    reference, candidate, x=None, *, mapping: str | Mapping[str, str] = "auto"
) -> ModelPair:
    """Read two models (any kind :func:`xgrad.read_model` reads; an ``AbstractModel`` as it
    is) and pair them; ``x`` (a batch) tells the readers the input shape (without it, the
    candidate is read with the reference's).

    Raises:
        AlignmentError: the models cannot be paired (see :func:`xgrad.align`).
        InputError: an object no framework reads, or a malformed ``mapping``.
    """
    shape = input_shape_of(x) if x is not None else None
    ref_model = read_model(reference, input_shape=shape)
    cand_model = read_model(candidate, input_shape=shape or ref_model.input_shape)
    alignment = align(ref_model, cand_model, mapping)
    notes = [
        f"{side} {info.path} ({info.name}): {info.note}"
        for side, model in (("reference", ref_model), ("candidate", cand_model))
        for info in model.walk()
        if info.note
    ]
    if alignment.note:
        notes.append(alignment.note)
    return ModelPair(ref_model, cand_model, alignment, notes)


def transfer(pair: ModelPair, how: bool | str = "auto") -> ModelPair:
    """Copy the reference's weights into (a copy of) the candidate: always (``True``), never
    (``False``), or when the candidate's weights are an unrelated initialisation
    (``"auto"``, with a note saying which it did). The user's objects are never changed.

    Raises:
        InputError: ``how`` is none of ``True``, ``False``, ``"auto"``.
    """
    if how not in (True, False, "auto"):
        raise InputError(f"transfer must be True, False or 'auto', got {how!r}")
    if how == "auto":
        found = loaded_from(pair.reference, pair.candidate, pair.alignment)
        how = not found
        pair.notes.append(
            f"transfer='auto': the candidate holds the reference's weights ({found}), so its "
            "own weights were compared"
            if found
            else "transfer='auto': the candidate's weights are an unrelated initialisation, so "
            "the reference's were copied into a copy of it"
        )
    if how:
        weights = pair.alignment.to_candidate(pair.reference.weights())
        pair.candidate = pair.candidate.with_weights(weights)
    pair.transferred = bool(how)
    return pair
