"""Recurrent weights whose gate blocks the two sides store in another order, paired through
the permutation of the blocks.

A recurrent layer computes its gates from one matrix per input: PyTorch's ``nn.GRU`` holds
``weight_ih_l0 (3u, F)`` with its row blocks in the gate order ``r, z, n``; Keras' ``GRU``
(and xgrad's Flax GRU) holds ``kernel (F, 3u)`` with its column blocks ``z, r, h``, and its
two biases stacked as ``bias (2, 3u)`` (input, recurrent) where PyTorch holds ``bias_ih_l0``
and ``bias_hh_l0``. A correct port of a PyTorch GRU therefore holds each array transposed
*and* with its first two gate blocks swapped; nothing in the shapes tells, and an array
paired as it stands (only transposed) makes a correct port look wrong.

:func:`pair_blocks` lets the values decide, within one pair of modules (after
:func:`~xgrad.pairing.options.pair_params` and :func:`~xgrad.pairing.sums.pair_sums`):

* an array paired one to one whose candidate values are not the reference's as they stand
  (in its axis order) but are under exactly one permutation of 3 or 4 equal blocks (of two
  or more entries) along one axis is re-paired through it (:class:`BlockOrder`);
* arrays left unpaired where one side's one array is two to four of the other's of one
  shape stacked (the Keras ``(2, 3u)`` bias against ``bias_ih_l0``, ``bias_hh_l0``), each
  part's blocks permuted alike, are paired as the stack when exactly one stacking order and
  one permutation hold the values (:class:`BlockOrder` over a :class:`Join` one way,
  :class:`BlockSplit` the other).

Gradients are compared, and weights copied, through the permutation (a permutation moves
values, it never rounds them). Unrelated values (an initialisation the candidate did not
take from the reference) hold under no permutation: those arrays stay as
:func:`~xgrad.pairing.options.pair_params` left them (paired as they stand by their shapes,
or unpaired with its reason); nothing is guessed. A port that copied the blocks in the
reference's own order holds them as they stand and is paired so (the comparison then shows
the gate-order slip, and the diagnosis names it).

Example:
    >>> permute_blocks(np.arange(6.0), 0, (1, 0, 2))  # blocks (0 1 | 2 3 | 4 5)
    array([2., 3., 0., 1., 4., 5.])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xgrad.identify import rel
from xgrad.pairing.params import TIED, Join, ParamPairing, Split, Values

__all__ = ["BlockOrder", "BlockSplit", "blocks_note", "pair_blocks", "permute_blocks"]

BLOCKS = (3, 4)
"""How many gate blocks an axis may hold: a GRU's three, an LSTM's four."""
_HELD = 1e-6  # the relative difference at which an array holds another's values (a copy)
_PROBE = 16  # entries of each block looked at before the whole block
GRU_SWAP = (1, 0, 2)
"""PyTorch's GRU blocks ``r, z, n`` as Keras' ``z, r, h`` (and back: it is its own inverse)."""


def permute_blocks(a, axis: int, order: Sequence[int]) -> np.ndarray:
    """``a`` with its ``axis`` cut into ``len(order)`` equal blocks, block ``i`` of the result
    being block ``order[i]`` of ``a``."""
    a = np.asarray(a)
    pieces = np.split(a, len(order), axis=axis)
    return np.concatenate([pieces[i] for i in order], axis=axis)


def _inverse(order: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(order))


@dataclass(frozen=True)
class BlockOrder(Join):
    """A reference parameter whose blocks along ``along`` the candidate holds in another
    order: ``candidate parts = inner.split(permute_blocks(reference, along, order))``
    (``inner`` ``None``: the one part, as it stands).

    Attributes:
        along: the gate axis, in the reference's layout.
        order: block ``i`` of the candidate's is block ``order[i]`` of the reference's.
        inner: how the permuted array becomes the candidate's parts (an axis order, or a
            stack of several parts), as the pairing found it.
    """

    along: int = 0
    order: tuple[int, ...] = (0,)
    inner: Join | None = None

    def split(self, value) -> list:
        moved = permute_blocks(value, self.along, self.order)
        return [moved] if self.inner is None else self.inner.split(moved)

    def join(self, parts: Sequence):
        a = np.asarray(parts[0]) if self.inner is None else self.inner.join(parts)
        return permute_blocks(a, self.along, _inverse(self.order))


@dataclass(frozen=True)
class BlockSplit(Split):
    """Several reference parameters that one candidate parameter holds stacked (a
    :class:`~xgrad.pairing.params.Split`), each with its blocks along ``along`` (in a part's
    own layout) permuted by ``order`` first."""

    along: int = 0
    order: tuple[int, ...] = (0,)

    def join(self, values: Sequence):
        return super().join([permute_blocks(v, self.along, self.order) for v in values])

    def part(self, name: str, whole):
        return permute_blocks(super().part(name, whole), self.along, _inverse(self.order))


def _f64(a):
    return None if a is None else np.asarray(a, np.float64)


def _informative(a) -> bool:
    return a is not None and a.size > 1 and bool(np.ptp(a) > 0)


def _held(a, b) -> bool:
    return np.shape(a) == np.shape(b) and rel(b, a) <= _HELD


def _orders(n: int) -> list[tuple[int, ...]]:
    """The non-identity block permutations an axis of ``n`` entries may hold."""
    out = []
    for k in BLOCKS:
        if n % k == 0 and n // k >= 2:
            out += [p for p in itertools.permutations(range(k)) if p != tuple(range(k))]
    return out


def _probe(a: np.ndarray, b: np.ndarray) -> bool:
    """A cheap first look: the first entries of two blocks agree (loosely)."""
    return rel(np.asarray(a.flat[:_PROBE]), np.asarray(b.flat[:_PROBE])) <= 1e-4


def _ways(r: np.ndarray, c: np.ndarray) -> list[tuple[int, tuple[int, ...]]]:
    """Every ``(axis, order)`` under which ``permute_blocks(r, axis, order)`` holds ``c``
    (the candidate's array in the reference's layout), each distinct permutation of the
    entries once. Each block of ``c`` is matched with ``r``'s blocks first (a look at their
    first entries, then the whole block), so only consistent permutations are built."""
    found: dict[bytes, tuple[int, tuple[int, ...]]] = {}
    index = np.arange(r.size).reshape(r.shape)
    for axis in range(r.ndim):
        for k in BLOCKS:
            n = r.shape[axis]
            if n % k or n // k < 2:
                continue
            rb, cb = np.split(r, k, axis=axis), np.split(c, k, axis=axis)
            match = [
                [_probe(cb[i], rb[j]) and _held(rb[j], cb[i]) for j in range(k)] for i in range(k)
            ]
            for order in itertools.permutations(range(k)):
                if order == tuple(range(k)) or not all(match[i][order[i]] for i in range(k)):
                    continue
                if _held(permute_blocks(r, axis, order), c):
                    found.setdefault(permute_blocks(index, axis, order).tobytes(), (axis, order))
    return list(found.values())


def _reorder_one_to_one(names: set, acc: ParamPairing, values: Values) -> None:
    """Re-pair the arrays of ``names`` paired one to one (in an axis order or not) that the
    candidate holds only with their blocks permuted."""
    for rn in sorted(names):
        cn = acc.names.get(rn)
        if cn is None or rn.startswith(TIED) or cn.startswith(TIED):
            continue
        r, c = _f64(values.array("reference", rn)), _f64(values.array("candidate", cn))
        if not _informative(r) or c is None:
            continue
        layout = acc.layouts.get(rn)
        inner = None if layout is None else Join((cn,), 0, (layout,))
        back = c if inner is None else inner.join([c])  # the candidate's, as the reference's
        if back.shape != r.shape or _held(r, back):
            continue
        ways = _ways(r, back)
        if len(ways) != 1:
            continue
        axis, order = ways[0]
        acc.names.pop(rn)
        acc.layouts.pop(rn, None)
        acc.joins[rn] = BlockOrder((cn,), 0, (None,), along=axis, order=order, inner=inner)


def _stack_ways(parts: list[np.ndarray], whole: np.ndarray):
    """``(stacking order, axis, order)`` for each way the ``parts`` (one shape) stack along a
    new first axis into ``whole`` (reshaped), each part's blocks permuted alike; identity
    permutations count too (the values may hold the blocks as they stand)."""
    shape = parts[0].shape
    if whole.size != len(parts) * parts[0].size:
        return []
    grid = whole.reshape(len(parts), *shape)
    out = []
    for stacking in itertools.permutations(range(len(parts))):
        for axis in range(len(shape)):
            k_orders = [tuple(range(k)) for k in BLOCKS if shape[axis] % k == 0]
            for order in [*k_orders[:1], *_orders(shape[axis])]:
                if all(
                    _held(permute_blocks(parts[s], axis, order), grid[i])
                    for i, s in enumerate(stacking)
                ):
                    out.append((stacking, axis, order))
    return out


def _pair_stacks(left_r: list, left_c: list, acc: ParamPairing, values: Values) -> None:
    """Pair a left-over array of one side with two to four left-over arrays of one shape of
    the other that it holds stacked, block-permuted (see the module docstring)."""
    for one_side, ones, manys in (
        ("candidate", left_c, left_r),
        ("reference", left_r, left_c),
    ):
        many_side = "reference" if one_side == "candidate" else "candidate"
        for name, shape in list(ones):
            whole = _f64(values.array(one_side, name))
            if not _informative(whole) or (one_side == "reference" and len(shape) != 2):
                continue  # a reference array holds parts as its rows, (k, n)
            by_shape: dict[tuple, list[str]] = {}
            for n, s in manys:
                by_shape.setdefault(tuple(s), []).append(n)
            for s, names in by_shape.items():
                if not 2 <= len(names) <= 4 or len(s) != 1:
                    continue
                parts = [_f64(values.array(many_side, n)) for n in names]
                if any(p is None for p in parts):
                    continue
                ways = _stack_ways(parts, whole)
                if len(ways) != 1 or ways[0][2] == tuple(range(len(ways[0][2]))):
                    continue  # none, several, or as it stands (pair_params' business)
                stacking, axis, order = ways[0]
                stacked = [names[i] for i in stacking]
                _record(one_side, name, tuple(shape), stacked, tuple(s), axis, order, acc)
                for n in (name, *stacked):
                    acc.why.pop(n, None)
                ones[:] = [x for x in ones if x[0] != name]
                manys[:] = [x for x in manys if x[0] not in stacked]
                break


def _record(one_side, name, shape, parts, part_shape, axis, order, acc: ParamPairing) -> None:
    n, k = part_shape[0], len(parts)
    if one_side == "candidate":  # several reference arrays in one candidate array
        split = BlockSplit(
            name, tuple(parts), 0, (n,) * k, (n * k,), None, shape, along=axis, order=order
        )
        for p in parts:
            acc.splits[p] = split
        return
    # one reference array (k, n) or (k n,) holding the candidate's parts stacked: its gate
    # axis is the last
    piece = (1, n) if len(shape) == 2 else (n,)
    inner = Join(tuple(parts), 0, (None,) * k, (part_shape,) * k, piece)
    acc.joins[name] = BlockOrder(
        tuple(parts), 0, (None,) * k, along=len(shape) - 1, order=order, inner=inner
    )


def pair_blocks(
    all_r: list, all_c: list, left_r: list, left_c: list, acc: ParamPairing, values: Values
) -> None:
    """Within one pair of modules, re-pair the arrays the candidate holds with their gate
    blocks permuted (see the module docstring), removing those paired from ``left_r`` and
    ``left_c``.

    Args:
        all_r, all_c: every ``(name, shape)`` of the modules' parameters, each side.
        left_r, left_c: those left unpaired so far.
        acc: the pairing being made (its ``names``, ``layouts``, ``joins``, ``splits``).
        values: both models' arrays.
    """
    _reorder_one_to_one({n for n, _ in all_r} & set(acc.names), acc, values)
    if left_r and left_c:
        _pair_stacks(left_r, left_c, acc, values)


def found_blocks(joins: dict, splits: dict) -> list[tuple[str, tuple[int, ...]]]:
    """``(reference name, order)`` of every parameter paired through a block permutation."""
    out = [(n, j.order) for n, j in joins.items() if isinstance(j, BlockOrder)]
    return out + [(n, s.order) for n, s in splits.items() if isinstance(s, BlockSplit)]


def blocks_note(found: list, native: dict[str, str]) -> str | None:
    """What the report says of the parameters paired through a block permutation
    (``native``: the reference's canonical -> native names)."""
    if not found:
        return None
    listed = ", ".join(native.get(n, n) for n, _ in found)
    orders = {o for _, o in found}
    why = ""
    if orders == {GRU_SWAP}:
        why = (
            " (torch orders the GRU gates r, z, n; Keras z, r, h, as xgrad's Flax GRU does: "
            "the first two blocks swap)"
        )
    text = ", ".join(str(list(o)) for o in sorted(orders))
    return (
        f"the candidate holds {listed} with its gate blocks in another order{why}: block i of "
        f"the candidate's is block {text}[i] of the reference's, so they were paired, compared "
        "and copied through that permutation of the blocks"
    )
