"""Where ``dtype`` is named: at the unit whose outputs carry the lower precision's rounding.
A candidate computing in float32 when float64 was asked parts from the reference at its
first layer by float32 rounding; a 16-bit layer deeper in it is where it parts beyond that,
and where it is named."""

from __future__ import annotations

import numpy as np
import pytest
from _ports import reference, x
from conftest import INSTALLED

import xgrad

needs_jax = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
if "jax" in INSTALLED:
    import jax.numpy as jnp


def _port(p, x):
    """Pure JAX, which computes in float32 (x64 off), its third layer all in bfloat16."""
    h = jnp.tanh(x @ p["w0"] + p["b0"])
    h = jnp.tanh(h @ p["w1"] + p["b1"])
    low = jnp.bfloat16
    h = jnp.tanh(h.astype(low) @ p["w2"].astype(low) + p["b2"].astype(low)).astype(jnp.float32)
    return h @ p["w3"] + p["b3"]


@needs_jax
def test_a_bfloat16_layer_in_a_float64_comparison_is_named_at_its_layer_not_the_first():
    spec, params = reference([xgrad.Dense(8, "tanh")] * 3 + [xgrad.Dense(3)], 6)
    params = {k: v.astype(np.float64) for k, v in params.items()}
    shapes = {
        f"{w}{i}": params[f"layers.{i}.{n}"].shape
        for i in range(4)
        for w, n in (("w", "kernel"), ("b", "bias"))
    }
    port = (_port, {k: jnp.zeros(shape, jnp.float32) for k, shape in shapes.items()})
    report = xgrad.compare_models((spec, params), port, x(6).astype(np.float64))
    first, besides = report.diagnoses
    assert (first.cause, first.layer, first.confirmed) == ("dtype", "layers.2", True)
    assert "computes this layer in bfloat16" in first.detail
    assert (besides.cause, besides.layer) == ("dtype", None)
    assert "candidate computes in float32" in besides.detail
