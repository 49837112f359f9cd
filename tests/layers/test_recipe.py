"""docs/design.md's recipe for a new layer kind, run through the public API: a Scale layer
registered in xgrad and one entry per framework compares in all five frameworks; its VJP
holds against finite differences; before its entries exist, each framework refuses it by
name. The recipe's code is read from the page, so the page and this test cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import FRAMEWORKS, INSTALLED

import xgrad
from xgrad.frameworks.kinds import KindNotSupportedError

PAGE = Path(__file__).resolve().parents[2] / "docs" / "design.md"


def _recipe_blocks() -> list[str]:
    text = PAGE.read_text()
    section = text[
        text.index("## Recipe: add a layer kind") : text.index("## Recipe: add a framework")
    ]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture
def namespace():
    ns: dict = {"__name__": "recipe"}
    yield ns
    for name in ("torch", "tensorflow", "jax", "flax"):
        if name in INSTALLED:
            xgrad.get_framework(name).kinds().unregister("scale")
    xgrad.layers.unregister_layer("scale")


def test_the_recipe_has_three_steps():
    assert len(_recipe_blocks()) == 3


def test_the_scale_vjp_matches_finite_differences(namespace):
    exec(_recipe_blocks()[0], namespace)
    scale, rng = namespace["Scale"](), np.random.default_rng(3)
    x, s, g = rng.standard_normal((4, 3)), rng.standard_normal(3), rng.standard_normal((4, 3))
    weights = {"layers.0.s": s}
    step = scale.forward(weights, x, path="layers.0")
    grads: dict = {}
    dx = scale.vjp(weights, step, g, grads)

    def loss(xx, ss):
        return float(np.sum(g * scale.forward({"layers.0.s": ss}, xx, path="layers.0").output))

    h = 1e-6
    fd_s = [(loss(x, s + h * e) - loss(x, s - h * e)) / (2 * h) for e in np.eye(3)]
    fd_x = np.array(
        [(loss(x + h * e, s) - loss(x - h * e, s)) / (2 * h) for e in np.eye(12).reshape(12, 4, 3)]
    ).reshape(4, 3)
    assert np.allclose(grads["layers.0.s"], fd_s, atol=1e-8)
    assert np.allclose(dx, fd_x, atol=1e-8)


@pytest.mark.skipif(set(FRAMEWORKS) - INSTALLED, reason="the recipe uses every framework")
def test_a_kind_without_entries_is_refused_then_compares_everywhere_with_them(namespace):
    first, entries, run = _recipe_blocks()
    exec(first, namespace)
    spec = xgrad.MLP(4, [xgrad.Dense(3), namespace["Scale"]()])
    for name in ("jax", "flax", "tensorflow", "torch"):
        with pytest.raises(KindNotSupportedError, match=f"cannot build a scale layer in {name}"):
            xgrad.compare(spec, np.ones((2, 4)), frameworks=f"numpy,{name}")
    exec(entries, namespace)
    exec(run.replace("for name in ENTRIES:", "for name in ():"), namespace)  # keep entries
    report = namespace["report"]
    assert report.ok and report.frameworks == ("numpy", "jax", "flax", "tensorflow", "torch")
    assert all(m.rel_norm <= 1e-12 for e in report.entries for m in e.results.values())
