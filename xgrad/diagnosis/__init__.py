"""Diagnosis: name the cause of a discrepancy by testing each known cause.

Nothing here is guessed from names. Each cause (a record in :data:`CAUSES`: id, the
evidence it needs, its test, its wording) re-evaluates the diverging layer with the
layer's own NumPy forward or VJP, or the loss gradient, under the alternative convention.
It is *confirmed* only when the discrepancy then falls within tolerance. When no cause is
confirmed, the answer is ``unexplained``. A new cause is one record here and one test.

Everything here is NumPy in float64; no framework is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from xgrad.diagnosis import (
    activation,
    conv,
    downstream,
    kinks,
    layout,
    loss,
    modes,
    norms,
    positions,
    precision,
    recurrent,
    structure,
    tokens,
    transformer,
)
from xgrad.diagnosis.evidence import Evidence, ReferenceValues, UnitEvidence, build_evidence
from xgrad.diagnosis.fit_transformer import attend
from xgrad.diagnosis.precision import float32_exact, round_mantissa
from xgrad.diagnosis.records import UNEXPLAINED, Cause, Diagnosis, Finding, in_order
from xgrad.identify import rel
from xgrad.metrics import OK_STATUSES

__all__ = [
    "CAUSES",
    "CAUSE_IDS",
    "ORDER",
    "Cause",
    "Diagnosis",
    "Evidence",
    "UnitEvidence",
    "build_evidence",
    "diagnose",
    "diagnose_side",
    "round_mantissa",
]

ORDER: dict[str, tuple[str, ...]] = {
    # the first layer whose output differs
    "forward": (
        "residual-missing",
        "weight-layout",
        "training-mode",
        "dropout-active",
        "batchnorm-mode",
        "norm-affine",
        "layernorm-epsilon",
        "rmsnorm-epsilon",
        "rmsnorm-epsilon-placement",
        "rmsnorm-offset",
        "batchnorm-epsilon",
        "gelu-approximation",
        "leaky-relu-slope",
        "activation-mismatch",
        "conv-kernel-layout",
        "channel-order",
        "padding-convention",
        "pool-padding",
        "norm-axis",
        "lstm-gate-order",
        "lstm-bias",
        "gru-reset-after",
        "embedding-scale",
        "rope-layout",
        "rope-base",
        "attention-scale",
        "causal-mask",
        "mask-fill",
        "qkv-layout",
        "gqa-repeat",
        "softmax-precision",
        "dtype",
        "matmul-precision",
    ),
    # outputs agree, gradients differ
    "backward": (
        "padding-idx",
        "crossentropy-form",
        "crossentropy-clipping",
        "kink-convention",
        "kink-rounding",
        "activation-mismatch",  # the derivative only
        "weight-layout",  # dL/dinput
    ),
    # updated moving statistics differ
    "state": ("batchnorm-momentum",),
    # every gradient at once
    "model": ("loss-reduction",),
}
"""The order the causes are tried in: cause ids by the evidence they need (a cause's
``where``; an id may be tried on two kinds of evidence). Every cause of the family modules
is listed once; a new cause is a record in its family's module and an id here."""

_ATTENTION: tuple[Cause, ...] = tuple(positions.guarded(transformer.CAUSES))
"""The attention causes, the RoPE ones not re-run at positions other than 0..T-1."""

CAUSES: tuple[Cause, ...] = in_order(
    [(where, cause_id) for where, ids in ORDER.items() for cause_id in ids],
    [
        *structure.CAUSES,
        *modes.CAUSES,
        *layout.CAUSES,
        *norms.CAUSES,
        *activation.CAUSES,
        *precision.CAUSES,
        *loss.CAUSES,
        *kinks.CAUSES,
        *_ATTENTION,
        *tokens.CAUSES,
        *conv.CAUSES,
        *recurrent.CAUSES,
    ],
    key=lambda cause: (cause.where, cause.id),
)
"""Every known cause, in the order they are tried (:data:`ORDER`)."""

CAUSE_IDS: tuple[str, ...] = (*dict.fromkeys(c.id for c in CAUSES), UNEXPLAINED)
"""Every cause id a diagnosis can carry."""


FORWARD_TRIED = (
    "none of the known causes (activation form or slope, norm epsilon, affine terms or mode, "
    "dropout, skip connection, loss reduction, matmul precision, dtype, weight layout; "
    "attention conventions, embedding scale and RMSNorm forms where the unit is one) "
    "reproduces the candidate's output here"
)
"""What an ``unexplained`` forward divergence says was tried."""

BACKWARD_TRIED = (
    "none of the known causes (kink convention or rounding, clipping, another activation's "
    "derivative, loss reduction, a missing transpose) reproduces the candidate's gradients"
)
"""What an ``unexplained`` backward divergence says was tried."""


def _make(ev: Evidence, cause: str, layer, finding: Finding, where) -> Diagnosis:
    """The diagnosis ``finding`` gives; ``unexplained`` when it is not confirmed."""
    cause = cause if finding.confirmed else UNEXPLAINED
    layer = getattr(finding, "at", None) or layer  # a recurrent module inside the unit
    return Diagnosis.of(cause, finding, layer=layer, where=where, framework=ev.framework)


def _try(ev: Evidence, where: str, unit: UnitEvidence | None, before: float) -> Diagnosis | None:
    """The first confirmed cause; else the first specific but unconfirmed finding."""
    layer = None if unit is None else unit.path
    fallback = None
    misshapen = unit is not None and unit.misshapen
    for cause in CAUSES:
        if cause.where != where or not cause.applies(unit):
            continue
        if misshapen and (cause.id, cause.where) != ("weight-layout", "forward"):
            if cause not in _ATTENTION:  # these re-run the reference's weights only
                continue  # weights never paired: only the cause that says so applies
        found = cause.test(ev, unit, before)
        if found is None:
            continue
        made = _make(ev, cause.id, layer, found, None if where == "model" else where)
        if found.confirmed or (cause.id, cause.where) == ("weight-layout", "forward"):
            return made  # weights that differ come first: no convention is tested on them
        fallback = fallback or made
    return fallback


def _nonfinite(ev: Evidence) -> bool:
    arrays = [ev.dinput_cand, ev.output_cand]  # dL/dinput: None for token ids
    for unit in ev.units:
        arrays += [unit.output_cand, *unit.dweights_cand.values()]
    return any(a is not None and not np.all(np.isfinite(a)) for a in arrays)


def _nonfinite_cause(ev: Evidence) -> Diagnosis | None:
    """A confirmed cause of the first unit where NaN/Inf starts on the candidate's side only
    (its input finite, its output not; the reference's finite): a fully masked attention row
    filled with -inf, from :data:`~xgrad.diagnosis.transformer.NONFINITE`; else ``None``."""
    unit = next(
        (
            u
            for u in ev.units
            if np.all(np.isfinite(u.input_cand))
            and not np.all(np.isfinite(u.output_cand))
            and np.all(np.isfinite(u.output_ref))
        ),
        None,
    )
    if unit is None:
        return None
    for cause in CAUSES:
        if cause.id in transformer.NONFINITE and cause.where == "forward" and cause.applies(unit):
            found = cause.test(ev, unit, np.inf)
            if found is not None and found.confirmed:
                return _make(ev, cause.id, unit.path, found, "forward")
    return None


def _lower_precision(ev: Evidence) -> str | None:
    """How the candidate shows that it computes in float32 when float64 was asked."""
    if ev.dtype != "float64":
        return None
    if ev.dtype_cand != "float64":
        return f"it declares {ev.dtype_cand}"
    if ev.units and all(float32_exact(u.output_cand) for u in ev.units):
        return "it returns values that are all float32 numbers"
    return None


def diagnose(
    ev: Evidence,
    divergence: tuple[str, str, float] | None,
    state: Sequence[tuple[str, float]] = (),
) -> list[Diagnosis]:
    """Test the known causes against the evidence.

    Args:
        ev: what both sides computed.
        divergence: ``(unit path, "forward" | "backward", normwise error there)`` where
            the candidate first parts from the reference, or ``None``.
        state: ``(unit path, error)`` for each unit whose updated state differs.

    Returns:
        The confirmed causes, or one ``unexplained``; empty when nothing differs.
    """
    lower = _lower_precision(ev)
    moved = _past_float32(ev, divergence) if lower else None
    with np.errstate(all="ignore"):
        found = _diagnose(ev, moved or divergence, state)
    if lower and found and found[0].cause != UNEXPLAINED and (moved or found[0].cause != "dtype"):
        detail = (
            f"besides, float64 was asked but the candidate computes in float32 ({lower}): "
            "that alone makes differences of about 1e-7, so the cause above was confirmed "
            f"to float32's tolerance ({precision.FLOAT32_TOL:g})"
        )
        found.append(_make(ev, "dtype", None, Finding(detail, None, None), None))
    return found


def _past_float32(ev: Evidence, divergence) -> tuple[str, str, float] | None:
    """Where a candidate that computes in float32 when float64 was asked parts from the
    reference beyond float32's rounding: the first unit from the forward divergence on whose
    output differs by more than float32's tolerance (a 16-bit layer, or another cause), when
    the divergence itself is within it; else ``None``."""
    if divergence is None or divergence[1] != "forward":
        return None
    fit = max(ev.tol, precision.FLOAT32_TOL)
    paths = [u.path for u in ev.units]
    if divergence[2] > fit or divergence[0] not in paths:
        return None
    for unit in ev.units[paths.index(divergence[0]) :]:
        error = rel(unit.output_cand, unit.output_ref)
        if error > fit:
            return unit.path, "forward", error
    return None


def _diagnose(ev, divergence, state) -> list[Diagnosis]:
    ev.fit_tol = max(ev.tol, precision.FLOAT32_TOL) if _lower_precision(ev) else ev.tol
    if _nonfinite(ev):
        found = _nonfinite_cause(ev)
        if found is not None:
            return [found]
        return [
            Diagnosis.unexplained(
                "the candidate produced NaN/Inf (an overflow, or a NaN in its code); xgrad "
                "diagnoses finite discrepancies only, see the nonfinite entries for where",
                layer=None,
                where=None,
                framework=ev.framework,
            )
        ]
    out = []
    for path, before in state:
        unit = ev.unit(path)
        found = _try(ev, "state", unit, before)
        out.append(
            found
            or Diagnosis.unexplained(
                "the updated moving statistics differ; no known momentum or variance "
                "convention reproduces them",
                before=before,
                layer=path,
                where="state",
                framework=ev.framework,
            )
        )
    if divergence is None:
        return out
    path, where, before = divergence
    whole = _try(ev, "model", None, before)
    if whole is not None:
        return [*out, whole]
    unit = ev.unit(path)
    found = _try(ev, where, unit, before)
    if found is not None:
        return [*out, found]
    if where == "forward":
        detail = FORWARD_TRIED
    else:
        detail = "the forward values agree; " + BACKWARD_TRIED
    unexplained = Diagnosis.unexplained(
        detail, before=before, layer=path, where=where, framework=ev.framework
    )
    return [*out, unexplained]


def _divergence(report, label: str) -> tuple[str, str, float] | None:
    """``(path, where, error)`` of the first divergence of side ``label``, or ``None``; a
    backward one's error is the largest of its ``dL/d output`` and own gradients'."""
    layers = {layer.path: layer for layer in report.layers}
    for d in report.divergences:
        if d.framework != label:
            continue
        entry = layers[d.path]
        m = entry.forward[label] if d.where == "forward" else entry.backward[label]
        before = m.rel_norm
        if d.where == "backward":
            own = [
                e.results[label].rel_norm
                for e in report.parameters
                if e.name.startswith(d.path + ".") and label in e.results
            ]
            before = max([before, *own])
        return d.path, d.where, before
    return None


def _state(report, label: str) -> list[tuple[str, float]]:
    """``(unit path, error)`` of each unit whose updated state differs on side ``label``."""
    state: list[tuple[str, float]] = []
    for entry in report.state:
        m = entry.results.get(label)
        if m is not None and m.status not in OK_STATUSES:
            unit_path = entry.name.rsplit(".", 1)[0]
            if unit_path not in [s for s, _ in state]:
                state.append((unit_path, m.rel_norm))
    return state


def _failing(report, label: str) -> tuple[list[str], list[str]]:
    """The units of side ``label`` whose output differs, and those whose ``dL/d output`` or
    own parameter gradients differ."""
    forward, backward = [], []
    for layer in report.layers:
        if (m := layer.forward.get(label)) is not None and m.status not in OK_STATUSES:
            forward.append(layer.path)
        if (m := layer.backward.get(label)) is not None and m.status not in OK_STATUSES:
            backward.append(layer.path)
    for entry in report.parameters:
        m = entry.results.get(label)
        if m is not None and m.status not in OK_STATUSES:
            backward.append(entry.name.rsplit(".", 1)[0] if "." in entry.name else "")
    return forward, list(dict.fromkeys(backward))


def _later(
    report, ev: Evidence, first, weights, diagnosed, *, modules: bool
) -> tuple[list[Diagnosis], list[str]]:
    """The diagnoses of the units other than ``first`` (the first divergence) that diverge
    in their own right: after it, their outputs; before it, their gradients (each tested on
    its rebased evidence, :mod:`xgrad.diagnosis.downstream`; those ``diagnosed`` already
    not again; ``modules``: a model read module by module); and the note naming those that
    only carry another's difference, and those that could not be re-run."""
    label = ev.framework
    forward, backward = _failing(report, label)
    ev.fit_tol = max(ev.tol, precision.FLOAT32_TOL) if _lower_precision(ev) else ev.tol
    with np.errstate(all="ignore"):
        later, below, after = [], {}, {}
        if first.where == "forward":
            done = [d.layer for d in diagnosed if d.where == "forward"]
            later, below, after = downstream.later_divergences(
                ev, forward, first.path, weights, done, rerun=lambda u: _rerun_attention(ev, u)
            )
        done = [d.layer for d in diagnosed]
        earlier, above, before = downstream.earlier_divergences(
            ev, backward, first.path, done, inputs=not modules
        )
        found = []
        for where, items, tried in (
            ("forward", later, FORWARD_TRIED),
            ("backward", earlier, BACKWARD_TRIED),
        ):
            for item in items:
                own = "output" if where == "forward" else "gradients"
                detail = (
                    f"it differs in its own right (the reference's unit, fed the candidate's "
                    f"values, does not reproduce its {own}: {item.error:.2g}); {tried}"
                )
                found.append(
                    _try(ev, where, item.unit, item.error)
                    or Diagnosis.unexplained(
                        detail, before=item.error, layer=item.path, where=where, framework=label
                    )
                )
    notes = (
        downstream.downstream_note(label, below, above),
        downstream.unchecked_note(label, after, before),
    )
    return found, [n for n in notes if n]


def _rerun_attention(ev: Evidence, unit: UnitEvidence) -> UnitEvidence | None:
    """``unit``, a module of no kind that fits as the reference's attention
    (:func:`~xgrad.diagnosis.transformer.fitted`), with its reference side re-run on the
    candidate's input to it (its weights, convention and padding mask); ``None`` where it
    is not one or that input has another shape."""
    f = transformer.fitted(ev, unit)
    x = unit.input_cand
    if f is None or x is None or np.shape(x) != np.shape(f.x):
        return None
    y = attend(f.weights, f.convention, np.asarray(x, np.float64), f.keep)[0]
    if np.shape(y) != np.shape(unit.output_cand) or not np.all(np.isfinite(y)):
        return None
    return replace(unit, input_ref=np.asarray(x, np.float64), output_ref=y)


def diagnose_side(
    report, ref, side, alignment, inputs, *, dtype: str, tol: float, reference=None
) -> tuple[list[Diagnosis], list[str]]:
    """The diagnoses of one compared side of a report (see :func:`xgrad.runner.assemble`),
    and notes for the report; ``reference``
    (:class:`~xgrad.diagnosis.evidence.ReferenceValues`) is shared by the sides of one call.

    The first divergence is diagnosed first (the headline); then every other unit that
    diverges in its own right, each once: after it, by its output; before it (outputs agree),
    by its gradients. The units that only carry another's difference are named in a note, not
    diagnosed again (:mod:`xgrad.diagnosis.downstream`)."""
    first = next((d for d in report.divergences if d.framework == side.label), None)
    found = None
    if first is not None and first.between:  # the code between two modules parts
        weights = reference.weights if reference is not None else None
        found = _code(ref, side, first, inputs, dtype=dtype, tol=tol, weights=weights)
    ev = build_evidence(ref, side, alignment, inputs, dtype=dtype, tol=tol, reference=reference)
    transformer.attach(ev, ref, side, None if reference is None else reference.weights)
    transformer.context(ev).positions = positions.other_positions(getattr(inputs, "batch", None))
    if first is not None and first.between and not (found and found[0].confirmed):
        found = conv.flatten_between(ev, first) or found  # a flatten before a Dense
    if found is None:
        found = _headline(report, ev, side.label)
    if first is None or not ev.units:
        return found, []
    if any(d.layer is None and d.cause != "dtype" for d in found) or _nonfinite(ev):
        return found, []  # the whole model, or NaN/Inf: what follows only carries it
    weights = reference.weights if reference is not None else ReferenceValues(ref, inputs).weights
    diagnosed = [d for d in found if d.layer is not None and d.where in ("forward", "backward")]
    modules = side.grads.module_inputs is not None
    later, notes = _later(report, ev, first, weights, diagnosed, modules=modules)
    return [*found, *later], notes


def _code(ref, side, first, inputs, *, dtype: str, tol: float, weights) -> list[Diagnosis] | None:
    """The diagnoses of the code between two modules where the first divergence ``first``
    is (an activation written in ``forward``, :mod:`xgrad.diagnosis.code`; an embedding
    scaled there, :func:`xgrad.diagnosis.tokens.code_evidence`); ``None`` when that code is
    none of these."""
    from xgrad.diagnosis.code import code_before, code_evidence

    found = None
    code = code_evidence(ref, side, first, inputs, dtype=dtype, tol=tol)
    if code is not None:
        found = diagnose(code, (first.path, "forward", code_before(code)))
    if found and found[0].confirmed:
        return _placed(found, first)
    weights = ref.model.weights() if weights is None else weights
    code = tokens.code_evidence(ref, side, first, inputs, dtype=dtype, tol=tol, weights=weights)
    scaled = None if code is None else diagnose(code, (first.path, "forward", code_before(code)))
    if scaled and scaled[0].confirmed:
        return _placed(scaled, first)
    return None if found is None else _placed(found, first)


MODEL = "(the model)"
"""The ``layer`` of a diagnosis of the model's own code (its path, ``""``, reads as none)."""


def _placed(found: list[Diagnosis], first) -> list[Diagnosis]:
    """The diagnoses of the code between two modules that ``first`` names, each saying where
    that code is (``in the code of encoder.layers.0 between ... and ...: ``), and the
    model's own code named :data:`MODEL` rather than by its empty path."""
    before, after = first.between["reference"]
    owner = f"the code of {first.path}" if first.path else "the model's own code"
    where = f"in {owner} between {before} and {after}: "
    return [
        replace(d, layer=d.layer or MODEL, detail=where + d.detail) if d.layer == first.path else d
        for d in found
    ]


def _headline(report, ev: Evidence, label: str) -> list[Diagnosis]:
    """The diagnoses of a side's first divergence and updated state (or of the whole model
    when no unit parts)."""
    if not ev.units:
        return []
    divergence, state = _divergence(report, label), _state(report, label)
    if divergence is None and not state:
        if not any(fw == label for _, fw, _ in report.failures()):
            return []
        whole = _try(ev, "model", None, 0.0)
        if whole is not None:
            return [whole]
        detail = "the outputs or dL/dinput differ, but no layer does"
        return [Diagnosis.unexplained(detail, layer=None, where=None, framework=ev.framework)]
    return diagnose(ev, divergence, state)
