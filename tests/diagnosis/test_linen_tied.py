"""A Linen model whose LM head is tied to its embedding (``embed.attend(h)`` in its own code)
against a torch model with a separate head (issue 21, tied weights through Linen as through
NNX): the tie is seen where Linen's interceptor sees ``attend`` called, the table is a tied
weight of the module whose code calls it, and ``tied-weights`` is named:

* the torch head starting equal to the embedding: the forward values agree, the embedding's
  gradient (the sum of both uses on the tied side) differs, confirmed by summing the
  reference's two gradients;
* the torch head of its own values: the logits differ at the head, confirmed by re-running
  the head with the reference's table in its place.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)

V, D, T = 16, 8, 5

if {"torch", "flax"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import linen as nn
    from torch import nn as tnn

    import xgrad

    class TiedLM(nn.Module):
        """Embedding, a tanh projection, logits from the embedding's table (tied head)."""

        @nn.compact
        def __call__(self, ids):
            embed = nn.Embed(V, D, name="embed")
            h = jnp.tanh(nn.Dense(D, name="proj")(embed(ids)))
            return embed.attend(h)

    class SeparateHeadLM(tnn.Module):
        def __init__(self, head_from_embedding: bool):
            super().__init__()
            self.embed = tnn.Embedding(V, D)
            self.proj = tnn.Linear(D, D)
            self.lm_head = tnn.Linear(D, V, bias=False)
            if head_from_embedding:  # a separate parameter that starts equal to the table
                with torch.no_grad():
                    self.lm_head.weight.copy_(self.embed.weight)

        def forward(self, ids):
            return self.lm_head(torch.tanh(self.proj(self.embed(ids))))


IDS = np.random.default_rng(1).integers(0, V, size=(2, T))


@pytest.fixture(scope="module")
def linen():
    model = TiedLM()
    return model, model.init(jax.random.key(0), jnp.asarray(IDS))


def _compare(linen, head_from_embedding):
    torch.manual_seed(0)
    return xgrad.compare_models(SeparateHeadLM(head_from_embedding), linen, IDS)


def test_a_linen_head_tied_by_attend_against_an_equal_separate_head_is_named(linen):
    report = _compare(linen, head_from_embedding=True)
    assert not report.ok
    assert not report.unpaired  # the torch head pairs with the tied table
    assert any("the candidate ties embed.attend to embed.embedding" in n for n in report.notes)
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed, d.layer, d.where) == ("tied-weights", True, "embed", "backward")
    assert "separate parameter lm_head.kernel" in d.detail


def test_a_linen_head_tied_by_attend_against_a_head_of_its_own_is_named_at_the_head(linen):
    report = _compare(linen, head_from_embedding=False)
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed, d.layer, d.where) == ("tied-weights", True, "lm_head", "forward")
