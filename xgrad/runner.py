"""The one runner: evaluate each model once, line them up, and assemble the Report.

* :func:`compare` is "the float64 NumPy model of a spec against each framework's model of
  it": every framework builds the spec from the same weights.
* :func:`compare_models` is "the user's reference model against the candidate": both are
  read by their frameworks' readers, their layers aligned, the reference's weights copied
  into (a copy of) the candidate.

Both go through :func:`assemble`: entries per parameter, updated state, dL/dinput, output
and loss; per-layer forward and backward comparisons; where each side first diverges; and,
on a mismatch, the diagnosis (:mod:`xgrad.diagnosis`). The runner never asks which framework
it is talking to.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from xgrad.align import Alignment, Unit, align, identity_alignment
from xgrad.errors import FrameworkError, InputError
from xgrad.frameworks.base import (
    ALL_DTYPES,
    DTYPES,
    AbstractFramework,
    AbstractModel,
    Gradients,
    check_cotangent,
    check_dtype,
    check_input,
    prepare_loss,
)
from xgrad.frameworks.registry import available_frameworks, get_framework, read_model
from xgrad.losses import Loss
from xgrad.metrics import (
    OK_STATUSES,
    TOLERANCES,
    EntryComparison,
    PreparedReference,
    rtol_note,
    tolerance,
)
from xgrad.params import check_params, init_params
from xgrad.report import Divergence, Entry, LayerEntry, Pairwise, Report
from xgrad.spec import MLP

__all__ = [
    "Inputs",
    "Side",
    "assemble",
    "compare",
    "compare_models",
    "evaluate",
    "explain_report",
    "loss_scale",
    "model_text",
    "prepare_inputs",
    "resolve_frameworks",
]

REFERENCE = {"framework": "numpy", "dtype": "float64"}


def loss_scale(loss_name: str | None, output: np.ndarray, y=None) -> float | None:
    """The scale a loss value is judged against when its terms can cancel.

    ``sum``, ``mean`` and ``projection`` add terms of either sign (``out``, or ``out * y``):
    their value can be far smaller than its terms, and its rounding error scales with the
    terms, so it is compared relative to the sum (or mean) of their magnitudes. The other
    losses add non-negative terms, for which ``|loss|`` is that scale already (``None``).
    """
    if loss_name == "sum":
        return float(np.abs(output).sum())
    if loss_name == "mean":
        return float(np.abs(output).mean())
    if loss_name == "projection" and y is not None and np.shape(y) == np.shape(output):
        return float(np.abs(np.multiply(output, y, dtype=np.float64)).sum())
    return None


def resolve_frameworks(
    frameworks: str | Iterable[str | AbstractFramework] | None,
) -> list[AbstractFramework]:
    """Turn names and framework objects into frameworks, importing only those named.

    Args:
        frameworks: ``None`` for every installed framework; a comma-separated string; or
            a sequence of names and :class:`~xgrad.frameworks.AbstractFramework` instances.

    Raises:
        FrameworkError: an unknown name, a non-framework object, a repeated name, or none.
        FrameworkNotInstalledError: a named framework is not installed.
    """
    if frameworks is None:
        items: list = available_frameworks()
    elif isinstance(frameworks, str):
        items = [f for f in (p.strip() for p in frameworks.split(",")) if f]
    elif isinstance(frameworks, AbstractFramework):
        items = [frameworks]
    elif isinstance(frameworks, Iterable):
        items = list(frameworks)
    else:
        raise FrameworkError(
            f"frameworks must be names or framework objects, got {type(frameworks).__name__}"
        )
    out: list[AbstractFramework] = []
    for item in items:
        if isinstance(item, AbstractFramework):
            out.append(item)
        elif isinstance(item, type) and issubclass(item, AbstractFramework):
            raise FrameworkError(
                f"got the framework class {item.__name__}; pass an instance: {item.__name__}()"
            )
        elif isinstance(item, str):
            out.append(get_framework(item))
        else:
            raise FrameworkError(
                f"a framework is a name or an AbstractFramework instance, got "
                f"{type(item).__name__} {item!r}"
            )
    if not out:
        raise FrameworkError("no framework to compare; name at least one, e.g. 'numpy,jax'")
    names = [fw.name for fw in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FrameworkError(f"framework {repeated[0]!r} is named more than once in {names}")
    return out


@dataclass(frozen=True)
class Inputs:
    """One batch, checked: inputs, targets, the loss (or a cotangent instead)."""

    x: np.ndarray
    y: np.ndarray | None
    loss: Loss | object | None  # a Loss, a pair of loss functions, or None with a cotangent
    cotangent: np.ndarray | None

    @property
    def loss_name(self) -> str | None:
        if self.cotangent is not None:
            return None
        return self.loss.name if isinstance(self.loss, Loss) else "custom"

    def loss_for(self, side: int):
        """The loss argument of :meth:`AbstractModel.evaluate` for side 0 or 1."""
        if isinstance(self.loss, tuple):
            return self.loss[side]
        return self.loss


@dataclass
class Side:
    """One evaluated model: its label in the report, the model, its gradients.

    ``trace`` (the float64 NumPy referee of :func:`compare` only): the forward steps its
    evaluation made, which diagnosis re-uses instead of running the forward pass again;
    ``weights``: the float64 canonical weights it holds, when the runner has them.
    """

    label: str
    model: AbstractModel
    grads: Gradients
    seconds: float = 0.0
    trace: list | None = None
    weights: Mapping[str, np.ndarray] | None = None


def evaluate(
    label: str, model: AbstractModel, inputs: Inputs, *, capture: bool, side: int = 1
) -> Side:
    """Evaluate ``model`` on ``inputs`` (timed)."""
    start = time.perf_counter()
    if inputs.cotangent is not None:
        grads = model.evaluate(inputs.x, cotangent=inputs.cotangent, capture=capture)
    else:
        grads = model.evaluate(inputs.x, inputs.y, loss=inputs.loss_for(side), capture=capture)
    return Side(label, model, grads, time.perf_counter() - start)


# -- assembling the report -----------------------------------------------------------------


def _entry(
    name, kind, shape, native, arrays, reference, dtype, tol, scale=None
) -> tuple[Entry, EntryComparison]:
    """One entry: every side's array against the reference, in one fused pass
    (:meth:`~xgrad.metrics.PreparedReference.compare_many`), with the differences between
    sides that the pairwise summary needs."""
    prepared = PreparedReference(reference, dtype=dtype, tol=tol, scale=scale)
    measured = prepared.compare_many(arrays)
    entry = Entry(
        name=name,
        kind=kind,
        shape=tuple(shape),
        native=dict(native),
        results=measured.results,
    )
    return entry, measured


def _pairwise(labels: Sequence[str], measured: Mapping[str, EntryComparison]) -> list[Pairwise]:
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


def _divergence(side: str, pairs, layers: dict[str, LayerEntry], by_name: dict[str, Entry]):
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
        own = [by_name.get(f"{ref_unit.path}.{local}") for local in ref_unit.info.params]
        if (
            bad(entry.backward.get(side))
            or any(e is not None and bad(e.results.get(side)) for e in own)
            or (ref_unit.path == first and bad(by_name["input"].results.get(side)))
        ):
            return Divergence(side, ref_unit.path, "backward", dict(entry.names))
    return None


def assemble(
    ref: Side,
    sides: Sequence[Side],
    alignments: Mapping[str, Alignment],
    inputs: Inputs,
    *,
    dtype: str,
    tol: float,
    reference: dict,
    model_text: str,
    native_reference: bool,
    seed: int | None = None,
    title: str | None = None,
    models: dict | None = None,
    notes: Sequence[str] = (),
    timing: dict | None = None,
    layers: str = "captured",
) -> Report:
    """The :class:`~xgrad.Report` of ``sides`` against ``ref``.

    Args:
        ref: the evaluated reference.
        sides: the evaluated candidates.
        alignments: side label -> how that side's names and units correspond to ``ref``'s.
        native_reference: list the reference's own names beside each side's (porting).
        layers: whose layers are compared: ``"captured"``, every side evaluated with
            capture; ``"failing"``, only those of them with an entry beyond tolerance (its
            normwise error, the loss value's relative to the reference's).
    """
    start = time.perf_counter()
    ref_native = ref.model.native_names()
    entries = []
    measured: dict[str, EntryComparison] = {}  # what the pairwise summary reads
    for name in ref.model.param_names:
        if name not in ref.grads.params or not all(
            name in alignments[s.label].names for s in sides
        ):
            continue
        native = {"reference": ref_native[name]} if native_reference else {}
        arrays = {}
        for s in sides:
            a = alignments[s.label]
            cand_name = a.names[name]
            native[s.label] = s.model.native_names().get(cand_name, cand_name)
            g = s.grads.params[cand_name]
            arrays[s.label] = g.T if name in a.transposed else g
        entry, measured[name] = _entry(
            name,
            "parameter",
            ref.grads.params[name].shape,
            native,
            arrays,
            ref.grads.params[name],
            dtype,
            tol,
        )
        entries.append(entry)
    state_entries = []
    for name, value in ref.grads.state.items():
        arrays, native = {}, ({"reference": ref_native.get(name, name)} if native_reference else {})
        for s in sides:
            cand_name = alignments[s.label].names.get(name)
            if cand_name is not None and cand_name in s.grads.state:
                arrays[s.label] = s.grads.state[cand_name]
                native[s.label] = s.model.native_names().get(cand_name, cand_name)
        if arrays:
            state_entries.append(
                _entry(name, "state", value.shape, native, arrays, value, dtype, tol)[0]
            )

    def simple(name, kind, pick, scale=None, native_name=None):
        native = {s.label: native_name or name for s in sides}
        if native_reference:
            native = {"reference": native_name or name, **native}
        return _entry(
            name,
            kind,
            np.shape(pick(ref.grads)),
            native,
            {s.label: pick(s.grads) for s in sides},
            pick(ref.grads),
            dtype,
            tol,
            scale,
        )

    input_entry, measured["input"] = simple("input", "input", lambda g: g.input)
    output_entry, measured["output"] = simple("output", "output", lambda g: g.output)
    loss_entry = None
    loss_name = inputs.loss_name
    if loss_name is not None:
        loss_entry = simple(
            "loss",
            "loss",
            lambda g: np.asarray(g.loss),
            scale=loss_scale(loss_name, ref.grads.output, inputs.y),
            native_name=loss_name,
        )[0]

    # per layer, for the sides whose layers were captured
    layer_entries: dict[str, LayerEntry] = {}
    captured = [s for s in sides if s.grads.activations is not None]
    if layers == "failing":
        failing = {
            fw
            for e in (*entries, *state_entries, input_entry, output_entry)
            for fw, m in e.results.items()
            if m.status != "match" or m.rel_norm > tol
        }
        if loss_entry is not None:  # its value relative to the reference's, unscaled
            ref_loss = abs(float(ref.grads.loss))
            for s in sides:
                diff = abs(float(s.grads.loss) - float(ref.grads.loss))
                if not (diff <= tol * ref_loss):
                    failing.add(s.label)
        captured = [s for s in captured if s.label in failing]
    if ref.grads.activations is not None and captured:
        for ref_unit, _ in next(iter(alignments.values())).pairs:
            fwd, bwd, names = {}, {}, {}
            if native_reference:
                names["reference"] = ref_unit.info.name
            shape = ref.grads.activations[ref_unit.end].shape
            values, grads = {}, {}
            for s in captured:
                cand_unit = _partner(alignments[s.label], ref_unit)
                if cand_unit is None:
                    continue
                a = s.grads.activations.get(cand_unit.end)
                g = s.grads.activation_grads.get(cand_unit.end)
                if a is None or g is None or np.shape(a) != shape:
                    continue
                names[s.label] = cand_unit.info.name
                values[s.label], grads[s.label] = a, g
            if values:
                fwd = (
                    PreparedReference(ref.grads.activations[ref_unit.end], dtype=dtype, tol=tol)
                    .compare_many(values, pairs=False)
                    .results
                )
                bwd = (
                    PreparedReference(
                        ref.grads.activation_grads[ref_unit.end], dtype=dtype, tol=tol
                    )
                    .compare_many(grads, pairs=False)
                    .results
                )
            if fwd:
                layer_entries[ref_unit.path] = LayerEntry(
                    path=ref_unit.path,
                    kind=ref_unit.info.kind,
                    names=names,
                    shape=tuple(shape),
                    forward=fwd,
                    backward=bwd,
                )
    entries, input_entry, degenerate = _mark_uninformative(
        ref, entries, input_entry, inputs, loss_name, measured
    )
    conditioned = []
    for s in sides:
        widened = _conditioning(ref, s, inputs, tol)
        if widened is None:
            continue
        side_tol, kappa = widened
        before = (entries, input_entry, dict(layer_entries))
        entries = [_rejudge(e, s.label, side_tol) for e in entries]
        input_entry = _rejudge(input_entry, s.label, side_tol)
        for path, entry in layer_entries.items():
            m = entry.backward.get(s.label)
            if m is not None and m.status == "mismatch" and m.rel_norm <= side_tol:
                backward = {**entry.backward, s.label: replace(m, status="match", tol=side_tol)}
                layer_entries[path] = replace(entry, backward=backward)
        if (entries, input_entry, layer_entries) == before:
            continue  # nothing needed the wider tolerance
        conditioned.append(
            f"{s.label}: the loss is ill-conditioned at these outputs: {s.label}'s output "
            f"differs from the reference's by its own rounding, which moves dL/d output by "
            f"{kappa:.2g} (relative); its gradients are judged at tolerance {side_tol:.2g}"
        )
    notes = [*notes, *conditioned]
    if degenerate:
        notes.append(degenerate)
    by_name = {e.name: e for e in [*entries, input_entry]}
    divergences = []
    if degenerate:  # nothing flows back: the backward values of layers say nothing either
        for path, entry in layer_entries.items():
            backward = {fw: replace(m, status="uninformative") for fw, m in entry.backward.items()}
            layer_entries[path] = replace(entry, backward=backward)
        captured = []
    for s in captured:
        d = _divergence(s.label, alignments[s.label].pairs, layer_entries, by_name)
        if d is not None:
            divergences.append(d)

    pairwise = []
    if len(sides) > 1:
        pairwise = _pairwise([s.label for s in sides], measured)
    timing = dict(timing or {})
    timing["metrics and report"] = time.perf_counter() - start
    return Report(
        model=model_text,
        dtype=dtype,
        loss=loss_name,
        frameworks=tuple(s.label for s in sides),
        reference=dict(reference),
        tolerance=tol,
        batch=int(inputs.x.shape[0]),
        seed=seed,
        losses={} if loss_name is None else {s.label: s.grads.loss for s in sides},
        reference_loss=ref.grads.loss,
        parameters=tuple(entries),
        state=tuple(state_entries),
        input=input_entry,
        output=output_entry,
        loss_value=loss_entry,
        pairwise=tuple(pairwise),
        timing=timing,
        title=title,
        layers=tuple(layer_entries.values()),
        divergences=tuple(divergences),
        models=models,
        notes=tuple(notes),
    )


ZERO_GRADIENT = 64
"""A reference gradient whose RMS is below this many machine epsilons of the reference's
dtype, relative to the RMS of dL/d output, is zero up to rounding."""


def _seed_scale(ref: Side, inputs: Inputs) -> float | None:
    """The RMS of dL/d output: what every gradient of the model is a product of."""
    if inputs.cotangent is not None:
        seed = inputs.cotangent
    elif isinstance(inputs.loss, Loss):
        with np.errstate(all="ignore"):
            seed = inputs.loss.value_and_grad(np.asarray(ref.grads.output, np.float64), inputs.y)[1]
    else:
        return None
    return float(np.sqrt(np.mean(np.square(seed)))) if np.size(seed) else None


def _mark_uninformative(ref: Side, entries, input_entry, inputs: Inputs, loss_name, measured):
    """When every reference gradient is zero up to rounding, no comparison can see anything:
    those entries become ``uninformative`` (a failing status) and a note says why and what to
    do. A single zero gradient among informative ones (a bias before a batch norm) is judged
    by the absolute noise floor as usual. Each gradient's RMS comes from the reference norm
    its entry's metric pass measured."""
    scale = _seed_scale(ref, inputs)
    names = [e.name for e in entries] + ["input"]
    if scale is None or scale == 0:
        return entries, input_entry, None
    rms = []
    for name in names:
        m = measured[name]
        size = next(iter(m.results.values())).size if m.results else 0
        rms.append(m.ref_norm / math.sqrt(size) if size else 0.0)
    eps = float(np.finfo(ref.model.dtype).eps) if ref.model.dtype in DTYPES else 1e-2
    if max(rms) > ZERO_GRADIENT * eps * scale:
        return entries, input_entry, None

    def mark(entry: Entry) -> Entry:
        results = {fw: replace(m, status="uninformative") for fw, m in entry.results.items()}
        return replace(entry, results=results)

    note = (
        f"every reference gradient is zero up to rounding (largest RMS {max(rms):.2g}, against "
        f"dL/d output {scale:.2g}): the {loss_name or 'given cotangent'} does not depend on the "
        "parameters here (the sum of a softmax output is always 1), so no comparison can see "
        "anything; use loss='projection' (a seeded random direction, never degenerate) or a "
        "loss with targets"
    )
    return [mark(e) for e in entries], mark(input_entry), note


MAX_WIDENED = 1e-2
"""Beyond this, a tolerance would hide real differences: the float64 reference is re-run
from the side's own outputs instead (:mod:`xgrad.diagnosis.rounding`)."""

CONDITIONING = 3.0
"""Gradients are judged at ``max(tol, CONDITIONING * kappa)``, where ``kappa`` is how much the
side's own output difference moves dL/d output through the loss (see :func:`_conditioning`)."""


def _conditioning(ref: Side, side: Side, inputs: Inputs, tol: float):
    """``(widened tolerance, kappa)`` when the loss amplifies the side's output rounding
    beyond ``tol``, else ``None``.

    ``kappa = ||g(out_side) - g(out_ref)|| / ||g(out_ref)||`` with ``g`` the float64 loss
    gradient: what the output difference alone does to every gradient (they are all linear in
    dL/d output). Saturated ``bce``/``cce`` outputs (``(1 - y) / (1 - p)`` near ``p = 1``) turn
    a one-ulp output difference into 1e-3 there. Elements that cross the clipping bound are
    left out: that is rounding of another kind (``match-clip``, see
    :mod:`xgrad.diagnosis.rounding`). Only the gradients are widened, never the output or the
    loss value, so a wrong forward computation is still caught.
    """
    loss = inputs.loss
    if not isinstance(loss, Loss) or inputs.y is None or inputs.cotangent is not None:
        return None
    out_ref = np.asarray(ref.grads.output, np.float64)
    out_side = np.asarray(side.grads.output, np.float64)
    if out_ref.shape != out_side.shape or not np.all(np.isfinite(out_side)):
        return None
    with np.errstate(all="ignore"):
        g_ref = loss.value_and_grad(out_ref, inputs.y)[1]
        g_side = loss.value_and_grad(out_side, inputs.y)[1]
    crossed = (g_ref == 0) != (g_side == 0)  # the clipping bound crossed: not this rule's
    g_side = np.where(crossed, g_ref, g_side)
    den = float(np.linalg.norm(g_ref))
    if den == 0 or not np.isfinite(den):
        return None
    kappa = float(np.linalg.norm(g_side - g_ref)) / den
    if CONDITIONING * kappa <= tol or CONDITIONING * kappa > MAX_WIDENED:
        return None  # nothing to widen; or too ill-conditioned for a tolerance to decide
    return CONDITIONING * kappa, kappa


def _rejudge(entry: Entry, label: str, tol: float) -> Entry:
    m = entry.results.get(label)
    if m is None or m.status != "mismatch" or m.rel_norm > tol:
        return entry
    return replace(entry, results={**entry.results, label: replace(m, status="match", tol=tol)})


def _partner(alignment: Alignment, ref_unit: Unit) -> Unit | None:
    for r, c in alignment.pairs:
        if r.path == ref_unit.path:
            return c
    return None


def explain_report(
    report: Report, ref: Side, sides: Sequence[Side], alignments, inputs, dtype, tol
) -> Report:
    """Rounding that explains a side's failures entirely makes them pass (``match-kink``,
    ``match-clip``); the other failing sides are diagnosed.

    The reference's float64 values are prepared once for every side
    (:class:`~xgrad.diagnosis.evidence.ReferenceValues`): its weights, its forward steps (the
    referee's own, from :func:`compare`) and its float64 gradients.
    """
    from xgrad.diagnosis import diagnose_side
    from xgrad.diagnosis.evidence import ReferenceValues
    from xgrad.diagnosis.rounding import explain_rounding

    values = ReferenceValues(ref, inputs, weights=ref.weights, trace=ref.trace)
    failing = {fw for _, fw, _ in report.failures()}
    failing |= {fw for _, fw, _, _ in report.layer_failures()}
    failing |= {d.framework for d in report.divergences}
    diagnoses = []
    for s in sides:
        if s.grads.activations is None or s.label not in failing:
            continue
        report, benign = explain_rounding(
            report, ref, s, alignments[s.label], inputs, tol=tol, reference=values
        )
        if benign is not None:
            continue
        diagnoses += diagnose_side(
            report, ref, s, alignments[s.label], inputs, dtype=dtype, tol=tol, reference=values
        )
    return replace(report, diagnoses=tuple(diagnoses))


# -- compare: a spec in every framework ----------------------------------------------------


def prepare_inputs(model: AbstractModel, x, y=None, loss="projection", cotangent=None) -> Inputs:
    """The checked batch for ``model``: ``x`` of its input shape, targets checked against the
    loss (or a cotangent of its output shape instead); a pair of loss functions is kept."""
    xs = check_input(model.input_shape, x)
    if cotangent is not None:
        return Inputs(xs, None, None, check_cotangent(model.output_shape, cotangent, xs.shape[0]))
    if isinstance(loss, tuple):
        if len(loss) != 2 or not all(callable(f) for f in loss):
            raise InputError("loss=(reference_fn, candidate_fn) takes two loss functions")
        return Inputs(xs, None if y is None else np.asarray(y), loss, None)
    loss_fn, ys = prepare_loss(loss, y, xs.shape[0], model.output_shape)
    return Inputs(xs, ys, loss_fn, None)


def compare(
    model: MLP,
    x,
    y=None,
    *,
    loss: str = "sum",
    frameworks: str | Iterable[str | AbstractFramework] | None = None,
    dtype: str = "float32",
    params: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    cotangent=None,
    rtol: float | None = None,
    title: str | None = None,
    explain: bool | None = None,
) -> Report:
    """Compare every framework's gradients of ``model`` against a float64 NumPy reference.

    Each framework builds the spec from the same canonical weights, cast to ``dtype``; the
    reference is xgrad's NumPy model of it in float64 (every layer's own forward and VJP).

    Args:
        model: the :class:`~xgrad.MLP` spec.
        x: inputs, shape ``(batch, *input_shape)``.
        y: targets for the losses that need them (see :mod:`xgrad.losses`).
        loss: a loss name; ignored when ``cotangent`` is given.
        frameworks: names (``"numpy,jax"`` or a list) and/or framework objects; ``None``
            means every installed framework.
        dtype: the dtype every framework computes in, ``"float32"`` or ``"float64"``.
        params: canonical weights (see :mod:`xgrad.params`); ``None`` draws them with
            :func:`xgrad.init_params` ``(model, seed)``.
        seed: the seed for ``params=None``.
        cotangent: a ``grad_output = dL/doutput`` to back-propagate instead of a loss (the
            seed article's gradient "received from the subsequent layer").
        rtol: overrides the per-dtype normwise tolerance (:data:`xgrad.metrics.TOLERANCES`).
        title: a heading for the report.
        explain: on a mismatch, compare every layer and test the known causes
            (:mod:`xgrad.diagnosis`), into ``report.layers`` and ``report.diagnoses``.
            ``None`` (default): only when something mismatches; ``True``: always; ``False``:
            never.

    Returns:
        A :class:`~xgrad.Report`; ``report.ok`` says whether everything matched.

    Raises:
        SpecError, InputError, ParamsError, FrameworkError: bad arguments, before any
            framework computes anything.

    Example:
        >>> import numpy as np, xgrad
        >>> spec = xgrad.MLP(3, [xgrad.Dense(4, "sigmoid")])
        >>> report = xgrad.compare(spec, np.ones((2, 3)), frameworks="numpy")
        >>> report.ok, [e.name for e in report.parameters]
        (True, ['layers.0.kernel', 'layers.0.bias'])
    """
    if not isinstance(model, MLP):
        raise InputError(
            f"compare needs an xgrad.MLP spec as model, got {type(model).__name__}; for your "
            "own Keras/Flax/JAX models use xgrad.compare_models"
        )
    from xgrad.frameworks.numpy import FRAMEWORK as NUMPY

    frameworks_ = resolve_frameworks(frameworks)
    dtype = check_dtype(dtype, ALL_DTYPES)
    lacking = [fw for fw in frameworks_ if dtype not in fw.dtypes]
    if lacking:
        names = ", ".join(fw.name for fw in lacking)
        having = [fw.name for fw in frameworks_ if dtype in fw.dtypes]
        fix = f"drop {names} from frameworks" if having else "use another dtype"
        verb = "computes" if len(lacking) == 1 else "compute"
        raise InputError(
            f"dtype {dtype!r} is not supported by {names} (which {verb} in "
            f"{', '.join(lacking[0].dtypes)}); {fix}"
        )
    tol = tolerance(dtype, rtol)
    weights = init_params(model, seed) if params is None else check_params(model, params)
    referee = NUMPY._build(model, weights, "float64")
    inputs = prepare_inputs(referee, x, y, loss, cotangent)
    # Per-layer values are captured in the one evaluation each model gets, unless diagnosis is
    # off: capturing costs a few percent of a step, evaluating again after a mismatch a whole
    # step. The referee's forward steps are kept for diagnosis (it never runs them again).
    capture = explain is not False
    start = time.perf_counter()
    if inputs.cotangent is not None:
        grads, trace = referee.evaluate_traced(
            inputs.x, cotangent=inputs.cotangent, capture=capture
        )
    else:
        grads, trace = referee.evaluate_traced(
            inputs.x, inputs.y, loss=inputs.loss, capture=capture
        )
    ref = Side("reference", referee, grads, time.perf_counter() - start, trace, weights)
    timing = {"reference (numpy float64)": ref.seconds}
    # the weights in the run dtype, cast once and shared by every framework's build (each
    # copies them into its own tensors; none writes to these arrays); bfloat16, which NumPy
    # holds only through ml_dtypes, is left to each framework to cast from float64
    native = dtype in ("float16", "float32")
    cast = {k: v.astype(dtype) for k, v in weights.items()} if native else weights
    alignments: dict[str, Alignment] = {}
    sides = []
    for fw in frameworks_:
        start = time.perf_counter()
        built = fw._build(model, cast, dtype)
        alignments[fw.name] = identity_alignment(referee, built)
        side = evaluate(fw.name, built, inputs, capture=capture)
        side.seconds = time.perf_counter() - start
        timing[fw.name] = side.seconds
        sides.append(side)
    report = assemble(
        ref,
        sides,
        alignments,
        inputs,
        dtype=dtype,
        tol=tol,
        reference=REFERENCE,
        model_text=model.describe(),
        native_reference=False,
        seed=seed if params is None else None,
        title=title,
        timing=timing,
        layers="captured" if explain is True else "failing",
        notes=[note] if (note := rtol_note(rtol, dtype)) else (),
    )
    if explain is False or (explain is None and report.ok) or report.uninformative:
        return report
    start = time.perf_counter()
    report = explain_report(report, ref, sides, alignments, inputs, dtype, tol)
    return replace(report, timing={**report.timing, "diagnosis": time.perf_counter() - start})


# -- compare_models: a user's model against its port ----------------------------------------


def _input_shape(x) -> tuple[int, ...] | None:
    shape = np.shape(x)
    return tuple(shape[1:]) if len(shape) >= 2 else None


def model_text(model: AbstractModel) -> str:
    """The model in short text form (``10 -> 8:relu -> ...``), ``?`` where unknown."""
    shape = model.input_shape
    dims = str(shape[0]) if len(shape) == 1 else "x".join(map(str, shape))
    return " -> ".join([dims, *(info.describe() for info in model.layers)])


def _loaded_from(ref: AbstractModel, cand: AbstractModel, alignment: Alignment) -> str | None:
    """Whether the candidate's weights came from the reference's: how many of the
    reference's non-constant arrays it holds, in place, transposed or at another place
    (``None``: none of them, an unrelated initialisation)."""
    from xgrad.identify import rel

    ref_w = {k: np.asarray(v, np.float64) for k, v in ref.weights().items()}
    cand_w = {k: np.asarray(v, np.float64) for k, v in cand.weights().items()}
    pool = [a for a in ref_w.values() if a.size > 1 and np.ptp(a) > 0]
    found = 0
    informative = 0
    for ref_name, cand_name in alignment.names.items():
        a, b = ref_w.get(ref_name), cand_w.get(cand_name)
        if a is None or b is None or a.size < 2 or np.ptp(a) == 0:
            continue
        informative += 1
        for other in pool:
            if (other.shape == b.shape and rel(b, other) <= 1e-2) or (
                other.ndim == 2 and other.T.shape == b.shape and rel(b, other.T) <= 1e-2
            ):
                found += 1
                break
    return f"{found} of {informative} arrays" if found else None


def compare_models(
    reference,
    candidate,
    x,
    y=None,
    *,
    loss="projection",
    mapping: str | Mapping[str, str] = "auto",
    transfer: bool | str = "auto",
    rtol: float | None = None,
    cotangent=None,
    title: str | None = None,
    explain: bool | None = None,
    seed: int = 0,
) -> Report:
    """Compare a model with its port: outputs, loss, gradients and every layer.

    Args:
        reference: the model you trust: a ``keras.Model`` (Sequential, Functional or
            subclassed), a ``torch.nn.Module``, a ``flax.nnx.Module``, a
            ``(flax.linen.Module, variables)`` pair, a pure-JAX ``(apply_fn, params)`` pair or
            an ``(xgrad.MLP, params)`` pair.
        candidate: the port, any of the same kinds.
        x: inputs, shape ``(batch, *input_shape)``.
        y: targets, for the losses that need them.
        loss: a loss name (see :mod:`xgrad.losses`), computed on each side in its own
            framework with xgrad's definition; or a pair ``(reference_fn, candidate_fn)`` of
            each side's own loss function ``(output, y) -> scalar`` in its own framework. The
            default, ``projection``, is ``sum(output * r)`` for a seeded random ``r``: its
            gradients are never degenerate.
        mapping: ``"auto"`` pairs layers in call order; ``{reference layer name: candidate
            layer name}`` pairs them by name; ``{reference parameter: candidate parameter}``
            (native names) pairs parameters when the layers cannot be read.
        transfer: ``True`` copies the reference's weights into a copy of the candidate
            first, so both start identical; ``False`` compares the candidate's own weights (a
            loader that transposed or swapped a kernel is caught: ``weight-layout``);
            ``"auto"`` (default) does the second when the candidate already holds the
            reference's weights (any of them, in place, transposed or elsewhere) and the first
            when its weights are an unrelated initialisation. ``report.notes`` says which.
            Neither of your objects is ever changed.
        rtol: overrides the per-dtype normwise tolerance.
        cotangent: a ``grad_output`` of the output's shape instead of a loss.
        title: a heading for the report.
        explain: test the known causes of a mismatch (:mod:`xgrad.diagnosis`) and put
            them in ``report.diagnoses``; ``None`` (default) only when something
            mismatches, ``True`` always, ``False`` never.
        seed: seeds the targets drawn when ``y`` is not given (``projection``'s direction).

    Returns:
        A :class:`~xgrad.Report` whose reference is the reference model; the candidate is
        reported under its framework's name. ``report.layers`` holds each aligned layer's
        forward (output) and backward (``dL/d output``) comparison;
        ``report.first_divergence`` says where the two first part.

    Raises:
        AlignmentError: the layers cannot be paired (depth, kind, width, bias); the message
            names the layer on both sides and what to change.
        InputError: ``x``, ``y``, ``cotangent`` or ``mapping`` are malformed.
    """
    start = time.perf_counter()
    shape = _input_shape(x)
    ref_model = read_model(reference, input_shape=shape)
    cand_model = read_model(candidate, input_shape=shape)
    alignment = align(ref_model, cand_model, mapping)
    prepared = time.perf_counter()
    if y is None and cotangent is None and isinstance(loss, str) and loss == "projection":
        from xgrad.losses import random_targets

        batch = int(np.shape(x)[0]) if np.ndim(x) else 0
        y = random_targets("projection", batch, int(np.prod(ref_model.output_shape)), seed)
    inputs = prepare_inputs(ref_model, x, y, loss, cotangent)
    check_input(cand_model.input_shape, inputs.x)
    notes = [
        f"{side} {info.path} ({info.name}): {info.note}"
        for side, model in (("reference", ref_model), ("candidate", cand_model))
        for info in model.walk()
        if info.note
    ]
    if alignment.note:
        notes.append(alignment.note)
    if transfer not in (True, False, "auto"):
        raise InputError(f"transfer must be True, False or 'auto', got {transfer!r}")
    if transfer == "auto":
        found = _loaded_from(ref_model, cand_model, alignment)
        transfer = not found
        notes.append(
            f"transfer='auto': the candidate holds the reference's weights ({found}), so its "
            "own weights were compared"
            if found
            else "transfer='auto': the candidate's weights are an unrelated initialisation, so "
            "the reference's were copied into a copy of it"
        )
    if transfer:
        cand_model = cand_model.with_weights(alignment.to_candidate(ref_model.weights()))
    dtype = ref_model.dtype if ref_model.dtype in TOLERANCES else "float32"
    tol = tolerance(dtype, rtol)
    timing = {
        "read and align": prepared - start,
        "weights checked or copied": time.perf_counter() - prepared,
    }
    capture = bool(alignment.pairs)
    ref = evaluate("reference", ref_model, inputs, capture=capture, side=0)
    label = cand_model.framework if cand_model.framework != "reference" else "candidate"
    cand = evaluate(label, cand_model, inputs, capture=capture, side=1)
    describe = {
        "model": ref_model.description,
        "framework": ref_model.framework,
        "dtype": ref_model.dtype,
    }
    report = assemble(
        ref,
        [cand],
        {label: alignment},
        inputs,
        dtype=dtype,
        tol=tol,
        reference=describe,
        model_text=model_text(ref_model),
        native_reference=True,
        title=title,
        models={
            "reference": describe,
            label: {
                "model": cand_model.description,
                "framework": cand_model.framework,
                "dtype": cand_model.dtype,
                "transferred": transfer,
            },
        },
        notes=notes,
        timing={**timing, "reference": ref.seconds, label: cand.seconds},
    )
    if explain is False or (explain is None and report.ok) or report.uninformative:
        return report
    start = time.perf_counter()
    report = explain_report(report, ref, [cand], {label: alignment}, inputs, dtype, tol)
    return replace(report, timing={**report.timing, "diagnosis": time.perf_counter() - start})
