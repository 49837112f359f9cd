"""A sweep's renderings: the table of cells on a ``rich`` console, and as Markdown. Functions
of a :class:`~xgrad.sweep.SweepResult`, which imports them (never the other way round)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xgrad.sweep.result import SweepResult

__all__ = ["print_sweep", "sweep_markdown"]

_COLUMNS = ("activation", "loss", "dtype", "batch", "seed", "worst rel norm", "where")
_RIGHT = ("batch", "seed", "worst rel norm")  # columns of numbers


def print_sweep(result: SweepResult, console=None) -> None:
    """The worst normwise error, where, the status and the cause per cell, then the verdict,
    on ``console`` (a new ``rich`` console when ``None``)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console() if console is None else console
    table = Table(title="xgrad sweep: worst normwise error per cell", title_justify="left")
    for col in (*_COLUMNS, "status", "cause"):
        table.add_column(col, justify="right" if col in _RIGHT else "left")
    for c, value, where in result.rows():
        style = {"match": "green", "mismatch": "bold red"}.get(c.status, "bold magenta")
        table.add_row(
            c.activation,
            c.loss,
            c.dtype,
            str(c.batch),
            str(c.seed),
            value,
            escape(where),
            f"[{style}]{c.status}[/]",
            escape(c.cause),
        )
    console.print(table)
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
