"""A 16-bit gradient is judged against the 16-bit rounding of the same model, measured.

The 16-bit tolerances are fixed multiples of the unit roundoff (bfloat16: 0.04, about 10 u),
while a 16-bit computation's error grows with the operations a gradient passes through: a
spec of six transformer blocks puts correct bfloat16 gradients at 0.05 to 0.08 of the
float64 reference in every framework. xgrad measures that rounding by computing its NumPy
model of the spec in float16 (every weight and operation rounded), scales it to bfloat16,
and passes a difference within 4 times it (``LOW_PRECISION_NOISE``), never above 0.25. A
planted convention (an attention without its scale, RoPE on the other layout) is still a
mismatch in bfloat16, its cause named.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.comparison.inputs import prepare_inputs
from xgrad.comparison.sides import evaluate
from xgrad.comparison.spread import low_precision_rounding
from xgrad.frameworks.numpy import FRAMEWORK as NUMPY
from xgrad.layers.transformer import transformer_block
from xgrad.metrics.tolerances import LOW_PRECISION_NOISE, TOLERANCES

pytestmark = pytest.mark.skipif("torch" not in INSTALLED, reason="needs torch")

VOCAB, TOKENS, DIM = 16, 6, 16


def _spec(blocks: int, **kw) -> xgrad.MLP:
    layers = [layer for _ in range(blocks) for layer in transformer_block(DIM, 4, 2 * DIM, **kw)]
    return xgrad.MLP(
        (TOKENS,), [xgrad.Embedding(VOCAB, DIM), *layers, xgrad.RMSNorm(), xgrad.Dense(VOCAB)]
    )


def _ids(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (2, TOKENS))


DEEP, SEED = _spec(6), 6
"""Six pre-LN blocks: torch's correct bfloat16 gradients land up to about 0.07 off."""


@pytest.fixture(scope="module")
def deep_bf16():
    return xgrad.compare(DEEP, _ids(SEED), frameworks="torch", dtype="bfloat16", seed=SEED)


def test_a_deep_transformer_in_bfloat16_matches_as_rounding(deep_bf16):
    report = deep_bf16
    assert report.ok, report.summary()
    beyond = [e.name for e in report.parameters if e.results["torch"].rel_norm > 0.04]
    assert beyond, "no gradient beyond the bfloat16 tolerance: the rule was not exercised"
    note = next(n for n in report.notes if "by bfloat16 rounding" in n)
    assert note.startswith("torch: ") and "compare in float32" in note
    assert beyond[0] in note
    assert all(e.results["torch"].rel_norm <= 0.25 for e in report.parameters)


def test_the_same_framework_in_float32_matches_at_float32s_tolerance():
    # what says the bfloat16 differences are rounding, independently of the rule: torch
    # computes the same function as the reference, to float32's tolerance
    report = xgrad.compare(DEEP, _ids(SEED), frameworks="torch", dtype="float32", seed=SEED)
    assert report.ok, report.summary()
    assert max(e.results["torch"].rel_norm for e in report.parameters) < TOLERANCES["float32"]
    assert not any("rounding" in n for n in report.notes)


def test_the_rounding_is_the_float16_models_scaled_to_bfloat16():
    weights = xgrad.init_params(DEEP, SEED)
    ref_model = NUMPY._build(DEEP, weights, "float64")
    inputs = prepare_inputs(ref_model, _ids(SEED), None, "sum")
    ref = evaluate("reference", ref_model, inputs, capture=False, side=0)
    half = NUMPY._build(DEEP, {k: v.astype(np.float16) for k, v in weights.items()}, "float16")
    g16 = half.evaluate(inputs.x, loss="sum").params
    names = list(ref.grads.params)
    rounding = low_precision_rounding(ref, inputs, names, "bfloat16")
    assert rounding.factor == 8 and rounding.unit == 2.0**-8
    for name in names:  # the float16 model's own distance from the reference, times 8
        expected = np.linalg.norm(g16[name].astype(np.float64) - ref.grads.params[name])
        assert rounding.noise(name) == pytest.approx(8 * expected)
    assert low_precision_rounding(ref, inputs, names, "float16").factor == 1
    assert low_precision_rounding(ref, inputs, names, "float32") is None


@pytest.fixture
def planted_scale(monkeypatch):
    """torch's attentions score without the ``1/sqrt(head_dim)`` scale (patched on the class:
    torch's built modules are pooled and reused)."""
    from xgrad.frameworks.torch.modules import SelfAttention

    forward = SelfAttention.forward

    def unscaled(self, x):
        scale, self.scale = self.scale, 1.0
        try:
            return forward(self, x)
        finally:
            self.scale = scale

    monkeypatch.setattr(SelfAttention, "forward", unscaled)


def test_an_attention_without_its_scale_is_still_named_in_bfloat16(planted_scale):
    report = xgrad.compare(DEEP, _ids(SEED), frameworks="torch", dtype="bfloat16", seed=SEED)
    assert not report.ok
    # the first attention's own gradients fail, far beyond what the rule ever passes
    query = next(e for e in report.parameters if e.name == "layers.1.layers.1.query_kernel")
    assert query.results["torch"].status == "mismatch"
    assert query.results["torch"].rel_norm > LOW_PRECISION_NOISE * 0.0625
    causes = [(d.cause, d.layer, d.confirmed) for d in report.diagnoses]
    assert causes[0] == ("attention-scale", "layers.1.layers.1", True), causes


@pytest.mark.exhaustive
def test_rope_on_the_other_layout_is_still_named_in_bfloat16(monkeypatch):
    import xgrad.frameworks.torch.modules as modules

    apply = modules.apply_rope

    def other_layout(x, cos, sin, layout):
        return apply(x, cos, sin, "interleaved" if layout == "half" else "half")

    monkeypatch.setattr(modules, "apply_rope", other_layout)
    spec = _spec(4, norm="rmsnorm", rope="half")
    report = xgrad.compare(spec, _ids(0), frameworks="torch", dtype="bfloat16", seed=0)
    assert not report.ok
    assert sum(m.status == "mismatch" for _, _, m in report.failures()) > 10
    assert "rope-layout" in {d.cause for d in report.diagnoses}, report.diagnoses


@pytest.mark.exhaustive
def test_a_gradient_whose_rounding_leaves_no_digit_keeps_its_mismatch_with_a_note():
    # width 8, six RMSNorm blocks: some gradients carry more than a quarter of bfloat16
    # rounding; nothing can be judged there in bfloat16, and the note says to use float32
    spec = xgrad.MLP(
        (TOKENS,),
        [
            xgrad.Embedding(VOCAB, 8),
            *[layer for _ in range(6) for layer in transformer_block(8, 4, 16, norm="rmsnorm")],
            xgrad.RMSNorm(),
            xgrad.Dense(VOCAB),
        ],
    )
    report = xgrad.compare(spec, _ids(2), frameworks="torch", dtype="bfloat16", seed=2)
    assert not report.ok
    note = next(n for n in report.notes if "no digit left" in n)
    assert "compare in float32" in note
    assert xgrad.compare(spec, _ids(2), frameworks="torch", dtype="float32", seed=2).ok
