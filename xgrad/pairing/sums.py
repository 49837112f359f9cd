"""Parameters that enter a module only as their sum, against one parameter on the other side.

PyTorch's ``nn.LSTM`` holds two biases, ``bias_ih_l0`` and ``bias_hh_l0`` ``(4u,)``, and adds
both to every gate's pre-activation; Keras' ``LSTM`` and Flax's ``OptimizedLSTMCell`` hold one
``(4u,)`` bias. A port holds ``bias_ih + bias_hh`` there, and nothing in the shapes or the
names says which of the two the one bias is: it is neither, it is their sum. Such a group is
paired as a :class:`Sum` when, and only when, the values show it: the one array equals the
sum of two or more same-shaped arrays of the other side's paired module (within float32's
rounding of one addition), and is no constant. Where the values do not show it (an unrelated
initialisation), the arrays stay unpaired with the reason, never paired by a guess.

The gradient of a sum is each part's gradient, so each part is compared with the one array's
gradient; a transfer writes the sum into the one array, and ``(value, 0, ...)`` into the parts
(the convention :class:`~xgrad.frameworks.kinds.NativeParts` uses for torch's LSTM).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xgrad.frameworks.kinds import Layout, to_canonical, to_native
from xgrad.identify import rel
from xgrad.pairing.params import ParamPairing, Values, permutation

__all__ = ["SUM_FIT", "Sum", "pair_sums", "sums_note"]

SUM_FIT = 1e-6
"""How close the one array must be to the others' sum (normwise): float32's rounding of one
addition and one cast is below 1.2e-7."""


@dataclass(frozen=True)
class Sum:
    """Arrays that enter only as their sum, paired with one array of the other side.

    Attributes:
        refs: the reference's arrays (several, whose sum is the candidate's one; or one).
        cands: the candidate's arrays (one; or several, whose sum is the reference's one).
        layout: the axis permutation taking a reference array to a candidate array
            (``None``: the same layout).
    """

    refs: tuple[str, ...]
    cands: tuple[str, ...]
    layout: Layout | None = None

    def gradient(self, arrays: Mapping):
        """The candidate's gradient of any reference part, in the reference's layout: that of
        the candidate's one array, or of its first part (every part's is the same)."""
        name = self.cands[0]
        return None if name not in arrays else to_canonical(arrays[name], self.layout)

    def label(self, native: Mapping[str, str]) -> str:
        """How a report names the candidate's side."""
        names = [native.get(c, c) for c in self.cands]
        if len(self.cands) > 1:
            return f"{names[0]} (= the gradient of {' + '.join(names)}, summed in the model)"
        return f"{names[0]} (holds the sum)"

    def to_candidate(self, weights: Mapping) -> dict:
        """The reference's arrays written into the candidate's: their sum into its one
        array, or the reference's one array as ``(value, 0, ...)`` into its parts."""
        if not all(r in weights for r in self.refs):
            return {}
        total = sum(np.asarray(weights[r]) for r in self.refs)
        value = to_native(total, self.layout)
        if len(self.cands) == 1:
            return {self.cands[0]: value}
        return {c: value if k == 0 else np.zeros_like(value) for k, c in enumerate(self.cands)}

    def to_reference(self, arrays: Mapping) -> dict:
        """The candidate's arrays as the reference's: the sum into its one array, or the
        candidate's one array as ``(value, 0, ...)``."""
        if not all(c in arrays for c in self.cands):
            return {}
        value = to_canonical(sum(np.asarray(arrays[c]) for c in self.cands), self.layout)
        return {r: value if k == 0 else np.zeros_like(value) for k, r in enumerate(self.refs)}


def _f64(a):
    return None if a is None else np.asarray(a, dtype=np.float64)


def _find(one, many, side_of_one: str, values: Values) -> tuple[list[str], Layout | None] | None:
    """The names among ``many`` (``(name, shape)``, two to four at a time, one shape) whose
    sum is the array ``one`` names, and the layout from theirs to its; ``None`` if none."""
    name, shape = one
    other = "candidate" if side_of_one == "reference" else "reference"
    target = _f64(values.array(side_of_one, name))
    if target is None or target.size < 2 or np.ptp(target) == 0:
        return None
    by_shape: dict[tuple, list[str]] = {}
    for n, s in many:
        by_shape.setdefault(tuple(s), []).append(n)
    for s, names in by_shape.items():
        layout = permutation(s, tuple(shape)) if side_of_one == "candidate" else None
        if side_of_one == "reference":
            layout = permutation(tuple(shape), s)
        if layout is False or len(names) < 2:
            continue
        arrays = {n: _f64(values.array(other, n)) for n in names}
        for k in range(2, min(len(names), 4) + 1):
            for group in itertools.combinations(names, k):
                total = sum(arrays[n] for n in group)
                if side_of_one == "candidate":
                    total = to_native(total, layout)
                else:
                    total = to_canonical(total, layout)
                if np.shape(total) == target.shape and rel(target, total) <= SUM_FIT:
                    return list(group), layout
    return None


def pair_sums(
    all_r: list, all_c: list, left_r: list, left_c: list, acc: ParamPairing, values: Values
) -> None:
    """Pair, within one pair of modules, a parameter of one side with several of the other
    whose sum it holds (see the module docstring), removing them from ``left_r`` and
    ``left_c``; a part paired one to one with the one array by its values (the other parts
    zeros: a model written as ``(b, 0)``) is taken into the sum.

    Args:
        all_r, all_c: every ``(name, shape)`` of the modules' parameters, each side.
        left_r, left_c: those left unpaired by :func:`~xgrad.pairing.options.pair_params`.
        acc: the pairing being made (its ``sums``).
        values: both models' arrays.
    """
    for side_one, ones, manys, left_one, left_many in (
        ("candidate", all_c, all_r, left_c, left_r),
        ("reference", all_r, all_c, left_r, left_c),
    ):
        for one in ones:
            name = one[0]
            # the other side's arrays still free, or paired one to one with this one
            free = [m for m in manys if m in left_many or _paired_to(acc, m[0], name, side_one)]
            if not any(m in left_many for m in free) or (
                one not in left_one and len(free) == sum(m in left_many for m in free)
            ):
                continue
            found = _find(one, free, side_one, values)
            if found is None or not any(m in left_many for m in free if m[0] in found[0]):
                continue
            group, layout = found
            for n in group:
                _unpair(acc, n, name, side_one)
            one_side, many_side = (name,), tuple(group)
            candidate_one = side_one == "candidate"
            refs, cands = (many_side, one_side) if candidate_one else (one_side, many_side)
            acc.sums.append(Sum(refs, cands, layout))
            for n in (*group, name):
                acc.why.pop(n, None)
            left_one[:] = [x for x in left_one if x[0] != name]
            left_many[:] = [x for x in left_many if x[0] not in group]


def _paired_to(acc: ParamPairing, many: str, one: str, side_one: str) -> bool:
    if side_one == "candidate":
        return acc.names.get(many) == one
    return acc.names.get(one) == many


def _unpair(acc: ParamPairing, many: str, one: str, side_one: str) -> None:
    ref = many if side_one == "candidate" else one
    if _paired_to(acc, many, one, side_one):
        acc.names.pop(ref, None)
        acc.layouts.pop(ref, None)


def sums_note(sums, ref_native: Mapping[str, str], cand_native: Mapping[str, str]) -> str | None:
    """What the report says of the parameters paired as a sum, or ``None``."""
    if not sums:
        return None
    parts = []
    for s in sums:
        refs = " + ".join(ref_native.get(r, r) for r in s.refs)
        cands = " + ".join(cand_native.get(c, c) for c in s.cands)
        parts.append(f"reference {refs} with candidate {cands}")
    return (
        "paired as a sum (their values show one side holding the other's arrays added, as "
        "a one-bias port holds PyTorch's LSTM bias_ih + bias_hh): "
        + "; ".join(parts)
        + ". The gradient of a sum is each part's, so each part is compared with it; a "
        "transfer writes the sum into the one array and (value, 0) into the parts"
    )
