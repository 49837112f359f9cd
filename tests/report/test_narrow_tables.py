"""Tables at 80 columns keep every number whole: columns that do not fit are left out (and
named under the table), names fold, and a number is never cut to ``1.…``.

The expected numbers are the report's own values, formatted as every rendering writes them;
the test asks only that each is printed whole, never which digits it has.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console

import xgrad
from xgrad.report.format import fmt

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

WIDTH = 80
X = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)
Y = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32)
_NUMBER = re.compile(r"^-?(\d+(\.\d+)?(e[-+]\d+)?|nan|inf)$")


class Encoder(nn.Module):
    """A model with the long attribute names real code has; ``slope``: the port's planted
    slip, a leaky ReLU where the reference has a ReLU."""

    def __init__(self, slope: float = 0.0) -> None:
        super().__init__()
        self.encoder_input_projection = nn.Linear(6, 16)
        self.decoder_output_projection = nn.Linear(16, 3)
        self.slope = slope

    def forward(self, x):
        h = F.leaky_relu(self.encoder_input_projection(x), self.slope)
        return self.decoder_output_projection(h)


def _pair():
    torch.manual_seed(0)
    reference, port = Encoder(), Encoder(slope=0.1)
    port.load_state_dict(reference.state_dict())
    return reference, port


def _printed(report, width: int = WIDTH) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    report.print(console)
    return console.export_text()


def _cells(text: str) -> list[str]:
    """Every cell of every table row printed."""
    return [
        cell.strip()
        for line in text.splitlines()
        if line.startswith("│")
        for cell in line.strip().strip("│").split("│")
    ]


def _check_whole(text: str, expected: set[str]) -> None:
    """No line wider than the console, nothing cut, every number cell a number, and each
    expected number printed whole in a cell of its own."""
    assert max(len(line.rstrip()) for line in text.splitlines()) <= WIDTH
    assert "…" not in text, text
    cells = _cells(text)
    numeric = [c for c in cells if c[:1].isdigit()]
    assert numeric and all(_NUMBER.match(c) for c in numeric), numeric
    assert expected <= set(cells), expected - set(cells)


def test_a_compare_models_report_at_80_columns_keeps_every_number():
    report = xgrad.compare_models(*_pair(), X)
    assert not report.ok
    text = _printed(report)
    expected = {fmt(m.rel_norm) for e in report.entries for m in e.results.values()}
    expected |= {fmt(m.max_rel) for e in report.entries for m in e.results.values()}
    for layer in report.layers:
        expected |= {fmt(m.rel_norm) for m in (*layer.forward.values(), *layer.backward.values())}
    _check_whole(text, expected)
    assert "left out at 80 columns wide: shape, native name" in " ".join(text.split())
    assert "ULP" in _printed(report, width=200)  # a wide console still shows every column


def test_a_training_report_at_80_columns_keeps_every_number():
    def sgd(params):
        return torch.optim.SGD(params, lr=0.1)

    report = xgrad.compare_training(
        *_pair(),
        X,
        Y,
        loss="mse",
        optimizers=(sgd, sgd),
        steps=3,
        explain=False,
    )
    text = _printed(report)
    expected = {fmt(s.worst.weights) for s in report.steps} | {
        fmt(s.tolerance) for s in report.steps
    }
    _check_whole(text, expected)
    assert "left out at 80 columns wide: loss ref" in " ".join(text.split())


def test_a_sweep_at_80_columns_keeps_every_number():
    from xgrad.sweep import SweepGrid, run_sweep

    grid = SweepGrid(
        activations=("relu", "leaky_relu:0.2"),
        losses=("sum", "cce"),
        dtypes=("float32",),
        batch_sizes=(1, 3),
        hidden=(5,),
        frameworks=("numpy",),
        rtol=1e-9,  # below float32's rounding: every cell fails, with a cause to print
    )
    result = run_sweep(grid)
    text = _printed(result)
    _check_whole(text, {value for _, value, _ in result.rows()})
    assert "(every cell: dtype float32, seed 0)" in text  # one-value axes move to the title
