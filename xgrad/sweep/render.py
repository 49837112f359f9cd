"""A sweep's renderings: the table of cells on a ``rich`` console, and as Markdown. Functions
of a :class:`~xgrad.sweep.SweepResult`, which imports them (never the other way round)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from xgrad.report.tables import Column, fit_columns, fitted_table, left_out_line

if TYPE_CHECKING:
    from xgrad.sweep.result import SweepResult

__all__ = ["print_sweep", "sweep_markdown"]

_AXES = ("activation", "loss", "dtype", "batch", "seed")
_COLUMNS = (
    Column("activation", least=12),
    Column("loss", least=8),
    Column("dtype", "word"),
    Column("batch", "number"),
    Column("seed", "number"),
    Column("worst rel norm", "number"),
    Column("where", least=12, drop=1),
    Column("status", "word"),
    Column("cause", least=16),
)
_TITLE = "xgrad sweep: worst normwise error per cell"


def print_sweep(result: SweepResult, console=None) -> None:
    """The worst normwise error, where, the status and the cause per cell, then the verdict,
    on ``console`` (a new ``rich`` console when ``None``).

    On a console too narrow for every column, an axis with one value in every cell (one
    dtype, one seed) is left out and stated in the title, then ``where``; numbers are never
    cut."""
    from rich.console import Console
    from rich.markup import escape

    console = Console() if console is None else console
    rows = []
    for c, value, where in result.rows():
        style = {"match": "green", "mismatch": "bold red"}.get(c.status, "bold magenta")
        axes = [c.activation, c.loss, c.dtype, str(c.batch), str(c.seed)]
        status = f"[{style}]{c.status}[/]"
        rows.append([*map(escape, axes), value, escape(where), status, escape(c.cause)])
    single = {i for i in range(len(_AXES)) if len({row[i] for row in rows}) == 1}
    # an axis with one value says nothing row by row: it goes first, into the title
    columns = [replace(col, drop=10) if i in single else col for i, col in enumerate(_COLUMNS)]
    shown, keep = fit_columns(columns, rows, console.width)
    stated = [i for i in sorted(single) if i not in keep]
    title = _TITLE
    if stated:
        title += " (every cell: " + ", ".join(f"{_AXES[i]} {rows[0][i]}" for i in stated) + ")"
    table, left_out = fitted_table(columns, rows, console.width, title=title, title_justify="left")
    console.print(table)
    line = left_out_line([h for h in left_out if h not in _AXES], console.width)
    if line is not None:
        console.print(f"[dim]{escape(line)}[/]")
    style = "green" if result.ok else "bold red"
    console.print(f"[{style}]{escape(result.summary())}[/]")


def _cell_text(text: str) -> str:
    return text.replace("|", "\\|")


def sweep_markdown(result: SweepResult) -> str:
    """A Markdown table: the worst normwise error, where, the status and the cause per cell;
    then the verdict in bold."""
    lines = [
        "| activation | loss | dtype | batch | seed | worst rel norm | where | status | cause |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for c, value, where in result.rows():
        status = c.status if c.ok else f"**{c.status}**"
        lines.append(
            f"| {c.activation} | {c.loss} | {c.dtype} | {c.batch} | {c.seed} | {value} | "
            f"{_cell_text(where)} | {status} | {_cell_text(c.cause)} |"
        )
    return "\n".join([*lines, "", f"**{result.summary()}**", ""])
