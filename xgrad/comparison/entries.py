"""The entries phase: every side's arrays measured against the reference's.

:class:`Comparison` holds what the phases share (the evaluated reference and sides, how each
side's names correspond to the reference's, the batch, the dtype and tolerance). From it:

* :func:`parameter_entries`, :func:`state_entries`, :func:`value_entries`: one
  :class:`~xgrad.report.Entry` per parameter gradient, updated state array, ``dL/dinput``,
  output and loss, each measured in one fused pass over every side
  (:meth:`~xgrad.metrics.PreparedReference.compare_many`);
* :func:`layer_entries`: each paired unit's output and ``dL/d output``;
* :func:`pairwise` and :func:`divergence`: the largest difference between two sides, and
  where a side first parts from the reference.

Nothing here judges beyond the plain tolerance: that is :mod:`xgrad.comparison.verdicts`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xgrad.align import Alignment, Unit
from xgrad.comparison.inputs import Inputs, loss_scale
from xgrad.comparison.sides import Side
from xgrad.metrics import OK_STATUSES, EntryComparison, PreparedReference
from xgrad.pairing.params import regroups
from xgrad.report import Divergence, Entry, LayerEntry, Pairwise

__all__ = [
    "Comparison",
    "Values",
    "divergence",
    "failing_sides",
    "layer_entries",
    "pairwise",
    "parameter_entries",
    "state_entries",
    "value_entries",
]


@dataclass(frozen=True)
class Comparison:
    """What every phase after the evaluation reads.

    Attributes:
        ref: the evaluated reference.
        sides: the evaluated candidates.
        alignments: side label -> how that side's names and units correspond to ``ref``'s.
        inputs: the checked batch.
        dtype: the dtype the tolerance is that of (:func:`~xgrad.comparison.judged_dtype`).
        tol: the normwise tolerance.
        native_reference: list the reference's own names beside each side's (porting).
    """

    ref: Side
    sides: Sequence[Side]
    alignments: Mapping[str, Alignment]
    inputs: Inputs
    dtype: str
    tol: float
    native_reference: bool = False

    def partner(self, label: str, ref_unit: Unit) -> Unit | None:
        """The unit of side ``label`` paired with the reference's ``ref_unit``."""
        for r, c in self.alignments[label].pairs:
            if r.path == ref_unit.path:
                return c
        return None


def _entry(
    name, kind, shape, native, arrays, reference, comparison: Comparison, scale=None
) -> tuple[Entry, EntryComparison]:
    """One entry: every side's array against the reference, in one fused pass, with the
    differences between sides that the pairwise summary needs."""
    prepared = PreparedReference(reference, dtype=comparison.dtype, tol=comparison.tol, scale=scale)
    measured = prepared.compare_many(arrays)
    entry = Entry(
        name=name, kind=kind, shape=tuple(shape), native=dict(native), results=measured.results
    )
    return entry, measured


def parameter_entries(c: Comparison) -> tuple[list[Entry], dict[str, EntryComparison]]:
    """One entry per trainable parameter of the reference that every side has (each side's
    gradient brought to the reference's layout), and what each entry's pass measured."""
    ref_native = c.ref.model.native_names()
    entries, measured = [], {}
    for name in c.ref.model.param_names:
        if name not in c.ref.grads.params or not all(
            c.alignments[s.label].paired(name) for s in c.sides
        ):
            continue
        native = {"reference": ref_native[name]} if c.native_reference else {}
        arrays = {}
        for s in c.sides:
            a = c.alignments[s.label]
            native[s.label] = a.candidate_label(name, s.model.native_names())
            arrays[s.label] = a.candidate_value(name, s.grads.params)
        ref_grad = c.ref.grads.params[name]
        entry, measured[name] = _entry(
            name, "parameter", ref_grad.shape, native, arrays, ref_grad, c
        )
        entries.append(entry)
    return entries, measured


def state_entries(c: Comparison) -> list[Entry]:
    """One entry per state array the reference updated (BatchNorm in training mode), for
    the sides that updated it too."""
    ref_native = c.ref.model.native_names()
    out = []
    for name, value in c.ref.grads.state.items():
        native = {"reference": ref_native.get(name, name)} if c.native_reference else {}
        arrays = {}
        for s in c.sides:
            cand_name = c.alignments[s.label].names.get(name)
            if cand_name is not None and cand_name in s.grads.state:
                arrays[s.label] = s.grads.state[cand_name]
                native[s.label] = s.model.native_names().get(cand_name, cand_name)
        if arrays:
            out.append(_entry(name, "state", value.shape, native, arrays, value, c)[0])
    return out


@dataclass(frozen=True)
class Values:
    """The entries of the model's input gradients, output and loss value: ``input`` the
    first floating input's (``None`` when every input is integer ids), ``inputs`` the other
    floating inputs' (a model read module by module)."""

    input: Entry | None
    output: Entry
    loss: Entry | None
    inputs: tuple[Entry, ...] = ()


def value_entries(c: Comparison, measured: dict[str, EntryComparison]) -> Values:
    """The ``dL/dinput``, output and loss entries (``loss`` ``None`` with a cotangent); the
    input's and output's passes are added to ``measured`` for the pairwise summary."""

    def simple(name, kind, pick, scale=None, native_name=None):
        native = {s.label: native_name or name for s in c.sides}
        if c.native_reference:
            native = {"reference": native_name or name, **native}
        reference = pick(c.ref.grads)
        arrays = {s.label: pick(s.grads) for s in c.sides}
        return _entry(name, kind, np.shape(reference), native, arrays, reference, c, scale)

    input_entry, more = None, []
    names = _input_names(c)
    for k, name in enumerate(names):
        entry, measured[name] = simple(name, "input", _input_of(name, k == 0 and name == "input"))
        if input_entry is None:
            input_entry = entry
        else:
            more.append(entry)
    output_entry, measured["output"] = simple("output", "output", lambda g: g.output)
    loss_entry = None
    loss_name = c.inputs.loss_name
    if loss_name is not None:
        loss_entry = simple(
            "loss",
            "loss",
            lambda g: np.asarray(g.loss),
            scale=loss_scale(loss_name, c.ref.grads.output, c.inputs.y),
            native_name=loss_name,
        )[0]
    return Values(input_entry, output_entry, loss_entry, tuple(more))


def _input_names(c: Comparison) -> list[str]:
    """The names of the inputs compared: ``input`` for one floating input (none for token
    ids, which have no gradient); each floating input's name (``input.0``, ``input.mask``)
    for a model read with several inputs."""
    inputs = c.ref.grads.inputs
    if inputs is None:
        return [] if c.ref.grads.input is None else ["input"]
    return [n for n in inputs if all(s.grads.inputs and n in s.grads.inputs for s in c.sides)]


def _input_of(name: str, plain: bool):
    if plain:
        return lambda g: g.input if g.inputs is None else g.inputs[name]
    return lambda g: g.inputs[name]


def failing_sides(c: Comparison, entries: Sequence[Entry], values: Values) -> set[str]:
    """The sides with an entry beyond the plain tolerance (its normwise error; the loss
    value's relative to the reference's), whose layers are worth comparing."""
    every = (*entries, *values.inputs, values.output, *([values.input] if values.input else []))
    failing = {
        fw
        for e in every
        for fw, m in e.results.items()
        if m.status != "match" or m.rel_norm > c.tol
    }
    if values.loss is not None:  # its value relative to the reference's, unscaled
        ref_loss = abs(float(c.ref.grads.loss))
        for s in c.sides:
            diff = abs(float(s.grads.loss) - float(c.ref.grads.loss))
            if not (diff <= c.tol * ref_loss):
                failing.add(s.label)
    return failing


def _layer_values(c: Comparison, ref_unit: Unit, captured: Sequence[Side], shape):
    """``(names, outputs, output gradients)`` of each captured side's partner unit."""
    names = {"reference": ref_unit.info.name} if c.native_reference else {}
    values, grads = {}, {}
    for s in captured:
        cand_unit = c.partner(s.label, ref_unit)
        if cand_unit is None:
            continue
        a = s.grads.activations.get(cand_unit.end)
        g = s.grads.activation_grads.get(cand_unit.end)
        if a is not None and g is not None and regroups(np.shape(a)[1:], tuple(shape)[1:]):
            a, g = np.reshape(a, shape), np.reshape(g, shape)  # (T, H, hd) against (T, d)
        if a is None or g is None or np.shape(a) != shape:
            continue
        names[s.label] = cand_unit.info.name
        values[s.label], grads[s.label] = a, g
    return names, values, grads


def layer_entries(c: Comparison, captured: Sequence[Side]) -> dict[str, LayerEntry]:
    """Each paired unit's output (forward) and ``dL/d output`` (backward) for the
    ``captured`` sides, by the reference unit's path, in the order outputs are computed."""
    out: dict[str, LayerEntry] = {}
    if c.ref.grads.activations is None or not captured:
        return out
    for ref_unit, _ in next(iter(c.alignments.values())).pairs:
        shape = c.ref.grads.activations[ref_unit.end].shape
        names, values, grads = _layer_values(c, ref_unit, captured, shape)
        if not values:
            continue
        forward = PreparedReference(c.ref.grads.activations[ref_unit.end], dtype=c.dtype, tol=c.tol)
        backward = PreparedReference(
            c.ref.grads.activation_grads[ref_unit.end], dtype=c.dtype, tol=c.tol
        )
        out[ref_unit.path] = LayerEntry(
            path=ref_unit.path,
            kind=ref_unit.info.kind,
            names=names,
            shape=tuple(shape),
            forward=forward.compare_many(values, pairs=False).results,
            backward=backward.compare_many(grads, pairs=False).results,
            paired_by={
                label: by
                for label in values
                if (by := getattr(c.alignments.get(label), "how", {}).get(ref_unit.path))
            },
        )
    return out


def pairwise(labels: Sequence[str], measured: Mapping[str, EntryComparison]) -> list[Pairwise]:
    """Largest ``||g_a - g_b|| / ||ref||`` over the entries, for each pair of sides, from the
    differences each entry's metric pass measured (``inf`` where either side holds
    NaN/Inf)."""
    pairs = []
    for a, b in itertools.combinations(labels, 2):
        worst, worst_name = -1.0, ""
        for key, m in measured.items():
            num = m.differences.get((a, b), math.inf)
            den = m.ref_norm
            value = num / den if den else (0.0 if num == 0 else math.inf)
            if math.isnan(value):
                value = math.inf
            if value > worst:
                worst, worst_name = value, key
        pairs.append(Pairwise(frameworks=(a, b), rel_norm=float(worst), entry=worst_name))
    return pairs


def divergence(
    side: str, pairs, layers: Mapping[str, LayerEntry], by_name: Mapping[str, Entry]
) -> Divergence | None:
    """Where ``side`` first parts from the reference: the first layer (in call order) whose
    output differs; else, from the output back, the first whose gradients differ."""

    def bad(m) -> bool:
        return m is not None and m.status not in OK_STATUSES

    for ref_unit, _ in pairs:
        entry = layers.get(ref_unit.path)
        if entry is not None and bad(entry.forward.get(side)):
            return Divergence(side, ref_unit.path, "forward", dict(entry.names))
    first = pairs[0][0].path if pairs else None
    for ref_unit, _ in reversed(pairs):
        entry = layers.get(ref_unit.path)
        if entry is None:
            continue
        own = [
            by_name.get(f"{ref_unit.path}.{local}" if ref_unit.path else local)
            for local in ref_unit.info.params
        ]
        if (
            bad(entry.backward.get(side))
            or any(e is not None and bad(e.results.get(side)) for e in own)
            or (
                ref_unit.path == first
                and "input" in by_name
                and bad(by_name["input"].results.get(side))
            )
        ):
            return Divergence(side, ref_unit.path, "backward", dict(entry.names))
    return None
