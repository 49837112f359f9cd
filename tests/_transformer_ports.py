"""Hand-written ports of real transformers, as their users write them, for the real-model
comparisons of issue 21 (tests/scenarios/test_real_transformers.py, docs/transformers.md).

* :func:`hf_llama`: a tiny Hugging Face ``LlamaForCausalLM`` built from its config class
  (nothing downloaded), in float32, eager attention.
* :class:`LlamaPort`: a Flax NNX port of it written the way Flax users write one
  (``nnx.Embed``, ``nnx.LinearGeneral`` q/k/v ``(d, heads, head_dim)`` and o ``(heads,
  head_dim, d)`` projections, RoPE with ``rotate_half``, ``repeat_kv``, ``nnx.RMSNorm``,
  SwiGLU, an ``nnx.Linear`` LM head). Its keyword knobs plant one porting convention each
  (issue 21, Deliver 3); every default gives the correct port. :func:`llama_port` builds it
  from the Hugging Face config.
* :func:`hf_gpt2` and :func:`keras_gpt2`: a tiny Hugging Face ``GPT2LMHeadModel`` and a Keras
  model around keras-hub's ``GPT2Backbone`` with the LM head tied to its token embedding
  (``ReversibleEmbedding(reverse=True)``, as keras-hub's ``GPT2CausalLM`` computes logits).

Another helper's causes import these ports: keep the knobs plain keyword arguments.
"""

from __future__ import annotations

import math
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

LLAMA_TINY = {
    "vocab": 32,
    "dim": 16,
    "heads": 4,
    "kv_heads": 2,
    "hidden": 32,
    "layers": 2,
}
"""The sizes the tests use (the docs page uses hidden 64, vocab 100)."""


def hf_llama(
    *,
    vocab: int = 32,
    dim: int = 16,
    heads: int = 4,
    kv_heads: int = 2,
    hidden: int = 32,
    layers: int = 2,
    eps: float = 1e-5,
    tied: bool = False,
    rope_theta: float = 10000.0,
    seed: int = 0,
):
    """A random Hugging Face ``LlamaForCausalLM`` in eval mode (its LM head untied unless
    ``tied``, RoPE theta ``rope_theta`` as its config sets it, no padding index), its RMSNorm
    weights moved away from one as trained ones are."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=dim, intermediate_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, rms_norm_eps=eps,
        max_position_embeddings=64, attn_implementation="eager", tie_word_embeddings=tied,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
    return model


# -- the NNX port ---------------------------------------------------------------------------------


class RMSNorm(nnx.Module):
    """An RMSNorm written out, for the knobs ``nnx.RMSNorm`` cannot plant.

    Args:
        dim: the feature width; ``scale`` is ``(dim,)``.
        eps: the epsilon.
        eps_outside: ``x / (sqrt(mean(x^2)) + eps)`` instead of ``x * rsqrt(mean(x^2) + eps)``.
        offset: Gemma's ``(1 + scale)`` instead of ``scale``.
    """

    def __init__(self, dim: int, *, eps: float, eps_outside: bool = False, offset: bool = False):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps, self.eps_outside, self.offset = eps, eps_outside, offset

    def __call__(self, x):
        ms = jnp.mean(x * x, axis=-1, keepdims=True)
        if self.eps_outside:
            y = x / (jnp.sqrt(ms) + self.eps)
        else:
            y = x * jax.lax.rsqrt(ms + self.eps)
        return y * ((1.0 + self.scale[...]) if self.offset else self.scale[...])


def rotate_half(x):
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last axis (LLaMA's)."""
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope(x, theta: float, layout: str = "half"):
    """Rotary positions on ``x (batch, tokens, heads, head_dim)``: pairs ``(m, m + hd/2)``
    (``"half"``, Hugging Face LLaMA) or ``(2m, 2m + 1)`` (``"interleaved"``, Meta/GPT-J)."""
    t, hd = x.shape[1], x.shape[-1]
    inv = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    freqs = jnp.arange(t, dtype=jnp.float32)[:, None] * inv[None, :]  # (T, hd/2)
    if layout == "half":
        emb = jnp.concatenate([freqs, freqs], axis=-1)[None, :, None, :]
        return x * jnp.cos(emb) + rotate_half(x) * jnp.sin(emb)
    cos, sin = jnp.cos(freqs)[None, :, None, :], jnp.sin(freqs)[None, :, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)


class Attention(nnx.Module):
    """LLaMA's attention: q/k/v ``LinearGeneral`` ``(dim, heads, head_dim)``, RoPE, GQA,
    causal softmax, o ``(heads, head_dim, dim)``. Knobs as :class:`LlamaPort`'s."""

    def __init__(self, dim, heads, kv_heads, *, rngs, **knobs):
        self.heads, self.kv_heads, self.hd = heads, kv_heads, dim // heads
        self.knobs = knobs
        flip = knobs["heads_layout"] == "head_dim_first"
        out = (self.hd, heads) if flip else (heads, self.hd)
        kv = (self.hd, kv_heads) if flip else (kv_heads, self.hd)
        if knobs["qkv_order"] is not None:  # one projection, split into q, k, v heads
            fused = (heads + 2 * kv_heads, self.hd)
            self.qkv_proj = nnx.LinearGeneral(dim, fused, use_bias=False, rngs=rngs)
        else:
            self.q_proj = nnx.LinearGeneral(dim, out, use_bias=False, rngs=rngs)
            self.k_proj = nnx.LinearGeneral(dim, kv, use_bias=False, rngs=rngs)
            self.v_proj = nnx.LinearGeneral(dim, kv, use_bias=False, rngs=rngs)
        self.o_proj = nnx.LinearGeneral(
            (heads, self.hd), dim, axis=(-2, -1), use_bias=False, rngs=rngs
        )

    def _heads(self, a):
        return a.swapaxes(-1, -2) if self.knobs["heads_layout"] == "head_dim_first" else a

    def __call__(self, x, key_mask=None):
        k_ = self.knobs
        if k_["qkv_order"] is not None:  # heads of q, k and v one after the other, in that order
            fused, parts, at = self.qkv_proj(x), {}, 0
            for name in k_["qkv_order"]:
                n = self.heads if name == "q" else self.kv_heads
                parts[name], at = fused[..., at : at + n, :], at + n
            q, k, v = parts["q"], parts["k"], parts["v"]
        else:
            q = self._heads(self.q_proj(x))  # (B, T, H, hd)
            k = self._heads(self.k_proj(x))  # (B, T, K, hd)
            v = self._heads(self.v_proj(x))
        q, k = rope(q, k_["rope_theta"], k_["rope"]), rope(k, k_["rope_theta"], k_["rope"])
        g = self.heads // self.kv_heads
        if k_["gqa"] == "tile":  # kv head j serves query heads j, j + K, ...: wrong
            k, v = jnp.tile(k, (1, 1, g, 1)), jnp.tile(v, (1, 1, g, 1))
        else:  # repeat_kv: kv head j serves query heads j*g .. j*g+g-1
            k, v = jnp.repeat(k, g, axis=2), jnp.repeat(v, g, axis=2)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k)
        scale = {"once": 1 / math.sqrt(self.hd), "none": 1.0, "twice": 1 / self.hd}
        scores = scores * scale[k_["scale"]]
        t = x.shape[1]
        i, j = jnp.arange(t)[:, None], jnp.arange(t)[None, :]
        allowed = {"correct": j <= i, "shifted": j <= i + 1, "none": jnp.ones((t, t), bool)}
        mask = allowed[k_["causal"]][None, None]
        if key_mask is not None:
            mask = mask & key_mask[:, None, None, :].astype(bool)
        scores = scores + jnp.where(mask, 0.0, k_["mask_fill"])  # additive, as HF's
        if k_["softmax_dtype"] == "bfloat16":
            p = jax.nn.softmax(scores.astype(jnp.bfloat16), axis=-1).astype(jnp.float32)
        else:
            p = jax.nn.softmax(scores, axis=-1)
        return self.o_proj(jnp.einsum("bhqk,bkhd->bqhd", p, v))


class MLP(nnx.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, dim, hidden, *, rngs):
        self.gate_proj = nnx.Linear(dim, hidden, use_bias=False, rngs=rngs)
        self.up_proj = nnx.Linear(dim, hidden, use_bias=False, rngs=rngs)
        self.down_proj = nnx.Linear(hidden, dim, use_bias=False, rngs=rngs)

    def __call__(self, x):
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


def _norm(dim, eps, knobs, rngs):
    if knobs["rms_eps"] == "outside" or knobs["rms_offset"]:
        return RMSNorm(
            dim, eps=eps, eps_outside=knobs["rms_eps"] == "outside", offset=knobs["rms_offset"]
        )
    return nnx.RMSNorm(dim, epsilon=eps, rngs=rngs)


class Block(nnx.Module):
    """Pre-norm: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, dim, heads, kv_heads, hidden, eps, *, rngs, **knobs):
        self.attn_norm = _norm(dim, eps, knobs, rngs)
        self.attn = Attention(dim, heads, kv_heads, rngs=rngs, **knobs)
        self.mlp_norm = _norm(dim, eps, knobs, rngs)
        self.mlp = MLP(dim, hidden, rngs=rngs)

    def __call__(self, x, key_mask=None):
        x = x + self.attn(self.attn_norm(x), key_mask)
        return x + self.mlp(self.mlp_norm(x))


class LlamaPort(nnx.Module):
    """A Flax NNX port of ``LlamaForCausalLM``: ``(batch, tokens)`` ids -> ``(batch, tokens,
    vocab)`` logits.

    Args:
        vocab, dim, heads, kv_heads, hidden, layers: the sizes (``head_dim = dim // heads``).
        eps: the RMSNorm epsilon.
        rngs: ``nnx.Rngs``.
        rope: ``"half"`` (LLaMA's rotate_half) or ``"interleaved"`` (pairs 2m, 2m+1).
        rope_theta: the RoPE base (LLaMA 2: 10000; LLaMA 3: 500000).
        scale: attention scale ``"once"`` (1/sqrt(head_dim)), ``"none"`` or ``"twice"``.
        causal: ``"correct"`` (keys j <= i), ``"shifted"`` (j <= i + 1) or ``"none"``.
        gqa: kv heads ``"repeat"`` (repeat_interleave, LLaMA's repeat_kv) or ``"tile"``.
        heads_layout: projections' heads as ``"heads_first"`` (heads, head_dim) or
            ``"head_dim_first"`` (head_dim, heads).
        qkv_order: ``None`` (separate q/k/v projections) or one fused ``(dim, heads + 2
            kv_heads, head_dim)`` projection split in this order: ``"qkv"`` (correct: the
            weights are stacked q, k, v), ``"kqv"``, ``"qvk"``, ...
        embed_scale: multiply the embeddings by sqrt(dim) (Gemma's habit; LLaMA does not).
        tied: the LM head reuses the embedding (``nnx.Embed.attend``; LLaMA's is separate).
        softmax_dtype: ``"float32"`` or ``"bfloat16"`` (scores cast down before the softmax).
        rms_eps: the RMSNorm epsilon ``"inside"`` or ``"outside"`` the square root.
        rms_offset: RMSNorm scale ``(1 + w)`` (Gemma's) instead of ``w``.
        mask_fill: what is added to a masked key's score: -1e9 (as Hugging Face's finite
            minimum: a fully masked row attends uniformly) or ``float("-inf")`` (NaN on a
            fully masked row).
    """

    def __init__(
        self,
        vocab: int,
        dim: int,
        heads: int,
        kv_heads: int,
        hidden: int,
        layers: int,
        *,
        eps: float = 1e-5,
        rngs: nnx.Rngs,
        rope: str = "half",
        rope_theta: float = 10000.0,
        scale: str = "once",
        causal: str = "correct",
        gqa: str = "repeat",
        heads_layout: str = "heads_first",
        qkv_order: str | None = None,
        embed_scale: bool = False,
        tied: bool = False,
        softmax_dtype: str = "float32",
        rms_eps: str = "inside",
        rms_offset: bool = False,
        mask_fill: float = -1e9,
    ):
        knobs = {
            "rope": rope, "rope_theta": rope_theta, "scale": scale, "causal": causal,
            "gqa": gqa, "heads_layout": heads_layout, "qkv_order": qkv_order,
            "softmax_dtype": softmax_dtype,
            "rms_eps": rms_eps, "rms_offset": rms_offset, "mask_fill": mask_fill,
        }  # fmt: skip
        self.dim, self.embed_scale, self.tied = dim, embed_scale, tied
        self.embed = nnx.Embed(vocab, dim, rngs=rngs)
        self.blocks = nnx.List(
            [Block(dim, heads, kv_heads, hidden, eps, rngs=rngs, **knobs) for _ in range(layers)]
        )
        self.norm = _norm(dim, eps, knobs, rngs)
        if not tied:
            self.lm_head = nnx.Linear(dim, vocab, use_bias=False, rngs=rngs)

    def __call__(self, input_ids, attention_mask=None):
        x = self.embed(input_ids)
        if self.embed_scale:
            x = x * jnp.sqrt(jnp.float32(self.dim))
        for block in self.blocks:
            x = block(x, attention_mask)
        x = self.norm(x)
        return self.embed.attend(x) if self.tied else self.lm_head(x)


def llama_port(reference, *, seed: int = 0, **knobs) -> LlamaPort:
    """A :class:`LlamaPort` of the sizes of a Hugging Face LLaMA (``knobs`` as there)."""
    c = reference.config
    return LlamaPort(
        c.vocab_size, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
        c.intermediate_size, c.num_hidden_layers, eps=c.rms_norm_eps, rngs=nnx.Rngs(seed),
        **knobs,
    )  # fmt: skip


# -- the same conventions planted on the Hugging Face side ----------------------------------------

HF_KNOBS = {
    "rope": "half", "scale": "once", "causal": "correct", "gqa": "repeat",
    "heads_layout": "heads_first", "softmax_dtype": "float32", "mask_fill": "finfo.min",
    "qkv_order": None,
}  # fmt: skip
"""The attention knobs of :func:`plant_llama` and the Hugging Face LLaMA's own values."""


def _torch_classes():
    """The torch modules that plant a convention in a Hugging Face LLaMA, defined once torch
    and transformers are imported."""
    global _TORCH
    if _TORCH is not None:
        return _TORCH
    import torch
    from transformers.models.llama import modeling_llama as ml

    class PlantedLlamaAttention(ml.LlamaAttention):
        """``LlamaAttention`` computing what its ``forward`` computes, with one convention
        changed by ``self.knobs`` (:data:`HF_KNOBS`'s keys; values as :class:`LlamaPort`'s,
        ``mask_fill`` ``"-inf"``: the finfo.min of Hugging Face's additive mask made -inf).
        Weights and submodules are ``LlamaAttention``'s own."""

        def forward(self, hidden_states, position_embeddings=None, attention_mask=None, **kw):
            k_, hd = self.knobs, self.head_dim
            b, t, _ = hidden_states.shape

            def heads(z):  # (B, T, n * hd) -> (B, n, T, hd)
                if k_["heads_layout"] == "head_dim_first":
                    return z.view(b, t, hd, -1).transpose(2, 3).transpose(1, 2)
                return z.view(b, t, -1, hd).transpose(1, 2)

            if k_["qkv_order"] is not None:  # one projection, its q, k, v parts cut in order
                widths = {"q": self.q_width, "k": self.kv_width, "v": self.kv_width}
                cuts = [widths[name] for name in k_["qkv_order"]]
                parts = self.qkv_proj(hidden_states).split(cuts, dim=-1)
                named = dict(zip(k_["qkv_order"], parts, strict=True))
                q, k, v = heads(named["q"]), heads(named["k"]), heads(named["v"])
            else:
                q, k = heads(self.q_proj(hidden_states)), heads(self.k_proj(hidden_states))
                v = heads(self.v_proj(hidden_states))
            cos, sin = position_embeddings  # (B, T, hd): the frequencies twice
            if k_["rope"] == "half":
                q, k = ml.apply_rotary_pos_emb(q, k, cos, sin)
            else:  # pairs (2m, 2m + 1) rotated by frequency m
                c, s = cos[:, None, :, : hd // 2], sin[:, None, :, : hd // 2]

                def rotate(z):
                    a, e = z[..., 0::2], z[..., 1::2]
                    return torch.stack([a * c - e * s, a * s + e * c], dim=-1).flatten(-2)

                q, k = rotate(q), rotate(k)
            g = self.num_key_value_groups
            if k_["gqa"] == "tile":  # kv head j serves query heads j, j + K, ...
                k, v = k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)
            else:
                k, v = ml.repeat_kv(k, g), ml.repeat_kv(v, g)
            scale = {"once": self.scaling, "none": 1.0, "twice": self.scaling**2}[k_["scale"]]
            scores = torch.matmul(q, k.transpose(2, 3)) * scale
            low = torch.finfo(scores.dtype).min
            i, j = torch.arange(t)[:, None], torch.arange(t)[None, :]
            if k_["causal"] == "none":  # no padding in these cases: no mask at all
                attention_mask = None
            elif k_["causal"] == "shifted":
                attention_mask = torch.where(j <= i + 1, 0.0, low)[None, None]
            if attention_mask is not None:
                if k_["mask_fill"] == "-inf":
                    attention_mask = torch.where(attention_mask < 0, -torch.inf, 0.0)
                scores = scores + attention_mask
            if k_["softmax_dtype"] == "bfloat16":
                p = torch.softmax(scores.to(torch.bfloat16), dim=-1).to(scores.dtype)
            else:
                p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            o = torch.matmul(p, v).transpose(1, 2).reshape(b, t, -1)
            return self.o_proj(o), p

    class OutsideEpsRMSNorm(ml.LlamaRMSNorm):
        """``x / (sqrt(mean(x**2)) + eps) * w``: the epsilon outside the root."""

        def forward(self, hidden_states):
            ms = hidden_states.pow(2).mean(-1, keepdim=True)
            return hidden_states / (ms.sqrt() + self.variance_epsilon) * self.weight

    class EmbedScaledLlama(ml.LlamaForCausalLM):
        """``LlamaForCausalLM`` whose own ``forward`` multiplies the token embeddings by
        sqrt(hidden_size) (Gemma's habit) before the decoder layers."""

        def forward(self, input_ids=None, attention_mask=None, **kwargs):
            x = self.model.embed_tokens(input_ids) * self.config.hidden_size**0.5
            return super().forward(inputs_embeds=x, attention_mask=attention_mask, **kwargs)

    _TORCH = (PlantedLlamaAttention, OutsideEpsRMSNorm, EmbedScaledLlama)
    return _TORCH


_TORCH = None


def plant_llama(reference, *, rms_eps="inside", rms_offset=False, embed_scale=False, **knobs):
    """A copy of a Hugging Face LLaMA (:func:`hf_llama`) with one convention planted on its
    side, in every layer, its weights unchanged: the other direction of :class:`LlamaPort`'s
    knobs.

    Args:
        rms_eps: ``"outside"``: every RMSNorm computes ``x / (sqrt(mean(x**2)) + eps) * w``.
        rms_offset: every RMSNorm is Hugging Face's own ``GemmaRMSNorm`` holding the same
            weight ``w`` (it computes ``x * rsqrt(mean(x**2) + eps) * (1 + w)``).
        embed_scale: the model's ``forward`` multiplies the embeddings by sqrt(hidden_size).
        knobs: attention conventions (:data:`HF_KNOBS`), set on every ``LlamaAttention``
            (its class becomes ``PlantedLlamaAttention``); ``qkv_order="kqv"`` (...) replaces
            its q, k and v projections by one ``qkv_proj`` holding their weights stacked q, k,
            v, its output cut in that order.
    """
    import copy

    import torch
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm

    attention_cls, outside_cls, scaled_cls = _torch_classes()
    unknown = set(knobs) - set(HF_KNOBS)
    if unknown:
        raise TypeError(f"plant_llama: no knob {sorted(unknown)}")
    model = copy.deepcopy(reference)
    if embed_scale:
        model.__class__ = scaled_cls
    for layer in model.model.layers:
        if knobs:
            attn = layer.self_attn
            attn.__class__ = attention_cls
            attn.knobs = {**HF_KNOBS, **knobs}
        if knobs.get("qkv_order"):  # q, k and v fused as a user fuses them: stacked q, k, v
            q, k, v = attn.q_proj, attn.k_proj, attn.v_proj
            attn.q_width, attn.kv_width = q.out_features, k.out_features
            attn.qkv_proj = torch.nn.Linear(q.in_features, q.out_features + 2 * k.out_features,
                                            bias=False)  # fmt: skip
            with torch.no_grad():
                attn.qkv_proj.weight.copy_(torch.cat([q.weight, k.weight, v.weight]))
            del attn.q_proj, attn.k_proj, attn.v_proj
    norms = [(layer, n) for layer in model.model.layers for n in ("input_layernorm",
             "post_attention_layernorm")] + [(model.model, "norm")]  # fmt: skip
    for owner, name in norms:
        norm = getattr(owner, name)
        if rms_eps == "outside":
            norm.__class__ = outside_cls
        elif rms_offset:
            gemma = GemmaRMSNorm(norm.weight.shape[0], eps=norm.variance_epsilon)
            with torch.no_grad():
                gemma.weight.copy_(norm.weight)
            setattr(owner, name, gemma)
    return model


# -- GPT-2: Hugging Face against keras-hub --------------------------------------------------------


def hf_gpt2(
    *, vocab: int = 50, dim: int = 16, heads: int = 2, layers: int = 2, seed: int = 0, **config
):
    """A random Hugging Face ``GPT2LMHeadModel`` in eval mode: ``gelu_new`` (the tanh GELU),
    LayerNorm epsilon 1e-5, its LM head tied to ``wte``, 32 positions; ``config``: more
    ``GPT2Config`` fields (``scale_attn_weights=False`` plants scores not scaled)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=layers, n_embd=dim, n_head=heads, vocab_size=vocab, n_positions=32,
        bos_token_id=0, eos_token_id=0, attn_implementation="eager", **config,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GPT2LMHeadModel(config).eval()


def plant_gpt2(reference, block: int, *, causal: str = "correct", qkv_order: str = "qkv"):
    """A copy of a Hugging Face GPT-2 (:func:`hf_gpt2`) whose ``block``'s attention computes
    what ``GPT2Attention`` computes (eager, no cache) with one convention changed, its weights
    unchanged.

    Args:
        causal: ``"none"``: no mask added to the scores (every token sees every other).
        qkv_order: the order ``c_attn``'s output ``(B, T, 3 d)`` is cut into q, k and v
            (GPT-2's is ``"qkv"``; ``"kqv"`` reads its first third as the keys).
    """
    import copy

    import torch
    from transformers.models.gpt2 import modeling_gpt2 as mg

    class PlantedGPT2Attention(mg.GPT2Attention):
        def forward(self, hidden_states, past_key_values=None, attention_mask=None, **kw):
            b, t, d = hidden_states.shape
            thirds = self.c_attn(hidden_states).split(d, dim=2)
            parts = dict(zip(self.qkv_order, thirds, strict=True))
            q, k, v = (parts[n].view(b, t, -1, self.head_dim).transpose(1, 2) for n in "qkv")
            scores = torch.matmul(q, k.transpose(-1, -2)) * self.scaling
            if self.causal != "none" and attention_mask is not None:
                scores = scores + attention_mask
            p = torch.softmax(scores, dim=-1)
            o = torch.matmul(p, v).transpose(1, 2).reshape(b, t, d)
            return self.c_proj(o), p

    model = copy.deepcopy(reference)
    attn = model.transformer.h[block].attn
    attn.__class__ = PlantedGPT2Attention
    attn.causal, attn.qkv_order = causal, qkv_order
    return model


def _keras_classes():
    """The Keras classes, defined once keras and keras-hub are imported (they are slow to)."""
    global _KERAS
    if _KERAS is not None:
        return _KERAS
    import keras
    import keras_hub

    class PlantedGPT2Backbone(keras_hub.models.GPT2Backbone):
        """keras-hub's ``GPT2Backbone`` with one difference planted after construction (and
        kept in its config, so that copies keep it).

        Args:
            ln_epsilon: ``(block, epsilon)``: that block's attention LayerNorm epsilon.
            erf_gelu: a block whose feed-forward GELU is the erf form (keras-hub's is
                ``keras.activations.gelu(approximate=True)``, the tanh form, as GPT-2's).
            unscaled: a block whose attention scores are not scaled by 1/sqrt(head_dim).
            uncausal: a block whose self-attention gets no causal mask (keras-hub's
                ``TransformerDecoder`` called with ``use_causal_mask=False``).
        """

        def __init__(
            self, *, ln_epsilon=None, erf_gelu=None, unscaled=None, uncausal=None, **kwargs
        ):
            super().__init__(**kwargs)
            self.ln_epsilon, self.erf_gelu, self.unscaled = ln_epsilon, erf_gelu, unscaled
            self.uncausal = uncausal
            if uncausal is not None:  # the mask is computed at each call: no causal part
                layer = self.transformer_layers[uncausal]
                own = layer._compute_self_attention_mask

                def padding_only(*args, **kw):
                    return own(*args, **{**kw, "use_causal_mask": False})

                layer._compute_self_attention_mask = padding_only
            if unscaled is not None:  # Keras' MultiHeadAttention scales queries by this
                attention = self.transformer_layers[unscaled]._self_attention_layer
                attention._inverse_sqrt_key_dim = 1.0
            if ln_epsilon is not None:
                block, eps = ln_epsilon
                self.transformer_layers[block]._self_attention_layer_norm.epsilon = eps
            if erf_gelu is not None:
                dense = self.transformer_layers[erf_gelu]._feedforward_intermediate_dense
                dense.activation = keras.activations.gelu  # approximate=False: erf

        def get_config(self):
            return {
                **super().get_config(),
                "ln_epsilon": self.ln_epsilon,
                "erf_gelu": self.erf_gelu,
                "unscaled": self.unscaled,
                "uncausal": self.uncausal,
            }

    class GPT2LM(keras.Model):
        """A ``GPT2Backbone`` and its LM head tied to its token embedding, as keras-hub's
        ``GPT2CausalLM`` computes logits (``token_embedding(h, reverse=True)``: ``h @
        embeddings.T``), called on token ids alone (every position attended)."""

        def __init__(self, backbone, **kwargs):
            super().__init__(**kwargs)
            self.backbone = backbone

        def get_config(self):
            backbone = keras.saving.serialize_keras_object(self.backbone)
            return {**super().get_config(), "backbone": backbone}

        @classmethod
        def from_config(cls, config):
            config = dict(config)  # the backbone's class is known: no registry needed
            config["backbone"] = PlantedGPT2Backbone.from_config(config["backbone"]["config"])
            return cls(**config)

        def call(self, token_ids):
            mask = keras.ops.ones_like(token_ids)
            h = self.backbone({"token_ids": token_ids, "padding_mask": mask})
            return self.backbone.token_embedding(h, reverse=True)

    _KERAS = (PlantedGPT2Backbone, GPT2LM)
    return _KERAS


_KERAS = None


def keras_gpt2(
    reference, *, seed: int = 0, ln_epsilon=None, erf_gelu=None, unscaled=None, uncausal=None
):
    """A Keras ``GPT2LM`` (keras-hub ``GPT2Backbone``, tied head) of a Hugging Face GPT-2's
    sizes, dropout 0, its own random weights; ``ln_epsilon=(block, eps)``, ``erf_gelu=block``,
    ``unscaled=block`` or ``uncausal=block`` plant a difference
    (:class:`PlantedGPT2Backbone`)."""
    import keras

    backbone_cls, lm_cls = _keras_classes()
    c = reference.config
    keras.utils.set_random_seed(seed)
    backbone = backbone_cls(
        vocabulary_size=c.vocab_size, num_layers=c.n_layer, num_heads=c.n_head,
        hidden_dim=c.n_embd, intermediate_dim=4 * c.n_embd, dropout=0.0,
        max_sequence_length=c.n_positions, ln_epsilon=ln_epsilon, erf_gelu=erf_gelu,
        unscaled=unscaled, uncausal=uncausal,
    )  # fmt: skip
    model = lm_cls(backbone)
    model(np.zeros((1, 4), np.int32))  # built, as a user's model is after its first call
    return model
