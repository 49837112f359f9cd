"""The report as a PNG: normwise error per entry and framework, on a log axis, with the
tolerance line. matplotlib's object API only (no pyplot), so no global figure state."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from xgrad._io import atomic_write, check_writable
from xgrad.errors import OutputError

if TYPE_CHECKING:
    from xgrad.report.data import Report

__all__ = ["plot", "png_figure"]


def png_figure(path: str | os.PathLike, size: tuple[float, float]):
    """``(path, figure)``: ``path`` checked to be a writable ``.png`` name, and a Matplotlib
    figure of ``size`` inches on its own Agg canvas (no pyplot, no global state).

    Raises:
        FrameworkNotInstalledError: matplotlib is missing (``pip install 'xgrad[plot]'``).
        OutputError: the file cannot be written there, or its name does not end in .png.
    """
    path = check_writable(path)
    if path.suffix.lower() != ".png":
        raise OutputError(f"plot file {str(path)!r}: xgrad writes PNG images; name it *.png")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - exercised only without the plot extra
        from xgrad.errors import FrameworkNotInstalledError

        raise FrameworkNotInstalledError(
            "plotting needs matplotlib: pip install 'xgrad[plot]'"
        ) from None
    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    return path, fig


def plot(report: Report, path: str | os.PathLike) -> Path:
    """Write the plot to ``path`` (a ``.png`` file) atomically.

    Zero errors are drawn at the bottom of the axis.

    Raises:
        FrameworkNotInstalledError: matplotlib is missing (``pip install 'xgrad[plot]'``).
        OutputError: the file cannot be written there, or its name does not end in .png.
    """
    entries = report.entries
    frameworks = list(report.frameworks)
    path, fig = png_figure(path, (max(6.0, 0.9 * len(entries) + 2), 4.2))
    floor = report.tolerance * 1e-8
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
        report.tolerance,
        color="red",
        linestyle="--",
        linewidth=1,
        label=f"tolerance {report.tolerance:g}",
    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(entries)))
    ax.set_xticklabels([e.label for e in entries], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("normwise relative error vs reference")
    ax.set_title(report.title or f"{report.model} ({report.dtype})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"), binary=True)
    return path
