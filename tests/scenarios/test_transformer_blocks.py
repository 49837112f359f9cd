"""Transformer-shaped PyTorch models against Flax NNX ports (issue 20's scenarios), written the
way the PyTorch tutorials, minGPT and LLaMA write them, on ``(batch, tokens, d)`` inputs:

* a pre-LN token-wise feed-forward block (LayerNorm, Linear, GELU, Linear, residual), its
  port with the GELU's default form left on (``nnx.gelu`` is the tanh form, ``nn.GELU()``
  the erf one);
* a pre-LN transformer block around ``nn.MultiheadAttention(batch_first=True)`` against a
  hand-written attention (q/k/v/o ``nnx.Linear``, ``jax.nn.softmax``), its port without the
  ``1/sqrt(head_dim)`` scale;
* LLaMA's own ``RMSNorm`` module and minGPT's ``NewGELU`` in a small MLP, against
  ``nnx.RMSNorm`` and ``jax.nn.gelu(approximate=True)``: another epsilon, the epsilon outside
  the square root, the erf GELU;
* LLaMA's SwiGLU feed-forward ``w2(silu(w1(x)) * w3(x))`` behind its RMSNorm, its port with
  GELU for SiLU.

Each correct port is OK; each port with one planted bug is not, the first diverging module is
named on both sides (its paths), and the cause is named where its kind is known
(``unexplained`` for code or modules of no kind xgrad knows). Nothing is hard-coded: xgrad
copies the reference's weights into the port and compares what both compute.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)

D, HIDDEN, HEADS = 16, 32, 4

if {"torch", "flax"} <= INSTALLED:
    import jax
    import torch
    import torch.nn.functional as F
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.registry import capture_model

    # -- PyTorch, as its users write it ---------------------------------------------------

    class FeedForward(nn.Module):
        """A pre-LN token-wise feed-forward block: ``x + fc2(gelu(fc1(norm(x))))``."""

        def __init__(self, d: int, hidden: int):
            super().__init__()
            self.norm = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, d)

        def forward(self, x):
            return x + self.fc2(self.act(self.fc1(self.norm(x))))

    class Blocks(nn.Module):
        def __init__(self, d: int, hidden: int, depth: int = 2):
            super().__init__()
            self.blocks = nn.ModuleList([FeedForward(d, hidden) for _ in range(depth)])

        def forward(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    class TransformerBlock(nn.Module):
        """Pre-LN: ``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``."""

        def __init__(self, d: int, heads: int, hidden: int):
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))

        def forward(self, x):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.mlp(self.ln2(x))

    class RMSNorm(nn.Module):
        """LLaMA's (``llama/model.py``); ``outside`` plants the epsilon outside the root."""

        def __init__(self, dim: int, eps: float = 1e-6, outside: bool = False):
            super().__init__()
            self.eps = eps
            self.outside = outside
            self.weight = nn.Parameter(torch.ones(dim))

        def _norm(self, x):
            if self.outside:
                return x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + self.eps)
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

        def forward(self, x):
            output = self._norm(x.float()).type_as(x)
            return output * self.weight

    class NewGELU(nn.Module):
        """minGPT's (``mingpt/model.py``): the tanh approximation, written out."""

        def forward(self, x):
            return (
                0.5
                * x
                * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
            )

    class NormMLP(nn.Module):
        def __init__(self, eps: float = 1e-6, outside: bool = False):
            super().__init__()
            self.norm = RMSNorm(D, eps, outside)
            self.fc = nn.Linear(D, HIDDEN)
            self.act = NewGELU()
            self.proj = nn.Linear(HIDDEN, D)

        def forward(self, x):
            return x + self.proj(self.act(self.fc(self.norm(x))))

    class SwiGLU(nn.Module):
        """LLaMA's ``FeedForward``: ``w2(silu(w1(x)) * w3(x))``, no biases."""

        def __init__(self, dim: int, hidden_dim: int):
            super().__init__()
            self.w1 = nn.Linear(dim, hidden_dim, bias=False)
            self.w2 = nn.Linear(hidden_dim, dim, bias=False)
            self.w3 = nn.Linear(dim, hidden_dim, bias=False)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    class LlamaFFNBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ffn_norm = RMSNorm(D)
            self.feed_forward = SwiGLU(D, HIDDEN)

        def forward(self, x):
            return x + self.feed_forward(self.ffn_norm(x))

    # -- the Flax NNX ports -------------------------------------------------------------------

    class FeedForwardPort(nnx.Module):
        def __init__(self, d: int, hidden: int, *, exact: bool, rngs: nnx.Rngs):
            self.norm = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
            self.fc1 = nnx.Linear(d, hidden, rngs=rngs)
            self.fc2 = nnx.Linear(hidden, d, rngs=rngs)
            self.exact = exact

        def __call__(self, x):
            h = self.fc1(self.norm(x))
            # the planted bug: nnx.gelu's default is the tanh form, torch's nn.GELU() the erf
            h = nnx.gelu(h, approximate=False) if self.exact else nnx.gelu(h)
            return x + self.fc2(h)

    class BlocksPort(nnx.Module):
        def __init__(self, d: int, hidden: int, *, exact: bool, rngs: nnx.Rngs, depth: int = 2):
            self.blocks = nnx.List(
                [FeedForwardPort(d, hidden, exact=exact, rngs=rngs) for _ in range(depth)]
            )

        def __call__(self, x):
            for block in self.blocks:
                x = block(x)
            return x

    class SelfAttention(nnx.Module):
        """Multi-head self-attention written out: q/k/v/o projections, softmax over keys."""

        def __init__(self, d: int, heads: int, *, scaled: bool, rngs: nnx.Rngs):
            self.q = nnx.Linear(d, d, rngs=rngs)
            self.k = nnx.Linear(d, d, rngs=rngs)
            self.v = nnx.Linear(d, d, rngs=rngs)
            self.o = nnx.Linear(d, d, rngs=rngs)
            self.heads = heads
            self.scaled = scaled

        def __call__(self, x):
            b, t, d = x.shape
            head_dim = d // self.heads

            def split(a):
                return a.reshape(b, t, self.heads, head_dim).transpose(0, 2, 1, 3)

            q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
            scores = q @ k.transpose(0, 1, 3, 2)
            if self.scaled:  # the planted bug leaves this out
                scores = scores / math.sqrt(head_dim)
            out = jax.nn.softmax(scores, axis=-1) @ v
            return self.o(out.transpose(0, 2, 1, 3).reshape(b, t, d))

    class TransformerBlockPort(nnx.Module):
        def __init__(self, d: int, heads: int, hidden: int, *, scaled: bool, rngs: nnx.Rngs):
            self.ln1 = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
            self.attn = SelfAttention(d, heads, scaled=scaled, rngs=rngs)
            self.ln2 = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
            self.fc1 = nnx.Linear(d, hidden, rngs=rngs)
            self.fc2 = nnx.Linear(hidden, d, rngs=rngs)

        def __call__(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x)), approximate=False))

    class NormMLPPort(nnx.Module):
        def __init__(self, *, approximate: bool = True, rngs: nnx.Rngs):
            self.norm = nnx.RMSNorm(D, epsilon=1e-6, rngs=rngs)
            self.fc = nnx.Linear(D, HIDDEN, rngs=rngs)
            self.proj = nnx.Linear(HIDDEN, D, rngs=rngs)
            self.approximate = approximate

        def __call__(self, x):
            return x + self.proj(jax.nn.gelu(self.fc(self.norm(x)), approximate=self.approximate))

    class SwiGLUPort(nnx.Module):
        def __init__(self, dim: int, hidden_dim: int, *, act, rngs: nnx.Rngs):
            self.w1 = nnx.Linear(dim, hidden_dim, use_bias=False, rngs=rngs)
            self.w2 = nnx.Linear(hidden_dim, dim, use_bias=False, rngs=rngs)
            self.w3 = nnx.Linear(dim, hidden_dim, use_bias=False, rngs=rngs)
            self.act = act

        def __call__(self, x):
            return self.w2(self.act(self.w1(x)) * self.w3(x))

    class LlamaFFNBlockPort(nnx.Module):
        def __init__(self, *, act=jax.nn.silu, rngs: nnx.Rngs):
            self.ffn_norm = nnx.RMSNorm(D, epsilon=1e-6, rngs=rngs)
            self.feed_forward = SwiGLUPort(D, HIDDEN, act=act, rngs=rngs)

        def __call__(self, x):
            return x + self.feed_forward(self.ffn_norm(x))


def _tokens(batch: int = 3, tokens: int = 5, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(20)
    return (scale * rng.normal(size=(batch, tokens, D))).astype(np.float32)


def _torch(cls, *args, **kwargs):
    torch.manual_seed(0)
    model = cls(*args, **kwargs)
    for name, p in model.named_parameters():  # norms' weights away from one, as trained
        if name.endswith("norm.weight") or name.startswith("norm."):
            with torch.no_grad():
                p.add_(0.1 * torch.randn_like(p))
    return model


def _first(report) -> dict:
    assert not report.ok, report.summary()
    first = report.first_divergence
    assert first is not None, report.summary()
    return first


# -- 1. the token-wise feed-forward block -----------------------------------------------------


def test_feed_forward_blocks_ported_to_nnx_are_ok():
    report = xgrad.compare_models(
        _torch(Blocks, D, HIDDEN), BlocksPort(D, HIDDEN, exact=True, rngs=nnx.Rngs(0)), _tokens()
    )
    assert report.ok, report.summary()
    kinds = {layer.path: layer.kind for layer in report.layers}
    assert kinds["blocks.0.norm"] == "layernorm" and kinds["blocks.1.fc2"] == "dense"
    assert report.input is not None and report.input.shape == (3, 5, D)


def test_the_default_gelu_of_nnx_is_named_in_the_first_block_on_both_sides():
    report = xgrad.compare_models(
        _torch(Blocks, D, HIDDEN), BlocksPort(D, HIDDEN, exact=False, rngs=nnx.Rngs(0)), _tokens()
    )
    first = _first(report)
    assert first["path"] == "blocks.0" and first["where"] == "forward"
    assert first["names"] == {"reference": "blocks.0", "flax.nnx": "blocks.0"}
    around = ["blocks.0.fc1", "blocks.0.fc2"]
    assert first["between"] == {"reference": around, "flax.nnx": around}
    assert "between blocks.0.fc1 and blocks.0.fc2" in first["detail"]
    assert "act (GELU)" in first["detail"]  # torch's module, code in the port
    cause = report.diagnoses[0]
    assert cause.cause == "gelu-approximation", cause.detail
    assert cause.layer.startswith("blocks.0")


# -- 2. a pre-LN transformer block with nn.MultiheadAttention ----------------------------------


def test_a_hand_written_attention_port_of_multihead_attention_is_ok():
    report = xgrad.compare_models(
        _torch(TransformerBlock, D, HEADS, HIDDEN),
        TransformerBlockPort(D, HEADS, HIDDEN, scaled=True, rngs=nnx.Rngs(0)),
        _tokens(),
    )
    assert report.ok, report.summary()
    assert report.unpaired == ()  # in_proj_weight against the q, k and v kernels
    names = {layer.path: layer.names for layer in report.layers}
    assert names["attn"] == {"reference": "attn", "flax.nnx": "attn"}
    assert names["mlp.2"] == {"reference": "mlp.2", "flax.nnx": "fc2"}


def test_attention_without_its_scale_is_named_at_the_attention_on_both_sides():
    report = xgrad.compare_models(
        _torch(TransformerBlock, D, HEADS, HIDDEN),
        TransformerBlockPort(D, HEADS, HIDDEN, scaled=False, rngs=nnx.Rngs(0)),
        _tokens(),
    )
    first = _first(report)
    assert (first["path"], first["where"]) == ("attn", "forward")
    assert first["names"] == {"reference": "attn", "flax.nnx": "attn"}
    assert first["detail"] == "its own computation (its inputs agree)"
    # nn.MultiheadAttention is read as no kind: it is identified from its values, and the
    # missing scale re-run on its own weights reproduces the port (issue 21)
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.layer) == ("attention-scale", True, "attn"), d.text()


def test_a_port_to_nnx_multi_head_attention_pairs_its_kernels_by_a_reshape_and_is_ok():
    # nnx.MultiHeadAttention holds (d, heads, head_dim) kernels and a (heads, head_dim, d)
    # output kernel: each is a torch (d, d) projection's (in, out) kernel reshaped, so they
    # pair, are copied across and the port is ok; the same port without the scale is not
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(D)
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))

        def forward(self, x):
            b, t, _ = x.shape
            h = self.ln(x)
            q, k, v = (
                p(h).view(b, t, HEADS, D // HEADS).transpose(1, 2) for p in (self.q, self.k, self.v)
            )
            a = torch.softmax(q @ k.transpose(-1, -2) / (D // HEADS) ** 0.5, -1) @ v
            return x + self.o(a.transpose(1, 2).reshape(b, t, D))

    class AttentionPort(nnx.Module):
        def __init__(self, rngs):
            self.ln = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)
            self.attn = nnx.MultiHeadAttention(HEADS, D, decode=False, rngs=rngs)

        def __call__(self, x):
            return x + self.attn(self.ln(x))

    reference = _torch(Attention)
    report = xgrad.compare_models(reference, AttentionPort(nnx.Rngs(0)), _tokens())
    assert report.ok, report.summary()
    assert report.unpaired == ()
    names = {e.native["reference"]: e.native["flax.nnx"] for e in report.parameters}
    assert names["q.weight"] == "attn/query/kernel" and names["o.weight"] == "attn/out/kernel"
    filled = xgrad.convert(reference, into=AttentionPort(nnx.Rngs(0)), x=_tokens())
    torch_q = reference.q.weight.detach().numpy()  # (out, in): x @ W.T, heads on out
    query = np.asarray(filled.attn.query.kernel[...])
    assert np.array_equal(query, torch_q.T.reshape(D, HEADS, D // HEADS))


# -- 4. LLaMA's RMSNorm and minGPT's NewGELU, modules of the user's own ------------------------


def test_llama_rmsnorm_and_mingpt_newgelu_are_identified_and_their_port_is_ok():
    x = _tokens()
    reference = _torch(NormMLP)
    captured = capture_model(reference, as_batch(x))
    norm, act = captured.module("norm"), captured.module("act")
    assert (norm.kind, norm.layer.epsilon, norm.params) == (
        "rmsnorm",
        1e-6,
        {"scale": "norm.weight"},
    )
    assert (act.kind, act.layer.name) == ("activation", "gelu_tanh")

    report = xgrad.compare_models(reference, NormMLPPort(rngs=nnx.Rngs(0)), x)
    assert report.ok, report.summary()
    kinds = {layer.path: layer.kind for layer in report.layers}
    assert kinds["norm"] == "rmsnorm"
    assert any("act: identified numerically as gelu_tanh" in note for note in report.notes)


def test_another_rmsnorm_epsilon_is_a_configuration_difference_at_the_norm():
    report = xgrad.compare_models(
        _torch(NormMLP, eps=1e-5), NormMLPPort(rngs=nnx.Rngs(0)), _tokens()
    )
    assert not report.ok and report.summary().startswith("CONFIG DIFFERS"), report.summary()
    (diff,) = report.config_diffs
    assert (diff.path, diff.kind) == ("norm", "rmsnorm")
    assert diff.names == {"reference": "norm", "flax.nnx": "norm"}
    assert diff.fields == {"epsilon": (1e-5, 1e-6)} and diff.matters


def test_the_epsilon_outside_the_root_is_named_at_the_norm_on_both_sides():
    # hidden states of small magnitude, where the epsilon counts: there no epsilon inside the
    # root reproduces the user's norm, so it is read as an opaque module and its form fitted
    report = xgrad.compare_models(
        _torch(NormMLP, outside=True), NormMLPPort(rngs=nnx.Rngs(0)), _tokens(scale=1e-3)
    )
    first = _first(report)
    assert (first["path"], first["where"]) == ("norm", "forward")
    assert first["names"] == {"reference": "norm", "flax.nnx": "norm"}
    d = report.diagnoses[0]  # the form is fitted to the module's values (issue 21)
    assert (d.cause, d.confirmed, d.layer) == ("rmsnorm-epsilon-placement", True, "norm"), d.text()


def test_the_erf_gelu_in_the_port_of_newgelu_is_named():
    report = xgrad.compare_models(
        _torch(NormMLP), NormMLPPort(approximate=False, rngs=nnx.Rngs(0)), _tokens()
    )
    first = _first(report)
    assert first["path"] == ""
    assert first["between"] == {"reference": ["fc", "proj"], "flax.nnx": ["fc", "proj"]}
    assert "act (NewGELU)" in first["detail"]
    assert report.diagnoses[0].cause == "gelu-approximation", report.diagnoses[0].detail


# -- 5. LLaMA's SwiGLU feed-forward ---------------------------------------------------------------


def test_swiglu_port_is_ok():
    report = xgrad.compare_models(
        _torch(LlamaFFNBlock), LlamaFFNBlockPort(rngs=nnx.Rngs(0)), _tokens()
    )
    assert report.ok, report.summary()
    kinds = {layer.path: layer.kind for layer in report.layers}
    assert kinds["ffn_norm"] == "rmsnorm" and kinds["feed_forward.w3"] == "dense"


def test_gelu_for_silu_in_swiglu_is_named_in_the_feed_forward_on_both_sides():
    report = xgrad.compare_models(
        _torch(LlamaFFNBlock), LlamaFFNBlockPort(act=jax.nn.gelu, rngs=nnx.Rngs(0)), _tokens()
    )
    first = _first(report)
    assert (first["path"], first["where"]) == ("feed_forward", "forward")
    assert first["names"] == {"reference": "feed_forward", "flax.nnx": "feed_forward"}
    around = ["feed_forward.w3", "feed_forward.w2"]
    assert first["between"] == {"reference": around, "flax.nnx": around}
    # silu(w1 x) * w3 x is no activation of one value: the code is not diagnosed
    assert report.diagnoses[0].cause == "unexplained"
