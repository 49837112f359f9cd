"""report.repro: a standalone script reproducing where a port parts, run without xgrad."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif({"torch", "flax"} - INSTALLED, reason="needs torch and flax")

BLOCK_XGRAD = (
    "import sys, runpy; sys.modules['xgrad'] = None; "  # importing xgrad would fail
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


def _models(form: str, eps: float = 1e-5):
    import jax
    import torch
    from flax import nnx
    from torch import nn

    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3))

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(6, 8, rngs=rngs)
            self.ln = nnx.LayerNorm(8, epsilon=eps, rngs=rngs)
            self.l2 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.ln(jax.nn.gelu(self.l1(x), approximate=form == "tanh")))

    return reference, Port(nnx.Rngs(0))


X = 2 * np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)


def _run(script) -> str:
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_XGRAD, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout


def test_the_script_rebuilds_the_diverging_unit_in_both_frameworks_without_xgrad(tmp_path):
    report = xgrad.compare_models(*_models("tanh"), X)
    assert report.diagnoses[0].cause == "gelu-approximation"
    (script,) = report.repro(tmp_path)
    assert script.name == "repro_flax.nnx.py" and (tmp_path / "repro_flax.nnx.npz").exists()
    text = script.read_text()
    assert "import torch" in text and "import jax" in text and "xgrad" not in text.split('"""')[2]
    printed = _run(script)
    assert "8:linear -> gelu) against flax.nnx" in printed and "gelu_tanh" in printed
    assert "cause: gelu-approximation" in printed
    rel = float(printed.split("relative difference of the outputs: ")[1].split()[0])
    measured = report.layers[0].forward["flax.nnx"].rel_norm  # the unit, as xgrad compared it
    assert rel == pytest.approx(measured, rel=0.05) and rel > 1e-5


def test_a_correct_port_or_an_opaque_module_says_why_nothing_is_written(tmp_path):
    report = xgrad.compare_models(*_models("erf"), X)
    assert report.ok
    with pytest.raises(xgrad.OutputError, match="no diverging unit to reproduce"):
        report.repro(tmp_path)
    import torch
    from torch import nn

    class Odd(nn.Module):  # a module of no kind xgrad knows, with a planted difference
        def __init__(self, shift):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4))
            self.shift = shift

        def forward(self, x):
            return x * self.w + self.shift * x**2

    ref = nn.Sequential(nn.Linear(3, 4), Odd(0.0))
    cand = nn.Sequential(nn.Linear(3, 4), Odd(0.5))
    report = xgrad.compare_models(ref, cand, np.ones((2, 3), np.float32))
    assert not report.ok
    (npz,) = report.repro(tmp_path / "odd")  # its data alone: no code can be written out
    assert npz.suffix == ".npz" and not list((tmp_path / "odd").glob("*.py"))
    assert "no layer kind xgrad knows" in report.repro_units[0].refused
    with np.load(npz, allow_pickle=False) as data:
        assert {"input", "reference_output", "candidate_output", "reference.w"} <= set(data)
        np.testing.assert_allclose(data["candidate_output"] - data["reference_output"],
                                   0.5 * data["input"] ** 2, rtol=1e-5, atol=1e-6)  # fmt: skip
