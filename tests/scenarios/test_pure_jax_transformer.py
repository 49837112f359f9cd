"""A transformer written as a pure JAX function (a params dict, ``jnp`` ops, token ids)
against a model, with ``compare_models``'s default ``read="auto"`` (issue 21):

* a function has no modules to capture, so it is read as layers of xgrad's kinds, and so is
  an NNX port of it: the correct port is OK, a port without the attention's ``1/sqrt(hd)``
  is named at the attention, in either direction;
* a torch model whose hand-written attention reads only module by module shares no reading
  with the function: refused by name (both reasons, the fix), nothing compared;
* a function whose attention cannot be read as layers (q/k/v as ``(dim, dim)`` matrices
  reshaped into heads) is refused the same way, naming both of its reasons.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)

V, D, H, T = 16, 8, 2, 5
HD = D // H

if {"torch", "flax"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.comparison.pair import NoCommonReading

    def causal_attention(q, k, v, scale):
        """q, k, v: (batch, tokens, heads, head_dim) -> (batch, tokens, heads, head_dim)."""
        s = jnp.einsum("bqhk,bshk->bhqs", q, k)
        if scale:
            s = s / math.sqrt(q.shape[-1])
        t = q.shape[1]
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
        return jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(s, axis=-1), v)

    def transformer(params, ids):
        """Embedding, one causal attention block with its residual, an LM head; kernels
        q/k/v ``(D, H, HD)``, o ``(H, HD, D)``, head ``(D, V)``."""
        x = jnp.take(params["embed"], ids, axis=0)
        q, k, v = (jnp.einsum("btd,dhk->bthk", x, params[n]) for n in ("wq", "wk", "wv"))
        o = causal_attention(q, k, v, scale=True)
        x = x + jnp.einsum("bqhk,hkd->bqd", o, params["wo"])
        return x @ params["head"]

    def reshaped_transformer(params, ids):
        """The same with q/k/v stored (D, D) and reshaped into heads in the code."""
        x = params["embed"][ids]
        b, t = ids.shape
        q, k, v = ((x @ params[n]).reshape(b, t, H, HD) for n in ("wq", "wk", "wv"))
        o = causal_attention(q, k, v, scale=True).reshape(b, t, D)
        return (x + o @ params["wo"]) @ params["head"]

    def init(shapes, seed=0):
        rng = np.random.default_rng(seed)
        return {n: (0.3 * rng.standard_normal(s)).astype(np.float32) for n, s in shapes.items()}

    SHAPES = {"embed": (V, D), "wq": (D, H, HD), "wk": (D, H, HD), "wv": (D, H, HD)}
    SHAPES.update(wo=(H, HD, D), head=(D, V))

    class Port(nnx.Module):
        """The function ported to NNX; ``scale=False`` plants a missing 1/sqrt(head_dim)."""

        def __init__(self, rngs, scale=True):
            self.embed = nnx.Embed(V, D, rngs=rngs)
            self.q, self.k, self.v = (
                nnx.LinearGeneral(D, (H, HD), use_bias=False, rngs=rngs) for _ in range(3)
            )
            self.o = nnx.LinearGeneral((H, HD), D, axis=(-2, -1), use_bias=False, rngs=rngs)
            self.head = nnx.Linear(D, V, use_bias=False, rngs=rngs)
            self.scale = scale

        def __call__(self, ids):
            x = self.embed(ids)
            o = causal_attention(self.q(x), self.k(x), self.v(x), self.scale)
            return self.head(x + self.o(o))

    class TorchTransformer(nn.Module):
        """The function in torch as torch users write it: q/k/v Linear, view into heads."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
            self.head = nn.Linear(D, V, bias=False)

        def forward(self, ids):
            x = self.embed(ids)
            b, t, _ = x.shape
            q, k, v = (p(x).view(b, t, H, HD).transpose(1, 2) for p in (self.q, self.k, self.v))
            s = q @ k.transpose(-1, -2) / math.sqrt(HD)
            s = s.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool)), float("-inf"))
            o = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D)
            return self.head(x + self.o(o))


IDS = np.random.default_rng(1).integers(0, V, size=(2, T))


@pytest.fixture(scope="module")
def params():
    return init(SHAPES)


def test_a_pure_jax_transformer_against_its_nnx_port_is_read_as_layers_and_matches(params):
    report = xgrad.compare_models((transformer, params), Port(nnx.Rngs(0)), IDS)
    assert report.ok, report.summary()
    assert "cannot be read module by module" in report.notes[0], report.notes
    assert report.input is None
    # the port's own weights were replaced by the function's: every gradient compared
    assert len(report.parameters) == len(SHAPES)


@pytest.mark.parametrize(
    "planted_side", ["candidate", pytest.param("reference", marks=pytest.mark.exhaustive)]
)
def test_a_port_without_the_attention_scale_is_named_at_the_attention(params, planted_side):
    models = [(transformer, params), Port(nnx.Rngs(0), scale=False)]
    if planted_side == "reference":
        models.reverse()
    report = xgrad.compare_models(*models, IDS)
    assert not report.ok
    assert [(d.cause, d.layer, d.confirmed) for d in report.diagnoses] == [
        ("attention-scale", "layers.1.layers.0", True)
    ]
    assert "1/sqrt(4)" in report.diagnoses[0].detail


def test_a_torch_model_read_only_module_by_module_is_refused_by_name(params):
    with pytest.raises(NoCommonReading) as info:
        xgrad.compare_models((transformer, params), TorchTransformer(), IDS)
    text = str(info.value)
    assert "the reference, (transformer, params), cannot be read module by module" in text
    assert "the candidate, TorchTransformer, not as layers (module 'k' (Linear)" in text
    assert "nothing was compared" in text and "Fix: write the function as an nnx.Module" in text
    # either order: the function is named, whichever side it is
    with pytest.raises(NoCommonReading, match=r"the candidate, \(transformer, params\)"):
        xgrad.compare_models(TorchTransformer(), (transformer, params), IDS)


def test_a_function_read_neither_way_is_refused_naming_both_reasons():
    flat = init({**SHAPES, "wq": (D, D), "wk": (D, D), "wv": (D, D), "wo": (D, D)})
    with pytest.raises(NoCommonReading) as info:
        xgrad.compare_models((reshaped_transformer, flat), Port(nnx.Rngs(0)), IDS)
    text = str(info.value)
    assert "the reference, (reshaped_transformer, params), cannot be read module by" in text
    assert ", nor as layers of xgrad's kinds (" in text and "Fix:" in text
    assert "parameters ['wq', 'wk', 'wv'] are combined in one step" in text
