"""What every command does with its report: check the output files first, print the report
(or, with ``--quiet``, its diagnoses and verdict, and the notes the verdict refers to), write
the files asked for, and exit 0 or 1.
"""

from __future__ import annotations

import argparse

from xgrad.errors import InputError

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_MISMATCH",
    "EXIT_OK",
    "EXIT_USAGE",
    "check_outputs",
    "console",
    "quiet_lines",
    "show",
    "status",
]

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


def status(ok: bool) -> int:
    """The exit status of a verdict: 0 when everything passes, else 1."""
    return EXIT_OK if ok else EXIT_MISMATCH


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse output files that cannot be written (``--json``, ``--markdown``, ``--plot``,
    ``--out``), and a ``--plot`` that is not a PNG, before any work is done."""
    from xgrad._io import check_writable

    for name in ("json", "markdown", "plot", "out"):
        path = getattr(args, name, None)
        if path is not None:
            check_writable(path)
    plot = getattr(args, "plot", None)
    if plot is not None and not plot.lower().endswith(".png"):
        raise InputError(f"--plot {plot!r}: xgrad writes PNG images; name the file *.png")


def console():
    """A ``rich`` console: the terminal's width, or 160 columns when piped."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=160)


def quiet_lines(report) -> list[str]:
    """What ``--quiet`` prints: the diagnoses and the verdict line, and the report's notes
    when the verdict sends the reader to them (``"... only up to rounding: match-kink, see
    the notes"``): a line must not point at text that is not printed."""
    summary = report.summary()
    notes = [f"note: {n}" for n in report.notes] if "the notes" in summary else []
    return [*notes, *report.diagnosis_lines(), summary]


def show(report, args: argparse.Namespace, out) -> None:
    """Print ``report`` (an :class:`~xgrad.report.base.AbstractReport`) on the console
    ``out``, or only its diagnoses and verdict with ``--quiet`` (:func:`quiet_lines`); write
    ``--json``, ``--markdown`` and ``--plot``."""
    if args.quiet:
        for line in quiet_lines(report):
            out.print(line, highlight=False, markup=False)
    else:
        report.print(out)
    if args.json:
        report.to_json(args.json)
    if args.markdown:
        report.to_markdown(args.markdown)
    if getattr(args, "plot", None):
        report.plot(args.plot)
    if getattr(args, "repro", None):
        if not getattr(report, "repro_units", ()):
            out.print("nothing to reproduce: no unit diverges", highlight=False, markup=False)
        else:
            names = ", ".join(str(s) for s in report.repro(args.repro))
            alone = [u.refused for u in report.repro_units if u.refused]
            tail = f" (data only: {'; '.join(alone)})" if alone else ""
            out.print(f"repro written: {names}{tail}", highlight=False, markup=False)
