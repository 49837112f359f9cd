"""``xgrad sweep``: :func:`xgrad.compare` over a grid of configurations.

A cell is one (activation, loss, dtype, batch size, seed). Its model is
``MLP(input_dim, [Dense(h, activation) for h in hidden] + [Dense(output_dim, head)])`` with
the head the loss expects: ``sigmoid`` for ``bce``, ``softmax`` for ``cce``, else ``linear``;
or, with ``layers``, a template in the text form of :mod:`xgrad.layers.text` where ``ACT``
and ``HEAD`` stand for the cell's activation and head
(``8:ACT,layernorm,residual(8:ACT),4:HEAD``). Inputs are standard normal and targets drawn
as in ``xgrad compare``, all from the seed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import numpy as np

from xgrad._io import atomic_write
from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.errors import InputError
from xgrad.frameworks.base import check_dtype
from xgrad.losses import get_loss, random_targets
from xgrad.report import Report

__all__ = ["SweepCell", "SweepGrid", "SweepResult", "run_sweep"]

HEADS = {"bce": "sigmoid", "cce": "softmax"}


def _default_activations() -> tuple[str, ...]:
    return (*ACTIVATIONS, "leaky_relu")


@dataclass(frozen=True)
class SweepGrid:
    """The axes of a sweep and the fixed model shape around them."""

    activations: tuple[str, ...] = field(default_factory=_default_activations)
    losses: tuple[str, ...] = ("sum", "mse")
    dtypes: tuple[str, ...] = ("float32", "float64")
    batch_sizes: tuple[int, ...] = (1, 4)
    seeds: tuple[int, ...] = (0,)
    input_dim: int = 6
    hidden: tuple[int, ...] = (8, 8)
    output_dim: int = 4
    layers: str | None = None
    frameworks: tuple[str, ...] | None = None
    rtol: float | None = None

    @classmethod
    def from_mapping(cls, values: Mapping) -> SweepGrid:
        """Build and validate a grid from flag values or a TOML table.

        Raises:
            InputError: an unknown key, an empty axis, or a value of the wrong kind.
            SpecError: an unknown activation or loss.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown sweep setting(s) {unknown}; known: {sorted(known)}")
        kwargs = {}
        for key, value in values.items():
            if key in ("input_dim", "output_dim"):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise InputError(f"sweep {key} must be a positive integer, got {value!r}")
                kwargs[key] = value
            elif key == "rtol":
                kwargs[key] = None if value is None else float(value)
            elif key == "layers":
                if not isinstance(value, str):
                    raise InputError(f"sweep layers must be a text template, got {value!r}")
                kwargs[key] = value
            else:
                if isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                if not isinstance(value, list | tuple) or not value:
                    raise InputError(f"sweep {key} must be a non-empty list, got {value!r}")
                kwargs[key] = tuple(value)
        grid = cls(**kwargs)
        grid.validate()
        return grid

    def validate(self) -> None:
        for name in self.activations:
            get_activation(name)
        for name in self.losses:
            get_loss(name)
        for dtype in self.dtypes:
            check_dtype(dtype)
        for activation in self.activations:
            for loss in self.losses:
                self.spec(activation, loss)
        for key in ("batch_sizes", "seeds", "hidden"):
            for v in getattr(self, key):
                if (
                    isinstance(v, bool)
                    or not isinstance(v, int)
                    or v < (0 if key == "seeds" else 1)
                ):
                    raise InputError(f"sweep {key} must hold positive integers, got {v!r}")

    def spec(self, activation: str, loss: str):
        """The model of the cells with this activation and loss."""
        from xgrad.layers.text import parse_layers
        from xgrad.spec import MLP, Dense

        head = HEADS.get(get_loss(loss).name, "linear")
        if self.layers is None:
            layers = [*(Dense(h, activation) for h in self.hidden), Dense(self.output_dim, head)]
        else:
            text = re.sub(r"\bHEAD\b", head, re.sub(r"\bACT\b", activation, self.layers))
            layers = parse_layers(text)
        return MLP(self.input_dim, layers)

    def cells(self) -> list[tuple[str, str, str, int, int]]:
        return list(
            itertools.product(
                self.activations, self.losses, self.dtypes, self.batch_sizes, self.seeds
            )
        )


@dataclass(frozen=True)
class SweepCell:
    """One cell's configuration and report."""

    activation: str
    loss: str
    dtype: str
    batch: int
    seed: int
    report: Report

    def worst(self) -> tuple[float, str, str]:
        """(worst rel_norm, framework, entry label) over the cell's report."""
        best = (-1.0, "", "")
        for entry in self.report.entries:
            for fw, m in entry.results.items():
                value = math.inf if m.status == "nonfinite" else m.rel_norm
                if value > best[0]:
                    best = (value, fw, entry.label)
        return best


@dataclass(frozen=True)
class SweepResult:
    grid: SweepGrid
    cells: tuple[SweepCell, ...]

    @property
    def ok(self) -> bool:
        return all(c.report.ok for c in self.cells)

    def print(self, console) -> None:
        from rich.markup import escape
        from rich.table import Table

        from xgrad.report.data import fmt as _fmt

        table = Table(title="xgrad sweep: worst normwise error per cell", title_justify="left")
        for col in (
            "activation",
            "loss",
            "dtype",
            "batch",
            "seed",
            "worst rel norm",
            "where",
            "status",
        ):
            table.add_column(
                col, justify="right" if col in ("batch", "seed", "worst rel norm") else "left"
            )
        for c in self.cells:
            value, fw, label = c.worst()
            failures = c.report.failures()
            status = "match" if c.report.ok else (failures[0][2].status if failures else "mismatch")
            style = {"match": "green", "mismatch": "bold red"}.get(status, "bold magenta")
            table.add_row(
                c.activation,
                c.loss,
                c.dtype,
                str(c.batch),
                str(c.seed),
                _fmt(value),
                escape(f"{fw}: {label}"),
                f"[{style}]{status}[/]",
            )
        console.print(table)
        bad = sum(not c.report.ok for c in self.cells)
        verdict = (
            "[green]OK: every cell matches[/]"
            if not bad
            else f"[bold red]MISMATCH: {bad} of {len(self.cells)} cells[/]"
        )
        console.print(verdict)

    def summary(self) -> str:
        bad = sum(not c.report.ok for c in self.cells)
        if not bad:
            return f"OK: every cell matches ({len(self.cells)} cells)"
        return f"MISMATCH: {bad} of {len(self.cells)} cells"

    def diagnosis_lines(self) -> list[str]:
        return [line for c in self.cells for line in c.report.diagnosis_lines()]

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """A Markdown table: the worst normwise error, where, and the status per cell."""
        from xgrad.report.data import fmt

        lines = [
            "| activation | loss | dtype | batch | seed | worst rel norm | where | status |",
            "|---|---|---|---:|---:|---:|---|---|",
        ]
        for c in self.cells:
            value, fw, label = c.worst()
            status = "match" if c.report.ok else "**mismatch**"
            lines.append(
                f"| {c.activation} | {c.loss} | {c.dtype} | {c.batch} | {c.seed} | "
                f"{fmt(value)} | {fw}: {label} | {status} |"
            )
        text = "\n".join([*lines, "", f"**{self.summary()}**", ""])
        if path is not None:
            atomic_write(path, lambda f: f.write(text), binary=False)
        return text

    def to_dict(self) -> dict:
        cells = []
        for c in self.cells:
            value, fw, label = c.worst()
            cells.append(
                {
                    "activation": c.activation,
                    "loss": c.loss,
                    "dtype": c.dtype,
                    "batch": c.batch,
                    "seed": c.seed,
                    "ok": c.report.ok,
                    "worst": {
                        "rel_norm": value if math.isfinite(value) else "inf",
                        "framework": fw,
                        "entry": label,
                    },
                    "report": c.report.to_dict(timing=False),
                }
            )
        return {"schema": "xgrad.sweep/1", "ok": self.ok, "cells": cells}

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
        if path is not None:
            atomic_write(path, lambda f: f.write(text), binary=False)
        return text


def run_sweep(grid: SweepGrid, *, progress: bool = False) -> SweepResult:
    """Run :func:`xgrad.compare` on every cell of ``grid``."""
    from xgrad.runner import compare, resolve_frameworks

    adapters = resolve_frameworks(None if grid.frameworks is None else list(grid.frameworks))
    cells = grid.cells()
    results = []
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task("sweep", total=len(cells))
    try:
        for activation, loss, dtype, batch, seed in cells:
            spec = grid.spec(activation, loss)
            x = np.random.default_rng(seed).standard_normal((batch, grid.input_dim))
            y = random_targets(loss, batch, spec.output_dim, seed)
            report = compare(
                spec,
                x,
                y,
                loss=loss,
                frameworks=adapters,
                dtype=dtype,
                seed=seed,
                rtol=grid.rtol,
                title=f"{activation} / {loss} / {dtype} / batch {batch} / seed {seed}",
            )
            results.append(SweepCell(activation, loss, dtype, batch, seed, report))
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return SweepResult(grid, tuple(results))
