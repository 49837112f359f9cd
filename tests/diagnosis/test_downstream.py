"""Every diverging unit diagnosed, not just the first: a unit after the first divergence
diverges in its own right only if the reference's unit, fed the candidate's input to it,
still differs from the candidate's output; the units that only carry a difference made
before them are named downstream and not diagnosed again."""

from __future__ import annotations

import json

import pytest
from _ports import reference, x
from conftest import INSTALLED

import xgrad

needs_torch = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
needs_jax = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
if "torch" in INSTALLED:
    import torch
    from torch import nn
if "jax" in INSTALLED:
    import jax.numpy as jnp


def _causes(report):
    return [(d.cause, d.layer, d.confirmed) for d in report.diagnoses]


@needs_torch
def test_two_wrong_layernorm_epsilons_are_both_named():
    """Keras' LayerNorm epsilon (1e-3) in the reference, PyTorch's default (1e-5) in both
    norms of the port: two units differ in their own right."""
    ref = reference(
        [
            xgrad.Dense(8, "tanh"),
            xgrad.LayerNorm(),
            xgrad.Dense(8, "relu"),
            xgrad.LayerNorm(),
            xgrad.Dense(3),
        ],
        6,
    )
    torch.manual_seed(0)
    port = nn.Sequential(
        nn.Linear(6, 8),
        nn.Tanh(),
        nn.LayerNorm(8),
        nn.Linear(8, 8),
        nn.ReLU(),
        nn.LayerNorm(8),
        nn.Linear(8, 3),
    )
    report = xgrad.compare_models(ref, port, x(6))
    assert _causes(report) == [
        ("layernorm-epsilon", "layers.1", True),
        ("layernorm-epsilon", "layers.3", True),
    ]
    assert report.divergences[0].path == "layers.1"  # the first stays the headline
    for d in report.diagnoses:
        assert "reference epsilon 0.001, candidate 1e-05" in d.detail
        assert d.where == "forward" and d.residual <= report.tolerance < d.before
    # the second norm's own error is its own: smaller than what its output carries from
    # the first (its entry in the layer table)
    second = next(layer for layer in report.layers if layer.path == "layers.3")
    assert report.diagnoses[1].before < second.forward["torch"].rel_norm
    assert (
        "torch: layers.2 differs only downstream of layers.1; layers.4 differs only "
        "downstream of layers.3" in report.notes[-1]
    )
    assert report.summary().endswith(
        "; 2 units diverge in their own right: layers.1 (layernorm-epsilon), "
        "layers.3 (layernorm-epsilon)"
    )
    data = json.loads(report.to_json(timing=False))
    assert [d["layer"] for d in data["diagnoses"]] == ["layers.1", "layers.3"]
    assert data["first_divergence"]["path"] == "layers.1"


@needs_torch
def test_units_that_only_carry_the_first_difference_are_not_diagnosed_again():
    """One wrong epsilon before a residual block: the block, its layers and the norm after it
    all differ, downstream of it only."""
    ref = reference(
        [
            xgrad.Dense(8, "tanh"),
            xgrad.LayerNorm(),
            xgrad.Residual([xgrad.Dense(8, "relu"), xgrad.Dense(8)]),
            xgrad.LayerNorm(),
            xgrad.Dense(3),
        ],
        6,
    )

    class Port(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.ln1 = nn.Linear(6, 8), nn.LayerNorm(8)  # PyTorch's epsilon
            self.inner1, self.inner2 = nn.Linear(8, 8), nn.Linear(8, 8)
            self.ln2, self.out = nn.LayerNorm(8, eps=1e-3), nn.Linear(8, 3)

        def forward(self, x):
            h = self.ln1(torch.tanh(self.fc1(x)))
            h = h + self.inner2(torch.relu(self.inner1(h)))
            return self.out(self.ln2(h))

    report = xgrad.compare_models(ref, Port(), x(6))
    failing = {layer.path for layer, fw, where, _ in report.layer_failures() if where == "forward"}
    assert {"layers.2", "layers.2.layers.0", "layers.3", "layers.4"} <= failing
    assert _causes(report) == [("layernorm-epsilon", "layers.1", True)]
    assert (
        "torch: layers.2.layers.0, layers.2.layers.1, layers.2, layers.3, layers.4 differ "
        "only downstream of layers.1" in report.notes[-1]
    )
    assert "own right" not in report.summary()


@needs_torch
def test_two_different_causes_in_two_layers():
    """The port's first GELU is the tanh form, and its LayerNorm takes PyTorch's epsilon."""
    ref = reference([xgrad.Dense(8, "gelu"), xgrad.LayerNorm(), xgrad.Dense(3)], 6)
    torch.manual_seed(0)
    port = nn.Sequential(
        nn.Linear(6, 8), nn.GELU(approximate="tanh"), nn.LayerNorm(8), nn.Linear(8, 3)
    )
    report = xgrad.compare_models(ref, port, x(6, scale=2.0))
    assert _causes(report) == [
        ("gelu-approximation", "layers.0", True),
        ("layernorm-epsilon", "layers.1", True),
    ]


def _zeros(shapes):
    return {k: jnp.zeros(shape) for k, shape in shapes.items()}


@needs_jax
def test_two_kink_conventions_backward_are_both_named():
    """``jnp.maximum(z, 0)`` (derivative 0.5 at 0) in both ReLU layers of a JAX port, with
    pre-activations exactly at the kink in both: every output agrees, and both layers'
    backward differ in their own right, the one nearer the output first."""
    spec, params = reference([xgrad.Dense(6, "relu"), xgrad.Dense(6, "relu"), xgrad.Dense(3)], 4)
    params["layers.0.bias"][:] = 0
    params["layers.1.bias"][:] = 0  # zero rows stay exactly at the kink in both layers
    xs = x(4)
    xs[::2] = 0.0

    def port(p, x):
        h = jnp.maximum(x @ p["w0"] + p["b0"], 0)
        h = jnp.maximum(h @ p["w1"] + p["b1"], 0)
        return h @ p["w2"] + p["b2"]

    shapes = {"w0": (4, 6), "b0": (6,), "w1": (6, 6), "b1": (6,), "w2": (6, 3), "b2": (3,)}
    report = xgrad.compare_models((spec, params), (port, _zeros(shapes)), xs)
    assert all(layer.forward["jax"].status == "match" for layer in report.layers)
    assert [(d.cause, d.layer, d.where) for d in report.diagnoses] == [
        ("kink-convention", "layers.1", "backward"),
        ("kink-convention", "layers.0", "backward"),
    ]
    assert all(d.confirmed and "derivative there is 0.5" in d.detail for d in report.diagnoses)
    assert "2 units diverge in their own right" in report.summary()


def _norm_port(relu):
    """A JAX port of Dense(relu) -> LayerNorm -> Dense whose norm takes PyTorch's epsilon."""

    def port(p, x):
        h = relu(x @ p["w0"] + p["b0"])
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        h = (h - mean) / jnp.sqrt(var + 1e-5) * p["g"] + p["be"]
        return h @ p["w2"] + p["b2"]

    return port


@needs_jax
def test_a_backward_difference_before_a_forward_one_is_named_too():
    """A kink convention in the first layer, a LayerNorm written with PyTorch's epsilon in the
    second: the forward divergence is the headline, the first layer's own backward follows.
    With a ReLU whose derivative at 0 is the reference's, the first layer's gradients differ
    only through the norm's and are not blamed on it."""
    spec, params = reference([xgrad.Dense(6, "relu"), xgrad.LayerNorm(), xgrad.Dense(3)], 4)
    params["layers.0.bias"][:] = 0
    xs = x(4)
    xs[1] = 0.0
    shapes = {"w0": (4, 6), "b0": (6,), "g": (6,), "be": (6,), "w2": (6, 3), "b2": (3,)}

    def half_at_zero(z):
        return jnp.maximum(z, 0)  # derivative 0.5 at 0

    def zero_at_zero(z):
        return jnp.where(z > 0, z, 0.0)  # derivative 0 at 0, as the reference's

    report = xgrad.compare_models((spec, params), (_norm_port(half_at_zero), _zeros(shapes)), xs)
    assert [(d.cause, d.layer, d.where, d.confirmed) for d in report.diagnoses] == [
        ("layernorm-epsilon", "layers.1", "forward", True),
        ("kink-convention", "layers.0", "backward", True),
    ]
    report = xgrad.compare_models((spec, params), (_norm_port(zero_at_zero), _zeros(shapes)), xs)
    assert [(d.cause, d.layer) for d in report.diagnoses] == [("layernorm-epsilon", "layers.1")]
    assert "the gradients of layers.0 differ only through those of layers.1" in report.notes[-1]
