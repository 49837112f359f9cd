"""The report protocol, stated once: what every xgrad report answers and how it is written.

Four results are reports: a gradient comparison (:class:`~xgrad.Report`), a training
comparison (:class:`~xgrad.TrainingReport`), a sweep (:class:`~xgrad.sweep.SweepResult`) and
several reports shown together (:class:`~xgrad.report.ReportSet`). Each subclass gives its
verdict (:attr:`AbstractReport.ok`, :meth:`~AbstractReport.summary`), its data
(:meth:`~AbstractReport.to_dict`) and its renderings (:meth:`~AbstractReport.print`,
:meth:`~AbstractReport.markdown`); writing a file is done here, once, atomically (a reader
sees the old file or the new one, never half of one), and the CLI asks only this interface.

Renderings are functions in their own modules (:mod:`xgrad.report.text`, ...) that take the
report; a report class imports its renderers, never the other way round.
"""

from __future__ import annotations

import abc
import json
import os
from pathlib import Path

from xgrad._io import atomic_write
from xgrad.errors import GradientMismatchError, OutputError

__all__ = ["AbstractReport", "write_text"]


def write_text(path: str | os.PathLike | None, text: str) -> str:
    """Write ``text`` to ``path`` atomically when a path is given; return ``text``."""
    if path is not None:
        atomic_write(path, lambda f: f.write(text), binary=False)
    return text


class AbstractReport(abc.ABC):
    """What every report answers.

    Subclasses implement :attr:`ok`, :meth:`summary`, :meth:`to_dict`, :meth:`print` and
    :meth:`markdown`; they may add :meth:`diagnosis_lines`, :attr:`notes` and :meth:`plot`.
    """

    @property
    @abc.abstractmethod
    def ok(self) -> bool:
        """Whether everything compared passes (the CLI's exit status 0)."""

    @abc.abstractmethod
    def summary(self) -> str:
        """The verdict in one line (``OK: ...``, ``MISMATCH: ...``)."""

    @abc.abstractmethod
    def to_dict(self, *, timing: bool = True) -> dict:
        """The report as JSON-ready data (its schema named under ``"schema"``); ``timing``:
        include the seconds each phase took (not deterministic)."""

    @abc.abstractmethod
    def print(self, console=None) -> None:
        """Print the report to a ``rich`` console (a new one when ``None``)."""

    @abc.abstractmethod
    def markdown(self) -> str:
        """The report as Markdown text."""

    # -- shared --------------------------------------------------------------------------------

    @property
    def notes(self) -> tuple[str, ...]:
        """What the reader should know beside the verdict."""
        return ()

    def diagnosis_lines(self) -> list[str]:
        """One line per explanation of a failure (none when nothing failed)."""
        return []

    def mismatch_message(self) -> str:
        """The text of :meth:`raise_for_mismatch`'s error."""
        return "\n".join([self.summary(), *self.diagnosis_lines()])

    def raise_for_mismatch(self) -> None:
        """Raise :class:`~xgrad.GradientMismatchError` unless :attr:`ok`."""
        __tracebackhide__ = True
        if not self.ok:
            raise GradientMismatchError(self.mismatch_message())

    def to_json(self, path: str | os.PathLike | None = None, *, timing: bool = True) -> str:
        """The report as JSON text; also written to ``path`` (atomically) when given."""
        text = json.dumps(self.to_dict(timing=timing), indent=2, allow_nan=False) + "\n"
        return write_text(path, text)

    def to_markdown(self, path: str | os.PathLike | None = None) -> str:
        """The report as Markdown; also written to ``path`` (atomically) when given."""
        return write_text(path, self.markdown())

    def plot(self, path: str | os.PathLike) -> Path:
        """Write a PNG of the report. Reports without a picture refuse.

        Raises:
            OutputError: this kind of report has no plot.
        """
        raise OutputError(f"a {type(self).__name__} has no plot; write --json or --markdown")
