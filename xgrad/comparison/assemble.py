"""The report phase: entries, verdicts, divergences and pairwise figures into a
:class:`~xgrad.Report`; and the explain phase, which diagnoses what failed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from xgrad.comparison.entries import (
    Comparison,
    divergence,
    failing_sides,
    layer_entries,
    pairwise,
    parameter_entries,
    state_entries,
    value_entries,
)
from xgrad.comparison.localize import module_divergence
from xgrad.comparison.verdicts import consensus_note, judge, wants_explanation
from xgrad.diagnosis.records import UNEXPLAINED
from xgrad.metrics import OK_STATUSES
from xgrad.report import Report

__all__ = ["Description", "assemble", "explain", "explain_report", "finish", "with_config_diffs"]


@dataclass(frozen=True)
class Description:
    """What a report says about the comparison beside its measurements.

    Attributes:
        reference: how the reference was computed (``{"framework", "dtype"}``, ...).
        model_text: the reference model in short text form.
        seed: the seed of the weights when xgrad drew them, else ``None``.
        title: a heading.
        models: a description of each side (``compare_models``, ``compare_backends``).
        notes: what the reader should know.
        unpaired: parameters that pair with nothing (``{"side", "name", "native",
            "reason"}``), which make the report not ok.
        timing: seconds per phase so far.
        layers: whose layers are compared: ``"captured"``, every side evaluated with
            capture; ``"failing"``, only those of them with an entry beyond tolerance.
    """

    reference: dict
    model_text: str
    seed: int | None = None
    title: str | None = None
    models: dict | None = None
    notes: Sequence[str] = ()
    unpaired: Sequence[dict] = ()
    timing: dict = field(default_factory=dict)
    layers: str = "captured"


IDS_NOTE = (
    "the input is integer token ids (an Embedding first): ids have no gradient, so the report "
    "has no input entry; the embedding's gradient is compared instead"
)


def _ids_note(c: Comparison) -> tuple[str, ...]:
    """:data:`IDS_NOTE` when the reference has no ``dL/dinput`` (a spec taking token ids)."""
    grads = c.ref.grads
    return (IDS_NOTE,) if grads.input is None and grads.inputs is None else ()


def assemble(c: Comparison, d: Description) -> Report:
    """The :class:`~xgrad.Report` of ``c.sides`` against ``c.ref``: every entry measured
    (:mod:`~xgrad.comparison.entries`), judged (:mod:`~xgrad.comparison.verdicts`), and
    where each side first diverges."""
    start = time.perf_counter()
    entries, measured = parameter_entries(c)
    states = state_entries(c)
    values = value_entries(c, measured)
    captured = [s for s in c.sides if s.grads.activations is not None]
    if d.layers == "failing":
        failing = failing_sides(c, (*entries, *states), values)
        captured = [s for s in captured if s.label in failing]
    judged = judge(
        c, [*entries, *values.inputs], values.input, layer_entries(c, captured), measured
    )
    parameters = [e for e in judged.parameters if e.kind != "input"]
    more_inputs = tuple(e for e in judged.parameters if e.kind == "input")
    by_name = {e.name: e for e in [*parameters, *([judged.input] if judged.input else [])]}
    divergences = []
    for s in [] if judged.degenerate else captured:
        if s.grads.module_inputs is not None:  # read module by module
            found = module_divergence(c, s, judged.layers, by_name)
        else:
            found = divergence(s.label, c.alignments[s.label].pairs, judged.layers, by_name)
        if found is not None:
            divergences.append(found)
    pairs = pairwise([s.label for s in c.sides], measured) if len(c.sides) > 1 else []
    failing = {
        fw
        for e in (*judged.parameters, *([judged.input] if judged.input else []), values.output)
        for fw, m in e.results.items()
        if m.status not in OK_STATUSES
    }
    consensus = consensus_note(pairs, failing, len(c.sides), c.tol)
    timing = {**d.timing, "metrics and report": time.perf_counter() - start}
    loss_name = c.inputs.loss_name
    return Report(
        model=d.model_text,
        dtype=c.dtype,
        loss=loss_name,
        frameworks=tuple(s.label for s in c.sides),
        reference=dict(d.reference),
        tolerance=c.tol,
        batch=int(c.inputs.x.shape[0]),
        seed=d.seed,
        losses={} if loss_name is None else {s.label: s.grads.loss for s in c.sides},
        reference_loss=c.ref.grads.loss,
        parameters=tuple(parameters),
        state=tuple(states),
        input=judged.input,
        inputs=more_inputs,
        output=values.output,
        loss_value=values.loss,
        pairwise=tuple(pairs),
        timing=timing,
        title=d.title,
        layers=tuple(judged.layers.values()),
        divergences=tuple(divergences),
        models=d.models,
        notes=(*d.notes, *_ids_note(c), *judged.notes, *([consensus] if consensus else [])),
        unpaired=tuple(d.unpaired),
    )


def explain(report: Report, c: Comparison) -> Report:
    """Rounding that explains a side's failures entirely makes them pass (``match-kink``,
    ``match-clip``); the other failing sides are diagnosed: the first divergence first, then
    every later unit that diverges in its own right; the units that differ only downstream of
    one are named in a note.

    The reference's float64 values are prepared once for every side
    (:class:`~xgrad.diagnosis.evidence.ReferenceValues`): its weights, its forward steps (the
    referee's own, from :func:`xgrad.compare`) and its float64 gradients.
    """
    from xgrad.diagnosis import diagnose_side
    from xgrad.diagnosis.evidence import ReferenceValues
    from xgrad.diagnosis.rounding import explain_rounding
    from xgrad.diagnosis.tied import tied_weights

    ref, inputs = c.ref, c.inputs
    values = ReferenceValues(ref, inputs, weights=ref.weights, trace=ref.trace)
    failing = {fw for _, fw, _ in report.failures()}
    failing |= {fw for _, fw, _, _ in report.layer_failures()}
    failing |= {d.framework for d in report.divergences}
    diagnoses, repro, notes = [], [], []
    for s in c.sides:
        if s.grads.activations is None or s.label not in failing:
            continue
        alignment = c.alignments[s.label]
        report, benign = explain_rounding(
            report, ref, s, alignment, inputs, tol=c.tol, reference=values
        )
        if benign is not None:
            continue
        tied = tied_weights(ref, s, alignment, c.tol)
        if any(d.confirmed for d in tied):  # a structural difference explains the gradients
            diagnoses += [d for d in tied if d.confirmed]
        else:
            found, side_notes = diagnose_side(
                report, ref, s, alignment, inputs, dtype=c.dtype, tol=c.tol, reference=values
            )
            diagnoses += _with_config_hint(tied + found, report.config_diffs, s.label)
            notes += side_notes
        repro += _repro_units(report, c, s, values)
    return replace(
        report,
        diagnoses=tuple(diagnoses),
        repro_units=tuple(repro),
        notes=(*report.notes, *notes),
    )


def _with_config_hint(found: list, diffs, label: str) -> list:
    """Unexplained diagnoses of a side whose paired layers state another configuration say
    so: the difference may well be that configuration's, though xgrad could not re-run the
    model with it (a backward divergence downstream of an epsilon, for one)."""
    mine = [d for d in diffs if label in d.names]
    if not mine:
        return found
    hint = (
        f"a configuration differs: {'; '.join(d.text() for d in mine[:3])}. Make it equal "
        "and compare again: it may be the cause."
    )
    return [
        replace(d, detail=f"{d.detail.rstrip('.')}. {hint[0].upper()}{hint[1:]}")
        if d.cause == UNEXPLAINED
        else d
        for d in found
    ]


def _repro_units(report: Report, c: Comparison, side, values) -> list:
    """What :meth:`Report.repro` needs of the unit where ``side`` first parts."""
    from xgrad.diagnosis.config import normal_layers
    from xgrad.diagnosis.evidence import build_evidence
    from xgrad.report.repro import ReproUnit

    first = next((d for d in report.divergences if d.framework == side.label), None)
    if first is None:
        return []
    ev = build_evidence(
        c.ref,
        side,
        c.alignments[side.label],
        c.inputs,
        dtype=c.dtype,
        tol=c.tol,
        reference=values,
    )
    unit = next((u for u in ev.units if u.path == first.path), None)
    if first.between:  # the code between two modules: its activation, when one fits
        from xgrad.diagnosis.code import code_evidence

        code = code_evidence(c.ref, side, first, c.inputs, dtype=c.dtype, tol=c.tol)
        unit = code.units[0] if code is not None else unit
    if unit is None:
        return []
    layers = (normal_layers(unit.layers_ref), normal_layers(unit.layers_cand))
    refused = None
    if layers[0] is None or layers[1] is None:
        refused = (
            f"{first.path or '(the model)'} ({' <-> '.join(first.names.values())}) is of no "
            "layer kind xgrad knows on one side, so its code cannot be written out"
        )
    return [
        ReproUnit(
            side=side.label,
            frameworks=(c.ref.model.framework, side.model.framework),
            dtypes=(c.ref.model.dtype, side.model.dtype),
            path=first.path,
            names=dict(first.names),
            where=first.where,
            layers=layers,
            weights=(unit.weights_ref, unit.weights_cand),
            input=unit.input_ref,
            outputs=(unit.output_ref, unit.output_cand),
            refused=refused,
        )
    ]


def explain_report(report: Report, ref, sides, alignments, inputs, dtype, tol) -> Report:
    """:func:`explain` with the comparison's parts given one by one."""
    return explain(report, Comparison(ref, sides, alignments, inputs, dtype, tol))


def finish(report: Report, c: Comparison, explain_: bool | None) -> Report:
    """The report, explained when :func:`~xgrad.comparison.verdicts.wants_explanation`
    says so (the time that took in its timing, as ``diagnosis``)."""
    if not wants_explanation(report, explain_):
        return report
    start = time.perf_counter()
    report = explain(report, c)
    return replace(report, timing={**report.timing, "diagnosis": time.perf_counter() - start})


def with_config_diffs(report: Report, c: Comparison) -> Report:
    """The report with the configuration differences of the layers both sides state
    (:mod:`xgrad.diagnosis.config`), each also said in a note."""
    from xgrad.diagnosis.config import config_diffs
    from xgrad.diagnosis.evidence import build_evidence

    diffs = []
    for s in c.sides:
        if s.grads.activations is None or c.ref.grads.activations is None:
            continue
        ev = build_evidence(c.ref, s, c.alignments[s.label], c.inputs, dtype=c.dtype, tol=c.tol)
        diffs += config_diffs(ev)
    if not diffs:
        return report
    notes = (*report.notes, *(d.text() for d in diffs))
    return replace(report, config_diffs=tuple(diffs), notes=notes)
