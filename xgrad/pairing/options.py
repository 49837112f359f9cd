"""Pairing two paired modules' parameters without guessing (:func:`pair_params`).

Every way the shapes allow is listed first (an :class:`Option`): one to one (a permutation
of the axes, or a reshape of one), one reference array against several candidate arrays of
one shape stacked along an axis (a :class:`~xgrad.pairing.params.Join`), several reference
arrays against one candidate array (a :class:`~xgrad.pairing.params.Split`). Then the
evidence judges them:

* **names** (relative to the paired modules, :mod:`xgrad.pairing.roles`): a way whose names
  say different roles (a query kernel against a key and a value kernel stacked, a bias
  against a weight) is dropped; a way whose names agree beats one they say nothing of;
* **values**: a way under which the candidate already holds the reference's array (the
  user loaded it) beats one under which it does not; values decide an axis order or the
  order of a stack that the names leave open (arrays of one value decide nothing).

Of what is left, the pairings explaining the most parameters are found
(:func:`xgrad.pairing.solve.certain`); a way is taken only when every one of them takes
it. Where two of them differ, the parameters they differ on stay unpaired, with a note
naming the alternatives (:attr:`~xgrad.pairing.params.ParamPairing.why`); so does a way
whose axis order or stacking order nothing tells. Call order alone never decides.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xgrad.frameworks.kinds import Layout
from xgrad.identify import rel
from xgrad.pairing.params import (
    TIED,
    Join,
    ParamPairing,
    Split,
    Values,
    _canonical,
    _join,
    _square,
    _stack_axes,
    _stack_fit,
    _stacked_values,
    fit,
    one_join,
)
from xgrad.pairing.roles import names_say, order_by_roles
from xgrad.pairing.solve import certain

__all__ = ["Option", "pair_params"]

MAX_ORDERS = 4
"""Stacks of at most this many arrays have every order tried against the values."""
MAX_SUBSETS = 256
"""Sets of reference arrays tried per candidate array and axis for a stack."""
_HOW = "load the reference's weights into the candidate (so that its values tell) or pass "


@dataclass
class Option:
    """One way some of the reference's parameters pair with some of the candidate's.

    Attributes:
        refs, cands: the names paired (one on at least one side).
        record: how: a layout (``None``: as it stands) for one to one, else the
            :class:`~xgrad.pairing.params.Join` or :class:`~xgrad.pairing.params.Split`.
        blocked: why the shapes allow it but its axis or stacking order cannot be told.
        assumed: a square array of unknown layout taken as it stands (a note says so).
        evidence: 2 the values hold it, 1 the names agree, 0 only the shapes.
    """

    refs: tuple[str, ...]
    cands: tuple[str, ...]
    record: Layout | Join | Split | None
    blocked: str | None = None
    assumed: bool = False
    evidence: int = 0

    def label(self, side: str) -> str:
        return " + ".join(self.cands if side == "reference" else self.refs)


def _informative(a) -> bool:
    a = np.asarray(a)
    return a.size > 1 and bool(np.ptp(a) > 0)


def _holds(option: Option, values: Values) -> bool | None:
    """Whether the candidate holds the reference's arrays under ``option`` (``None``: the
    values cannot tell: missing, or arrays of one value)."""
    refs = [values.array("reference", n) for n in option.refs]
    cands = [values.array("candidate", n) for n in option.cands]
    if any(a is None for a in (*refs, *cands)) or not all(_informative(r) for r in refs):
        return None
    refs = [np.asarray(r, dtype=np.float64) for r in refs]
    record = option.record
    try:
        if isinstance(record, Join):
            moved = record.split(refs[0])
        elif isinstance(record, Split):
            moved = [record.join(refs)]
        else:
            moved = [refs[0] if not record else np.transpose(refs[0], record)]
    except ValueError:  # pragma: no cover - the shapes were checked when it was made
        return None
    return all(
        np.shape(m) == np.shape(c) and rel(m, np.asarray(c, np.float64)) <= 1e-6
        for m, c in zip(moved, cands, strict=True)
    )


# -- the ways the shapes allow --------------------------------------------------------------------


def _one(rn: str, rs: tuple, cn: str, cs: tuple, values: Values) -> Option | None:
    """One to one: a permutation of the axes, else a reshape of one (:func:`fit`)."""
    known = _canonical(rn) and _canonical(cn)
    if len(rs) == len(cs) and sorted(rs) == sorted(cs):
        ident = tuple(range(len(rs)))
        perms = [p for p in itertools.permutations(ident) if tuple(rs[i] for i in p) == cs]
        if len(perms) == 1 or (known and ident in perms):
            layout = perms[0] if len(perms) == 1 else ident
            return Option((rn,), (cn,), None if layout == ident else layout)
        held = [p for p in perms if _holds(Option((rn,), (cn,), None if p == ident else p), values)]
        if len(held) == 1:
            return Option((rn,), (cn,), None if held[0] == ident else held[0], evidence=2)
        tied = rn.startswith(TIED) != cn.startswith(TIED)
        if ident in perms and not tied:  # equal shapes as they stand; a square one noted
            return Option((rn,), (cn,), None, assumed=_square(rs))
        what = "a tied weight against a separate parameter, " if tied else ""
        ways = ", ".join("as it stands" if p == ident else f"axes {p}" for p in perms)
        reason = (
            f"{rn} {rs} against {cn} {cs}: {what}{len(perms)} axis orders fit ({ways}) and "
            f"neither the names nor the values tell which; {_HOW}ignore="
        )
        return Option((rn,), (cn,), None, blocked=reason)
    if math.prod(rs) != math.prod(cs):
        return None
    found = fit(rs, cs, known=known, values=values(rn, cn))
    if found is None:
        return None
    if isinstance(found, str):
        return Option((rn,), (cn,), None, blocked=f"{rn} against {cn}: {found}")
    return Option((rn,), (cn,), one_join(cn, found, rs))


def _join_for(rn: str, rs: tuple, parts: Sequence, values: Values) -> Join | str | None:
    """The :class:`Join` stacking ``parts`` (``(name, shape)``, in this order) into the
    reference's ``rs`` array: each part a permutation of its slice, else a reshape of one;
    a string when only an undecidable reshape fits; ``None`` when nothing does."""
    names, shapes = tuple(n for n, _ in parts), [tuple(s) for _, s in parts]
    found = _join(rs, shapes)
    if found is not None:
        return Join(names, found[0], found[1])
    k, reason = len(parts), None
    for axis in range(len(rs)):
        if rs[axis] % k:
            continue
        piece = tuple(rs[a] // k if a == axis else rs[a] for a in range(len(rs)))
        fits = [
            fit(piece, s, known=_canonical(rn) and _canonical(n), values=values(rn, n, axis, i, k))
            for i, (n, s) in enumerate(parts)
        ]
        if any(f is None for f in fits):
            continue
        if any(isinstance(f, str) for f in fits):
            reason = next(f for f in fits if isinstance(f, str))
            continue
        layouts = tuple(f.layout for f in fits)  # type: ignore[union-attr]
        return Join(names, axis, layouts, tuple(f.shape for f in fits), piece)  # type: ignore
    return None if reason is None else f"{rn} against {' + '.join(names)}: {reason}"


def _split_for(cn: str, cs: tuple, parts: Sequence, values: Values) -> Split | None:
    """The :class:`Split` stacking the reference's ``parts`` (in this order) into the
    candidate's ``cs`` array: kernels of known layout as they stand, along the axis that
    starts one of the candidate's axes (the parts lie one after the other on it); others
    only where one axis and layout fit.

    Keras' query/key/value kernels ``(d, heads, head_dim)`` against torch's
    ``in_proj.kernel (d, 3 * heads * head_dim)`` stack along ``heads``: stacked along
    ``head_dim`` they also reshape into ``(d, 3 * heads * head_dim)``, but each head's
    q, k and v would lie side by side (their biases ``(heads, head_dim)`` alike)."""
    names, shapes = [n for n, _ in parts], [tuple(s) for _, s in parts]
    known = _canonical(cn) and all(_canonical(n) for n in names)
    fits = []
    for axis in _stack_axes(shapes):
        sizes = tuple(s[axis] for s in shapes)
        stacked = shapes[0][:axis] + (sum(sizes),) + shapes[0][axis + 1 :]
        how = _stack_fit(stacked, cs, known, _stacked_values(names, cn, axis, values))
        if how is not None:
            fits.append(Split(cn, tuple(names), axis, sizes, stacked, *how))
    starts = {math.prod(cs[:j]) for j in range(len(cs))}
    as_they_stand = [
        f for f in fits if f.layout is None and math.prod(f.stacked[: f.axis]) in starts
    ]
    if known and as_they_stand:
        return as_they_stand[-1]
    return fits[0] if len(fits) == 1 else None


def _stacks(one: tuple, group: list, make, values: Values, side: str, local) -> list[Option]:
    """The options stacking subsets of ``group`` (``(name, shape)``) against ``one``: in the
    order the names say (``local``: a name relative to its module), else in the one order
    the values hold; else blocked."""
    name, out = one[0], []
    for parts in _subsets(one, group, side):
        by_name = order_by_roles(local(name), [local(n) for n, _ in parts])
        if by_name is not None:
            ordered = [next(p for p in parts if local(p[0]) == n) for n in by_name]
            found = make(ordered)
            if found is not None:
                out.append(_stack_option(one, ordered, found, side, evidence=1))
            continue
        # without values to tell them apart every order fits alike: the call order stands for
        # them all (and is blocked below)
        informative = len(parts) <= MAX_ORDERS and _all_informative(one, parts, values, side)
        orders = itertools.permutations(parts) if informative else [parts]
        fits = [(o, make(list(o))) for o in orders]
        fits = [(o, f) for o, f in fits if f is not None]
        if not fits:
            continue
        options = [_stack_option(one, list(o), f, side) for o, f in fits]
        held = [x for x in options if x.blocked is None and _holds(x, values)]
        if len(held) == 1:
            held[0].evidence = 2
            out.append(held[0])
            continue
        first = options[0]
        if first.blocked is None:
            stacked = " + ".join(n for n, _ in parts)
            first.blocked = (
                f"{name} is {stacked} stacked (the shapes fit), but in which order neither "
                f"the names nor the values tell; {_HOW}mapping="
            )
        out.append(first)
    return out


def _all_informative(one: tuple, parts: list, values: Values, side: str) -> bool:
    other = "candidate" if side == "reference" else "reference"
    arrays = [values.array(side, one[0]), *(values.array(other, n) for n, _ in parts)]
    return all(a is not None and _informative(a) for a in arrays)


def _stack_option(one, ordered, found, side: str, evidence: int = 0) -> Option:
    names = tuple(n for n, _ in ordered)
    refs, cands = ((one[0],), names) if side == "reference" else (names, (one[0],))
    if isinstance(found, str):
        return Option(refs, cands, None, blocked=found, evidence=evidence)
    return Option(refs, cands, found, evidence=evidence, assumed=_assumed(one, found))


def _assumed(one: tuple, found) -> bool:
    """A join of square parts of unknown layout, taken as they stand (a note says so)."""
    if not isinstance(found, Join) or found.shapes:
        return False
    rn, rs = one
    k = len(found.parts)
    piece = tuple(rs[a] // k if a == found.axis else rs[a] for a in range(len(rs)))
    return _square(piece) and any(
        layout is None and not (_canonical(rn) and _canonical(n))
        for layout, n in zip(found.layouts, found.parts, strict=True)
    )


def _subsets(one: tuple, group: list, side: str) -> list[list]:
    """Sets (in call order) of at least two of ``group`` whose sizes add up to ``one``'s:
    of one shape for a :class:`Join` (``side`` reference), of one rank for a :class:`Split`."""
    size = math.prod(one[1])
    if side == "reference":
        found = []
        for shape in dict.fromkeys(tuple(s) for _, s in group):
            same = [p for p in group if tuple(p[1]) == shape]
            k, rest = divmod(size, math.prod(shape)) if math.prod(shape) else (0, 1)
            if rest == 0 and 2 <= k <= len(same):
                combos = itertools.islice(itertools.combinations(same, k), MAX_SUBSETS)
                found += [list(c) for c in combos]
        return found
    found = []
    for rank in {len(s) for _, s in group}:
        members = [p for p in group if len(p[1]) == rank and math.prod(p[1]) <= size]
        found += _summing(members, size)
    return found


def _summing(members: list, size: int) -> list[list]:
    """Subsets of at least two ``members`` whose sizes add up to ``size`` (call order kept;
    at most :data:`MAX_SUBSETS`)."""
    out: list[list] = []
    steps = [0]

    def walk(at: int, chosen: list, total: int) -> None:
        steps[0] += 1
        if len(out) >= MAX_SUBSETS or steps[0] > 50 * MAX_SUBSETS:
            return
        if total == size:
            if len(chosen) >= 2:
                out.append(list(chosen))
            return
        for i in range(at, len(members)):
            n = math.prod(members[i][1])
            if total + n <= size:
                walk(i + 1, [*chosen, members[i]], total + n)

    walk(0, [], 0)
    return out


def _options(left_r: list, left_c: list, values: Values, local) -> list[Option]:
    """Every way the shapes allow (layouts and orders decided where the names or values
    can; blocked where they cannot). ``local``: a name relative to its module."""
    out = []
    for (rn, rs), (cn, cs) in itertools.product(left_r, left_c):
        found = _one(rn, tuple(rs), cn, tuple(cs), values)
        if found is not None:
            out.append(found)
    for rn, rs in left_r:
        join = _bind_join(rn, tuple(rs), values)
        out += _stacks((rn, tuple(rs)), left_c, join, values, "reference", local)
    for cn, cs in left_c:
        split = _bind_split(cn, tuple(cs), values)
        out += _stacks((cn, tuple(cs)), left_r, split, values, "candidate", local)
    return out


def _bind_join(rn, rs, values):
    return lambda ordered: _join_for(rn, rs, ordered, values)


def _bind_split(cn, cs, values):
    return lambda ordered: _split_for(cn, cs, ordered, values)


# -- judging and choosing -------------------------------------------------------------------------


def _judged(options: list[Option], values: Values, local, conflicts: dict) -> list[Option]:
    """The options the names do not rule out, each parameter's best evidence only
    (``conflicts``: name -> the other side's names its names ruled out)."""
    kept = []
    for o in options:
        said = names_say([local(n) for n in o.refs], [local(n) for n in o.cands])
        if said == "conflict":
            for n in o.refs:
                conflicts.setdefault(n, []).append(o.label("reference"))
            for n in o.cands:
                conflicts.setdefault(n, []).append(o.label("candidate"))
            continue
        if said == "agree":
            o.evidence = max(o.evidence, 1)
        kept.append(o)
    count: dict[tuple, int] = {}
    for o in kept:
        for n in _items(o):
            count[n] = count.get(n, 0) + 1
    for o in kept:  # where a parameter could pair several ways, the values may tell
        if o.evidence < 2 and o.blocked is None and any(count[n] > 1 for n in _items(o)):
            if _holds(o, values):
                o.evidence = 2
    best: dict[tuple, int] = {}
    for o in kept:
        for n in _items(o):
            best[n] = max(best.get(n, 0), o.evidence)
    return [o for o in kept if all(o.evidence >= best[n] for n in _items(o))]


def _items(o: Option) -> tuple:
    return (*(("r", n) for n in o.refs), *(("c", n) for n in o.cands))


def pair_params(
    left_r: list,
    left_c: list,
    acc: ParamPairing,
    values: Values,
    where: tuple[str, str] = ("", ""),
) -> None:
    """Pair two paired modules' parameters ``(name, shape)`` (see the module docstring),
    removing those paired from ``left_r`` and ``left_c``; those left unpaired for a reason
    the shapes alone do not give get it in ``acc.why``.

    Args:
        where: the paths of the paired modules' callers (reference, candidate): names are
            read relative to them, the modules' own names included (``q_proj.weight``
            within an attention module).
    """

    def local(name: str) -> str:
        name = name[len(TIED) :] if name.startswith(TIED) else name
        for prefix in where:
            if prefix and name.startswith(prefix + "."):
                return name[len(prefix) + 1 :]
        return name

    conflicts: dict[str, list[str]] = {}
    options = _judged(_options(left_r, left_c, values, local), values, local, conflicts)
    taken, undecided = certain([_items(o) for o in options])
    paired: set[tuple] = set()
    for i in taken:
        o = options[i]
        if o.blocked is not None:
            for n in (*o.refs, *o.cands):
                acc.why[n] = o.blocked
            continue
        _record(o, acc)
        paired.update(_items(o))
    _explain(options, undecided, paired, acc)
    for name, others in conflicts.items():
        if not paired & {("r", name), ("c", name)} and name not in acc.why:
            acc.why[name] = (
                f"{' or '.join(dict.fromkeys(others))} would fit its shape, but the names say "
                "another role"
            )
    left_r[:] = [(n, s) for n, s in left_r if ("r", n) not in paired]
    left_c[:] = [(n, s) for n, s in left_c if ("c", n) not in paired]


def _record(o: Option, acc: ParamPairing) -> None:
    record = o.record
    if isinstance(record, Split):
        for rn in record.parts:
            acc.splits[rn] = record
    elif isinstance(record, Join):
        acc.joins[o.refs[0]] = record
    else:
        acc.names[o.refs[0]] = o.cands[0]
        if record is not None:
            acc.layouts[o.refs[0]] = record
    if o.assumed:
        acc.assumed.append(o.refs[0])


def _explain(options: list[Option], undecided: list[int], paired: set, acc) -> None:
    """A note for each parameter two best pairings pair differently: which ways, and why
    none was taken."""
    open_items = {x for i in undecided for x in _items(options[i])} - paired
    ways: dict[tuple[str, str], list[str]] = {}
    for o in options:  # every way left for them, not only those of the best pairings
        for side, names in (("r", o.refs), ("c", o.cands)):
            for n in names:
                if (side, n) in open_items:
                    ways.setdefault((side, n), []).append(
                        o.label("reference" if side == "r" else "candidate")
                    )
    for (_side, n), found in ways.items():
        alternatives = " or ".join(dict.fromkeys(found))
        if len(dict.fromkeys(found)) > 1:
            acc.why[n] = (
                f"{n} could be {alternatives}: the shapes fit each way and neither the names "
                "nor the values tell which, so none was taken (pass mapping= to pair it)"
            )
        else:
            acc.why[n] = (
                f"{n} could be {alternatives}, but the parameters it would take could pair "
                "another way as well and neither the names nor the values tell which, so "
                "none was taken (pass mapping= to pair it)"
            )
