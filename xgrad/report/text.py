"""The report in the terminal: rich tables of entries and layers, divergences, diagnoses
and the verdict line."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from xgrad.report.format import fmt, fmt_cos, fmt_shape
from xgrad.report.tables import Column, fitted_table, left_out_line

if TYPE_CHECKING:
    from xgrad.report.data import Report

__all__ = [
    "STATUS_STYLE",
    "entry_table",
    "fitted_entry_table",
    "fitted_layer_table",
    "layer_table",
    "print_report",
    "to_text",
]

STATUS_STYLE = {
    "match": "green",
    "match-kink": "green",
    "match-clip": "green",
    "mismatch": "bold red",
    "nonfinite": "bold magenta",
    "uninformative": "bold yellow",
}


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'yellow')}]{status}[/]"


# The entry table's columns; with ``drop``, the order they are left out in when the console
# is too narrow: the extra metrics first, then shape, native names, max rel.
_ENTRY_COLUMNS = (
    Column("entry", least=24),
    Column("shape", "word", drop=4),
    Column("framework", "word"),
    Column("native name", least=16, drop=3),
    Column("max abs", "number", drop=7),
    Column("max rel", "number", drop=2),
    Column("rel norm", "number"),
    Column("cosine", "number", drop=8),
    Column("ULP", "number", drop=9),
    Column("status", "word"),
)
_COMPACT = ("max abs", "cosine", "ULP")

_LAYER_COLUMNS = (
    Column("layer", least=16),
    Column("shape", "word", drop=1),
    Column("framework", "word"),
    Column("forward rel norm", "number"),
    Column("forward", "word"),
    Column("backward rel norm", "number"),
    Column("backward", "word"),
)


def entry_table(report: Report, *, compact: bool = False, width: int | None = None):
    """A ``rich.table.Table`` of every entry and framework.

    Args:
        compact: leave out max abs, cosine and ULP (the JSON and Markdown always hold every
            metric).
        width: the console's width: the columns that do not fit are left out (see
            :func:`fitted_entry_table`); ``None``: every column.
    """
    return fitted_entry_table(report, compact=compact, width=width)[0]


def fitted_entry_table(report: Report, *, compact: bool = False, width: int | None = None):
    """:func:`entry_table` and the headers of the columns it left out to fit ``width``: ULP,
    cosine, max abs, shape, native name and max rel, in that order; numbers are never cut."""
    from rich.markup import escape

    columns = [c for c in _ENTRY_COLUMNS if not (compact and c.header in _COMPACT)]
    metrics = {
        "max abs": lambda m: fmt(m.max_abs),
        "max rel": lambda m: fmt(m.max_rel),
        "rel norm": lambda m: fmt(m.rel_norm),
        "cosine": lambda m: fmt_cos(m.cosine),
        "ULP": lambda m: "" if m.ulp_max is None else str(m.ulp_max),
    }
    rows, sections = [], []
    for entry in report.entries:
        for j, (fw, m) in enumerate(entry.results.items()):
            cells = {
                "entry": escape(entry.label) if j == 0 else "",
                "shape": fmt_shape(entry.shape) if j == 0 else "",
                "framework": escape(fw),
                "native name": escape(report.native_pair(entry, fw)),
                "status": styled(m.status),
            }
            rows.append([cells[c.header] if c.header in cells else "" for c in columns])
            for k, c in enumerate(columns):
                if c.header in metrics:
                    rows[-1][k] = metrics[c.header](m)
            sections.append(j == len(entry.results) - 1)
    return fitted_table(
        columns,
        rows,
        width,
        sections=sections,
        title=None if report.title is None else escape(report.title),
        caption=escape(report.header()),
        title_justify="left",
        caption_justify="left",
    )


def layer_table(report: Report, *, width: int | None = None):
    """A ``rich.table.Table`` of the per-layer forward and backward comparisons; ``width``:
    the console's width (the shape is left out first, then numbers' headers fold)."""
    return fitted_layer_table(report, width=width)[0]


def fitted_layer_table(report: Report, *, width: int | None = None):
    """:func:`layer_table` and the headers of the columns it left out to fit ``width``."""
    from rich.markup import escape

    rows, sections = [], []
    for layer in report.layers:
        fws = list(layer.forward)
        for j, fw in enumerate(fws):
            f, b = layer.forward[fw], layer.backward[fw]
            rows.append(
                [
                    escape(layer.label) if j == 0 else "",
                    fmt_shape(layer.shape) if j == 0 else "",
                    escape(fw),
                    fmt(f.rel_norm),
                    styled(f.status),
                    fmt(b.rel_norm),
                    styled(b.status),
                ]
            )
            sections.append(j == len(fws) - 1)
    return fitted_table(
        _LAYER_COLUMNS,
        rows,
        width,
        sections=sections,
        title="per layer: output (forward) and dL/d output (backward)",
        title_justify="left",
    )


def print_report(report: Report, console=None) -> None:
    """Print the tables, pairwise summary, divergences, diagnoses, notes and verdict."""
    from rich.console import Console
    from rich.text import Text

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped: do not squeeze the table to 80 columns
            console = Console(width=160)
    table, left_out = fitted_entry_table(report, width=console.width)
    console.print(table)
    if report.layers:
        layers, more = fitted_layer_table(report, width=console.width)
        console.print(layers)
        left_out += [c for c in more if c not in left_out]
    line = left_out_line(left_out, console.width)
    if line is not None:
        console.print(Text(line, style="dim"))
    if report.pairwise:
        pairs = ", ".join(
            f"{a}~{b} {fmt(p.rel_norm)}" for p in report.pairwise for a, b in [p.frameworks]
        )
        console.print(Text(f"framework vs framework (max rel norm over entries): {pairs}"))
    for note in report.notes:  # names in brackets are text, never markup
        console.print(Text(f"note: {note}", style="cyan"))
    for d in report.divergences:
        console.print(Text(d.text(), style="bold"))
    for line in report.diagnosis_lines():
        console.print(Text(line, style="yellow"))
    console.print(Text(report.summary(), style="green" if report.ok else "bold red"))


def to_text(report: Report, *, width: int = 140, color: bool = False) -> str:
    """Everything :func:`print_report` shows, as plain text (or with ANSI colours)."""
    from rich.console import Console

    with open(os.devnull, "w") as sink:
        console = Console(
            width=width,
            record=True,
            file=sink,
            color_system="standard" if color else None,
        )
        print_report(report, console)
    return console.export_text(styles=color)
