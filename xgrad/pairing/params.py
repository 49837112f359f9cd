"""Pairing the parameters of two paired modules (see :mod:`xgrad.pairing`): which array of
the candidate is which of the reference's, and how one is laid out as the other.

A reference array pairs with a candidate's

* one to one, where the shapes are equal or one permutation of the axes makes them so
  (:func:`permutation`);
* one to several, where one side's array is the others' stacked along an axis (a fused
  ``in_proj_weight (3E, E)`` against separate q/k/v projections: a :class:`Join`);
* several to one, where reference arrays stack into one candidate array (q, k and v
  projections of two widths against a port's fused ``(d, heads + 2 kv_heads, head_dim)``
  kernel: a :class:`Split`);
* by a **reshape of a permutation**, one to one or one to several: a torch ``(d, d)``
  projection against an NNX / Keras ``(d, heads, head_dim)`` DenseGeneral kernel, a
  ``(heads, head_dim, d)`` output kernel, GPT-2's fused ``c_attn`` ``(d, 3d)`` against three
  ``(d, heads, head_dim)`` kernels. Only reshapes that split or merge adjacent axes count
  (:func:`regroups`). Where several axis orders reshape into the candidate's shape, the
  order is decided, never guessed: as it stands when both sides' layouts are known
  (canonical names, :data:`CANONICAL`: kernels are ``(in..., out...)`` on both sides); else
  from the values, when the candidate already holds the reference's array in exactly one of
  them; else the pair is left unpaired with the reason (:attr:`ParamPairing.why`).

Which of these ways is taken is decided in :mod:`xgrad.pairing.options`.
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
    "TIED",
    "Join",
    "ParamPairing",
    "Values",
    "fit",
    "one_join",
    "last",
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
    sums: list = field(default_factory=list)  # pairing.sums.Sum records


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


TIED = "~"
"""Prefix of a tied weight's name while pairing: the module uses another module's array (a
tied LM head); it pairs like a parameter of its own (:class:`Values` reads the owner's array
for it), and :func:`xgrad.pairing._untie` sorts out what that means."""


@dataclass(frozen=True)
class Values:
    """Both models' arrays (canonical names), for axis orders the shapes leave open.

    Attributes:
        reference, candidate: canonical name -> array.
        tied: side -> the local path of a tied use (``lm_head.weight``, named
            ``~lm_head.weight`` while pairing) -> the canonical name of the array it is.
    """

    reference: Mapping
    candidate: Mapping
    tied: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def array(self, side: str, name: str):
        """The array of ``name`` on ``side`` (``reference``/``candidate``), or ``None``."""
        arrays = self.reference if side == "reference" else self.candidate
        if name.startswith(TIED):
            name = self.tied.get(side, {}).get(name[len(TIED) :], name)
        return arrays.get(name)

    def __call__(self, rn: str, cn: str, axis: int = 0, i: int = 0, k: int = 1):
        r, c = self.array("reference", rn), self.array("candidate", cn)
        if r is None or c is None:
            return None
        return np.split(np.asarray(r), k, axis=axis)[i], c


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


def _stacked_values(parts: Sequence[str], cn: str, axis: int, values: Values):
    ref = [values.array("reference", n) for n in parts]
    cand = values.array("candidate", cn)
    if cand is None or any(r is None for r in ref):
        return None
    return np.concatenate([np.asarray(r) for r in ref], axis=axis), cand
