"""The kind tables against the layer registry: every (kind, framework) pair of LAYERS x
REGISTRY has an entry, and a missing entry is refused by name before anything computes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.frameworks.kinds import KindNotSupportedError, KindTable, inverse, to_canonical
from xgrad.frameworks.registry import REGISTRY


def test_every_framework_builds_every_layer_kind():
    missing = [
        f"{kind} in {name}"
        for name in REGISTRY
        if name in INSTALLED
        for kind in xgrad.LAYERS
        if kind not in xgrad.get_framework(name).kinds()
    ]
    assert not missing, "layer kinds without an entry: " + ", ".join(missing)


def test_a_table_holds_registered_kinds_only():
    for name in REGISTRY:
        if name in INSTALLED:
            assert set(xgrad.get_framework(name).kinds()) <= set(xgrad.LAYERS), name
    with pytest.raises(xgrad.FrameworkError, match="'nope' is not a layer kind"):
        KindTable("toy").register("nope", object())


@pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
def test_a_missing_entry_is_refused_naming_layer_kind_and_framework(monkeypatch):
    from xgrad.frameworks.torch.kinds import KINDS

    monkeypatch.setattr(KINDS, "_entries", {k: v for k, v in KINDS.items() if k != "layernorm"})
    spec = xgrad.MLP(3, [xgrad.Dense(4), xgrad.LayerNorm(), xgrad.Dense(2)])
    with pytest.raises(
        KindNotSupportedError,
        match=re.escape("layer layers.1: xgrad cannot build a layernorm layer in torch"),
    ):
        xgrad.compare(spec, np.ones((2, 3)), frameworks="numpy,torch")


def test_layouts_are_axis_permutations_both_ways():
    canonical = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (kh, kw, in, out)
    layout = (3, 2, 0, 1)  # torch's (out, in, kh, kw)
    native = np.transpose(canonical, layout)
    assert native.shape == (5, 4, 2, 3)
    assert np.array_equal(to_canonical(native, layout), canonical)
    assert inverse(inverse(layout)) == layout
    assert to_canonical(canonical, None) is canonical
