"""A small transformer spec (Embedding -> a pre-LN block with causal, grouped-query, RoPE
attention -> GatedMLP -> Dense head) through ``xgrad.compare`` in every installed framework,
float32 and float64, against the float64 NumPy reference. A framework whose kind table lacks
one of the transformer kinds is skipped, naming the kinds it lacks."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ALL_FRAMEWORKS

import xgrad
from xgrad import MLP, Dense, Embedding, GatedMLP, RMSNorm, transformer_block
from xgrad.comparison.assemble import IDS_NOTE

VOCAB, DIM, TOKENS, BATCH = 20, 16, 6, 2
KINDS = ("embedding", "attention", "gated_mlp")


@pytest.fixture(scope="module")
def spec():
    block = transformer_block(DIM, 4, 32, kv_heads=2, norm="rmsnorm", causal=True, rope="half")
    return MLP(
        (TOKENS,),
        [Embedding(VOCAB, DIM), *block, GatedMLP(DIM, 24), RMSNorm(), Dense(VOCAB)],
    )


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, VOCAB, size=(BATCH, TOKENS))


def _lacking(name: str) -> list[str]:
    table = xgrad.get_framework(name).kinds()
    return [kind for kind in KINDS if kind not in table]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", ALL_FRAMEWORKS)
def test_transformer_spec_matches_the_reference(framework, dtype, spec, ids):
    lacking = _lacking(framework)
    if lacking:
        pytest.skip(f"{framework}'s kind table has no entry for {', '.join(lacking)} yet")
    report = xgrad.compare(spec, ids, frameworks=framework, dtype=dtype, explain=False)
    assert report.ok, report.summary()
    assert report.input is None and IDS_NOTE in report.notes  # ids have no gradient
    assert {e.name for e in report.parameters} == set(spec.param_names)


def test_the_reference_refuses_bad_ids_by_name(spec, ids):
    with pytest.raises(xgrad.InputError, match=r"token id 20 at index \(1, 3\).* 20 tokens"):
        bad = ids.copy()
        bad[1, 3] = VOCAB
        xgrad.compare(spec, bad, frameworks="numpy")
    with pytest.raises(xgrad.InputError, match="must be integer token ids"):
        xgrad.compare(spec, ids.astype(np.float32), frameworks="numpy")


def test_a_float_input_spec_starting_with_attention():
    block = transformer_block(DIM, 4, 32, norm="layernorm", pre_norm=False, mlp="dense")
    spec = MLP((TOKENS, DIM), [*block, Dense(3)])
    x = np.random.default_rng(1).normal(size=(BATCH, TOKENS, DIM))
    report = xgrad.compare(spec, x, frameworks="numpy", dtype="float64", explain=False)
    assert report.ok and report.input is not None and report.input.shape == x.shape
