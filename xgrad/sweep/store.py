"""A sweep's output folder, which makes it resumable: ``out/cells/<cell>-<key>.json`` per
finished cell, written (atomically) as each one finishes and read back by a re-run; and
``out/sweep.json`` and ``out/sweep.md`` once every cell is done."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from xgrad.errors import OutputError
from xgrad.report.base import write_text
from xgrad.sweep.cells import SweepCell
from xgrad.sweep.grid import CELL_SCHEMA, CellConfig, SweepGrid, canonical
from xgrad.sweep.result import SweepResult

__all__ = ["KEPT", "Store"]

KEPT = ("match", "mismatch", "nonfinite")
"""The statuses a re-run keeps from ``out/cells/``; the others are run again."""


class Store:
    """The output folder ``folder``, created if missing.

    Raises:
        OutputError: ``folder`` is a file, or cannot be created.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.cells = self.folder / "cells"
        if self.folder.exists() and not self.folder.is_dir():
            raise OutputError(f"output folder {str(self.folder)!r} is a file; give a folder")
        try:
            self.cells.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {str(self.cells)!r}: {exc.strerror}") from None

    def path(self, cell: CellConfig, key: str) -> Path:
        """The file of ``cell``, named by its axes (for people) and its key (for the match)."""
        name = f"{cell.activation}-{cell.loss}-{cell.dtype}-b{cell.batch}-s{cell.seed}"
        return self.cells / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{key}.json"

    def load(self, grid: SweepGrid, cell: CellConfig, key: str) -> SweepCell | None:
        """The cell's file if it holds a report of exactly this cell; else ``None``."""
        try:
            data = json.loads(self.path(cell, key).read_text(encoding="utf-8"))
            if (
                data["schema"] != CELL_SCHEMA
                or data["key"] != key
                or canonical(data["config"]) != canonical(grid.key_payload(cell))
            ):
                return None
            found = SweepCell.from_dict(data["cell"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing, half-written by another tool, or from another version
        return found if found.status in KEPT and found.config == cell else None

    def load_all(
        self, grid: SweepGrid, cells: Sequence[CellConfig], keys: Sequence[str]
    ) -> dict[str, SweepCell]:
        """The cells found (:meth:`load`), by key."""
        found = {}
        for cell, key in zip(cells, keys, strict=True):
            loaded = self.load(grid, cell, key)
            if loaded is not None:
                found[key] = loaded
        return found

    def write(self, grid: SweepGrid, cell: SweepCell) -> None:
        """Write one finished cell's file (atomically)."""
        data = {
            "schema": CELL_SCHEMA,
            "key": cell.key,
            "config": grid.key_payload(cell.config),
            "cell": cell.to_dict(),
        }
        write_text(
            self.path(cell.config, cell.key), json.dumps(data, indent=2, allow_nan=False) + "\n"
        )

    def write_merged(self, result: SweepResult) -> None:
        """Write ``sweep.json`` and ``sweep.md``."""
        result.to_json(self.folder / "sweep.json")
        result.to_markdown(self.folder / "sweep.md")
