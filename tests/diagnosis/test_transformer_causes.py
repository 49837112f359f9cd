"""The transformer causes, named at the module where a port parts from its reference
(issue 21, item 3), on models written as their users write them:

* an attention module in PyTorch (``q_proj``/``k_proj``/``v_proj``/``o_proj`` ``nn.Linear``,
  Hugging Face's ``rotate_half`` or GPT-J's ``rotate_every_two``, ``repeat_interleave`` for
  grouped key/value heads, ``masked_fill``) and its port, in PyTorch or Flax NNX, each
  convention a keyword of the module: RoPE layout and base, the score scale, the causal mask,
  the masked score, the head axis order, a fused projection's split, the GQA repeat, the
  softmax's precision;
* the Annotated Transformer's ``Embeddings`` (``lut(x) * sqrt(d_model)``), ``nn.Embedding``'s
  ``padding_idx`` against ``nnx.Embed``, LLaMA's and Gemma's RMSNorm.

xgrad reads these modules as no kind: each is identified from its parameters and captured
values, and each cause is confirmed by re-running the reference's module with its own weights
under the other convention. The expected conventions are what each test plants; nothing in
xgrad is told them. Tiny shapes (dim 16, 4 heads, 6 tokens, batch 2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is needed")

D, HEADS, T, B = 16, 4, 6, 2

if "torch" in INSTALLED:
    import torch
    from torch import nn

    import xgrad

    def rotate_half(x):
        """Hugging Face's (``modeling_llama.rotate_half``)."""
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), dim=-1)

    def rotate_every_two(x):
        """GPT-J's (``modeling_gptj.rotate_every_two``)."""
        x1, x2 = x[..., ::2], x[..., 1::2]
        return torch.stack((-x2, x1), dim=-1).flatten(-2)

    class Attention(nn.Module):
        """Self-attention as LLaMA-style code writes it, ``(B, T, D)`` in and out; the
        keywords are the conventions a port can get wrong."""

        def __init__(
            self, *, heads=HEADS, kv_heads=HEADS, rope="half", base=10000.0, causal=True,
            offset=0, scale="head", axes="heads-first", gqa="interleave", fill=-math.inf,
            softmax="float", fused=None,
        ):  # fmt: skip
            super().__init__()
            self.heads, self.kv, self.hd = heads, kv_heads, D // heads
            self.fused = fused  # None, "blocks" (GPT-2 c_attn) or "per-head" (GPT-NeoX)
            if fused:
                self.qkv_proj = nn.Linear(D, 3 * D)
            else:
                self.q_proj = nn.Linear(D, heads * self.hd, bias=False)
                self.k_proj = nn.Linear(D, kv_heads * self.hd, bias=False)
                self.v_proj = nn.Linear(D, kv_heads * self.hd, bias=False)
            self.o_proj = nn.Linear(heads * self.hd, D, bias=False)
            self.rope, self.base, self.causal, self.offset = rope, base, causal, offset
            self.scale, self.axes, self.gqa, self.fill = scale, axes, gqa, fill
            self.softmax = softmax

        def _split(self, z, n):
            b, t, _ = z.shape
            if self.axes == "heads-first":
                return z.view(b, t, n, self.hd).transpose(1, 2)
            return z.view(b, t, self.hd, n).permute(0, 3, 1, 2)

        def _rope(self, x):
            t, hd = x.shape[-2], self.hd
            inv_freq = 1.0 / self.base ** (torch.arange(0, hd, 2).float() / hd)
            freqs = torch.outer(torch.arange(t).float(), inv_freq)
            if self.rope == "half":
                emb = torch.cat((freqs, freqs), dim=-1)
                return x * emb.cos() + rotate_half(x) * emb.sin()
            emb = freqs.repeat_interleave(2, dim=-1)
            return x * emb.cos() + rotate_every_two(x) * emb.sin()

        def forward(self, x, mask=None):
            b, t, _ = x.shape
            if self.fused == "per-head":
                z = self.qkv_proj(x).view(b, t, self.heads, 3 * self.hd).transpose(1, 2)
                q, k, v = z.split(self.hd, dim=-1)
            elif self.fused:
                q, k, v = (self._split(z, self.heads) for z in self.qkv_proj(x).split(D, -1))
            else:
                q = self._split(self.q_proj(x), self.heads)
                k = self._split(self.k_proj(x), self.kv)
                v = self._split(self.v_proj(x), self.kv)
            if self.rope:
                q, k = self._rope(q), self._rope(k)
            g = self.heads // self.kv
            if self.gqa == "interleave":
                k, v = k.repeat_interleave(g, dim=1), v.repeat_interleave(g, dim=1)
            else:
                k, v = k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)
            s = q @ k.transpose(-1, -2)
            if self.scale == "head":
                s = s / math.sqrt(self.hd)
            masked = torch.zeros(t, t, dtype=torch.bool)
            if self.causal:
                masked = torch.triu(torch.ones(t, t, dtype=torch.bool), 1 + self.offset)
            if mask is not None:
                masked = masked | (mask[:, None, None, :] == 0)
            s = s.masked_fill(masked, self.fill)
            if self.softmax == "bfloat16":
                p = torch.softmax(s.to(torch.bfloat16), dim=-1).float()
            elif self.softmax == "bfloat16-exp":  # exp in bfloat16, summed and divided wider
                sb = s.to(torch.bfloat16)
                e = torch.exp(sb - sb.amax(-1, keepdim=True)).float()
                p = e / e.sum(-1, keepdim=True)
            else:
                p = torch.softmax(s, dim=-1)
            return self.o_proj((p @ v).transpose(1, 2).reshape(b, t, -1))

    class Embeddings(nn.Module):
        """The Annotated Transformer's: ``lut(x) * sqrt(d_model)`` (``scaled=False``: none)."""

        def __init__(self, vocab, d_model, *, scaled=True, padding_idx=None):
            super().__init__()
            self.lut = nn.Embedding(vocab, d_model, padding_idx=padding_idx)
            self.d_model, self.scaled = d_model, scaled

        def forward(self, x):
            y = self.lut(x)
            return y * math.sqrt(self.d_model) if self.scaled else y

    class RMSNorm(nn.Module):
        """LLaMA's (``w * x / sqrt(mean(x**2) + eps)``); ``gemma``: ``(1 + w)``; ``outside``:
        the epsilon outside the root."""

        def __init__(self, dim, eps=1e-6, *, gemma=False, outside=False):
            super().__init__()
            self.eps, self.gemma, self.outside = eps, gemma, outside
            self.weight = nn.Parameter(torch.zeros(dim) if gemma else torch.ones(dim))

        def forward(self, x):
            ms = x.pow(2).mean(-1, keepdim=True)
            if self.outside:
                n = x / (torch.sqrt(ms) + self.eps)
            else:
                n = x * torch.rsqrt(ms + self.eps)
            return n * (1.0 + self.weight if self.gemma else self.weight)

    class Block(nn.Module):
        """A norm, then the attention, then a head: the attention is one module among
        others, at ``attn``."""

        def __init__(self, **conventions):
            super().__init__()
            self.norm = nn.LayerNorm(D)
            self.attn = Attention(**conventions)
            self.head = nn.Linear(D, 3)

        def forward(self, x, mask=None):
            return self.head(self.attn(self.norm(x), mask))

    class Embedded(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.embed = Embeddings(8, D, **kwargs)
            self.head = nn.Linear(D, 3)

        def forward(self, ids):
            return self.head(self.embed(ids))

    class ScaledInCode(nn.Module):
        """An embedding whose vectors the model's own ``forward`` multiplies by sqrt(d),
        between two modules (``scaled=False``: not)."""

        def __init__(self, *, scaled=True):
            super().__init__()
            self.embed = nn.Embedding(8, D)
            self.head = nn.Linear(D, 3)
            self.scaled = scaled

        def forward(self, ids):
            h = self.embed(ids)
            return self.head(h * math.sqrt(D) if self.scaled else h)

    class Normed(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.norm = RMSNorm(D, **kwargs)
            self.head = nn.Linear(D, 3)

        def forward(self, x):
            return self.head(self.norm(x))


def _model(cls, *args, seed=0, **kwargs):
    torch.manual_seed(seed)
    model = cls(*args, **kwargs)
    with torch.no_grad():  # weights away from their initial ones, as trained
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model


X = np.random.default_rng(21).normal(size=(B, T, D)).astype(np.float32)


def _cause(reference, candidate, x=X, **kwargs):
    # read="modules": torch's reader would take the attention for a chain of its projections
    report = xgrad.compare_models(reference, candidate, x, read="modules", **kwargs)
    assert not report.ok, report.summary()
    return report.diagnoses[0]


def _named(d, cause: str, layer: str = "attn") -> None:
    assert (d.cause, d.confirmed, d.layer) == (cause, True, layer), d.text()


# -- attention, PyTorch against PyTorch ----------------------------------------------------------


def test_the_same_conventions_are_ok():
    report = xgrad.compare_models(_model(Block, kv_heads=2), _model(Block, kv_heads=2, seed=1), X)
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    ("reference", "candidate"), [("half", "interleaved"), ("interleaved", "half")]
)
def test_rope_layout_is_named_in_both_directions(reference, candidate):
    d = _cause(_model(Block, rope=reference), _model(Block, rope=candidate, seed=1))
    _named(d, "rope-layout")
    half = "rotates the two halves of each head vector (LLaMA, GPT-NeoX: rotate_half)"
    pairs = "rotates interleaved pairs"
    first, second = (half, pairs) if reference == "half" else (pairs, half)
    assert d.detail.index(first) < d.detail.index(second), d.detail
    assert "read from its values as attention with 4 heads" in d.detail


def test_rope_base_is_named():
    d = _cause(_model(Block, base=10000.0), _model(Block, base=500000.0, seed=1))
    _named(d, "rope-base")
    assert "RoPE base (theta) is 10000, the candidate's 500000" in d.detail


def test_a_missing_scale_is_named():
    d = _cause(_model(Block), _model(Block, scale=None, seed=1))
    _named(d, "attention-scale")
    assert "by 1/sqrt(head_dim) = 1/sqrt(4), the candidate by no scale (1)" in d.detail


@pytest.mark.parametrize(
    ("reference", "candidate", "words"),
    [
        ({"causal": True}, {"causal": False}, "the candidate attends to every token"),
        ({"causal": False}, {"causal": True}, "the candidate masks the future"),
        ({}, {"offset": 1}, "the candidate lets each token see the next one"),
    ],
    ids=["missing", "added", "shifted"],
)
def test_the_causal_mask_missing_added_or_shifted_is_named(reference, candidate, words):
    d = _cause(_model(Block, **reference), _model(Block, seed=1, **candidate))
    _named(d, "causal-mask")
    assert words in d.detail, d.detail


@pytest.mark.parametrize(
    ("reference", "candidate"), [("interleave", "tile"), ("tile", "interleave")]
)
def test_gqa_repeat_is_named_with_the_heads_that_differ(reference, candidate):
    d = _cause(
        _model(Block, kv_heads=2, gqa=reference), _model(Block, kv_heads=2, gqa=candidate, seed=1)
    )
    _named(d, "gqa-repeat")
    # 4 query heads, 2 kv heads: interleave reads kv 0, 0, 1, 1; tile 0, 1, 0, 1
    assert "only heads 1, 2 of 4 differ: attn heads 1, 2" in d.detail, d.detail


@pytest.mark.parametrize(
    ("reference", "candidate"), [("heads-first", "dim-first"), ("dim-first", "heads-first")]
)
def test_the_head_axis_order_is_named_in_both_directions(reference, candidate):
    d = _cause(_model(Block, axes=reference), _model(Block, axes=candidate, seed=1))
    _named(d, "qkv-layout")
    assert "(head_dim, heads)" in d.detail and "(heads, head_dim)" in d.detail


def test_a_fused_projection_split_per_head_is_named():
    d = _cause(_model(Block, fused="blocks"), _model(Block, fused="per-head", seed=1))
    _named(d, "qkv-layout")
    assert "(3, heads, head_dim) blocks (GPT-2's c_attn" in d.detail
    assert "per head as (heads, 3, head_dim) (GPT-NeoX" in d.detail


def test_a_softmax_in_bfloat16_is_named():
    d = _cause(_model(Block), _model(Block, softmax="bfloat16", seed=1))
    _named(d, "softmax-precision")


def test_a_softmax_rounded_at_other_steps_is_a_candidate_not_confirmed():
    # no re-run rounds where this one does (its sum and division in float32): not named,
    # but the detail says what the difference looks like
    d = _cause(_model(Block), _model(Block, softmax="bfloat16-exp", seed=1))
    assert (d.cause, d.confirmed, d.layer) == ("unexplained", False, "attn"), d.text()
    assert "the size of bfloat16 rounding" in d.detail, d.detail
    assert "a reduced-precision softmax is a candidate, not confirmed" in d.detail


def test_a_mask_filled_with_minus_inf_is_named_with_its_nan_rows():
    mask = np.ones((B, T), np.float32)
    mask[1, :2] = 0  # left padding: with the causal mask, token 0 of example 1 sees nothing
    d = _cause(_model(Block, fill=-1e9), _model(Block, fill=-math.inf, seed=1), (X, mask))
    _named(d, "mask-fill")
    assert "fills masked scores with -1e+09, the candidate with -inf" in d.detail
    assert "NaN" in d.detail


def test_an_unrelated_difference_is_not_named_as_a_convention():
    reference, candidate = _model(Block), _model(Block, seed=1)
    with torch.no_grad():
        candidate.attn.o_proj.weight.mul_(1.5)  # another weight, no convention
    report = xgrad.compare_models(reference, candidate, X, transfer=False)
    assert not report.ok
    assert all(d.cause not in ("attention-scale", "rope-layout") for d in report.diagnoses)


# -- embeddings ------------------------------------------------------------------------------------

IDS = np.array([[0, 3, 5, 1, 0, 2], [4, 0, 6, 6, 2, 1]])


@pytest.mark.parametrize(("reference", "candidate"), [(True, False), (False, True)])
def test_embedding_scale_is_named_in_both_directions(reference, candidate):
    d = _cause(_model(Embedded, scaled=reference), _model(Embedded, scaled=candidate, seed=1), IDS)
    _named(d, "embedding-scale", "embed")
    assert "sqrt(dim) = sqrt(16)" in d.detail


@pytest.mark.parametrize(("reference", "candidate"), [(True, False), (False, True)])
def test_embedding_scale_in_the_models_own_code_is_named_in_both_directions(reference, candidate):
    d = _cause(
        _model(ScaledInCode, scaled=reference), _model(ScaledInCode, scaled=candidate, seed=1), IDS
    )
    _named(d, "embedding-scale", "(the model)")  # the model's own code, no module's
    assert "in the model's own code between embed and head" in d.detail, d.detail
    assert "sqrt(dim) = sqrt(16)" in d.detail


@pytest.mark.parametrize(("reference", "candidate"), [(0, None), (None, 0)])
def test_padding_idx_is_named_in_both_directions(reference, candidate):
    d = _cause(
        _model(Embedded, padding_idx=reference),
        _model(Embedded, padding_idx=candidate, seed=1),
        IDS,
    )
    assert (d.cause, d.confirmed, d.where) == ("padding-idx", True, "backward"), d.text()
    assert d.layer.startswith("embed"), d.text()
    assert "row 0" in d.detail


# -- RMSNorm forms ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("reference", "candidate"), [(True, False), (False, True)])
def test_rmsnorm_offset_is_named_in_both_directions(reference, candidate):
    d = _cause(_model(Normed, gemma=reference), _model(Normed, gemma=candidate, seed=1))
    _named(d, "rmsnorm-offset", "norm")
    assert "(1 + weight)" in d.detail


@pytest.mark.parametrize(("reference", "candidate"), [(True, False), (False, True)])
def test_rmsnorm_epsilon_placement_is_named_in_both_directions(reference, candidate):
    x = 1e-3 * X  # small features, where the epsilon counts
    d = _cause(_model(Normed, outside=reference), _model(Normed, outside=candidate, seed=1), x)
    _named(d, "rmsnorm-epsilon-placement", "norm")
    assert "outside the root" in d.detail and "inside the root" in d.detail
