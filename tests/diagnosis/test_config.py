"""Configuration differences (:mod:`xgrad.diagnosis.config`): how far another configuration
moves a layer at other inputs, measured on a seeded dL/d output of its own stream, on
token-wise values seen as vectors; an unexplained diagnosis beside one says so."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.comparison.assemble import _with_config_hint
from xgrad.diagnosis.config import SCALES, ConfigDiff, _effect
from xgrad.diagnosis.records import Diagnosis
from xgrad.layers import LayerNorm


def _layernorm_change(x: np.ndarray, eps_a: float, eps_b: float) -> float:
    """By hand: the relative change of a LayerNorm's output (unit scale, no bias) between
    two epsilons, the worst over the scales the effect tries."""
    worst = 0.0
    for s in SCALES:
        z = s * x - (s * x).mean(-1, keepdims=True)
        var = (z**2).mean(-1, keepdims=True)
        a, b = z / np.sqrt(var + eps_a), z / np.sqrt(var + eps_b)
        worst = max(worst, np.linalg.norm(a - b) / np.linalg.norm(a))
    return worst


def test_the_effect_of_an_epsilon_is_of_the_size_its_formula_gives_on_inputs_from_seed_0():
    # the inputs users draw first; the effect's own dL/d output once equalled them, and a
    # LayerNorm's VJP maps its own input to almost nothing: the effect read 0.9
    x = np.random.default_rng(0).standard_normal((10, 16))
    weights = {"scale": np.ones(16), "bias": np.zeros(16)}
    effect = _effect([LayerNorm(1e-5)], 0, LayerNorm(1e-6), weights, x)
    by_hand = _layernorm_change(x, 1e-5, 1e-6)
    assert by_hand <= effect < 10 * by_hand, (effect, by_hand)


@pytest.mark.skipif(not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed")
def test_a_token_wise_norm_is_measured_on_its_vectors():
    import torch
    from flax import nnx

    class Port(nnx.Module):
        def __init__(self, rngs):
            self.norm = nnx.LayerNorm(16, epsilon=1e-6, rngs=rngs)
            self.fc = nnx.Linear(16, 4, rngs=rngs)

        def __call__(self, x):
            return self.fc(self.norm(x))

    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    x = np.random.default_rng(0).standard_normal((2, 5, 16)).astype(np.float32)
    report = xgrad.compare_models(ref, Port(nnx.Rngs(0)), x)
    (diff,) = report.config_diffs
    assert diff.fields == {"epsilon": (1e-5, 1e-6)}
    by_hand = _layernorm_change(x.reshape(-1, 16).astype(np.float64), 1e-5, 1e-6)
    assert by_hand <= diff.effect < 10 * by_hand, (diff.effect, by_hand)


def test_an_unexplained_diagnosis_names_the_configuration_that_differs():
    diff = ConfigDiff("ln1", {"reference": "ln1", "jax": "ln1"}, "layernorm",
                      {"epsilon": (1e-5, 1e-6)}, 7e-4, True)  # fmt: skip
    found = [
        Diagnosis("unexplained", "none of the known causes fits", False,
                  layer="k", where="backward", framework="jax"),
        Diagnosis("gelu-approximation", "tanh", True, layer="fc", where="forward",
                  framework="jax"),
    ]  # fmt: skip
    hinted = _with_config_hint(found, (diff,), "jax")
    assert hinted[0].detail.startswith("none of the known causes fits. A configuration differs")
    assert "epsilon 1e-05 vs 1e-06" in hinted[0].detail and "compare again" in hinted[0].detail
    assert hinted[1] == found[1]
    assert _with_config_hint(found, (diff,), "torch") == found  # another side's difference
