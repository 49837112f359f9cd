"""The TrainingReport rendered: a rich table (one row per step), plain text, Markdown, PNG.

Functions of the report; :mod:`xgrad.training.report` imports them (this module imports the
report only for type hints)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from xgrad._io import atomic_write
from xgrad.report.format import fmt
from xgrad.report.plot import png_figure
from xgrad.report.tables import Column, fitted_table, left_out_line
from xgrad.report.text import styled

if TYPE_CHECKING:
    from xgrad.training.report import Step, TrainingReport

__all__ = [
    "fitted_step_table",
    "plot",
    "print_report",
    "step_table",
    "to_markdown",
    "to_text",
]

COLUMNS = (
    "step",
    "loss ref",
    "loss cand",
    "worst weight",
    "weights",
    "update",
    "gradient",
    "referee ref",
    "referee cand",
    "tolerance",
    "status",
)
"""The step table's columns: the losses of the reference and the candidate; the weight
furthest from the reference and its normwise weights / update / gradient differences; each
side's largest distance from the float64 referee; the step's tolerance and status."""


def _loss(value) -> str:
    return "-" if value is None else f"{value:.6g}"


def _row(report: TrainingReport, step: Step) -> list[str]:
    worst = step.worst
    status = "match" if step.ok else next(w.status for w in step.weights if w.status != "match")
    if worst is None:
        return [str(step.step), "-", "-", "-", "-", "-", "-", "-", "-", fmt(step.tolerance), status]

    def num(v):
        return "-" if v is None else fmt(v)

    return [
        str(step.step),
        _loss(step.losses.get("reference")),
        _loss(step.losses.get(report.candidate)),
        worst.name,
        fmt(worst.weights),
        num(worst.update),
        num(worst.gradient),
        num(step.referee_drift("reference")),
        num(step.referee_drift(report.candidate)),
        fmt(step.tolerance),
        status,
    ]


# The step table's columns; with ``drop``, the order they are left out in when the console
# is too narrow: the losses first, then the referee distances, the update, the gradient.
_STEP_COLUMNS = tuple(
    Column(header, kind, drop=drop, least=16)
    for header, kind, drop in zip(
        COLUMNS,
        ("number", "number", "number", "text", *["number"] * 6, "word"),
        (0, 5, 6, 0, 0, 2, 1, 3, 4, 0, 0),
        strict=True,
    )
)


def step_table(report: TrainingReport, *, width: int | None = None):
    """A ``rich.table.Table`` with one row per step: the losses, the weight furthest from
    the reference and its weights / update / gradient differences, each side's distance
    from the float64 referee, the step's tolerance and the status. ``width``: the console's
    width; the columns that do not fit are left out (:func:`fitted_step_table`)."""
    return fitted_step_table(report, width=width)[0]


def fitted_step_table(report: TrainingReport, *, width: int | None = None):
    """:func:`step_table` and the headers of the columns it left out to fit ``width``: the
    losses, the referee distances, the update and the gradient, in that order; numbers are
    never cut."""
    from rich.markup import escape

    rows = []
    for step in report.steps:
        cells = _row(report, step)
        cells[3] = escape(cells[3])
        cells[-1] = styled(cells[-1])
        rows.append(cells)
    return fitted_table(
        _STEP_COLUMNS,
        rows,
        width,
        title=None if report.title is None else escape(report.title),
        caption=escape(report.header()),
        title_justify="left",
        caption_justify="left",
    )


def _lines(report: TrainingReport) -> list[str]:
    lines = [f"note: {n}" for n in report.notes]
    if report.first_divergence is not None:
        lines.append(report.first_divergence.text())
    lines += report.diagnosis_lines()
    return lines


def print_report(report: TrainingReport, console=None) -> None:
    """Print the step table, notes, divergence, diagnoses and the verdict."""
    from rich.console import Console
    from rich.text import Text

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    table, left_out = fitted_step_table(report, width=console.width)
    console.print(table)
    line = left_out_line(left_out, console.width)
    if line is not None:
        console.print(Text(line, style="dim"))
    for line in _lines(report):  # names in brackets are text, never markup
        style = "cyan" if line.startswith("note:") else "yellow"
        console.print(Text(line, style=style))
    console.print(Text(report.summary(), style="green" if report.ok else "bold red"))


def to_text(report: TrainingReport, *, width: int = 140) -> str:
    """Everything :func:`print_report` shows, as plain text."""
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        console = Console(width=width, record=True, file=sink, color_system=None)
        print_report(report, console)
    return console.export_text(styles=False)


def to_markdown(report: TrainingReport) -> str:
    """The report as Markdown: the step table, notes, divergence, diagnoses, verdict."""
    lines = []
    if report.title:
        lines += [f"## {report.title}", ""]
    cols = COLUMNS
    lines += [
        report.header(),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---" if i in (3, 10) else "---:" for i in range(len(cols))) + "|",
    ]
    for step in report.steps:
        cells = _row(report, step)
        cells[3] = f"`{cells[3]}`"
        if cells[-1] != "match":
            cells[-1] = f"**{cells[-1]}**"
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    extra = _lines(report)
    lines += [f"- {line}" for line in extra]
    if extra:
        lines.append("")
    lines.append(f"**{report.summary()}**")
    return "\n".join(lines) + "\n"


def plot(report: TrainingReport, path: str | os.PathLike) -> Path:
    """Write a PNG to ``path``: each weight's normwise difference per step (log scale), one
    line per weight, and the tolerance ``tol * sqrt(step)`` dashed.

    Raises:
        FrameworkNotInstalledError: matplotlib is missing (``pip install 'xgrad[plot]'``).
        OutputError: the file cannot be written there, or its name does not end in .png.
    """
    path, fig = png_figure(path, (7.0, 4.2))
    floor = report.tolerance * 1e-8
    ax = fig.add_subplot()
    xs = [s.step for s in report.steps]
    for info in report.weights:
        ys = []
        for s in report.steps:
            value = next((w.weights for w in s.weights if w.name == info.name), math.nan)
            ys.append(1e3 if not math.isfinite(value) else max(value, floor))
        ax.plot(xs, ys, marker=".", linewidth=1, label=info.name)
    ax.plot(
        xs,
        [s.tolerance for s in report.steps],
        color="red",
        linestyle="--",
        linewidth=1,
        label=f"tolerance {report.tolerance:g} * sqrt(step)",
    )
    if report.first_divergence is not None:
        ax.axvline(report.first_divergence.step, color="grey", linewidth=0.8, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||w_cand - w_ref|| / ||w_ref||")
    ax.set_title(report.title or f"{report.model} ({report.dtype})", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)
    return path
