"""Pairing the parameters of two paired modules (see :mod:`xgrad.pairing`): which array of
the candidate is which of the reference's, and how one is laid out as the other.

A reference array pairs with a candidate's

* one to one, where the shapes are equal or one permutation of the axes makes them so
  (:func:`permutation`);
* one to several, where one side's array is the others' stacked along an axis (a fused
  ``in_proj_weight (3E, E)`` against separate q/k/v projections: a :class:`Join`);
* several to one, where consecutive reference arrays stack into one candidate array (q, k
  and v projections of two widths against a port's fused ``(d, heads + 2 kv_heads,
  head_dim)`` kernel: a :class:`Split`);
* by a **reshape of a permutation**, one to one or one to several: a torch ``(d, d)``
  projection against an NNX / Keras ``(d, heads, head_dim)`` DenseGeneral kernel, a
  ``(heads, head_dim, d)`` output kernel, GPT-2's fused ``c_attn`` ``(d, 3d)`` against three
  ``(d, heads, head_dim)`` kernels. Only reshapes that split or merge adjacent axes count
  (:func:`regroups`). Where several axis orders reshape into the candidate's shape, the
  order is decided, never guessed: as it stands when both sides' layouts are known
  (canonical names, :data:`CANONICAL`: kernels are ``(in..., out...)`` on both sides); else
  from the values, when the candidate already holds the reference's array in exactly one of
  them; else the pair is left unpaired with the reason (:attr:`ParamPairing.why`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from xgrad.frameworks.kinds import Layout
from xgrad.identify import rel

__all__ = [
    "CANONICAL",
    "Join",
    "ParamPairing",
    "Values",
    "fit",
    "one_join",
    "last",
    "pair_params",
    "permutation",
    "Split",
    "regroups",
]


@dataclass(frozen=True)
class Join:
    """A reference parameter that is one or several candidate parameters stacked along
    ``axis`` (in the reference's layout), each part in its own ``layout`` relative to its
    slice and, where ``shapes`` names one, reshaped: ``part = np.transpose(slice,
    layout).reshape(shape)`` (a torch ``(d, d)`` projection as an NNX ``(d, heads,
    head_dim)`` kernel). Transpose and reshape move values, never round them."""

    parts: tuple[str, ...]
    axis: int
    layouts: tuple[Layout | None, ...]
    shapes: tuple[tuple[int, ...] | None, ...] = ()
    piece: tuple[int, ...] = ()  # one slice's shape (in the reference's layout), for shapes

    def split(self, value) -> list:
        """The candidate's parts of the reference's array ``value``."""
        pieces = np.split(np.asarray(value), len(self.parts), axis=self.axis)
        shapes = self.shapes or (None,) * len(self.parts)
        out = []
        for piece, layout, shape in zip(pieces, self.layouts, shapes, strict=True):
            part = piece if not layout else np.transpose(piece, layout)
            out.append(part if shape is None else part.reshape(shape))
        return out

    def join(self, parts: Sequence):
        """The reference's array from the candidate's ``parts``."""
        piece, shapes = self.piece, self.shapes or (None,) * len(self.parts)
        slices = []
        for part, layout, shape in zip(parts, self.layouts, shapes, strict=True):
            part = np.asarray(part)
            if shape is not None:
                part = part.reshape(piece if not layout else tuple(piece[i] for i in layout))
            slices.append(part if not layout else np.transpose(part, _inv(layout)))
        return np.concatenate(slices, axis=self.axis)


@dataclass(frozen=True)
class Split:
    """Several reference parameters stacked along ``axis`` (in the reference's layout) that
    are one candidate parameter ``whole``: ``whole = np.transpose(stacked, layout)``, reshaped
    to ``shape`` where one is named (a port's fused q/k/v kernel ``(d, heads + 2 kv_heads,
    head_dim)`` against separate q, k and v projections of different widths).

    Attributes:
        whole: the candidate's parameter.
        parts: the reference's parameters, in the order they are stacked.
        axis: the axis they are stacked along; ``sizes`` their extents on it.
        stacked: the stacked array's shape, in the reference's layout.
    """

    whole: str
    parts: tuple[str, ...]
    axis: int
    sizes: tuple[int, ...]
    stacked: tuple[int, ...]
    layout: Layout | None = None
    shape: tuple[int, ...] | None = None

    def join(self, values: Sequence):
        """The candidate's array from the reference's ``values`` (in ``parts`` order)."""
        a = np.concatenate([np.asarray(v) for v in values], axis=self.axis)
        a = a if not self.layout else np.transpose(a, self.layout)
        return a if self.shape is None else a.reshape(self.shape)

    def part(self, name: str, whole):
        """The reference's ``name`` from the candidate's array ``whole``."""
        a = np.asarray(whole)
        if self.shape is not None:
            permuted = (
                self.stacked if not self.layout else tuple(self.stacked[i] for i in self.layout)
            )
            a = a.reshape(permuted)
        a = a if not self.layout else np.transpose(a, _inv(self.layout))
        bounds = np.cumsum(self.sizes)[:-1]
        return np.split(a, bounds, axis=self.axis)[self.parts.index(name)]


def _inv(layout: Layout) -> Layout:
    return tuple(int(i) for i in np.argsort(layout))


def last(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def permutation(rs: tuple, cs: tuple) -> Layout | None | bool:
    """The layout taking a reference array of shape ``rs`` to ``cs``: ``None`` for the
    identity, a permutation when exactly one fits (the reversal preferred), ``False`` when
    none does."""
    if rs == cs:
        return None
    if len(rs) != len(cs):
        return False
    reversal = tuple(range(len(rs)))[::-1]
    if tuple(rs[i] for i in reversal) == tuple(cs):
        return reversal
    fits = [p for p in itertools.permutations(range(len(rs))) if tuple(rs[i] for i in p) == cs]
    return tuple(fits[0]) if len(fits) == 1 else False


@dataclass
class ParamPairing:
    """The parameter pairing being made."""

    names: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, Layout] = field(default_factory=dict)
    joins: dict[str, Join] = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)
    why: dict[str, str] = field(default_factory=dict)  # name -> why it stays unpaired
    splits: dict[str, Split] = field(default_factory=dict)  # reference part -> its Split


def _join(fused_shape: tuple, parts: list[tuple]) -> tuple[int, tuple] | None:
    """``(axis, layouts)`` when arrays of ``parts`` shapes, each permuted one way, stack along
    one axis of ``fused_shape``; else ``None``."""
    k = len(parts)
    if k < 2:
        return None
    for axis in range(len(fused_shape)):
        if fused_shape[axis] % k:
            continue
        piece = tuple(
            fused_shape[a] // k if a == axis else fused_shape[a] for a in range(len(fused_shape))
        )
        layouts = [permutation(piece, s) for s in parts]
        if all(layout is not False for layout in layouts):
            return axis, tuple(layouts)
    return None


CANONICAL = frozenset({"kernel", "bias", "scale", "mean", "var"})
"""Local names xgrad gives weights whose layout it knows (a known kind's, or one Keras and
Flax store as xgrad does); another name of a square 2-D weight leaves its axis order open."""


def _canonical(name: str) -> bool:
    return last(name) in CANONICAL


def _square(shape: tuple) -> bool:
    return len(shape) == 2 and shape[0] == shape[1]


def _one_to_one(left_r: list, left_c: list, acc: ParamPairing, *, by_name: bool):
    for rn, rs in list(left_r):
        for k, (cn, cs) in enumerate(left_c):
            if by_name and rn.split(".")[-2:] != cn.split(".")[-2:]:
                continue  # the parameter's and its module's names: "bias" alone says little
            layout = permutation(rs, cs)
            if layout is False:
                continue
            acc.names[rn] = cn
            if layout is not None:
                acc.layouts[rn] = layout
            if _square(rs) and not (_canonical(rn) and _canonical(cn)):
                acc.assumed.append(rn)
            left_r.remove((rn, rs))
            del left_c[k]
            break


def _fused(left_r: list, left_c: list, acc: ParamPairing) -> None:
    """A reference parameter against candidate parameters of one shape, in call order, that
    stack into it along an axis (q, k and v kernels into a fused ``in_proj_weight``)."""
    for rn, rs in list(left_r):
        found = _fused_run(rs, left_c)
        if found is None:
            continue
        run, (axis, layouts) = found
        acc.joins[rn] = Join(tuple(n for n, _ in run), axis, layouts)
        if any(
            layout is None and _square(s) and not (_canonical(rn) and _canonical(n))
            for layout, (n, s) in zip(layouts, run, strict=True)
        ):
            acc.assumed.append(rn)
        left_r.remove((rn, rs))
        for item in run:
            left_c.remove(item)


def _fused_run(rs: tuple, left_c: list):
    """The first run of same-shaped candidate parameters (consecutive among those of that
    shape) that stacks into a reference array of shape ``rs``, with how; else ``None``."""
    for shape in dict.fromkeys(s for _, s in left_c):
        same = [(n, s) for n, s in left_c if s == shape]
        for start in range(len(same)):
            for k in range(len(same) - start, 1, -1):
                joined = _join(rs, [shape] * k)
                if joined is not None:
                    return same[start : start + k], joined
    return None


# -- reshapes -------------------------------------------------------------------------------------


def _prefixes(shape: tuple) -> set[int]:
    return {int(np.prod(shape[:i])) for i in range(1, len(shape) + 1)}


def regroups(a: tuple, b: tuple) -> bool:
    """Whether an array of shape ``a`` becomes one of shape ``b`` by splitting or merging
    adjacent axes only (C order): every axis boundary of one shape is one of the other's.

    Example:
        >>> regroups((16, 16), (16, 4, 4)), regroups((4, 4, 16), (16, 16))
        (True, True)
        >>> regroups((8, 32), (16, 4, 4))
        False
    """
    if not a or not b or a == b or int(np.prod(a)) != int(np.prod(b)):
        return False
    pa, pb = _prefixes(a), _prefixes(b)
    return pa <= pb or pb <= pa


def _reshapes(rs: tuple, cs: tuple) -> list[Layout | None]:
    """Every axis order of an ``rs`` array that reshapes into ``cs`` (:func:`regroups`), the
    identity (``None``) first."""
    out: list[Layout | None] = []
    for p in itertools.permutations(range(len(rs))):
        if regroups(tuple(rs[i] for i in p), tuple(cs)):
            out.append(None if p == tuple(range(len(rs))) else tuple(p))
    return out


@dataclass(frozen=True)
class _Fit:
    """A reference array as the candidate's: ``np.transpose(a, layout).reshape(shape)``."""

    layout: Layout | None
    shape: tuple[int, ...]


def fit(rs: tuple, cs: tuple, *, known: bool, values=None) -> _Fit | str | None:
    """How an ``rs`` array becomes a ``cs`` one by a reshape of a permutation: a
    :class:`_Fit`, ``None`` when none does, or why the axis order cannot be told (a
    string). ``known``: both sides' layouts are canonical; ``values``: the reference's and
    the candidate's arrays (``None``: not available)."""
    orders = _reshapes(rs, cs)
    if not orders:
        return None
    if known and orders[0] is None:
        return _Fit(None, tuple(cs))
    if len(orders) == 1:
        return _Fit(orders[0], tuple(cs))
    if values is not None:
        r, c = (np.asarray(v, dtype=np.float64) for v in values)
        if r.size > 1 and np.ptp(r) > 0:
            same = [o for o in orders if rel(_moved(r, o, cs), c) <= 1e-6]
            if len(same) == 1:
                return _Fit(same[0], tuple(cs))
    ways = ", ".join("as it stands" if o is None else f"axes {o}" for o in orders)
    return (
        f"{rs} reshapes into {cs} in {len(orders)} axis orders ({ways}) and neither the "
        "names nor the values tell which; load the weights yourself and pass transfer=False"
    )


def one_join(cn: str, found: _Fit, rs: tuple) -> Join:
    """A reference array of shape ``rs`` paired one to one with ``cn`` through a reshape."""
    return Join((cn,), 0, (found.layout,), (found.shape,), tuple(rs))


def _moved(a, layout: Layout | None, shape: tuple):
    return (a if not layout else np.transpose(a, layout)).reshape(shape)


def _reshaped_one_to_one(left_r: list, left_c: list, acc: ParamPairing, values, *, by_name: bool):
    """One to one by a reshape of a permutation (call order; by name first)."""
    for rn, rs in list(left_r):
        for k, (cn, cs) in enumerate(left_c):
            if by_name and rn.split(".")[-2:] != cn.split(".")[-2:]:
                continue
            if int(np.prod(rs)) != int(np.prod(cs)):
                continue
            found = fit(rs, cs, known=_canonical(rn) and _canonical(cn), values=values(rn, cn))
            if found is None:
                continue
            if isinstance(found, str):
                acc.why[rn] = acc.why[cn] = f"{rn} against {cn}: {found}"
                break
            acc.joins[rn] = one_join(cn, found, rs)
            left_r.remove((rn, rs))
            del left_c[k]
            break


def _reshaped_fused(left_r: list, left_c: list, acc: ParamPairing, values) -> None:
    """One to several by a reshape of a permutation: a fused reference array against a run
    of same-shaped candidate arrays, in call order (GPT-2's ``c_attn`` against q/k/v
    ``(d, heads, head_dim)`` kernels)."""
    for rn, rs in list(left_r):
        for shape in dict.fromkeys(s for _, s in left_c):
            run = [(n, s) for n, s in left_c if s == shape]
            found = _reshaped_run(rn, rs, run, acc, values)
            if found is None:
                continue
            taken, join = found
            acc.joins[rn] = join
            left_r.remove((rn, rs))
            for item in taken:
                left_c.remove(item)
            break


def _reshaped_run(rn: str, rs: tuple, run: list, acc: ParamPairing, values):
    """``(the parts taken, their Join)`` for the longest run of ``run`` (consecutive) whose
    arrays stack into ``rs`` each by a reshape of a permutation, else ``None``."""
    for start in range(len(run)):
        for k in range(len(run) - start, 1, -1):
            parts = run[start : start + k]
            for axis in range(len(rs)):
                if rs[axis] % k:
                    continue
                piece = tuple(rs[a] // k if a == axis else rs[a] for a in range(len(rs)))
                known = [_canonical(rn) and _canonical(n) for n, _ in parts]
                fits = [
                    fit(piece, s, known=known[i], values=values(rn, n, axis, i, k))
                    for i, (n, s) in enumerate(parts)
                ]
                if any(isinstance(f, str) for f in fits):
                    reason = next(f for f in fits if isinstance(f, str))
                    acc.why[rn] = f"{rn} against {' + '.join(n for n, _ in parts)}: {reason}"
                    continue
                if all(isinstance(f, _Fit) for f in fits):
                    join = Join(
                        tuple(n for n, _ in parts),
                        axis,
                        tuple(f.layout for f in fits),
                        tuple(f.shape for f in fits),
                        piece,
                    )
                    return parts, join
    return None


def pair_params(left_r: list, left_c: list, acc: ParamPairing, values: Values) -> None:
    """Pair two paired modules' parameters ``(name, shape)`` (in call order), removing those
    paired from ``left_r`` and ``left_c``. One to one by the same local name first, then one
    to several (a fused parameter against consecutive ones of one shape), then one to one by
    shape; then the same by a reshape of a permutation, one to several first (so that a
    fused ``(d, 3d)`` takes its three kernels before any one of them pairs alone)."""
    _one_to_one(left_r, left_c, acc, by_name=True)
    _fused(left_r, left_c, acc)
    _one_to_one(left_r, left_c, acc, by_name=False)
    _reshaped_one_to_one(left_r, left_c, acc, values, by_name=True)
    _reshaped_fused(left_r, left_c, acc, values)
    _reshaped_one_to_one(left_r, left_c, acc, values, by_name=False)
    _stacked(left_r, left_c, acc, values)


@dataclass(frozen=True)
class Values:
    """Both models' arrays (canonical names), for axis orders the shapes leave open."""

    reference: Mapping
    candidate: Mapping

    def __call__(self, rn: str, cn: str, axis: int = 0, i: int = 0, k: int = 1):
        r, c = self.reference.get(rn), self.candidate.get(cn)
        if r is None or c is None:
            return None
        return np.split(np.asarray(r), k, axis=axis)[i], c


def _stacked(left_r: list, left_c: list, acc: ParamPairing, values) -> None:
    """Several consecutive reference arrays against one candidate array they stack into
    (along one axis, then permuted or reshaped): separate q/k/v projections against a port's
    fused one, of different widths with grouped key/value heads."""
    for cn, cs in list(left_c):
        found = _stacked_run(cn, tuple(cs), left_r, values)
        if found is None:
            continue
        split = found
        for rn in split.parts:
            acc.splits[rn] = split
        left_r[:] = [(n, s) for n, s in left_r if n not in split.parts]
        left_c.remove((cn, cs))


def _stacked_run(cn: str, cs: tuple, left_r: list, values) -> Split | None:
    """The longest run of consecutive ``left_r`` arrays that stacks into ``cs``, else
    ``None``. Kernels of known layout (``(in..., out...)`` on both sides) stack along their
    last axis that fits, as they stand; others only where one axis and order fit."""
    for start in range(len(left_r)):
        for k in range(len(left_r) - start, 1, -1):
            run = left_r[start : start + k]
            names, shapes = [n for n, _ in run], [tuple(s) for _, s in run]
            known = _canonical(cn) and all(_canonical(n) for n in names)
            fits = []
            for axis in _stack_axes(shapes):
                sizes = tuple(s[axis] for s in shapes)
                stacked = shapes[0][:axis] + (sum(sizes),) + shapes[0][axis + 1 :]
                how = _stack_fit(stacked, cs, known, _stacked_values(names, cn, axis, values))
                if how is not None:
                    fits.append(Split(cn, tuple(names), axis, sizes, stacked, *how))
            as_they_stand = [f for f in fits if f.layout is None]
            if known and as_they_stand:
                return as_they_stand[-1]
            if len(fits) == 1:
                return fits[0]
    return None


def _stack_axes(shapes: list) -> list[int]:
    """The axes along which arrays of ``shapes`` (one rank, at least two) can stack."""
    if len({len(s) for s in shapes}) != 1:
        return []
    return [
        axis
        for axis in range(len(shapes[0]))
        if len({s[:axis] + s[axis + 1 :] for s in shapes}) == 1
    ]


def _stack_fit(stacked: tuple, cs: tuple, known: bool, values):
    """``(layout, shape or None)`` taking the stacked array to the candidate's, else
    ``None`` (a permutation first, then a reshape of one, decided as :func:`fit` decides)."""
    layout = permutation(stacked, cs)
    if layout is not False:
        return layout, None
    if int(np.prod(stacked)) != int(np.prod(cs)):
        return None
    found = fit(stacked, cs, known=known, values=values)
    return (found.layout, found.shape) if isinstance(found, _Fit) else None


def _stacked_values(parts: list, cn: str, axis: int, values):
    ref = [values.reference.get(n) for n in parts]
    cand = values.candidate.get(cn)
    if cand is None or any(r is None for r in ref):
        return None
    return np.concatenate([np.asarray(r) for r in ref], axis=axis), cand
