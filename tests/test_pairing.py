"""xgrad.pairing on models read module by module (torch): containers opened, a module
against a group, fused parameters, tied weights, unpaired parameters, assumed layouts."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")

if "torch" in INSTALLED:
    import torch
    from torch import nn

    class Flat(nn.Module):
        def __init__(self, d=12, h=24, approximate="none"):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.up = nn.Linear(d, h)
            self.act = nn.GELU(approximate=approximate)
            self.down = nn.Linear(h, d)

        def forward(self, x):
            return x + self.down(self.act(self.up(self.norm(x))))

    class Nested(nn.Module):
        def __init__(self, d=12, h=24, approximate="none"):
            super().__init__()
            self.ln = nn.LayerNorm(d)
            self.mlp = nn.Sequential(
                nn.Linear(d, h), nn.GELU(approximate=approximate), nn.Linear(h, d)
            )

        def forward(self, x):
            return x + self.mlp(self.ln(x))

    class Fused(nn.Module):
        def __init__(self, d=12):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.mha = nn.MultiheadAttention(d, 3, batch_first=True)

        def forward(self, x):
            h = self.norm(x)
            return x + self.mha(h, h, h, need_weights=False)[0]

    class Separate(nn.Module):
        def __init__(self, d=12, heads=3, scaled=True):
            super().__init__()
            self.ln = nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.heads, self.scaled = heads, scaled

        def forward(self, x):
            h = self.ln(x)
            b, t, e = h.shape
            q, k, v = (
                p(h).view(b, t, self.heads, e // self.heads).transpose(1, 2)
                for p in (self.q, self.k, self.v)
            )
            scores = q @ k.transpose(-1, -2) / ((e // self.heads) ** 0.5 if self.scaled else 1)
            a = torch.softmax(scores, -1) @ v
            return x + self.o(a.transpose(1, 2).reshape(b, t, e))

    class LM(nn.Module):
        def __init__(self, tied=True, vocab=11, d=6):
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)
            if tied:
                self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.norm(self.emb(ids)))


X = np.random.default_rng(0).standard_normal((4, 5, 12)).astype(np.float32)


def _model(cls, **kw):
    torch.manual_seed(0)
    return cls(**kw)


def test_a_container_is_opened_to_pair_its_layers_one_by_one():
    report = xgrad.compare_models(_model(Flat), _model(Nested), X)
    assert report.ok, report.summary()
    assert [tuple(e.names.values()) for e in report.layers[:4]] == [
        ("norm", "ln"),
        ("up", "mlp.0"),
        ("act", "mlp.1"),
        ("down", "mlp.2"),
    ]
    report = xgrad.compare_models(_model(Flat), _model(Nested, approximate="tanh"), X)
    assert report.first_divergence["path"] == "act"
    assert report.first_divergence["names"] == {"reference": "act", "torch": "mlp.1"}
    assert report.diagnoses[0].cause == "gelu-approximation" and report.diagnoses[0].confirmed


def test_a_fused_attention_pairs_with_separate_projections_and_a_bug_is_placed_in_it():
    report = xgrad.compare_models(_model(Fused), _model(Separate), X)
    assert report.ok, report.summary()
    in_proj = next(e for e in report.parameters if e.name == "mha.in_proj.kernel")
    assert in_proj.native["torch"] == "q.weight + k.weight + v.weight"
    report = xgrad.compare_models(_model(Fused), _model(Separate, scaled=False), X)
    d = report.divergences[0]
    assert (d.path, d.names["torch"], d.where) == ("mha", "q + k + v + o", "forward")
    assert d.detail == "its own computation (its inputs agree)"


def test_tied_on_one_side_only_is_named_and_confirmed_by_the_sum_of_gradients():
    ids = np.random.default_rng(0).integers(0, 11, size=(3, 5))
    assert xgrad.compare_models(_model(LM), _model(LM), ids).ok
    report = xgrad.compare_models(_model(LM), _model(LM, tied=False), ids, transfer=True)
    assert not report.ok
    assert [e.name for e, _, _ in report.failures()] == ["emb.weight"]  # the outputs agree
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed) == ("tied-weights", True)
    assert "ties head.weight to emb.weight" in d.detail and "head.kernel" in d.detail
    assert any("tied-weights" in n for n in report.notes)


def test_parameters_on_one_side_only_are_listed_and_may_be_ignored():
    x = X[:, 0, :]
    ref = nn.Sequential(nn.Linear(12, 8), nn.LayerNorm(8, elementwise_affine=False))
    cand = nn.Sequential(nn.Linear(12, 8), nn.LayerNorm(8))
    report = xgrad.compare_models(ref, cand, x)
    assert not report.ok and report.summary().startswith("INCOMPLETE")
    assert sorted(u["native"] for u in report.unpaired) == ["1.bias", "1.weight"]
    assert xgrad.compare_models(ref, cand, x, ignore=["1.*"]).ok
    with pytest.raises(xgrad.InputError, match="'1.weight'"):
        xgrad.compare_models(ref, cand, x, ignore=["1.weigth"])


def test_each_module_pair_says_what_paired_it_and_the_weakest_are_named_in_a_note():
    class Scaled(nn.Module):  # weight-free and of no known kind
        def forward(self, x):
            return x * 0.5

    class Halved(nn.Module):
        def forward(self, x):
            return x / 2

    ref = nn.Sequential(nn.Linear(12, 8), Scaled(), nn.ReLU(), nn.Linear(8, 4))
    cand = nn.Sequential(nn.Linear(12, 8), Halved(), nn.ReLU(), nn.Linear(8, 4))
    cand.add_module("extra", nn.Identity())  # never called: no module to pair
    report = xgrad.compare_models(ref, cand, X)
    assert report.ok, report.summary()
    by = {e.path: e.paired_by["torch"] for e in report.layers}
    # Sequential children are named alike here (0, 1, 2, 3): names and shapes pair them
    assert set(by.values()) == {"name and shapes", "the models"}
    assert report.to_dict()["layers"][0]["paired_by"] == {"torch": "name and shapes"}

    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.halve, self.act, self.out = ref[0], Halved(), nn.ReLU(), ref[3]

        def forward(self, x):
            return self.out(self.act(self.halve(self.fc(x))))

    report = xgrad.compare_models(ref, Named(), X)
    assert report.ok, report.summary()
    by = {e.path: e.paired_by["torch"] for e in report.layers}
    assert by["0"] == by["3"] == "shapes and call order"
    assert by["1"] == by["2"] == "output shape and call order"
    # the ReLU pair shares a known kind; the two scalings share nothing but their place
    (note,) = [n for n in report.notes if "call order and output shape alone" in n]
    assert "1 <-> halve" in note and "2 <-> act" not in note and "mapping=" in note
    # a report read layer by layer says nothing of it
    flat = X[:, 0, :]
    plain = xgrad.compare_models(
        nn.Sequential(nn.Linear(12, 4)), nn.Sequential(nn.Linear(12, 4)), flat
    )
    assert all(not e.paired_by for e in plain.layers)
