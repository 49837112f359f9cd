"""Choosing among the ways two modules' parameters could pair (a small set packing).

Each *option* pairs a few of the reference's parameters with a few of the candidate's (one
with one, one with several stacked, several with one). The pairings that explain the most
parameters are the candidates for the truth; an option is taken only when **every** one of
them holds it (:func:`certain`). Where two of them differ, the parameters they differ on
stay unpaired: choosing one would be a guess.

Example:
    >>> options = [("a", "x"), ("a", "y"), ("b", "y")]  # a-x and b-y explain all four
    >>> certain(options)
    ([0, 2], [])
    >>> certain([("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")])  # a-x b-y or a-y b-x
    ([], [0, 1, 2, 3])
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

__all__ = ["BUDGET", "certain"]

BUDGET = 20_000
"""Search steps allowed per group of linked parameters; past it, none of them is paired."""


class _OutOfSteps(Exception):
    pass


def certain(options: Sequence[Sequence[Hashable]]) -> tuple[list[int], list[int]]:
    """``(taken, open)``: the indices of the options held by every pairing that explains the
    most parameters, and those of the options held by some of them but not all (the
    parameters they touch stay unpaired). An option touches each of its items once; items
    are told apart by equality (tag the two sides' names)."""
    taken: list[int] = []
    undecided: list[int] = []
    for group in _groups(options):
        sub = [options[i] for i in group]
        try:
            best, value = _best(sub, forbidden=None)
            keep = [i for i in best if _best(sub, forbidden=i)[1] < value]
        except _OutOfSteps:
            undecided += group
            continue
        taken += [group[i] for i in keep]
        alternatives = set()
        for i in best:
            if i in keep:
                continue
            alternatives.add(i)
            alternatives |= _rivals(sub, i, value)
        undecided += [group[i] for i in sorted(alternatives - set(keep))]
    return sorted(taken), sorted(undecided)


def _groups(options: Sequence[Sequence[Hashable]]) -> list[list[int]]:
    """The options in groups linked by shared items (each group is solved on its own)."""
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for option in options:
        for item in option[1:]:
            parent[find(item)] = find(option[0])
    groups: dict = {}
    for i, option in enumerate(options):
        groups.setdefault(find(option[0]), []).append(i)
    return list(groups.values())


def _rivals(options, i: int, value: int) -> set[int]:
    """The options of a best pairing that leaves option ``i`` out."""
    rival, found = _best(options, forbidden=i)
    return set(rival) if found == value else set()


def _best(options, forbidden: int | None) -> tuple[list[int], int]:
    """One pairing (disjoint options) that explains the most items, and how many it does."""
    items = sorted({x for o in options for x in o}, key=repr)
    having = {x: [i for i, o in enumerate(options) if x in o and i != forbidden] for x in items}
    best: list = [[], 0]
    steps = [0]

    def walk(at: int, used: set, chosen: list[int], value: int) -> None:
        steps[0] += 1
        if steps[0] > BUDGET:
            raise _OutOfSteps
        while at < len(items) and (items[at] in used or not having[items[at]]):
            at += 1
        if value + sum(1 for x in items[at:] if x not in used and having[x]) <= best[1]:
            return
        if at == len(items):
            best[:] = [list(chosen), value]
            return
        for i in having[items[at]]:
            if not used.intersection(options[i]):
                walk(at + 1, used | set(options[i]), [*chosen, i], value + len(options[i]))
        walk(at + 1, used | {items[at]}, chosen, value)  # the item left unpaired

    walk(0, set(), [], 0)
    return best[0], best[1]
