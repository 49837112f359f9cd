"""The report in the terminal: rich tables of entries and layers, divergences, diagnoses
and the verdict line."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from xgrad.report.format import fmt, fmt_cos, fmt_shape

if TYPE_CHECKING:
    from xgrad.report.data import Report

__all__ = ["STATUS_STYLE", "entry_table", "layer_table", "print_report", "to_text"]

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


def entry_table(report: Report, *, compact: bool = False):
    """A ``rich.table.Table`` of every entry and framework.

    Args:
        compact: leave out max abs, cosine and ULP (for terminals under 150 columns; the
            JSON and Markdown always hold every metric).
    """
    from rich.markup import escape
    from rich.table import Table

    title = None if report.title is None else escape(report.title)
    table = Table(
        title=title,
        caption=escape(report.header()),
        title_justify="left",
        caption_justify="left",
    )
    # entry names stay whole; only the native names fold when the terminal is narrow
    longest = max((len(e.label) for e in report.entries), default=5)
    table.add_column("entry", no_wrap=True, min_width=longest)
    table.add_column("shape", no_wrap=True)
    table.add_column("framework", no_wrap=True)
    table.add_column("native name", overflow="fold", min_width=8)
    metrics = {
        "max abs": lambda m: fmt(m.max_abs),
        "max rel": lambda m: fmt(m.max_rel),
        "rel norm": lambda m: fmt(m.rel_norm),
        "cosine": lambda m: fmt_cos(m.cosine),
        "ULP": lambda m: "" if m.ulp_max is None else str(m.ulp_max),
    }
    if compact:
        metrics = {k: v for k, v in metrics.items() if k in ("max rel", "rel norm")}
    for col in metrics:
        table.add_column(col, justify="right", no_wrap=True, min_width=len(col))
    table.add_column("status", no_wrap=True, min_width=9)
    for entry in report.entries:
        for j, (fw, m) in enumerate(entry.results.items()):
            table.add_row(
                escape(entry.label) if j == 0 else "",
                fmt_shape(entry.shape) if j == 0 else "",
                escape(fw),
                escape(report.native_pair(entry, fw)),
                *(show(m) for show in metrics.values()),
                styled(m.status),
                end_section=j == len(entry.results) - 1,
            )
    return table


def layer_table(report: Report):
    """A ``rich.table.Table`` of the per-layer forward and backward comparisons."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title="per layer: output (forward) and dL/d output (backward)",
        title_justify="left",
    )
    table.add_column("layer", overflow="fold")
    table.add_column("shape", no_wrap=True)
    table.add_column("framework", no_wrap=True)
    for col in ("forward rel norm", "forward", "backward rel norm", "backward"):
        table.add_column(col, justify="right" if "norm" in col else "left", no_wrap=True)
    for layer in report.layers:
        fws = list(layer.forward)
        for j, fw in enumerate(fws):
            f, b = layer.forward[fw], layer.backward[fw]
            table.add_row(
                escape(layer.label) if j == 0 else "",
                fmt_shape(layer.shape) if j == 0 else "",
                escape(fw),
                fmt(f.rel_norm),
                styled(f.status),
                fmt(b.rel_norm),
                styled(b.status),
                end_section=j == len(fws) - 1,
            )
    return table


def print_report(report: Report, console=None) -> None:
    """Print the tables, pairwise summary, divergences, diagnoses, notes and verdict."""
    from rich.console import Console
    from rich.text import Text

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped: do not squeeze the table to 80 columns
            console = Console(width=160)
    console.print(entry_table(report, compact=console.width < 150))
    if report.layers:
        console.print(layer_table(report))
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
