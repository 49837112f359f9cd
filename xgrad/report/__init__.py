"""The Report: every framework's gradients against the reference, and its renderings.

:mod:`xgrad.report.data` holds the data (:class:`Report`, :class:`Entry`,
:class:`LayerEntry`, :class:`Divergence`, :class:`Pairwise`) and its JSON form (schema in
``docs/report-schema.md``); one module per rendering: :mod:`~xgrad.report.text` (rich, for
the terminal), :mod:`~xgrad.report.markdown`, :mod:`~xgrad.report.plot` (PNG). Files are
written atomically: a reader sees the old file or the new one, never half of one.
:class:`ReportSet` (:mod:`xgrad.report.collection`) shows and writes several reports as one.
"""

from xgrad.report.collection import ReportSet
from xgrad.report.data import SCHEMA, Divergence, Entry, LayerEntry, Pairwise, Report

__all__ = ["SCHEMA", "Divergence", "Entry", "LayerEntry", "Pairwise", "Report", "ReportSet"]
