"""The report as plain data: entries of :class:`~xgrad.metrics.Metrics`, and their queries.

Renderings live beside it, one module each (:mod:`xgrad.report.text`,
:mod:`xgrad.report.markdown`, :mod:`xgrad.report.plot`); JSON is :meth:`Report.to_dict`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from xgrad.metrics import OK_STATUSES, Metrics, json_float
from xgrad.report.base import AbstractReport
from xgrad.report.format import fmt, sort_key

__all__ = ["SCHEMA", "Divergence", "Entry", "LayerEntry", "Pairwise", "Report"]

SCHEMA = "xgrad.report/3"
"""The JSON schema name and version; bumped on any incompatible change."""


@dataclass(frozen=True)
class Entry:
    """One compared quantity: a parameter's gradient, an updated state array, dL/dinput, the
    output or the loss.

    Attributes:
        name: the canonical name (``layers.{i}.kernel``, ``layers.{i}.mean``, ...), or
            ``input`` (dL/dinput), ``output`` (the forward output), ``loss`` (its value).
        kind: ``parameter``, ``state``, ``input``, ``output`` or ``loss``.
        shape: the array shape (canonical layout: kernel ``(in, out)``).
        native: side -> that side's own name for it (``reference`` for compare_models).
        results: framework -> :class:`~xgrad.metrics.Metrics` against the reference.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    native: dict[str, str]
    results: dict[str, Metrics]

    @property
    def label(self) -> str:
        """How tables name it: ``dL/d layers.0.kernel``, ``dL/d input``, ``layers.2.mean
        (updated)``, ``output``, ``loss``."""
        if self.kind in ("parameter", "input"):
            return f"dL/d {self.name}"
        if self.kind == "state":
            return f"{self.name} (updated)"
        return self.name

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "shape": list(self.shape),
            "native": dict(self.native),
            "results": {fw: m.to_dict() for fw, m in self.results.items()},
        }


@dataclass(frozen=True)
class Pairwise:
    """The largest normwise difference between two frameworks over all entries.

    ``rel_norm = ||g_a - g_b|| / ||ref||`` for the entry where it is largest (``entry``).
    """

    frameworks: tuple[str, str]
    rel_norm: float
    entry: str

    def to_dict(self) -> dict:
        return {
            "frameworks": list(self.frameworks),
            "rel_norm": json_float(self.rel_norm),
            "entry": self.entry,
        }


@dataclass(frozen=True)
class LayerEntry:
    """One layer compared on every side: its output (forward) and dL/d output (backward).

    Attributes:
        path: the layer's canonical path on the reference side (``layers.2``,
            ``layers.3.layers.0``).
        kind: its kind (``dense``, ``layernorm``, ``residual``, ...).
        names: side -> the framework's own name of the layer.
        shape: the output's shape ``(batch, features)``.
        forward: framework -> the layer's output against the reference's.
        backward: framework -> ``dL/d`` output against the reference's.
        paired_by: for models read module by module, framework -> what paired its module
            with the reference's (``name and shapes``, ``shapes and call order``, ``output
            shape and call order``, ``mapping``, ``the models``): how sure the pairing is,
            strongest first; empty for models read layer by layer.
    """

    path: str
    kind: str
    names: dict[str, str]
    shape: tuple[int, ...]
    forward: dict[str, Metrics]
    backward: dict[str, Metrics]
    paired_by: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        names = list(dict.fromkeys(n for n in self.names.values() if n))
        return f"{self.path} {self.kind} ({' <-> '.join(names)})" if names else self.path

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "kind": self.kind,
            "names": dict(self.names),
            "shape": list(self.shape),
            "forward": {fw: m.to_dict() for fw, m in self.forward.items()},
            "backward": {fw: m.to_dict() for fw, m in self.backward.items()},
            **({"paired_by": dict(self.paired_by)} if self.paired_by else {}),
        }


@dataclass(frozen=True)
class Divergence:
    """Where a framework's model first parts from the reference.

    Attributes:
        framework: the compared framework.
        path: the layer's canonical path on the reference side.
        where: ``forward`` (its output differs first) or ``backward`` (outputs agree; the
            gradients part there, found from the output back).
        names: side -> the framework's own name of that layer.
        detail: for a model read module by module, what in that module parts: its own
            computation (its inputs agree), or the code in it between two of its submodules
            (``None`` for a model read layer by layer).
        between: when the code between two submodules parts, side -> the paths of the
            submodule before it (whose output agrees) and after it (whose input differs).
    """

    framework: str
    path: str
    where: str
    names: dict[str, str]
    detail: str | None = None
    between: dict[str, tuple[str, str]] | None = None

    def text(self) -> str:
        names = " <-> ".join(dict.fromkeys(self.names.values()))
        label = self.path or "(the model)"
        tail = f": {self.detail}" if self.detail else ""
        return f"first divergence [{self.framework}]: {label} ({names}), {self.where}{tail}"

    def to_dict(self) -> dict:
        out = {
            "framework": self.framework,
            "path": self.path,
            "where": self.where,
            "names": dict(self.names),
        }
        if self.detail is not None:  # a model read module by module
            out["detail"] = self.detail
        if self.between is not None:
            out["between"] = {side: list(paths) for side, paths in self.between.items()}
        return out


@dataclass(frozen=True)
class Report(AbstractReport):
    """The result of :func:`xgrad.compare` and :func:`xgrad.compare_models`.

    Attributes:
        model: the reference model in short text form, e.g. ``"10 -> 8:relu -> 5:sigmoid"``.
        dtype: the dtype the reference asks for (every framework's, in ``compare``).
        loss: the loss name, ``"custom"`` for loss functions, or ``None`` with a cotangent.
        frameworks: the compared frameworks, in order.
        reference: how the reference was computed.
        tolerance: the normwise relative tolerance used for every status.
        batch: the number of input rows.
        seed: the seed of the params when xgrad drew them, else ``None``.
        losses: framework -> loss value (empty with a cotangent).
        reference_loss: the reference's loss value, or ``None``.
        parameters: one :class:`Entry` per trainable parameter, in canonical order.
        input: the :class:`Entry` for dL/dinput (a model read with several inputs: its first
            floating input's; ``None`` when every input is integer ids).
        output: the :class:`Entry` for the forward output.
        loss_value: the :class:`Entry` for the loss value, or ``None``.
        state: one :class:`Entry` per updated state array (BatchNorm in training mode).
        pairwise: one :class:`Pairwise` per pair of frameworks.
        timing: seconds per phase (not deterministic, kept apart in the JSON).
        title: an optional heading.
        layers: per layer, forward and backward comparisons (when layers were captured).
        divergences: where each framework first parts from the reference.
        models: a description of each side (``compare_models``).
        diagnoses: the tested explanations of the mismatches
            (:class:`~xgrad.diagnosis.Diagnosis`); ``()`` when there was nothing to explain
            or explanation was not asked for.
        notes: what the reader should know (a transfer, a layer left in training mode,
            per-layer localisation unavailable and why).
        inputs: the :class:`Entry` of each other floating input (a model read module by
            module with several inputs).
        unpaired: each parameter present on one side only (``{"side", "name", "native",
            "reason"}``): its gradient is compared with nothing, and the report is not ok
            unless it was ignored (``ignore=``).
        config_diffs: the configuration differences of paired layers that both sides state
            (:class:`~xgrad.diagnosis.config.ConfigDiff`); one that changes the layer's
            output beyond the tolerance at other inputs makes the report not ok.
    """

    model: str
    dtype: str
    loss: str | None
    frameworks: tuple[str, ...]
    reference: dict[str, str]
    tolerance: float
    batch: int
    seed: int | None
    losses: dict[str, float]
    reference_loss: float | None
    parameters: tuple[Entry, ...]
    input: Entry | None
    output: Entry
    loss_value: Entry | None
    state: tuple[Entry, ...] = ()
    pairwise: tuple[Pairwise, ...] = ()
    timing: dict[str, float] = field(default_factory=dict, compare=False)
    title: str | None = None
    layers: tuple[LayerEntry, ...] = ()
    divergences: tuple[Divergence, ...] = ()
    models: dict | None = None
    diagnoses: tuple = ()
    notes: tuple[str, ...] = ()
    inputs: tuple[Entry, ...] = ()
    unpaired: tuple[dict, ...] = ()
    config_diffs: tuple = ()
    repro_units: tuple = field(default=(), compare=False, repr=False)

    # -- queries ---------------------------------------------------------------------------

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry in display order: parameters, state, dL/dinput, output, loss."""
        inputs = ((self.input,) if self.input is not None else ()) + self.inputs
        rest = (*inputs, self.output) + ((self.loss_value,) if self.loss_value else ())
        return self.parameters + self.state + rest

    def failures(self) -> list[tuple[Entry, str, Metrics]]:
        """``(entry, framework, metrics)`` for every status that is not a pass."""
        return [
            (e, fw, m)
            for e in self.entries
            for fw, m in e.results.items()
            if m.status not in OK_STATUSES
        ]

    def layer_failures(self) -> list[tuple[LayerEntry, str, str, Metrics]]:
        """``(layer, framework, "forward" | "backward", metrics)`` for every failing one."""
        return [
            (layer, fw, where, m)
            for layer in self.layers
            for where, results in (("forward", layer.forward), ("backward", layer.backward))
            for fw, m in results.items()
            if m.status not in OK_STATUSES
        ]

    @property
    def ok(self) -> bool:
        """True when every entry (and every compared layer) passes and every parameter was
        compared."""
        return (
            not self.failures()
            and not self.layer_failures()
            and not self.unpaired
            and not any(d.matters for d in self.config_diffs)
        )

    @property
    def uninformative(self) -> bool:
        """True when every reference gradient was zero up to rounding: nothing was compared."""
        return any(m.status == "uninformative" for e in self.entries for m in e.results.values())

    @property
    def first_divergence(self) -> dict | None:
        """The first :class:`Divergence` as a dict (``None`` when nothing diverges)."""
        return self.divergences[0].to_dict() if self.divergences else None

    def raise_for_mismatch(self) -> None:
        """Raise :class:`~xgrad.GradientMismatchError` unless :attr:`ok`.

        The message lists each failing entry in the manner of ``numpy.testing``:
        mismatched elements, max absolute and relative difference, the worst index with
        both values.
        """
        __tracebackhide__ = True
        super().raise_for_mismatch()

    def native_pair(self, entry: Entry, fw: str) -> str:
        """``reference name <-> framework name``, or the framework's name alone."""
        ref = entry.native.get("reference")
        own = entry.native.get(fw, "")
        return f"{ref} <-> {own}" if ref is not None and fw != "reference" else own

    def mismatch_message(self) -> str:
        """The text :meth:`raise_for_mismatch` raises with ('' when everything matches)."""
        failures = [
            (entry.label, fw, self.native_pair(entry, fw) or entry.name, m)
            for entry, fw, m in self.failures()
        ]
        failures += [
            (layer.label, f"{fw} {where}", "output" if where == "forward" else "dL/d output", m)
            for layer, fw, where, m in self.layer_failures()
        ]
        if not failures:
            return ""
        n_total = sum(len(e.results) for e in self.entries) + sum(
            len(layer.forward) + len(layer.backward) for layer in self.layers
        )
        lines = [
            f"Gradients differ from the reference ({self.reference_text()}): "
            f"{len(failures)} of {n_total} comparisons, model {self.model}, dtype "
            f"{self.dtype}, normwise rtol {self.tolerance:g}"
        ]
        lines += [d.text() for d in self.divergences]
        lines += self.diagnosis_lines()
        for label, who, native, m in failures:
            lines.append("")
            lines.append(f"{label} [{who}: {native}] status {m.status}")
            pct = 100.0 * m.mismatched / m.size if m.size else 0.0
            lines.append(f"Mismatched elements: {m.mismatched} / {m.size} ({pct:.3g}%)")
            if m.status == "nonfinite":
                lines.append(f"Not finite: {m.nonfinite_text(who.split()[0])}")
            lines.append(f"Max absolute difference: {m.max_abs:.6g}")
            lines.append(f"Max relative difference: {m.max_rel:.6g}")
            lines.append(f"Normwise relative error: {m.rel_norm:.6g} (tolerance {m.tol:g})")
            lines.append(
                f"Worst element at index {m.worst_index}: {who} {m.worst_value!r}, "
                f"reference {m.worst_reference!r}"
            )
        return "\n".join(lines)

    def reference_text(self) -> str:
        return " ".join(str(v) for v in self.reference.values())

    def rows(self):
        """``(entry, framework, native name, metrics)`` in display order."""
        for entry in self.entries:
            for fw, m in entry.results.items():
                yield entry, fw, self.native_pair(entry, fw), m

    def summary(self) -> str:
        """One line: the verdict, and the worst comparison."""
        worst = max(self.rows(), key=lambda r: sort_key(r[3]), default=None)
        n_bad = len(self.failures()) + len(self.layer_failures())
        uninformative = [m for _, _, m in self.failures() if m.status == "uninformative"]
        if uninformative and len(uninformative) == len(self.failures()):
            return (
                "UNINFORMATIVE: every reference gradient is zero up to rounding, so nothing "
                "was compared; use loss='projection' or a loss with targets"
            )
        config = [d for d in self.config_diffs if d.matters]
        if self.ok:
            verdict = "OK: every gradient matches"
        elif n_bad:
            verdict = f"MISMATCH: {n_bad} comparison(s) beyond tolerance"
        elif config:
            verdict = (
                f"CONFIG DIFFERS: every gradient matches at this input, but {config[0].text()}"
            )
        else:
            names = ", ".join(f"{u['side']} {u['native']}" for u in self.unpaired[:3])
            more = ", ..." if len(self.unpaired) > 3 else ""
            verdict = (
                f"INCOMPLETE: every compared gradient matches, but {len(self.unpaired)} "
                f"parameter(s) pair with nothing and were not compared ({names}{more}); "
                "pass ignore= to accept that"
            )
        rounded = sorted(
            {m.status for e in self.entries for m in e.results.values()}
            & {"match-kink", "match-clip"}
        )
        if rounded:
            n = sum(m.status in rounded for e in self.entries for m in e.results.values())
            more = "" if self.ok else "and beside them, passing, "
            verdict += f" ({more}{n} only up to rounding: {', '.join(rounded)}, see the notes)"
        if worst is not None:
            entry, fw, _, m = worst
            label = entry.label
        if (worst is None or m.status in OK_STATUSES) and self.layer_failures():
            # only modules' outputs part (the loss sees another output): name the worst
            layer, fw, where, m = max(self.layer_failures(), key=lambda r: sort_key(r[3]))
            what = "output" if where == "forward" else "dL/d output"
            label = f"{what} of {layer.path or '(the model)'} ({layer.names.get(fw, '')})"
        elif worst is None:
            return verdict
        if m.status == "nonfinite":
            what = f"nonfinite ({m.nonfinite_text(fw)})"
        else:
            what = f"rel_norm {fmt(m.rel_norm)} (tolerance {self.tolerance:g})"
        return f"{verdict}; worst {label} in {fw}: {what}{self._own_right()}"

    def _own_right(self) -> str:
        """``; N units diverge in their own right: ...`` when more than one unit does (each
        has its diagnosis), else ``''``."""
        own = dict.fromkeys(
            f"{d.layer or '(the model)'} ({d.cause})"
            for d in self.diagnoses
            if d.where in ("forward", "backward") and d.layer is not None
        )
        if len(own) < 2:
            return ""
        return f"; {len(own)} units diverge in their own right: {', '.join(own)}"

    def header(self) -> str:
        loss = f"loss {self.loss}" if self.loss else "given cotangent"
        return (
            f"model {self.model}, batch {self.batch}, {loss}, dtype {self.dtype}; "
            f"reference {self.reference_text()}; normwise rtol {self.tolerance:g}"
        )

    def diagnosis_lines(self) -> list[str]:
        """One line per diagnosis: ``diagnosis: layers.1 dense (a <-> b) [fw]: ...``."""
        labels = {layer.path: layer.label for layer in self.layers}
        return [f"diagnosis: {d.text(labels.get(d.layer))}" for d in self.diagnoses]

    def divergence_text(self) -> str | None:
        """The divergence lines joined, or ``None``."""
        return "\n".join(d.text() for d in self.divergences) or None

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self, *, timing: bool = True) -> dict:
        """A JSON-ready dict following ``docs/report-schema.md`` (schema ``xgrad.report/3``).

        Args:
            timing: include the ``timing`` section, the only part that differs between
                two runs with the same arguments.
        """
        out = {
            "schema": SCHEMA,
            "ok": self.ok,
            "title": self.title,
            "model": self.model,
            "dtype": self.dtype,
            "loss": self.loss,
            "frameworks": list(self.frameworks),
            "reference": dict(self.reference),
            "tolerance": self.tolerance,
            "batch": self.batch,
            "seed": self.seed,
            "losses": {fw: json_float(v) for fw, v in self.losses.items()},
            "reference_loss": json_float(self.reference_loss),
            "parameters": [e.to_dict() for e in self.parameters],
            "state": [e.to_dict() for e in self.state],
            "input": None if self.input is None else self.input.to_dict(),
            "output": self.output.to_dict(),
            "loss_value": None if self.loss_value is None else self.loss_value.to_dict(),
            "pairwise": [p.to_dict() for p in self.pairwise],
            "models": self.models,
            "layers": [layer.to_dict() for layer in self.layers],
            "divergences": [d.to_dict() for d in self.divergences],
            "first_divergence": self.first_divergence,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
            "notes": list(self.notes),
        }
        if self.inputs:  # a model read module by module with several inputs
            out["inputs"] = [e.to_dict() for e in self.inputs]
        if self.unpaired:
            out["unpaired"] = [dict(u) for u in self.unpaired]
        if self.config_diffs:
            out["config_diffs"] = [d.to_dict() for d in self.config_diffs]
        if timing:
            out["timing"] = {"seconds": dict(self.timing)}
        return out

    # -- renderings ------------------------------------------------------------------------

    def table(self, *, compact: bool = False):
        """A ``rich.table.Table`` of every entry and framework (see :mod:`xgrad.report.text`)."""
        from xgrad.report.text import entry_table

        return entry_table(self, compact=compact)

    def layer_table(self):
        """A ``rich.table.Table`` of the per-layer forward and backward comparisons."""
        from xgrad.report.text import layer_table

        return layer_table(self)

    def print(self, console=None) -> None:
        """Print the tables, divergences, diagnoses and the verdict to a rich console."""
        from xgrad.report.text import print_report

        print_report(self, console)

    def to_text(self, *, width: int = 140, color: bool = False) -> str:
        """Everything :meth:`print` shows, as plain text (or with ANSI colours)."""
        from xgrad.report.text import to_text

        return to_text(self, width=width, color=color)

    def markdown(self) -> str:
        """The report as Markdown text (:meth:`to_markdown` also writes it to a file)."""
        from xgrad.report.markdown import to_markdown

        return to_markdown(self)

    def repro(self, directory: str | os.PathLike) -> list[Path]:
        """Write, for each side that diverges, a standalone script and an ``.npz`` into
        ``directory``: the unit where it first parts, rebuilt in both frameworks from the
        captured input and weights, printing the difference and the cause (see
        :mod:`xgrad.report.repro`). Where that unit is a module of no kind xgrad knows, its
        code cannot be written out: its ``.npz`` alone is (its input, both outputs, both
        sides' weights), and :attr:`repro_units` says why. Returns the files written: each
        script, and each ``.npz`` written alone.

        Raises:
            OutputError: nothing diverges, or the folder cannot be written.
        """
        from xgrad.report.repro import write

        return write(self, directory)

    def plot(self, path: str | os.PathLike) -> Path:
        """Write a PNG: normwise error per entry and framework (see :mod:`xgrad.report.plot`)."""
        from xgrad.report.plot import plot

        return plot(self, path)
