"""Parameters are never paired by guessing (xgrad.pairing.options): where the shapes allow
two pairings, the names decide (query with query, never a key and a value stacked into a
query's shape), else the values (what the candidate already holds), else the parameters
stay unpaired with a note naming the ways.

Expected pairings come from the native names each framework documents (Keras'
``GroupQueryAttention`` holds ``query/kernel (d, heads, head_dim)``; xgrad's torch
``SelfAttention`` ``query_kernel`` of that shape) and, for the tied head, from torch's
``nn.Linear`` storing its weight ``(out, in)``; never from the pairing itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.pairing.options import pair_params
from xgrad.pairing.params import ParamPairing, Values

# -- constructed: the names and the values decide, or nothing is paired ---------------------------

SHAPES = {"p": (8, 4, 2), "r": (8, 2, 2), "s": (8, 2, 2), "t": (4, 2, 8)}  # q, k, v, o of GQA


def _pair(ref_names, cand_names, values=None):
    left_r = [(n, SHAPES[n[-1]]) for n in ref_names]
    left_c = [(c, SHAPES[r[-1]]) for r, c in zip(ref_names, cand_names, strict=True)]
    acc = ParamPairing()
    pair_params(left_r, left_c, acc, values or Values({}, {}), where=("a", "b"))
    return acc, left_r, left_c


def test_names_decide_a_query_against_a_key_and_a_value_that_stack_into_its_shape():
    refs = ["a.query.p", "a.key.r", "a.value.s", "a.out.t"]
    cands = ["b.q_proj", "b.k_proj", "b.v_proj", "b.o_proj"]
    acc, left_r, left_c = _pair(refs, cands)
    assert left_r == [] and left_c == [] and not acc.joins and not acc.splits
    assert acc.names == dict(zip(refs, cands, strict=True))
    # shapes alone: q against k + v stacked, k + v against q, o against q transposed, ...
    acc, left_r, left_c = _pair(["a.p", "a.r", "a.s", "a.t"], ["b.w", "b.x", "b.y", "b.z"])
    assert not (acc.names or acc.joins or acc.splits) and len(left_r) == 4, acc
    why = acc.why["a.p"]
    assert why.startswith("a.p could be b.w or ") and " or b.x + b.y" in why, why
    assert "neither the names nor the values tell which" in why


def test_values_decide_where_the_names_say_nothing():
    rng = np.random.default_rng(0)
    ref = {f"a.{k}": rng.normal(size=s) for k, s in SHAPES.items()}
    cand = {f"b.{c}": ref[f"a.{k}"] for k, c in zip(SHAPES, "wxyz", strict=True)}
    acc, left_r, _ = _pair(list(ref), list(cand), Values(ref, cand))
    assert left_r == [] and acc.names == dict(zip(ref, cand, strict=True)), acc


def test_two_same_shaped_arrays_of_meaningless_names_and_unrelated_values_stay_unpaired():
    rng = np.random.default_rng(1)
    ref = {"m.w1": rng.normal(size=(4, 6)), "m.w2": rng.normal(size=(4, 6))}
    cand = {"n.a": rng.normal(size=(4, 6)), "n.b": rng.normal(size=(4, 6))}
    left_r, left_c = [(n, (4, 6)) for n in ref], [(n, (4, 6)) for n in cand]
    acc = ParamPairing()
    pair_params(left_r, left_c, acc, Values(ref, cand), where=("m", "n"))
    assert not acc.names and len(left_r) == len(left_c) == 2  # was: w1-a, w2-b by call order
    assert acc.why["m.w1"].startswith("m.w1 could be n.a or n.b: the shapes fit each way")
    assert "pass mapping=" in acc.why["n.b"]
    # the candidate holding one of them tells both
    cand["n.b"] = ref["m.w1"]
    acc = ParamPairing()
    pair_params(left_r, left_c, acc, Values(ref, cand), where=("m", "n"))
    assert acc.names == {"m.w1": "n.b", "m.w2": "n.a"}


# -- Keras' GroupQueryAttention against xgrad's torch SelfAttention -------------------------------

SPEC = xgrad.MLP((6, 16), [xgrad.Attention(16, 4, kv_heads=2), xgrad.Dense(3)])
X = np.random.default_rng(2).standard_normal((2, 6, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def gqa():
    if not {"tensorflow", "torch"} <= INSTALLED:
        pytest.skip("tensorflow and torch are needed")
    params = xgrad.init_params(SPEC, seed=0)
    keras_model = xgrad.get_framework("tensorflow").build(SPEC, params).native
    same = xgrad.get_framework("torch").build(SPEC, params).native
    other = xgrad.get_framework("torch").build(SPEC, xgrad.init_params(SPEC, seed=1)).native
    return keras_model, same, other


def _native_pairs(report) -> dict[str, str]:
    return {e.native["reference"]: e.native["torch"] for e in report.parameters}


@pytest.mark.parametrize("weights", ["same", "unrelated"])
def test_keras_gqa_pairs_query_with_query_when_heads_are_twice_the_kv_heads(gqa, weights):
    # H == 2K: torch's key and value kernels stacked have the query kernel's shape, and the
    # output kernel (H, hd, d) is the query kernel (d, H, hd) reversed
    keras_model, same, other = gqa
    torch_model = same if weights == "same" else other
    report = xgrad.compare_models(keras_model, torch_model, X, read="modules")
    assert report.ok and report.unpaired == (), report.summary()
    pairs = _native_pairs(report)
    for role in ("query", "key", "value"):
        assert pairs[f"attention_0/{role}/kernel"] == f"0.{role}_kernel"
        assert pairs[f"attention_0/{role}/bias"] == f"0.{role}_bias"
    assert pairs["attention_0/attention_output/kernel"] == "0.out_kernel"


# -- a tied LM head whose vocabulary is as wide as the model --------------------------------------

if "torch" in INSTALLED:
    import torch
    from torch import nn

    class LM(nn.Module):
        def __init__(self, tied: bool, width: int = 6):
            super().__init__()
            self.emb = nn.Embedding(width, width)  # vocab == width: (vocab, d) is square
            self.norm = nn.LayerNorm(width)
            self.head = nn.Linear(width, width, bias=False)  # weight (out = vocab, in = d)
            if tied:
                self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.norm(self.emb(ids)))


needs_torch = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
IDS = np.random.default_rng(3).integers(0, 6, size=(3, 5))


def _lm(tied: bool, head=None):
    torch.manual_seed(0)
    model = LM(tied)
    if head is not None:
        with torch.no_grad():
            model.head.weight.copy_(head(model.emb.weight))
    return model


@needs_torch
def test_a_square_tied_head_tied_on_both_sides_is_ok():
    assert xgrad.compare_models(_lm(True), _lm(True), IDS).ok


@needs_torch
def test_a_square_tied_head_against_a_separate_one_is_laid_out_by_the_values():
    # the candidate's separate head loaded as torch ties it (head.weight = emb.weight): its
    # kernel (in, out) is the embedding transposed, which only the values can tell here
    report = xgrad.compare_models(_lm(True), _lm(False, head=lambda w: w.clone()), IDS)
    assert not report.ok and [e.name for e, _, _ in report.failures()] == ["emb.weight"]
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed) == ("tied-weights", True), d.detail
    # a loading slip (the embedding transposed into the head) is held as it stands, so it
    # is paired as it stands and the head's output differs
    report = xgrad.compare_models(_lm(True), _lm(False, head=lambda w: w.T.clone()), IDS)
    assert report.first_divergence["path"] == "head", report.summary()


@needs_torch
def test_a_square_tied_head_against_an_unrelated_one_is_left_unpaired_with_the_reason():
    report = xgrad.compare_models(_lm(True), _lm(False), IDS)
    (unpaired,) = report.unpaired
    assert (unpaired["side"], unpaired["native"]) == ("candidate", "head.weight")
    assert "a tied weight against a separate parameter" in unpaired["reason"]
    assert "2 axis orders fit" in unpaired["reason"]
    assert not any("tied-weights" in n for n in report.notes)  # no pairing was guessed


@needs_torch
def test_a_module_holding_two_arrays_of_one_shape_under_meaningless_names_pairs_neither():
    class Two(nn.Module):
        def __init__(self, first: str, second: str):
            super().__init__()
            self.names = (first, second)
            for name in self.names:
                self.register_parameter(name, nn.Parameter(torch.randn(4, 6)))

        def forward(self, x):
            a, b = (getattr(self, n) for n in self.names)
            return torch.tanh(x @ a) @ b.T

    torch.manual_seed(0)
    ref, cand = Two("w1", "w2"), Two("a", "b")
    x = np.random.default_rng(4).standard_normal((3, 4)).astype(np.float32)
    report = xgrad.compare_models(nn.Sequential(ref), nn.Sequential(cand), x, read="modules")
    assert not report.ok
    reasons = {u["native"]: u["reason"] for u in report.unpaired}
    assert sorted(reasons) == ["0.a", "0.b", "0.w1", "0.w2"], reasons
    assert "0.w1 could be 0.a or 0.b: the shapes fit each way" in reasons["0.w1"]
    # mapping= pairs them as the user says
    mapping = {"0.w1": "0.a", "0.w2": "0.b"}
    with torch.no_grad():
        cand.a.copy_(ref.w1), cand.b.copy_(ref.w2)
    report = xgrad.compare_models(nn.Sequential(ref), nn.Sequential(cand), x, mapping=mapping)
    assert report.ok and report.unpaired == (), report.summary()


def test_the_same_local_name_in_two_paired_modules_agrees_unless_roles_differ():
    from xgrad.pairing.roles import names_say

    # a torch BatchNorm1d and an nnx.BatchNorm, both in canonical local names: the names
    # decide between scale, mean and var, which have one shape and often one value
    assert names_say(["3.scale"], ["bn.scale"]) == "agree"
    assert names_say(["3.mean"], ["bn.mean"]) == "agree"
    assert names_say(["3.scale"], ["bn.mean"]) is None
    assert names_say(["q_proj.weight"], ["k_proj.weight"]) == "conflict"
