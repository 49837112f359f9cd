"""ReportSet: several reports under the one report protocol, written as before."""

from __future__ import annotations

import doctest
import json

import numpy as np
import pytest
from planted import no_transpose
from rich.console import Console

import xgrad
import xgrad.report.collection
from xgrad.report import ReportSet
from xgrad.report.base import AbstractReport

SPEC = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])


def _report(*frameworks, title):
    return xgrad.compare(
        SPEC, np.ones((2, 4)), frameworks=list(frameworks), dtype="float64", title=title
    )


@pytest.fixture(scope="module")
def reports():
    return [_report("numpy", title="good"), _report("numpy", no_transpose(), title="planted")]


def test_it_is_a_report_and_passes_only_when_every_report_does(reports):
    good, bad = reports
    assert isinstance(ReportSet("s/1", []), AbstractReport)
    assert ReportSet("s/1", [good, good]).ok
    assert ReportSet("s/1", [good, good]).summary() == "OK: every gradient matches in all 2 reports"
    both = ReportSet("s/1", [good, bad])
    assert not both.ok and both.summary() == "MISMATCH in 1 of 2 reports"
    assert both.diagnosis_lines() == bad.diagnosis_lines() and bad.diagnosis_lines()
    with pytest.raises(xgrad.GradientMismatchError, match="MISMATCH in 1 of 2 reports"):
        both.raise_for_mismatch()


def test_json_is_the_reports_json_under_its_schema(reports, tmp_path):
    both = ReportSet("xgrad.examples/1", reports)
    text = both.to_json(tmp_path / "r.json")
    # the bytes xgrad examples has always written
    expected = {
        "schema": "xgrad.examples/1",
        "ok": False,
        "reports": [r.to_dict() for r in reports],
    }
    assert text == json.dumps(expected, indent=2, allow_nan=False) + "\n"
    assert (tmp_path / "r.json").read_text() == text
    untimed = json.loads(both.to_json(timing=False))
    assert [r.get("timing") for r in untimed["reports"]] == [None, None]


def test_markdown_and_printout_are_the_reports_one_after_the_other(reports, tmp_path):
    both = ReportSet("s/1", reports)
    md = both.to_markdown(tmp_path / "r.md")
    assert md == "\n".join(r.markdown() for r in reports) == (tmp_path / "r.md").read_text()
    console = Console(record=True, width=200)
    both.print(console)
    text = console.export_text()
    assert text.index("planted") > text.index("OK: every gradient matches")
    with pytest.raises(xgrad.OutputError, match="a ReportSet has no plot"):
        both.plot(tmp_path / "r.png")


def test_docstring_example():
    assert doctest.testmod(xgrad.report.collection).failed == 0
