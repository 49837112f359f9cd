"""The Report's renderings: terminal table, Markdown, PNG, and safe file output."""

from __future__ import annotations

import numpy as np
import pytest
from planted import no_transpose, planted

import xgrad


def _planted_report(**kwargs):
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    return xgrad.compare(
        spec, np.ones((2, 4)), frameworks=["numpy", no_transpose()], dtype="float64", **kwargs
    )


def test_report_renders_table_markdown_and_plot(tmp_path):
    report = _planted_report(title="planted")
    text = report.to_text(width=200)
    assert "dL/d layers.0.kernel" in text and "no-transpose" in text and "mismatch" in text
    assert "MISMATCH: " in text and "per layer: output (forward)" in text
    md = report.to_markdown(tmp_path / "r.md")
    assert "| entry | shape | framework | native name |" in md
    assert "| dL/d input | (2, 4) | no-transpose | `input` | " in md
    assert (tmp_path / "r.md").read_text() == md
    png = report.plot(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_plot_is_a_png_or_refused(tmp_path):
    report = _planted_report()
    with pytest.raises(xgrad.OutputError, match=r"PNG images; name it \*\.png"):
        report.plot(tmp_path / "r.pdf")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_raises_output_error_and_writes_nothing(tmp_path):
    spec = xgrad.MLP(2, [xgrad.Dense(2)])
    report = xgrad.compare(spec, np.ones((1, 2)), frameworks="numpy")
    with pytest.raises(xgrad.OutputError, match="does not exist; create it first"):
        report.to_json(tmp_path / "missing" / "r.json")
    with pytest.raises(xgrad.OutputError, match="is a folder"):
        report.to_markdown(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_names_in_brackets_are_printed_not_taken_as_markup():
    bold = planted("bold")  # a rich style name: as markup, "[bold]" would vanish
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    report = xgrad.compare(
        spec, np.ones((2, 4)), frameworks=["numpy", no_transpose(), bold], dtype="float64"
    )
    text = report.to_text(width=250)
    assert "[no-transpose]" in text
    assert " bold " in text


def test_compact_table_for_narrow_terminals():
    report = xgrad.compare(xgrad.MLP(3, [xgrad.Dense(2)]), np.ones((1, 3)), frameworks="numpy")
    narrow = report.to_text(width=100)
    header = next(line for line in narrow.splitlines() if "entry" in line)
    assert "rel norm" in header and "ULP" not in header and "cosine" not in header
    assert "(left out at 100 columns wide: max abs, cosine, ULP;" in narrow
    wide = report.to_text(width=200)
    header = next(line for line in wide.splitlines() if "entry" in line)
    assert "ULP" in header and "cosine" in header and "left out" not in wide
