"""The TrainingReport: two optimizer runs step by step, as plain data, and its JSON form.

It implements the report protocol (:class:`xgrad.report.base.AbstractReport`: verdict, data,
renderings; files written once, atomically, by the base). Renderings are functions in
:mod:`xgrad.training.render` (rich table, plain text, Markdown, PNG) that take the report;
this module imports them, never the other way round. Schema: ``xgrad.training/1`` (see
``docs/training.md``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from xgrad.diagnosis.records import Explanation
from xgrad.metrics import json_float
from xgrad.report.base import AbstractReport
from xgrad.training import render

if TYPE_CHECKING:
    from xgrad.report import Report

__all__ = [
    "SCHEMA",
    "Divergence",
    "OptimizerDiagnosis",
    "PrecisionNote",
    "Step",
    "TrainingReport",
    "WeightInfo",
    "WeightStep",
    "step_tolerance",
]

SCHEMA = "xgrad.training/1"
"""The JSON schema name and version; bumped on any incompatible change."""

GROWTH = "tol * sqrt(step)"
"""How the tolerance grows with the step count (see :func:`step_tolerance`)."""


def step_tolerance(tol: float, step: int) -> float:
    """The tolerance after ``step`` updates: ``tol * sqrt(step)``.

    Each update rounds the weights once (``w + u`` in the run's dtype) and each side's
    gradients carry their own rounding, independent from step to step; independent errors
    add like a random walk, so their sum grows like the square root of the number of steps.
    A systematic difference (a different rule) grows like the step count and so crosses
    this tolerance sooner or later, however small.
    """
    return tol * math.sqrt(step)


@dataclass(frozen=True)
class WeightInfo:
    """One compared weight.

    Attributes:
        name: its canonical name on the reference side (``layers.0.kernel``).
        kind: ``parameter`` (trained) or ``state`` (BatchNorm moving statistics).
        shape: canonical shape (kernel ``(in, out)``).
        native: side -> that side's own name for it.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    native: dict[str, str]

    def label(self, candidate: str) -> str:
        ref, cand = self.native.get("reference", self.name), self.native.get(candidate, "")
        return f"{self.name} ({ref} <-> {cand})" if cand else self.name

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "native": dict(self.native),
        }


@dataclass(frozen=True)
class WeightStep:
    """One weight after one step, candidate against reference (normwise, relative).

    Attributes:
        name: the weight's canonical name on the reference side.
        weights: ``||w_cand - w_ref|| / ||w_ref||`` after the update: decides the status.
        update: ``||dw_cand - dw_ref|| / ||dw_ref||``, the update of this step (in float32
            this includes the rounding of the weights, ``u * |w| / |dw|``).
        gradient: ``||g_cand - g_ref|| / ||g_ref||`` of this step's gradients, each at its
            own side's weights; ``None`` for state.
        referee: side -> ``||w_side - w_referee|| / ||w_side||``: how far that side is from
            the float64 NumPy rule run on its own gradients; empty without a referee.
        status: ``match``, ``mismatch`` or ``nonfinite``.
    """

    name: str
    weights: float
    update: float | None
    gradient: float | None
    referee: dict[str, float]
    status: str

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "weights": json_float(self.weights),
            "update": json_float(self.update),
            "gradient": json_float(self.gradient),
            "referee": {k: json_float(v) for k, v in self.referee.items()},
            "status": self.status,
        }


@dataclass(frozen=True)
class Step:
    """One optimizer step of both sides.

    Attributes:
        step: its number, from 1.
        tolerance: the tolerance after this many steps (:func:`step_tolerance`).
        losses: side -> the loss at the weights this step's gradients were taken at.
        weights: one :class:`WeightStep` per compared weight, in canonical order.
    """

    step: int
    tolerance: float
    losses: dict[str, float | None]
    weights: tuple[WeightStep, ...]

    @property
    def ok(self) -> bool:
        return all(w.status == "match" for w in self.weights)

    @property
    def worst(self) -> WeightStep | None:
        """The weight furthest from the reference, relative to the tolerance."""
        return max(self.weights, key=lambda w: _badness(w.weights), default=None)

    def referee_drift(self, side: str) -> float | None:
        values = [w.referee[side] for w in self.weights if side in w.referee]
        return max(values, key=_badness) if values else None

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "tolerance": self.tolerance,
            "losses": {k: json_float(v) for k, v in self.losses.items()},
            "weights": [w.to_dict() for w in self.weights],
        }


def _badness(value: float | None) -> float:
    if value is None:
        return -1.0
    return math.inf if math.isnan(value) else value


@dataclass(frozen=True)
class Divergence:
    """Where the two runs first part: the first step with a weight beyond tolerance, and the
    weight furthest beyond it at that step."""

    step: int
    name: str
    native: dict[str, str]
    error: float
    tolerance: float
    status: str = "mismatch"

    def text(self) -> str:
        names = " <-> ".join(dict.fromkeys(n for n in self.native.values() if n))
        what = (
            "are not finite"
            if self.status == "nonfinite"
            else f"differ by {self.error:.2g} (tolerance {self.tolerance:.2g})"
        )
        return f"first divergence: step {self.step}, {self.name} ({names}): weights {what}"

    def to_dict(self) -> dict:
        return {
            "step": self.step,
            "name": self.name,
            "native": dict(self.native),
            "error": json_float(self.error),
            "tolerance": self.tolerance,
            "status": self.status,
        }


@dataclass(frozen=True)
class OptimizerDiagnosis(Explanation):
    """One tested explanation of the first divergence (the same record as a gradient
    report's :class:`~xgrad.diagnosis.Diagnosis`, placed at a step instead of a layer).

    Attributes:
        cause: a cause id (:data:`xgrad.training.OPTIMIZER_CAUSES`), ``gradients`` (the
            gradients already differ: see :attr:`TrainingReport.gradient_report`), or
            ``unexplained``.
        step: the step it concerns (the first divergence).
        detail: what was found, in words, with the error before and after.
        confirmed: replaying the candidate's gradients with the alternative rule brought the
            weights within tolerance (``gradients``: compare_models found the mismatch).
        residual: the normwise error left after the replay (``None`` if untested).
        before: the error to explain: the candidate's distance from the reference's rule.
    """

    step: int = field(kw_only=True)

    KEYS: ClassVar[tuple[str, ...]] = (
        "cause",
        "step",
        "detail",
        "confirmed",
        "residual",
        "before",
    )

    def text(self) -> str:
        return f"step {self.step}: {self.verdict}: {self.cause}: {self.detail}"


@dataclass(frozen=True)
class PrecisionNote:
    """A convention difference too small to be seen at the run's precision.

    Attributes:
        cause: the cause id.
        detail: the alternative rule, in words.
        effect: the largest relative change of any weight it makes over the run (replayed
            in float64 on the reference's gradients), relative to the tolerance of that
            step: below 1.
        known: the two optimizers are known to differ so (both rules were read).
    """

    cause: str
    detail: str
    effect: float
    known: bool

    def text(self, dtype: str) -> str:
        if self.known:
            return (
                f"cannot be seen at {dtype} precision: {self.cause}: the two optimizers "
                f"differ ({self.detail}), but here by at most {self.effect:.2g} of the tolerance"
            )
        return (
            f"cannot be seen at {dtype} precision: {self.cause}: had the candidate differed "
            f"so ({self.detail}), the weights would have moved by at most {self.effect:.2g} of "
            "the tolerance"
        )

    def to_dict(self) -> dict:
        return {
            "cause": self.cause,
            "detail": self.detail,
            "effect": json_float(self.effect),
            "known": self.known,
        }


@dataclass(frozen=True)
class TrainingReport(AbstractReport):
    """The result of :func:`xgrad.compare_training`.

    Attributes:
        model: the reference model in short text form.
        dtype: the reference's dtype (``float32`` or ``float64``).
        loss: the loss name, or ``custom``.
        candidate: the candidate's label (its framework's name).
        sides: side label -> ``{"model", "framework", "dtype", "optimizer", "rule"}``.
        tolerance: the base normwise tolerance; after ``t`` steps ``tol * sqrt(t)``.
        referee: the reference's rule, run in float64 NumPy on each side's gradients
            (``rule.to_dict()``), or ``None`` when it could not be read (see ``notes``).
        weights: the compared weights, in canonical order.
        steps: one :class:`Step` per optimizer step.
        first_divergence: where the runs first part, or ``None``.
        diagnoses: the tested explanations of the first divergence.
        precision: conventions the run's precision cannot see (float32).
        gradient_report: the :class:`~xgrad.Report` of ``compare_models`` at the diverging
            step, when the gradients already differ there.
        notes: what the reader should know.
        title: a heading.
        timing: seconds per phase.
    """

    model: str
    dtype: str
    loss: str
    candidate: str
    sides: dict[str, dict]
    tolerance: float
    referee: dict | None
    weights: tuple[WeightInfo, ...]
    steps: tuple[Step, ...]
    first_divergence: Divergence | None = None
    diagnoses: tuple[OptimizerDiagnosis, ...] = ()
    precision: tuple[PrecisionNote, ...] = ()
    gradient_report: Report | None = None
    notes: tuple[str, ...] = ()
    title: str | None = None
    timing: dict[str, float] = field(default_factory=dict, compare=False)

    # -- queries -------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        """True when every weight stayed within tolerance at every step."""
        return self.first_divergence is None

    def tolerance_at(self, step: int) -> float:
        return step_tolerance(self.tolerance, step)

    def summary(self) -> str:
        """One line: the verdict, and the worst or first-diverging weight."""
        n = len(self.steps)
        if self.ok:
            worst = max(
                ((s, w) for s in self.steps for w in s.weights),
                key=lambda sw: _badness(sw[1].weights) / sw[0].tolerance,
                default=None,
            )
            text = f"OK: the weights stay within tolerance for {n} step(s)"
            if worst is not None:
                s, w = worst
                text += (
                    f"; largest difference {w.weights:.2e} ({w.name}, step {s.step}; "
                    f"tolerance {s.tolerance:.2e})"
                )
            return text
        d = self.first_divergence
        cause = next((x.cause for x in self.diagnoses if x.confirmed), None)
        because = f"; cause: {cause}" if cause else ""
        return (
            f"MISMATCH: the runs part at step {d.step} of {n}, {d.name}: "
            f"{d.error:.2e} (tolerance {d.tolerance:.2e}){because}"
        )

    def header(self) -> str:
        ref, cand = self.sides["reference"], self.sides[self.candidate]
        return (
            f"model {self.model}, loss {self.loss}, dtype {self.dtype}, {len(self.steps)} "
            f"step(s); reference {ref['framework']} + {ref['optimizer']}, {self.candidate} + "
            f"{cand['optimizer']}; normwise rtol {self.tolerance:g} * sqrt(step)"
        )

    def diagnosis_lines(self) -> list[str]:
        """One line per diagnosis and per precision note."""
        lines = [f"diagnosis: {d.text()}" for d in self.diagnoses]
        lines += [p.text(self.dtype) for p in self.precision]
        return lines

    def mismatch_message(self) -> str:
        """The text :meth:`raise_for_mismatch` raises with ('' when the runs agree)."""
        if self.ok:
            return ""
        d = self.first_divergence
        step = self.steps[d.step - 1]
        lines = [self.summary(), self.header(), d.text()]
        lines += self.diagnosis_lines()
        lines.append("")
        lines.append(f"step {d.step} [{self.candidate}]:")
        for w in step.weights:
            if w.status != "match":
                lines.append(
                    f"{w.name}: weights {w.weights:.6g}, update "
                    f"{_num(w.update)}, gradient {_num(w.gradient)} (tolerance "
                    f"{step.tolerance:.3g}) status {w.status}"
                )
        return "\n".join(lines)

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self, *, timing: bool = True) -> dict:
        """A JSON-ready dict (schema ``xgrad.training/1``)."""
        out = {
            "schema": SCHEMA,
            "ok": self.ok,
            "title": self.title,
            "model": self.model,
            "dtype": self.dtype,
            "loss": self.loss,
            "candidate": self.candidate,
            "sides": self.sides,
            "tolerance": {"base": self.tolerance, "growth": GROWTH},
            "referee": self.referee,
            "weights": [w.to_dict() for w in self.weights],
            "steps": [s.to_dict() for s in self.steps],
            "first_divergence": (
                None if self.first_divergence is None else self.first_divergence.to_dict()
            ),
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "precision": [p.to_dict() for p in self.precision],
            "gradients": (
                None if self.gradient_report is None else self.gradient_report.to_dict(timing=False)
            ),
            "notes": list(self.notes),
        }
        if timing:
            out["timing"] = {"seconds": dict(self.timing)}
        return out

    # -- renderings ------------------------------------------------------------------------

    def table(self):
        """A ``rich.table.Table``: one row per step (see :mod:`xgrad.training.render`)."""
        return render.step_table(self)

    def print(self, console=None) -> None:
        """Print the step table, divergence, diagnoses, notes and verdict."""
        render.print_report(self, console)

    def to_text(self, *, width: int = 140) -> str:
        """Everything :meth:`print` shows, as plain text."""
        return render.to_text(self, width=width)

    def markdown(self) -> str:
        """The report as Markdown text (:meth:`to_markdown` also writes it to a file)."""
        return render.to_markdown(self)

    def plot(self, path: str | os.PathLike) -> Path:
        """Write a PNG: each weight's difference per step, log scale, with the tolerance."""
        return render.plot(self, path)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
