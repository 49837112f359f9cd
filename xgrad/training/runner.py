"""compare_training: N optimizer steps of a model and its port, side by side.

Each step evaluates both models on the batch (gradients in canonical names, through
:func:`xgrad.runner.evaluate`), lets each side's own optimizer update copies of its weights
in its own framework (:mod:`xgrad.training.optimizers`), and gives each model the new
weights with ``with_weights`` (parameters, and BatchNorm moving statistics from the
evaluation). The reference's rule runs beside both, in float64 NumPy on each side's own
gradients: the referee (:mod:`xgrad.optim.rules`). The weights are compared after every
step against ``tol * sqrt(step)``; the first divergence is explained by
:mod:`xgrad.training.diagnose`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping

import numpy as np

from xgrad.align import Alignment
from xgrad.comparison import evaluate, judged_dtype, model_text, prepare_inputs, read_pair
from xgrad.comparison import transfer as transfer_weights
from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractModel, check_input
from xgrad.metrics import tolerance
from xgrad.optim import AbstractOptimizer, AbstractRun
from xgrad.optim.rules import Arrays, Rule
from xgrad.training.diagnose import Divergent, History, diagnose, precision
from xgrad.training.optimizers import as_optimizer
from xgrad.training.replay import relative
from xgrad.training.report import (
    Divergence,
    Step,
    TrainingReport,
    WeightInfo,
    WeightStep,
    step_tolerance,
)

__all__ = ["compare_training"]

F64 = np.float64


# -- checking the arguments ------------------------------------------------------------------


def _batches(x, y, batches, steps: int) -> tuple[list[tuple], str | None]:
    """One ``(x, y)`` per step, and a note when ``batches`` ran out early."""
    if batches is not None and (x is not None or y is not None):
        raise InputError(
            "give x and y (one batch for every step) or batches (one (x, y) per step), not both"
        )
    if batches is None:
        if x is None:
            raise InputError("compare_training needs x (one batch for every step) or batches")
        return [(x, y)] * steps, None
    if isinstance(batches, tuple) and len(batches) == 2 and not isinstance(batches[0], tuple):
        raise InputError(
            "batches is an iterable of (x, y) pairs, one per step, e.g. [(x1, y1), (x2, y2)]; "
            "for the same batch every step pass x and y instead"
        )
    out = []
    for item in batches:
        if len(out) == steps:
            break
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise InputError(
                f"each item of batches must be an (x, y) pair, got {type(item).__name__}"
            )
        out.append(tuple(item))
    if not out:
        raise InputError("batches is empty; give at least one (x, y) pair")
    if len(out) < steps:
        return out, f"batches ran out after {len(out)} of the {steps} steps asked for"
    return out, None


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


def _check_optimizers(optimizers) -> tuple:
    if not isinstance(optimizers, tuple | list) or len(optimizers) != 2:
        raise InputError(
            "optimizers=(reference optimizer, candidate optimizer): give two, e.g. "
            f"(keras.optimizers.Adam(), optax.adam(1e-3)); got {type(optimizers).__name__}"
        )
    return tuple(optimizers)


# -- the referee -------------------------------------------------------------------------------


class _Referee:
    """The reference's rule in float64 NumPy, one run per side on that side's gradients."""

    def __init__(self, rule: Rule, starts: Mapping[str, Arrays]) -> None:
        self.rule = rule
        self._runs = {side: [start, rule.init(start)] for side, start in starts.items()}

    def step(self, side: str, grads: Arrays, count: int) -> Arrays:
        params, state = self._runs[side]
        with np.errstate(all="ignore"):
            updates, state = self.rule.update(grads, params, state, count)
        params = {k: params[k] + updates[k] for k in params}
        self._runs[side] = [params, state]
        return params


# -- the run -------------------------------------------------------------------------------------


def _f64(arrays: Mapping[str, np.ndarray]) -> Arrays:
    return {k: np.asarray(v, dtype=F64) for k, v in arrays.items()}


def _side(model: AbstractModel, run: AbstractRun, transfer=None) -> dict:
    out = {
        "model": model.description,
        "framework": model.framework,
        "dtype": model.dtype,
        "optimizer": run.description,
        "rule": None if run.rule is None else run.rule.describe(),
    }
    if transfer is not None:
        out["transferred"] = transfer
    return out


def _weights_info(ref: AbstractModel, cand: AbstractModel, alignment: Alignment, label: str):
    names = alignment.names
    w_ref, w_cand = ref.weights(), cand.weights()
    ref_native, cand_native = ref.native_names(), cand.native_names()
    params = set(ref.param_names)
    return tuple(
        WeightInfo(
            n,
            "parameter" if n in params else "state",
            tuple(np.shape(w_ref[n])),
            {"reference": ref_native.get(n, n), label: cand_native.get(names[n], names[n])},
        )
        for n in w_ref
        if n in names and names[n] in w_cand
    )


def _step_record(t, dtype, tol, infos, now, before, grads, drift, losses) -> Step:
    """One :class:`Step`: every compared weight, candidate against reference; ``now``,
    ``before`` (the weights) and ``grads`` are ``(reference, candidate)`` pairs."""
    (wr, wc), (br, bc), (gr, gc) = now, before, grads
    tol_t = step_tolerance(tol, t)
    entries = []
    for info in infos:
        n = info.name
        err = relative(wc[n], wr[n], dtype)
        finite = bool(np.all(np.isfinite(wr[n])) and np.all(np.isfinite(wc[n])))
        status = "nonfinite" if not finite else ("match" if err <= tol_t else "mismatch")
        entries.append(
            WeightStep(
                name=n,
                weights=err,
                update=relative(wc[n] - bc[n], wr[n] - br[n], "float64"),
                gradient=relative(gc[n], gr[n], "float64") if n in gr else None,
                referee={side: d[n] for side, d in drift.items() if n in d},
                status=status,
            )
        )
    return Step(step=t, tolerance=tol_t, losses=losses, weights=tuple(entries))


def _first_divergence(record: Step, infos) -> Divergence | None:
    bad = [w for w in record.weights if w.status != "match"]
    if not bad:
        return None
    worst = max(bad, key=lambda w: w.weights if math.isfinite(w.weights) else math.inf)
    native = next(dict(i.native) for i in infos if i.name == worst.name)
    return Divergence(
        record.step, worst.name, native, worst.weights, record.tolerance, worst.status
    )


def compare_training(
    reference,
    candidate,
    x=None,
    y=None,
    *,
    loss,
    optimizers,
    steps: int = 10,
    batches: Iterable | None = None,
    transfer: bool = True,
    rtol: float | None = None,
    explain: bool | None = None,
    mapping: str | Mapping[str, str] = "auto",
    title: str | None = None,
) -> TrainingReport:
    """Train a model and its port side by side for ``steps`` optimizer steps and find where,
    and why, their weights part.

    Args:
        reference: the model you trust: any model :func:`xgrad.compare_models` accepts.
        candidate: the port, any of the same kinds.
        x: inputs of one batch, used at every step (unless ``batches`` is given).
        y: its targets, for the losses that need them.
        loss: a loss name (:data:`xgrad.losses.LOSSES`), computed on each side in its own
            framework, or ``(reference_fn, candidate_fn)``.
        optimizers: ``(reference optimizer, candidate optimizer)``, each in its own
            framework: a ``keras.optimizers.Optimizer``, an ``optax.GradientTransformation``
            (or ``(tx, xgrad.training.Adam(...))`` naming its rule), a factory
            ``params -> torch.optim.Optimizer``, or an :class:`xgrad.training.Rule`. Each
            starts fresh; an optimizer object you pass is never built or stepped.
        steps: the number of optimizer steps.
        batches: an iterable of ``(x, y)``, one per step (the run stops early, with a note,
            if it runs out); not together with ``x`` and ``y``.
        transfer: copy the reference's weights into a copy of the candidate first. Neither
            of your models is changed.
        rtol: overrides the base tolerance (:data:`xgrad.TOLERANCES` of the reference's
            dtype); after ``t`` steps the weights must agree to ``rtol * sqrt(t)``.
        explain: diagnose the first divergence and, in float32, list the conventions too
            small to be seen: ``None`` (default) and ``True`` do, ``False`` does not.
        mapping: how layers pair, as in :func:`xgrad.compare_models`.
        title: a heading for the report.

    Returns:
        A :class:`~xgrad.training.TrainingReport`; ``report.ok`` says whether the weights
        stayed within tolerance at every step.

    Raises:
        InputError: bad steps, batches (or batches with x and y), optimizers, inputs or
            loss, before any step.
        AlignmentError: the models' layers cannot be paired.

    Example:
        >>> import numpy as np, xgrad
        >>> from xgrad.training import SGD
        >>> model = (xgrad.MLP(2, [xgrad.Dense(2)]), {"layers.0.kernel": np.eye(2),
        ...                                           "layers.0.bias": np.zeros(2)})
        >>> report = xgrad.compare_training(model, model, np.ones((1, 2)), np.zeros((1, 2)),
        ...     loss="mse", optimizers=(SGD(0.1), SGD(0.2)), steps=2)
        >>> report.first_divergence.step, report.diagnoses[0].cause
        (1, 'learning-rate')
    """
    start_time = time.perf_counter()
    steps = _check_steps(steps)
    pair = tuple(  # both recognised before anything else is read
        as_optimizer(o, side)
        for o, side in zip(_check_optimizers(optimizers), ("reference", "candidate"), strict=True)
    )
    plan, batch_note = _batches(x, y, batches, steps)
    run = _Training(
        *_read_pair(reference, candidate, plan, loss=loss, mapping=mapping, transfer=transfer),
        optimizers=pair,
        rtol=rtol,
        notes=[batch_note] if batch_note else [],
    )
    run.train()
    clock = time.perf_counter()
    explained = run.explain(explain, loss=loss, mapping=mapping, rtol=rtol)
    run.timing["diagnosis"] = time.perf_counter() - clock
    run.timing["total"] = time.perf_counter() - start_time
    return run.report(*explained, transfer=transfer, title=title)


def _floating(x) -> bool:
    return getattr(x, "dtype", np.dtype(float)).kind == "f"


def _read_pair(reference, candidate, plan, *, loss, mapping, transfer):
    """Both models read and aligned by the comparison's read phase, every batch checked
    against both: ``(reference model, candidate model, alignment, inputs per step)``; with
    ``transfer`` the candidate holds the reference's weights (a copy: your models never
    change)."""
    pair = read_pair(reference, candidate, plan[0][0], mapping=mapping)
    inputs = [prepare_inputs(pair.reference, bx, by, loss) for bx, by in plan]
    for batch in inputs:
        if pair.tier == "modules" and not _floating(batch.x):
            continue  # token ids into captured modules: the modules check them
        check_input(pair.candidate.input_shape, batch.x, vocab=pair.candidate.vocab)
    pair = transfer_weights(pair, bool(transfer))
    return pair.reference, pair.candidate, pair.alignment, inputs


class _Training:
    """One training comparison under way: both models and their optimizers' runs, the
    float64 referee, and what every step recorded. Weights are compared in the reference's
    canonical names (the candidate's through the alignment), float64."""

    def __init__(
        self,
        ref_model: AbstractModel,
        cand_model: AbstractModel,
        alignment: Alignment,
        inputs: list,
        *,
        optimizers: tuple[AbstractOptimizer, AbstractOptimizer],
        rtol: float | None,
        notes: list[str],
    ) -> None:
        self.ref_model, self.cand_model, self.alignment = ref_model, cand_model, alignment
        self.inputs = inputs
        self.notes = [n for n in (alignment.note, *notes) if n]
        self.dtype = judged_dtype(ref_model.dtype)
        self.tol = tolerance(self.dtype, rtol)
        self.label = cand_model.framework if cand_model.framework != "reference" else "candidate"
        names = alignment.names  # reference canonical name -> candidate canonical name
        self.ref_params = [n for n in ref_model.param_names if n in names]
        unpaired = [n for n in cand_model.param_names if n not in set(names.values())]
        if unpaired:
            self.notes.append(f"candidate parameters not paired with the reference's: {unpaired}")
        self.infos = _weights_info(ref_model, cand_model, alignment, self.label)
        self.w_ref, self.w_cand = ref_model.weights(), cand_model.weights()
        self.runs = tuple(
            opt.start({n: w[n] for n in model.param_names}, model.dtype)
            for opt, model, w in zip(
                optimizers, (ref_model, cand_model), (self.w_ref, self.w_cand), strict=True
            )
        )
        self.history = History(
            start=_f64({n: self.w_ref[n] for n in self.ref_params}), dtype=self.dtype, tol=self.tol
        )
        self.history.cand_start = self.in_ref(self.w_cand, self.ref_params)
        self.referee = self._referee()
        self.records: list[Step] = []
        self.first: Divergence | None = None
        self.divergent: Divergent | None = None
        self.timing = {"reference": 0.0, self.label: 0.0, "optimizers": 0.0, "referee": 0.0}

    def _referee(self) -> _Referee | None:
        run_ref = self.runs[0]
        if run_ref.rule is None:
            self.notes.append(
                f"no float64 referee: the reference's rule is unknown ({run_ref.rule_note})"
            )
            return None
        starts = {"reference": self.history.start, self.label: self.history.cand_start}
        return _Referee(run_ref.rule, starts)

    def in_ref(self, arrays: Mapping[str, np.ndarray], only: Iterable[str] | None = None):
        """Candidate-named arrays in the reference's names, float64 (those of ``only``)."""
        out = _f64(self.alignment.to_reference(arrays))
        return out if only is None else {n: out[n] for n in only if n in out}

    def train(self) -> None:
        """Every step, until the batches run out or the weights are no longer finite."""
        for t, batch in enumerate(self.inputs, start=1):
            if not self.step(t, batch):
                if t < len(self.inputs):
                    self.notes.append(
                        f"the run stopped after step {t}: weights are no longer finite"
                    )
                break

    def step(self, t: int, batch) -> bool:
        """Step ``t``: evaluate both models, step both optimizers and the referee, compare
        the weights; ``False`` when the weights are no longer finite."""
        ref_model, cand_model = self.ref_model, self.cand_model
        ref_side = evaluate("reference", ref_model, batch, capture=False, side=0)
        cand_side = evaluate(self.label, cand_model, batch, capture=False, side=1)
        self.timing["reference"] += ref_side.seconds
        self.timing[self.label] += cand_side.seconds
        g_ref, g_cand = ref_side.grads, cand_side.grads
        clock = time.perf_counter()
        new_ref = self.runs[0].step({n: g_ref.params[n] for n in ref_model.param_names})
        new_cand = self.runs[1].step({n: g_cand.params[n] for n in cand_model.param_names})
        self.timing["optimizers"] += time.perf_counter() - clock
        before = (_f64(self.w_ref), self.in_ref(self.w_cand))
        self.w_ref = {**self.w_ref, **new_ref, **g_ref.state}
        self.w_cand = {**self.w_cand, **new_cand, **g_cand.state}
        finite = all(np.all(np.isfinite(v)) for w in (self.w_ref, self.w_cand) for v in w.values())
        if finite:
            self.ref_model = ref_model.with_weights({**new_ref, **g_ref.state})
            self.cand_model = cand_model.with_weights({**new_cand, **g_cand.state})
        now = (_f64(self.w_ref), self.in_ref(self.w_cand))
        only = self.ref_params
        grads = (_f64({n: g_ref.params[n] for n in only}), self.in_ref(g_cand.params, only))
        self.history.ref_grads.append(grads[0])
        self.history.cand_grads.append(grads[1])
        self.history.cand_weights.append({n: now[1][n] for n in only})
        drift = self._referee_step(t, grads, now)
        losses = {"reference": g_ref.loss, self.label: g_cand.loss}
        record = _step_record(
            t, self.dtype, self.tol, self.infos, now, before, grads, drift, losses
        )
        self.records.append(record)
        if self.first is None:
            self.first = _first_divergence(record, self.infos)
            if self.first is not None:
                self.divergent = Divergent(self.first, ref_model, cand_model, batch)
        return finite

    def _referee_step(self, t: int, grads, now) -> dict[str, dict[str, float]]:
        """Each side's distance from the referee (the reference's rule in float64 on that
        side's own gradients) after step ``t``, per weight."""
        drift: dict[str, dict[str, float]] = {}
        if self.referee is None:
            return drift
        clock = time.perf_counter()
        for side, g, w in (("reference", grads[0], now[0]), (self.label, grads[1], now[1])):
            math_w = self.referee.step(side, g, t - 1)
            drift[side] = {k: relative(w[k], math_w[k], self.dtype) for k in math_w}
        self.timing["referee"] += time.perf_counter() - clock
        return drift

    def explain(self, explain: bool | None, *, loss, mapping, rtol):
        """``(diagnoses, gradient report or None, precision notes)``: the first divergence
        diagnosed and, in float32, the conventions too small to be seen."""
        diagnoses, gradient_report, notes = (), None, ()
        if explain is False:
            return diagnoses, gradient_report, notes
        (run_ref, run_cand), first = self.runs, self.first
        rule, cand_rule = run_ref.rule, run_cand.rule
        if self.divergent is not None and first is not None:
            self.divergent.ref_drift = self.records[first.step - 1].referee_drift("reference")
            diagnoses, gradient_report = diagnose(
                self.divergent,
                self.history,
                rule,
                cand_rule,
                loss=loss,
                mapping=mapping,
                rtol=rtol,
                rule_note=run_ref.rule_note,
            )
        if self.dtype == "float32" and gradient_report is None and rule is not None:
            if not any(d.confirmed for d in diagnoses):
                notes = precision(self.history, rule, cand_rule)
        return diagnoses, gradient_report, notes

    def report(self, diagnoses, gradient_report, precision_notes, *, transfer, title):
        """The :class:`TrainingReport` of the run."""
        run_ref, run_cand = self.runs
        return TrainingReport(
            model=model_text(self.ref_model),
            dtype=self.dtype,
            loss=self.inputs[0].loss_name or "custom",
            candidate=self.label,
            sides={
                "reference": _side(self.ref_model, run_ref),
                self.label: _side(self.cand_model, run_cand, transfer),
            },
            tolerance=self.tol,
            referee=None if run_ref.rule is None else run_ref.rule.to_dict(),
            weights=self.infos,
            steps=tuple(self.records),
            first_divergence=self.first,
            diagnoses=tuple(diagnoses),
            precision=tuple(precision_notes),
            gradient_report=gradient_report,
            notes=tuple(self.notes),
            title=title,
            timing=self.timing,
        )
