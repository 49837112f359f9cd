"""Which diverging units diverge in their own right, and which only downstream of another.

A unit whose output differs from the reference's may only carry a difference made before it:
its input already differs. The rule (docs/pitfalls.md, how xgrad diagnoses, step 4): a
unit diverges in its own right only if it still differs when both sides feed it the same
input. xgrad cannot run the candidate's code on another input, but it can run the
reference's unit (its layers' own NumPy forward, the reference's weights) on the input the
candidate's unit received. When that reproduces the candidate's output, the two units compute
the same function there, and the difference came in with the input: the unit is downstream.
When it does not, the unit itself differs, and the causes are tested on it *rebased*: its
reference side replaced by that re-run, so that both sides start from the candidate's input
and the unit is diagnosed as if it were the first to part.

Backward, the same question for a unit whose output agrees but whose gradients differ (one
before the first divergence): fed the candidate's ``dL/d output``, does the reference's unit
(its own VJP) give the candidate's weight gradients and ``dL/d input``? If so, the unit only
carries gradients that differ after it; if not, its backward differs itself (a second kink
convention, another wrong derivative).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit
from xgrad.identify import rel
from xgrad.layers import Dropout

__all__ = [
    "Later",
    "downstream_note",
    "earlier_divergences",
    "later_divergences",
    "rebase",
    "rebase_backward",
    "unchecked_note",
]


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
    *,
    rerun: Callable[[UnitEvidence], UnitEvidence | None] | None = None,
) -> tuple[list[Later], dict[str, str], dict[str, str]]:
    """The units after ``first`` (the first divergence) that diverge in their own right,
    the others, downstream, and those that could not be re-run:
    ``(later, {path: the unit it is downstream of}, {path: the unit it comes after})``.

    Args:
        ev: the evidence of one side.
        failing: the paths of the units whose output differs on that side.
        first: the path of the first divergence.
        weights: every canonical weight of the reference (float64).
        diagnosed: the units diagnosed already (the headline's): they diverge in their own
            right and are not diagnosed again.
        rerun: the reference's side of a unit :func:`rebase` cannot re-run (a module of no
            kind, such as an attention fitted from its values), re-run on the candidate's
            input to it, or ``None``.

    A unit is considered after ``first`` when it finishes later or lies inside it (the code
    of a module that parts runs before its later submodules finish); a unit holding one that
    diverges in its own right (a residual block around it) is not considered again; a unit
    that cannot be re-run either way is returned as such, never dropped.
    """
    order = {u.path: k for k, u in enumerate(ev.units)}
    start = order.get(first, -1)
    own = [first]
    later: list[Later] = []
    downstream: dict[str, str] = {}
    unchecked: dict[str, str] = {}
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
        if rebased is None and rerun is not None:
            rebased = rerun(unit)
        if rebased is None:
            unchecked[path] = own[-1]
            continue
        error = rel(unit.output_cand, rebased.output_ref)
        if error <= ev.fit_tol:
            downstream[path] = own[-1]
            continue
        own.append(path)
        later.append(Later(path, error, rebased))
    return later, downstream, unchecked


def _vjp(layers, weights: Mapping[str, np.ndarray], x: np.ndarray, grad_output: np.ndarray):
    """``(output, dL/d weights by local name, dL/d input)`` of a unit's layers, each by its
    own NumPy forward and VJP (weights go to the first layer; dropout is skipped)."""
    flat = {f"u.{k}": v for k, v in weights.items()}
    steps = []
    a = x
    for k, layer in enumerate(layers):
        if isinstance(layer, Dropout):
            continue
        steps.append(layer.forward(flat if k == 0 else {}, a, path="u"))
        a = steps[-1].output
    grads: dict[str, np.ndarray] = {}
    g = grad_output
    for step in reversed(steps):
        g = step.layer.vjp(flat, step, g, grads)
    return a, {k[2:]: v for k, v in grads.items()}, g


def _grad_input(ev: Evidence, unit: UnitEvidence) -> np.ndarray | None:
    """The candidate's ``dL/d`` of the value entering ``unit``: the model's ``dL/dinput``
    for the first unit, else the ``dL/d output`` of the unit whose output it takes; ``None``
    when neither is found, or when another unit takes the same value (a residual block and its
    first layer): that gradient is then the sum of what flows back through both."""
    x = unit.input_cand

    def same(a: np.ndarray) -> bool:
        return a.shape == x.shape and np.array_equal(a, x)

    if sum(same(other.input_cand) for other in ev.units) > 1:
        return None
    if ev.x.size == x.size and np.array_equal(ev.x.reshape(x.shape), x):
        g = ev.dinput_cand  # None for token ids
        return g.reshape(x.shape) if g is not None and g.size == x.size else None
    return next((other.grad_cand for other in ev.units if same(other.output_cand)), None)


def rebase_backward(ev: Evidence, unit: UnitEvidence, *, inputs: bool = True) -> Later | None:
    """``unit`` (whose output agrees) with its reference side re-run on the candidate's input
    to it and, backward, on the candidate's ``dL/d output``: when the reference's VJP then
    gives the candidate's weight gradients and, with ``inputs``, its ``dL/d input``
    (normwise, all together), its gradients differ only because what flows into it does.
    ``None`` for a residual block (its layers are units of their own) and where the unit
    cannot be re-run or nothing of it can be compared."""
    layers = list(unit.layers_ref)
    if unit.block_input_ref is not None or not layers or any(lay is None for lay in layers):
        return None
    if any(isinstance(layer, Dropout) and layer.active for layer in layers):
        return None
    try:
        out, dweights, dx = _vjp(layers, unit.weights_ref, unit.input_cand, unit.grad_cand)
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    names = [k for k in unit.dweights_cand if k in dweights]
    cand = [unit.dweights_cand[k] for k in names]
    alt = [dweights[k] for k in names]
    into = _grad_input(ev, unit) if inputs else None
    if into is not None and into.shape == dx.shape:
        cand.append(into)
        alt.append(dx)
    if not cand:
        return None
    error = rel(
        np.concatenate([np.ravel(c) for c in cand]), np.concatenate([np.ravel(a) for a in alt])
    )
    rebased = replace(
        unit,
        input_ref=unit.input_cand,
        output_ref=out,
        grad_ref=unit.grad_cand,
        dweights_ref={**unit.dweights_ref, **dweights},
    )
    return Later(unit.path, error, rebased)


def earlier_divergences(
    ev: Evidence,
    failing: Sequence[str],
    first: str,
    diagnosed: Sequence[str] = (),
    *,
    inputs: bool = True,
) -> tuple[list[Later], dict[str, str], dict[str, str]]:
    """The units before ``first`` (the first divergence) whose gradients differ in their own
    right, from the output back, the others, and those whose backward cannot be re-run (a
    module of no kind; a residual block's layers are units of their own): ``(earlier,
    {path: the unit whose gradients they only carry}, {path: the unit they come before})``.

    Args:
        ev: the evidence of one side.
        failing: the paths of the units whose ``dL/d output`` or own gradients differ.
        first: the path of the first divergence (forward or backward).
        diagnosed: the units diagnosed already.
        inputs: compare ``dL/d input`` too; ``False`` for a model read module by module,
            where code between modules (a skip connection written as ``x + f(x)``) may take
            the same value as a unit, so its gradient is not the unit's alone.

    Their outputs agree (they come before the first divergence); fed the candidate's
    ``dL/d output``, the reference's unit either computes the candidate's gradients (they
    only carry a difference made after them) or not (its backward differs itself).
    """
    order = {u.path: k for k, u in enumerate(ev.units)}
    start = order.get(first, len(ev.units))
    own = [first]
    earlier: list[Later] = []
    upstream: dict[str, str] = {}
    unchecked: dict[str, str] = {}
    for unit in reversed(ev.units[:start]):
        path = unit.path
        if path not in failing or path in diagnosed or _inside(first, path):
            continue
        item = rebase_backward(ev, unit, inputs=inputs)
        if item is None:
            if unit.block_input_ref is None:
                unchecked[path] = own[-1]
            continue
        if item.error <= ev.fit_tol:
            upstream[path] = own[-1]
            continue
        own.append(path)
        earlier.append(item)
    return earlier, upstream, unchecked


def downstream_note(
    framework: str, downstream: Mapping[str, str], upstream: Mapping[str, str] | None = None
) -> str | None:
    """The note naming the units that differ only downstream of another (their outputs), or
    only through another's gradients (theirs), or ``None``."""
    parts = []
    groups: dict[str, list[str]] = {}
    for path, of in downstream.items():
        groups.setdefault(of, []).append(path or "(the model)")
    for of, paths in groups.items():
        verb = "differs" if len(paths) == 1 else "differ"
        parts.append(f"{', '.join(paths)} {verb} only downstream of {of or '(the model)'}")
    groups = {}
    for path, of in (upstream or {}).items():
        groups.setdefault(of, []).append(path or "(the model)")
    for of, paths in groups.items():
        parts.append(
            f"the gradients of {', '.join(paths)} differ only through those of "
            f"{of or '(the model)'}"
        )
    if not parts:
        return None
    return (
        f"{framework}: {'; '.join(parts)}: the reference's units, fed the candidate's values, "
        "compute the candidate's, so they are not diagnosed again"
    )


def _grouped(found: Mapping[str, str]) -> dict[str, list[str]]:
    """``{unit: [paths named against it]}`` of ``{path: unit}``, the model shown by name."""
    groups: dict[str, list[str]] = {}
    for path, of in found.items():
        groups.setdefault(of or "(the model)", []).append(path or "(the model)")
    return groups


def unchecked_note(
    framework: str, after: Mapping[str, str], before: Mapping[str, str] | None = None
) -> str | None:
    """The note naming the diverging units that could not be re-run on the candidate's values
    (``after``: their outputs differ after the unit named; ``before``: their gradients differ,
    upstream of it), so that none is left unsaid; ``None`` when there are none."""
    parts = []
    for of, paths in _grouped(after).items():
        verb = "differs" if len(paths) == 1 else "differ"
        parts.append(f"{', '.join(paths)} {verb} after {of}")
    for of, paths in _grouped(before or {}).items():
        parts.append(f"the gradients of {', '.join(paths)} differ upstream of {of}")
    if not parts:
        return None
    return (
        f"{framework}: {'; '.join(parts)}, but xgrad could not re-run the reference's unit on "
        "the candidate's values there (a module of no kind it runs, or inputs in another "
        "layout): whether they also differ in their own right is not known; compare such a "
        "module pair on its own (compare_models(reference_module, candidate_module, its "
        "input)) to tell"
    )
