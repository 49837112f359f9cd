"""Tables that fit the console: a number is never cut, text folds, and the columns that do
not fit are left out in an order each table states, and named under it.

``rich`` squeezes a table wider than its console by shrinking every column alike once the
wrappable ones are spent, so at 80 columns ``1.62e-03`` became ``1.…``. :func:`fitted_table`
decides beforehand what fits: first every column as it is; then the headers of number
columns broken onto two lines (``worst`` / ``rel norm``); then the droppable columns left out,
highest :attr:`Column.drop` first, until the rest fits. Numbers and single words (a status, a
framework) keep their full width; only text columns (names, causes) fold onto more lines.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, replace

__all__ = ["Column", "fit_columns", "fitted_table", "left_out_line"]

# Each column costs its width plus a space either side and one rule; the table one more rule.
_PER_COLUMN, _EDGE = 3, 1


@dataclass(frozen=True)
class Column:
    """One column of a table.

    Attributes:
        header: its heading.
        kind: ``"number"`` (right-justified, never wrapped or cut), ``"word"`` (a status or a
            name that is never wrapped or cut) or ``"text"`` (folds onto more lines).
        drop: ``0``: always shown; otherwise left out, highest first, when the table does
            not fit its console.
        least: the narrowest a ``"text"`` column may be folded to (its longest cell when
            that is shorter).
    """

    header: str
    kind: str = "text"
    drop: int = 0
    least: int = 12


def _cell_width(cell: str) -> int:
    from rich.text import Text

    return max((Text.from_markup(line).cell_len for line in cell.split("\n")), default=0)


def _widest(column: Column, cells: list[str]) -> int:
    return max([_cell_width(column.header), *(_cell_width(c) for c in cells)])


def _need(column: Column, cells: list[str]) -> int:
    """The width ``column`` needs: a number or word column its widest cell or header line,
    a text column at most :attr:`Column.least`."""
    widest = _widest(column, cells)
    return min(widest, column.least) if column.kind == "text" else widest


def _folded_header(column: Column, cells: list[str]) -> Column:
    """A number column's header broken onto lines no wider than its cells (or its longest
    word): ``worst rel norm`` over ``1.62e-03`` becomes ``worst`` / ``rel norm``."""
    if column.kind != "number":
        return column
    longest_word = max(len(w) for w in column.header.split())
    width = max([longest_word, *(_cell_width(c) for c in cells)])
    return replace(column, header="\n".join(textwrap.wrap(column.header, width)))


def _fits(columns: list[Column], cells: list[list[str]], width: int) -> bool:
    needed = sum(_need(c, cs) + _PER_COLUMN for c, cs in zip(columns, cells, strict=True))
    return needed + _EDGE <= width


def fit_columns(
    columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int | None
) -> tuple[list[Column], list[int]]:
    """The columns to show at ``width`` (headers possibly folded) and their indices into
    ``columns``; every column when ``width`` is ``None``."""
    keep = list(range(len(columns)))
    by_column = [[row[i] for row in rows] for i in range(len(columns))]
    shown = list(columns)
    if width is None or _fits(shown, by_column, width):
        return shown, keep
    shown = [_folded_header(c, cs) for c, cs in zip(columns, by_column, strict=True)]
    droppable = sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: -columns[i].drop)
    for i in droppable:
        if _fits([shown[k] for k in keep], [by_column[k] for k in keep], width):
            break
        keep.remove(i)
    return [shown[k] for k in keep], keep


def fitted_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int | None,
    *,
    sections: Sequence[bool] | None = None,
    **table_options,
):
    """A ``rich.table.Table`` of ``rows`` (cells as rich markup) that fits ``width`` columns
    (any width when ``None``), and the headers of the columns left out.

    Args:
        columns: the columns, in order.
        rows: one sequence of cells per row, one cell per column.
        width: the console's width.
        sections: per row, whether a rule follows it (``end_section``).
        **table_options: passed to ``rich.table.Table`` (title, caption, ...).

    Returns:
        ``(table, left_out)``: ``left_out`` lists the headers of the columns not shown.
    """
    from rich.table import Table

    shown, keep = fit_columns(columns, rows, width)
    table = Table(**table_options)
    for column, k in zip(shown, keep, strict=True):
        if column.kind == "number":
            table.add_column(column.header, justify="right", no_wrap=True)
        elif column.kind == "word" or _widest(column, [row[k] for row in rows]) <= column.least:
            table.add_column(column.header, no_wrap=True)  # room was kept for all of it
        else:
            table.add_column(column.header, overflow="fold")
    for j, row in enumerate(rows):
        end = bool(sections[j]) if sections is not None else False
        table.add_row(*(row[k] for k in keep), end_section=end)
    left_out = [c.header for i, c in enumerate(columns) if i not in keep]
    return table, left_out


def left_out_line(left_out: Sequence[str], width: int | None) -> str | None:
    """The line printed under a table that left columns out, or ``None`` when none was."""
    if not left_out:
        return None
    them = "it" if len(left_out) == 1 else "them"
    return (
        f"(left out at {width} columns wide: {', '.join(left_out)}; a wider terminal shows "
        f"{them}, and the JSON and Markdown hold every column)"
    )
