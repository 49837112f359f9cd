"""Which diverging units diverge in their own right, and which only downstream of another.

A unit whose output differs from the reference's may only carry a difference made before it:
its input already differs. The rule (``/work/shared/DECISIONS.md``, "Every diverging unit
diagnosed"): a unit diverges in its own right only if it still differs when both sides feed
it the same input. xgrad cannot run the candidate's code on another input, but it can run the
reference's unit (its layers' own NumPy forward, the reference's weights) on the input the
candidate's unit received. When that reproduces the candidate's output, the two units compute
the same function there, and the difference came in with the input: the unit is downstream.
When it does not, the unit itself differs, and the causes are tested on it *rebased*: its
reference side replaced by that re-run, so that both sides start from the candidate's input
and the unit is diagnosed as if it were the first to part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.identify import rel
from xgrad.layers import Dropout

__all__ = ["Later", "downstream_note", "later_divergences", "rebase"]


@dataclass(frozen=True)
class Later:
    """A unit after the first divergence that diverges in its own right.

    Attributes:
        path: the unit's canonical path on the reference side.
        error: the candidate's output against the reference's unit re-run on the candidate's
            input to it: the unit's own difference, without what came in with its input.
        unit: the unit rebased onto the candidate's input (see :func:`rebase`).
    """

    path: str
    error: float
    unit: UnitEvidence


def _nested(weights: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    """Every weight under ``path`` by its name inside it (a residual block's layers')."""
    prefix = f"{path}."
    return {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}


def rebase(unit: UnitEvidence, weights: Mapping[str, np.ndarray]) -> UnitEvidence | None:
    """``unit`` with its reference side re-run on the candidate's input to it: the reference's
    layers and weights (``weights``: every canonical weight of the reference, for a residual
    block's own layers) under the reference's configuration, the dropout off. ``None`` where
    that cannot be run: a layer of unknown configuration, an active dropout (its mask is not
    known on another input), a weight the reference lacks, other shapes."""
    layers = list(unit.layers_ref)
    members = list(unit.members_ref)
    if not layers or any(layer is None for layer in [*layers, *members]):
        return None
    if any(isinstance(layer, Dropout) and layer.active for layer in [*layers, *members]):
        return None
    x = unit.input_cand
    block = None
    try:
        if unit.block_input_ref is not None:  # a residual block: x + f(x), then its members
            block = run_unit(layers[:1], _nested(weights, unit.path), x)
            out = run_unit(members, {}, block) if unit.block_output_ref is not None else block
        else:
            out = run_unit(layers, unit.weights_ref, x)
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if np.shape(out) != np.shape(unit.output_cand) or not np.all(np.isfinite(out)):
        return None
    return replace(
        unit,
        input_ref=x,
        output_ref=out,
        block_input_ref=None if unit.block_input_ref is None else x,
        block_output_ref=None if unit.block_output_ref is None else block,
    )


def _inside(path: str, scope: str) -> bool:
    return scope == "" or path.startswith(f"{scope}.")


def later_divergences(
    ev: Evidence,
    failing: Sequence[str],
    first: str,
    weights: Mapping[str, np.ndarray],
    diagnosed: Sequence[str] = (),
) -> tuple[list[Later], dict[str, str]]:
    """The units after ``first`` (the first divergence) that diverge in their own right,
    and the others, downstream: ``(later, {path: the unit it is downstream of})``.

    Args:
        ev: the evidence of one side.
        failing: the paths of the units whose output differs on that side.
        first: the path of the first divergence.
        weights: every canonical weight of the reference (float64).
        diagnosed: the units diagnosed already (the headline's): they diverge in their own
            right and are not diagnosed again.

    A unit is considered after ``first`` when it finishes later or lies inside it (the code
    of a module that parts runs before its later submodules finish); a unit holding one that
    diverges in its own right (a residual block around it) is not considered again, and a
    unit that cannot be re-run (:func:`rebase`) is neither.
    """
    order = {u.path: k for k, u in enumerate(ev.units)}
    start = order.get(first, -1)
    own = [first]
    later: list[Later] = []
    downstream: dict[str, str] = {}
    for k, unit in enumerate(ev.units):
        path = unit.path
        if path not in failing or path == first or _inside(first, path):
            continue
        if k < start and not _inside(path, first):
            continue
        if path in diagnosed:
            own.append(path)
            continue
        if any(_inside(p, path) for p in own):
            continue  # it holds a unit that diverges in its own right
        rebased = rebase(unit, weights)
        if rebased is None:
            continue
        error = rel(unit.output_cand, rebased.output_ref)
        if error <= ev.fit_tol:
            downstream[path] = own[-1]
            continue
        own.append(path)
        later.append(Later(path, error, rebased))
    return later, downstream


def downstream_note(framework: str, downstream: Mapping[str, str]) -> str | None:
    """The note naming the units that differ only downstream of another, or ``None``."""
    if not downstream:
        return None
    groups: dict[str, list[str]] = {}
    for path, of in downstream.items():
        groups.setdefault(of, []).append(path or "(the model)")
    parts = [
        f"{', '.join(paths)} {'differs' if len(paths) == 1 else 'differ'} only downstream of "
        f"{of or '(the model)'}"
        for of, paths in groups.items()
    ]
    return (
        f"{framework}: {'; '.join(parts)}: the reference's units, fed the candidate's input to "
        "them, compute the candidate's outputs, so they are not diagnosed again"
    )
