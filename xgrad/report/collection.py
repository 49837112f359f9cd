"""Several reports shown and written together, as one report (``xgrad examples``)."""

from __future__ import annotations

from collections.abc import Iterable

from xgrad.report.base import AbstractReport

__all__ = ["ReportSet"]


class ReportSet(AbstractReport):
    """Several reports under one verdict: it passes when every report passes.

    Its JSON is ``{"schema": schema, "ok": ..., "reports": [each report's JSON, ...]}``; its
    Markdown and its printout are the reports' own, one after the other.

    Args:
        schema: the name and version of the collection's JSON (``"xgrad.examples/1"``).
        reports: the reports, in the order they are shown.

    Example:
        >>> ReportSet("xgrad.examples/1", []).summary()
        'OK: every gradient matches in all 0 reports'
    """

    def __init__(self, schema: str, reports: Iterable[AbstractReport]):
        self.schema = schema
        self.reports = list(reports)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.reports)

    def summary(self) -> str:
        bad = sum(not r.ok for r in self.reports)
        if not bad:
            return f"OK: every gradient matches in all {len(self.reports)} reports"
        return f"MISMATCH in {bad} of {len(self.reports)} reports"

    def diagnosis_lines(self) -> list[str]:
        return [line for r in self.reports for line in r.diagnosis_lines()]

    def to_dict(self, *, timing: bool = True) -> dict:
        return {
            "schema": self.schema,
            "ok": self.ok,
            "reports": [r.to_dict(timing=timing) for r in self.reports],
        }

    def print(self, console=None) -> None:
        """Print each report, with an empty line after each."""
        if console is None:
            from rich.console import Console

            console = Console()
            if not console.is_terminal:  # piped: do not squeeze the tables to 80 columns
                console = Console(width=160)
        for report in self.reports:
            report.print(console)
            console.print()

    def markdown(self) -> str:
        return "\n".join(r.markdown() for r in self.reports)
