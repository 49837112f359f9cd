"""The code between two modules, in a model read module by module: placed between them and
diagnosed when it is an activation (xgrad.diagnosis.code)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")


def _block(approximate: str, slope: float | None = None):
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):  # an activation written as a call in forward, not a module
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(8)
            self.fc = nn.Linear(8, 16)
            self.proj = nn.Linear(16, 8)

        def forward(self, x):
            h = self.fc(self.norm(x))
            h = F.gelu(h, approximate=approximate) if slope is None else F.leaky_relu(h, slope)
            return x + self.proj(h)

    torch.manual_seed(0)
    return Block()


X = 2 * np.random.default_rng(0).standard_normal((3, 4, 8)).astype(np.float32)


def test_an_activation_call_between_modules_is_placed_and_named():
    assert xgrad.compare_models(_block("none"), _block("none"), X).ok
    report = xgrad.compare_models(_block("none"), _block("tanh"), X, transfer=True)
    d = report.divergences[0]
    assert d.path == "" and d.between == {"reference": ("fc", "proj"), "torch": ("fc", "proj")}
    assert d.detail.startswith("the code in it between fc and proj")
    assert (report.diagnoses[0].cause, report.diagnoses[0].confirmed) == (
        "gelu-approximation",
        True,
    )


def test_a_slope_written_in_code_is_named_and_other_code_is_unexplained():
    report = xgrad.compare_models(_block("", 0.01), _block("", 0.2), X, transfer=True)
    assert report.diagnoses[0].cause == "leaky-relu-slope"
    report = xgrad.compare_models(_block("none"), _block("", 0.2), X, transfer=True)
    assert report.diagnoses[0].cause == "activation-mismatch"
