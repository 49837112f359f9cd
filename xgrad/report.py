"""The Report: every framework's gradients against the reference, and its renderings.

A :class:`Report` is plain data (entries of :class:`~xgrad.metrics.Metrics`) plus ways to
show it: :meth:`Report.table` (rich, for the terminal), :meth:`Report.to_dict` /
:meth:`Report.to_json` (schema in ``docs/report-schema.md``), :meth:`Report.to_markdown`,
:meth:`Report.plot` (PNG) and :meth:`Report.raise_for_mismatch`. Files are written
atomically: a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from xgrad._io import atomic_write, check_writable
from xgrad.errors import GradientMismatchError
from xgrad.metrics import Metrics, _json_float

__all__ = ["SCHEMA", "Entry", "Pairwise", "Report"]

SCHEMA = "xgrad.report/1"
"""The JSON schema name and version; bumped on any incompatible change."""

_STATUS_STYLE = {"match": "green", "mismatch": "bold red", "nonfinite": "bold magenta"}


@dataclass(frozen=True)
class Entry:
    """One compared quantity: a parameter's gradient, dL/dinput, the output or the loss.

    Attributes:
        name: ``layers.{i}.kernel``/``layers.{i}.bias`` (dL/dparam), ``input`` (dL/dinput),
            ``output`` (the forward output) or ``loss`` (the loss value).
        kind: ``parameter``, ``input``, ``output`` or ``loss``.
        shape: the array shape (canonical layout: kernel ``(in, out)``).
        native: framework -> that framework's own name for it.
        results: framework -> :class:`~xgrad.metrics.Metrics` against the reference.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    native: dict[str, str]
    results: dict[str, Metrics]

    @property
    def label(self) -> str:
        """How tables name it: ``dL/d layers.0.kernel``, ``dL/d input``, ``output``, ``loss``."""
        return f"dL/d {self.name}" if self.kind in ("parameter", "input") else self.name

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
            "rel_norm": _json_float(self.rel_norm),
            "entry": self.entry,
        }


@dataclass(frozen=True)
class LayerEntry:
    """One aligned dense layer of two models: its activation and the gradient reaching it.

    Attributes:
        index: the layer's position in the reference's call order.
        names: side -> the framework's name of the layer (``reference`` and the candidate).
        shape: the activation's shape ``(batch, units)``.
        forward: the candidate's activation ``a_i`` against the reference's.
        backward: the candidate's ``dL/d a_i`` against the reference's.
    """

    index: int
    names: dict[str, str]
    shape: tuple[int, ...]
    forward: Metrics
    backward: Metrics

    @property
    def label(self) -> str:
        return f"layer {self.index} ({' <-> '.join(self.names.values())})"

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "names": dict(self.names),
            "shape": list(self.shape),
            "forward": self.forward.to_dict(),
            "backward": self.backward.to_dict(),
        }


@dataclass(frozen=True)
class Report:
    """The result of :func:`xgrad.compare`: per entry and framework, metrics vs reference.

    Attributes:
        model: the spec in short text form, e.g. ``"10 -> 8:relu -> 5:sigmoid"``.
        dtype: the dtype every framework computed in.
        loss: the loss name, or ``None`` when a cotangent was back-propagated.
        frameworks: the compared frameworks, in order.
        reference: how the reference was computed, e.g. ``{"framework": "numpy",
            "dtype": "float64"}``.
        tolerance: the normwise relative tolerance used for every status.
        batch: the number of input rows.
        seed: the seed of the params when xgrad drew them, else ``None``.
        losses: framework -> loss value (empty with a cotangent).
        reference_loss: the reference's loss value, or ``None``.
        parameters: one :class:`Entry` per canonical parameter, in canonical order.
        input: the :class:`Entry` for dL/dinput.
        output: the :class:`Entry` for the forward output.
        loss_value: the :class:`Entry` for the loss value, or ``None``.
        pairwise: one :class:`Pairwise` per pair of frameworks.
        timing: framework -> seconds spent building and differentiating (not deterministic,
            kept apart in the JSON).
        title: an optional heading.
        layers: per aligned layer, forward and backward comparisons (from
            :func:`xgrad.compare_models`; empty for :func:`xgrad.compare`).
        first_divergence: where two models first part: ``{"layer", "where", "frameworks",
            "names"}`` with ``where`` ``"forward"`` or ``"backward"``; ``None`` when all
            layers match or no layers were compared.
        models: for :func:`xgrad.compare_models`, a description of each side.
        diagnoses: the tested explanations of the mismatches
            (:class:`~xgrad.diagnose.Diagnosis`); ``()`` when explanation ran and found
            nothing to explain, ``None`` when it did not run.
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
    input: Entry
    output: Entry
    loss_value: Entry | None
    pairwise: tuple[Pairwise, ...] = ()
    timing: dict[str, float] = field(default_factory=dict, compare=False)
    title: str | None = None
    layers: tuple[LayerEntry, ...] = ()
    first_divergence: dict | None = None
    models: dict | None = None
    diagnoses: tuple | None = None

    # -- queries ---------------------------------------------------------------------------

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry in display order: parameters, dL/dinput, output, loss."""
        rest = (self.input, self.output) + ((self.loss_value,) if self.loss_value else ())
        return self.parameters + rest

    def failures(self) -> list[tuple[Entry, str, Metrics]]:
        """``(entry, framework, metrics)`` for every status other than ``match``."""
        return [
            (e, fw, m) for e in self.entries for fw, m in e.results.items() if m.status != "match"
        ]

    def layer_failures(self) -> list[tuple[LayerEntry, str, Metrics]]:
        """``(layer, "forward" | "backward", metrics)`` for every layer comparison that fails."""
        return [
            (layer, where, m)
            for layer in self.layers
            for where, m in (("forward", layer.forward), ("backward", layer.backward))
            if m.status != "match"
        ]

    @property
    def ok(self) -> bool:
        """True when every entry (and every compared layer) matches the reference."""
        return not self.failures() and not self.layer_failures()

    def raise_for_mismatch(self) -> None:
        """Raise :class:`~xgrad.GradientMismatchError` unless :attr:`ok`.

        The message lists each failing entry in the manner of ``numpy.testing``:
        mismatched elements, max absolute and relative difference, the worst index with
        both values.
        """
        __tracebackhide__ = True
        if not self.ok:
            raise GradientMismatchError(self.mismatch_message())

    def mismatch_message(self) -> str:
        """The text :meth:`raise_for_mismatch` raises with ('' when everything matches)."""
        failures = [
            (entry.label, fw, self._native(entry, fw) or entry.name, m)
            for entry, fw, m in self.failures()
        ]
        failures += [
            (
                layer.label,
                where,
                f"a_{layer.index}" if where == "forward" else f"dL/d a_{layer.index}",
                m,
            )
            for layer, where, m in self.layer_failures()
        ]
        if not failures:
            return ""
        n_total = sum(len(e.results) for e in self.entries) + 2 * len(self.layers)
        lines = [
            f"Gradients differ from the reference ({self._reference_text()}): "
            f"{len(failures)} of {n_total} comparisons, model {self.model}, dtype "
            f"{self.dtype}, normwise rtol {self.tolerance:g}"
        ]
        if self.divergence_text():
            lines.append(self.divergence_text())
        lines.extend(self.diagnosis_lines())
        for label, who, native, m in failures:
            lines.append("")
            lines.append(f"{label} [{who}: {native}] status {m.status}")
            pct = 100.0 * m.mismatched / m.size if m.size else 0.0
            lines.append(f"Mismatched elements: {m.mismatched} / {m.size} ({pct:.3g}%)")
            if m.status == "nonfinite":
                lines.append(f"NaN: {m.nan}, Inf: {m.inf}, first at index {m.first_nonfinite}")
            lines.append(f"Max absolute difference: {m.max_abs:.6g}")
            lines.append(f"Max relative difference: {m.max_rel:.6g}")
            lines.append(f"Normwise relative error: {m.rel_norm:.6g} (tolerance {m.tol:g})")
            lines.append(
                f"Worst element at index {m.worst_index}: {who} {m.worst_value!r}, "
                f"reference {m.worst_reference!r}"
            )
        return "\n".join(lines)

    def _reference_text(self) -> str:
        return " ".join(str(v) for v in self.reference.values())

    # -- JSON ------------------------------------------------------------------------------

    def to_dict(self, *, timing: bool = True) -> dict:
        """A JSON-ready dict following ``docs/report-schema.md`` (schema ``xgrad.report/1``).

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
            "losses": {fw: _json_float(v) for fw, v in self.losses.items()},
            "reference_loss": None
            if self.reference_loss is None
            else _json_float(self.reference_loss),
            "parameters": [e.to_dict() for e in self.parameters],
            "input": self.input.to_dict(),
            "output": self.output.to_dict(),
            "loss_value": None if self.loss_value is None else self.loss_value.to_dict(),
            "pairwise": [p.to_dict() for p in self.pairwise],
            "models": self.models,
            "layers": [layer.to_dict() for layer in self.layers],
            "first_divergence": self.first_divergence,
            "diagnoses": None if self.diagnoses is None else [d.to_dict() for d in self.diagnoses],
        }
        if timing:
            out["timing"] = {"seconds": dict(self.timing)}
        return out

    def to_json(self, path: str | os.PathLike | None = None, *, timing: bool = True) -> str:
        """The report as JSON text; also written to ``path`` (atomically) when given."""
        text = json.dumps(self.to_dict(timing=timing), indent=2, allow_nan=False) + "\n"
        if path is not None:
            atomic_write(path, lambda f: f.write(text), binary=False)
        return text

    # -- terminal and Markdown -------------------------------------------------------------

    @staticmethod
    def _native(entry: Entry, fw: str) -> str:
        ref = entry.native.get("reference")
        own = entry.native.get(fw, "")
        return f"{ref} <-> {own}" if ref is not None and fw != "reference" else own

    def _rows(self):
        """(entry, framework, native, metrics) in display order."""
        for entry in self.entries:
            for fw, m in entry.results.items():
                yield entry, fw, self._native(entry, fw), m

    def summary(self) -> str:
        """One line: the verdict, and the worst comparison."""
        worst = max(self._rows(), key=lambda r: _sort_key(r[3]), default=None)
        n_bad = len(self.failures()) + len(self.layer_failures())
        verdict = (
            "OK: every gradient matches"
            if self.ok
            else f"MISMATCH: {n_bad} comparison(s) beyond tolerance"
        )
        if worst is None:
            return verdict
        entry, fw, _, m = worst
        if m.status == "nonfinite":
            what = f"nonfinite ({m.nan} NaN, {m.inf} Inf, first at {m.first_nonfinite})"
        else:
            what = f"rel_norm {_fmt(m.rel_norm)} (tolerance {self.tolerance:g})"
        return f"{verdict}; worst {entry.label} in {fw}: {what}"

    def _header(self) -> str:
        loss = f"loss {self.loss}" if self.loss else "given cotangent"
        return (
            f"model {self.model}, batch {self.batch}, {loss}, dtype {self.dtype}; "
            f"reference {self._reference_text()}; normwise rtol {self.tolerance:g}"
        )

    def table(self, *, compact: bool = False):
        """A ``rich.table.Table`` of every entry and framework; print it with rich.

        Args:
            compact: leave out max abs, cosine and ULP (for terminals under 150 columns;
                the JSON and Markdown always hold every metric).
        """
        from rich.markup import escape
        from rich.table import Table

        title = None if self.title is None else escape(self.title)
        table = Table(
            title=title,
            caption=escape(self._header()),
            title_justify="left",
            caption_justify="left",
        )
        # entry names stay whole; only the native names fold when the terminal is narrow
        longest = max((len(e.label) for e in self.entries), default=5)
        table.add_column("entry", no_wrap=True, min_width=longest)
        table.add_column("shape", no_wrap=True)
        table.add_column("framework", no_wrap=True)
        table.add_column("native name", overflow="fold", min_width=8)
        metrics = {
            "max abs": lambda m: _fmt(m.max_abs),
            "max rel": lambda m: _fmt(m.max_rel),
            "rel norm": lambda m: _fmt(m.rel_norm),
            "cosine": lambda m: _fmt_cos(m.cosine),
            "ULP": lambda m: "" if m.ulp_max is None else str(m.ulp_max),
        }
        if compact:
            metrics = {k: v for k, v in metrics.items() if k in ("max rel", "rel norm")}
        for col in metrics:
            table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
        table.add_column("status", no_wrap=True, min_width=9)
        for entry in self.entries:
            for j, (fw, m) in enumerate(entry.results.items()):
                table.add_row(
                    escape(entry.label) if j == 0 else "",
                    _shape(entry.shape) if j == 0 else "",
                    escape(fw),
                    escape(self._native(entry, fw)),
                    *(show(m) for show in metrics.values()),
                    f"[{_STATUS_STYLE[m.status]}]{m.status}[/]",
                    end_section=j == len(entry.results) - 1,
                )
        return table

    def to_text(self, *, width: int = 140, color: bool = False) -> str:
        """The table, pairwise summary and verdict as plain text (or with ANSI colours)."""
        from rich.console import Console

        console = Console(
            width=width,
            record=True,
            file=open(os.devnull, "w"),  # noqa: SIM115
            color_system="standard" if color else None,
        )
        self.print(console)
        console.file.close()
        return console.export_text(styles=color)

    def print(self, console=None) -> None:
        """Print the table, the pairwise summary and a verdict line to a rich console."""
        from rich.console import Console
        from rich.text import Text

        if console is None:
            console = Console()
            if not console.is_terminal:  # piped: do not squeeze the table to 80 columns
                console = Console(width=160)
        console.print(self.table(compact=console.width < 150))
        if self.layers:
            console.print(self.layer_table())
        if self.pairwise:
            pairs = ", ".join(
                f"{a}~{b} {_fmt(p.rel_norm)}" for p in self.pairwise for a, b in [p.frameworks]
            )
            console.print(Text(f"framework vs framework (max rel norm over entries): {pairs}"))
        divergence = self.divergence_text()
        if divergence:
            console.print(Text(divergence, style="bold"))
        for line in self.diagnosis_lines():  # names in brackets are text, never markup
            console.print(Text(line, style="yellow"))
        console.print(Text(self.summary(), style="green" if self.ok else "bold red"))

    def diagnosis_lines(self) -> list[str]:
        """One line per diagnosis: ``diagnosis: layer 1 (a <-> b) [fw]: forward diverges; ...``."""
        labels = {layer.index: layer.label for layer in self.layers}
        return [f"diagnosis: {d.text(labels.get(d.layer))}" for d in self.diagnoses or ()]

    def divergence_text(self) -> str | None:
        """``first divergence: layer 1 (a <-> b), forward``, or None."""
        d = self.first_divergence
        if not d:
            return None
        names = " <-> ".join(d["names"].values())
        return f"first divergence: layer {d['layer']} ({names}), {d['where']}"

    def layer_table(self):
        """A ``rich.table.Table`` of the per-layer forward and backward comparisons."""
        from rich.markup import escape
        from rich.table import Table

        table = Table(
            title="per layer: activation a_i (forward) and dL/d a_i (backward)",
            title_justify="left",
        )
        table.add_column("layer", overflow="fold")
        table.add_column("shape", no_wrap=True)
        for col in ("forward rel norm", "forward", "backward rel norm", "backward"):
            table.add_column(col, justify="right" if "norm" in col else "left", no_wrap=True)
        for layer in self.layers:
            f, b = layer.forward, layer.backward
            table.add_row(
                escape(layer.label),
                _shape(layer.shape),
                _fmt(f.rel_norm),
                f"[{_STATUS_STYLE[f.status]}]{f.status}[/]",
                _fmt(b.rel_norm),
                f"[{_STATUS_STYLE[b.status]}]{b.status}[/]",
            )
        return table

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """The report as a Markdown table; also written to ``path`` (atomically) if given."""
        lines = []
        if self.title:
            lines += [f"## {self.title}", ""]
        lines += [
            self._header(),
            "",
            "| entry | shape | framework | native name | max abs | max rel | rel norm "
            "| cosine | ULP | status |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for entry, fw, native, m in self._rows():
            status = m.status if m.status == "match" else f"**{m.status}**"
            ulp = "" if m.ulp_max is None else str(m.ulp_max)
            lines.append(
                f"| {entry.label} | {_shape(entry.shape)} | {fw} | `{native}` | "
                f"{_fmt(m.max_abs)} | {_fmt(m.max_rel)} | {_fmt(m.rel_norm)} | "
                f"{_fmt_cos(m.cosine)} | {ulp} | {status} |"
            )
        lines.append("")
        if self.pairwise:
            lines.append(
                "Framework vs framework (max rel norm over entries): "
                + ", ".join(
                    f"{a}~{b} {_fmt(p.rel_norm)}" for p in self.pairwise for a, b in [p.frameworks]
                )
            )
            lines.append("")
        if self.layers:
            lines += [
                "| layer | shape | forward rel norm | forward | backward rel norm | backward |",
                "|---|---|---:|---|---:|---|",
            ]
            for layer in self.layers:
                f, b = layer.forward, layer.backward
                lines.append(
                    f"| {layer.label} | {_shape(layer.shape)} | {_fmt(f.rel_norm)} | "
                    f"{f.status} | {_fmt(b.rel_norm)} | {b.status} |"
                )
            lines.append("")
        if self.divergence_text():
            lines += [self.divergence_text(), ""]
        for line in self.diagnosis_lines():
            lines += [f"- {line}"]
        if self.diagnoses:
            lines.append("")
        lines.append(f"**{self.summary()}**")
        text = "\n".join(lines) + "\n"
        if path is not None:
            atomic_write(path, lambda f: f.write(text), binary=False)
        return text

    # -- plot ------------------------------------------------------------------------------

    def plot(self, path: str | os.PathLike) -> Path:
        """Write a PNG: normwise error per entry and framework, log axis, tolerance line.

        Zero errors are drawn at the bottom of the axis. Uses matplotlib's object API
        (no pyplot), so no global figure state is touched.

        Raises:
            FrameworkNotInstalledError: matplotlib is missing (``pip install 'xgrad[plot]'``).
            OutputError: the file cannot be written.
        """
        path = check_writable(path)
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:  # pragma: no cover - exercised only without the plot extra
            from xgrad.errors import FrameworkNotInstalledError

            raise FrameworkNotInstalledError(
                "plotting needs matplotlib: pip install 'xgrad[plot]'"
            ) from None

        entries = self.entries
        frameworks = list(self.frameworks)
        floor = self.tolerance * 1e-8
        fig = Figure(figsize=(max(6.0, 0.9 * len(entries) + 2), 4.2), dpi=110)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(frameworks))
        for k, fw in enumerate(frameworks):
            xs, ys = [], []
            for i, entry in enumerate(entries):
                m = entry.results.get(fw)
                if m is None:
                    continue
                value = m.rel_norm
                if not math.isfinite(value) or m.status == "nonfinite":
                    value = 1e3
                xs.append(i - 0.4 + width * (k + 0.5))
                ys.append(max(value, floor))
            ax.bar(xs, ys, width=width, label=fw, bottom=floor * 0.5)
        ax.axhline(
            self.tolerance,
            color="red",
            linestyle="--",
            linewidth=1,
            label=f"tolerance {self.tolerance:g}",
        )
        ax.set_yscale("log")
        ax.set_xticks(range(len(entries)))
        ax.set_xticklabels([e.label for e in entries], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("normwise relative error vs reference")
        ax.set_title(self.title or f"{self.model} ({self.dtype})", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)
        return path


def _sort_key(m: Metrics) -> float:
    if m.status == "nonfinite" or math.isnan(m.rel_norm):
        return math.inf
    if m.status == "match" and math.isinf(m.rel_norm):  # zero reference, within noise
        return 0.0
    return m.rel_norm


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf"
    return "0" if value == 0 else f"{value:.2e}"


def _fmt_cos(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.9f}".rstrip("0").rstrip(".")


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
