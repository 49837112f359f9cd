"""The kind tables against the layer registry: every (kind, framework) pair of LAYERS x
REGISTRY has an entry, and a missing entry is refused by name before anything computes."""

from __future__ import annotations

import dataclasses
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


# -- a kind from outside: mistakes are named, not raised bare ---------------------------------


@dataclasses.dataclass(frozen=True)
class Gain(xgrad.layers.AbstractLayer):
    """``y = x * g``, for the tests below."""

    kind = "gain"

    def param_names(self):
        return ("g",)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def weight_shapes(self, input_shape):
        return {"g": (input_shape[-1],)}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        return {"g": rng.uniform(0.5, 1.5, size=(input_shape[-1],))}

    def forward(self, weights, x, *, path):
        return xgrad.layers.Step(path, self, x, x * weights[f"{path}.g"])

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        grads[f"{step.path}.g"] = (grad_output * step.input).sum(axis=0)
        return grad_output * weights[f"{step.path}.g"]


@pytest.fixture
def gain():
    yield Gain
    for name in REGISTRY:
        if name in INSTALLED:
            xgrad.get_framework(name).kinds().unregister("gain")
    xgrad.layers.unregister_layer("gain")


def test_a_spec_with_an_unregistered_kind_names_the_fix():
    with pytest.raises(xgrad.SpecError, match=re.escape("register_layer(Gain)")):
        xgrad.MLP(3, [xgrad.Dense(3), Gain()])


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
def test_an_entry_of_the_wrong_type_or_a_failing_one_is_a_framework_error(gain):
    from xgrad.frameworks.jax.kinds import JaxKind

    xgrad.layers.register_layer(gain)
    table = xgrad.get_framework("jax").kinds()
    with pytest.raises(xgrad.FrameworkError, match="must be a JaxKind"):
        table.register("gain", lambda layer, path, block: None)
    table.register("gain", JaxKind(lambda layer, path, block: lambda w, x: x * w["g"]))
    spec = xgrad.MLP(3, [xgrad.Dense(3), gain()])
    with pytest.raises(
        xgrad.FrameworkError, match=r"layer layers.1: the jax entry of layer kind 'gain' failed"
    ):
        xgrad.compare(spec, np.ones((2, 3)), frameworks="numpy,jax")


@pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
def test_an_entry_naming_no_weight_or_a_wrong_one_is_named(gain):
    import torch

    from xgrad.frameworks.torch.kinds import TorchKind

    class Module(torch.nn.Module):
        def __init__(self, d, dtype):
            super().__init__()
            self.g = torch.nn.Parameter(torch.ones(d, dtype=dtype))

        def forward(self, x):
            return x * self.g

    xgrad.layers.register_layer(gain)
    table = xgrad.get_framework("torch").kinds()
    spec = xgrad.MLP(3, [xgrad.Dense(3), gain()])
    build = lambda layer, path, shape, dtype, child: Module(shape[-1], dtype)  # noqa: E731
    table.register("gain", TorchKind(build))
    with pytest.raises(xgrad.FrameworkError, match="names no native weight for 'g'"):
        xgrad.compare(spec, np.ones((2, 3)), frameworks="numpy,torch")
    table.register("gain", TorchKind(build, weights={"g": "gain"}))
    with pytest.raises(xgrad.FrameworkError, match=re.escape("names 'g' '1.gain', which")):
        xgrad.compare(spec, np.ones((2, 3)), frameworks="numpy,torch")


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="tensorflow is not installed")
def test_a_keras_layer_ignoring_its_weight_is_a_mismatch_not_a_tensorflow_crash(gain):
    from xgrad.frameworks.tensorflow.kinds import KerasKind
    from xgrad.frameworks.tensorflow.ops import keras

    class Ignores(keras.layers.Layer):
        def build(self, input_shape):
            self.g = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="g")

        def call(self, x):
            return x  # the planted bug: g is never used

    xgrad.layers.register_layer(gain)
    entry = KerasKind(
        lambda layer, name, dtype: Ignores(name=name, dtype=dtype), weights={"g": "g"}
    )
    xgrad.get_framework("tensorflow").kinds().register("gain", entry)
    spec = xgrad.MLP(3, [xgrad.Dense(3), gain()])
    report = xgrad.compare(spec, np.ones((2, 3)), frameworks="numpy,tensorflow")
    assert not report.ok
    assert report.divergences[0].path == "layers.1"
    g = next(e for e in report.parameters if e.name == "layers.1.g")
    assert g.results["tensorflow"].rel_norm == pytest.approx(1.0)  # its gradient is zero


@pytest.mark.skipif({"jax", "torch"} - INSTALLED, reason="jax and torch are needed")
def test_frameworks_agreeing_with_each_other_but_not_the_reference_point_at_the_reference():
    from dataclasses import replace

    spec = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2)])
    report = xgrad.compare(spec, np.ones((2, 3)), frameworks="jax,torch")
    assert report.ok and not any("likely culprit" in n for n in report.notes)

    from xgrad.comparison.verdicts import consensus_note

    pairs = [replace(p, rel_norm=1e-7) for p in report.pairwise]
    assert "likely culprit" in consensus_note(pairs, {"jax", "torch"}, 2, 1e-5)
    assert consensus_note(pairs, {"jax"}, 2, 1e-5) is None
    assert consensus_note([replace(pairs[0], rel_norm=0.1)], {"jax", "torch"}, 2, 1e-5) is None
