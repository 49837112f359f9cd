"""The transformer layer kinds (Embedding, Attention, GatedMLP) and the token-wise layers on
``(tokens, d)`` examples: VJPs against central finite differences in float64, attention
against a loop-over-heads formula written here, the RoPE conventions checked on their own,
and bad input refused by name."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from _util import numeric_gradients, rel_norm

import xgrad
from xgrad.layers import (
    Activation,
    Attention,
    Dense,
    Dropout,
    Embedding,
    GatedMLP,
    LayerNorm,
    RMSNorm,
)
from xgrad.layers.attention import apply_rope, attention_backward, attention_forward, rope_angles
from xgrad.layers.base import forward_sequence, vjp_sequence

B, T = 2, 5


def _weights(layer, shape, seed=3):
    local = layer.init(np.random.default_rng(seed), shape)
    return {f"layers.0.{k}": v for k, v in local.items()}


def _check_vjp(layer, shape, x, with_x=True, frozen_rows=None):
    """The layer's VJP (every parameter, and dL/dx when ``with_x``) against central
    differences of ``sum(layer(x) * r)`` for a fixed random ``r``; ``frozen_rows`` (name,
    row) are rows the layer gives no gradient by convention (an embedding's padding row)."""
    weights = _weights(layer, shape)
    r = np.random.default_rng(1).normal(size=(x.shape[0], *layer.output_shape(shape)))

    def loss(p, xx):
        out, _ = forward_sequence([layer], p, xx if with_x else x)  # ids: never perturbed
        return float((out * r).sum())

    want_params, want_x = numeric_gradients(loss, weights, x if with_x else np.zeros(0))
    for name, row in frozen_rows or ():
        assert np.abs(want_params[name][row]).max() > 1e-3  # it has a true derivative
        want_params[name][row] = 0.0
    _, steps = forward_sequence([layer], weights, x)
    grads: dict = {}
    got_x = vjp_sequence(weights, steps, r, grads)
    assert set(grads) == set(weights)
    for name in weights:  # absolute near 0: the key bias has no gradient without RoPE
        np.testing.assert_allclose(grads[name], want_params[name], rtol=1e-6, atol=1e-8)
    if with_x:
        assert rel_norm(got_x, want_x) < 1e-7
    else:
        assert got_x is None  # token ids have no gradient
    return grads


# -- Attention -----------------------------------------------------------------------------------

ATTENTION_CASES = [
    pytest.param(Attention(8, 2), id="plain"),
    pytest.param(Attention(8, 2, causal=True), id="causal"),
    pytest.param(Attention(8, 4, kv_heads=2, head_dim=4, causal=True), id="gqa"),
    pytest.param(Attention(8, 4, kv_heads=1, use_bias=False), id="mqa-nobias"),
    pytest.param(Attention(8, 2, kv_heads=1, causal=True, rope="half"), id="rope-half"),
    pytest.param(Attention(8, 2, rope="interleaved", rope_base=100.0), id="rope-interleaved"),
    pytest.param(Attention(8, 4, kv_heads=2, head_dim=2, qkv="fused"), id="fused"),
    pytest.param(Attention(8, 2, qkv="fused", use_bias=False, rope="half"), id="fused-nobias"),
    pytest.param(Attention(8, 2, scale=0.7, causal=True), id="scale"),
]


@pytest.mark.parametrize("layer", ATTENTION_CASES)
def test_attention_vjp_matches_finite_differences(layer):
    x = np.random.default_rng(5).normal(size=(B, T, 8))
    _check_vjp(layer, (T, 8), x)


def _loop_attention(w, x, layer, mask=None):
    """Attention written head by head, token by token, from the formula (no einsum)."""
    h, kvh, hd = layer.heads, layer.kv_heads, layer.head_dim
    if layer.qkv == "fused":
        wq, wk, wv = (w["qkv_kernel"][:, a:b] for a, b in ((0, h), (h, h + kvh), (h + kvh, None)))
        bq, bk, bv = (w["qkv_bias"][a:b] for a, b in ((0, h), (h, h + kvh), (h + kvh, None)))
    else:
        wq, wk, wv = w["query_kernel"], w["key_kernel"], w["value_kernel"]
        bq, bk, bv = w["query_bias"], w["key_bias"], w["value_bias"]
    scale = layer.scale if layer.scale is not None else 1 / math.sqrt(hd)
    y = np.zeros_like(x)
    for b in range(x.shape[0]):
        for head in range(h):
            kv = head // (h // kvh)
            q = np.stack([x[b, i] @ wq[:, head] + bq[head] for i in range(T)])
            k = np.stack([x[b, j] @ wk[:, kv] + bk[kv] for j in range(T)])
            v = np.stack([x[b, j] @ wv[:, kv] + bv[kv] for j in range(T)])
            for i in range(T):
                keys = [
                    j
                    for j in range(T)
                    if (not layer.causal or j <= i) and (mask is None or mask[b, j])
                ]
                scores = np.array([q[i] @ k[j] * scale for j in keys])
                p = np.exp(scores - scores.max())
                p /= p.sum()
                o = sum(pj * v[j] for pj, j in zip(p, keys, strict=True))
                y[b, i] += o @ w["out_kernel"][head]
        y[b] += w["out_bias"]
    return y


@pytest.mark.parametrize(
    "layer",
    [
        Attention(8, 4, kv_heads=2, causal=True),
        Attention(8, 2, head_dim=3, qkv="fused", scale=0.5),
        Attention(8, 4, kv_heads=4),
    ],
    ids=["gqa-causal", "fused-scale", "mha"],
)
def test_attention_matches_a_loop_over_heads(layer):
    x = np.random.default_rng(2).normal(size=(B, T, 8))
    w = layer.init(np.random.default_rng(4), (T, 8))
    got, _ = attention_forward(w, x, layer)
    np.testing.assert_allclose(got, _loop_attention(w, x, layer), rtol=1e-12, atol=1e-12)


def test_gqa_heads_are_repeated_interleaved_not_tiled():
    # head j of K serves query heads j*g .. j*g+g-1: with K=2, H=4 query heads 0, 1 share kv
    # head 0. Making kv head 1 the same as kv head 0 must leave heads 0, 1 unchanged.
    layer = Attention(8, 4, kv_heads=2, use_bias=False)
    w = layer.init(np.random.default_rng(4), (T, 8))
    x = np.random.default_rng(2).normal(size=(1, T, 8))
    _, base = attention_forward(w, x, layer)
    same = dict(w)
    for name in ("key_kernel", "value_kernel"):
        same[name] = w[name].copy()
        same[name][:, 1] = w[name][:, 0]
    _, other = attention_forward(same, x, layer)
    np.testing.assert_array_equal(other.o[:, :, :2], base.o[:, :, :2])
    assert not np.allclose(other.o[:, :, 2:], base.o[:, :, 2:])


def test_padding_mask_drops_the_masked_keys_and_fill_decides_fully_masked_rows():
    layer = Attention(8, 2)
    w = layer.init(np.random.default_rng(4), (T, 8))
    x = np.random.default_rng(2).normal(size=(B, T, 8))
    mask = np.ones((B, T), dtype=bool)
    mask[0, 3:] = False
    got, cache = attention_forward(w, x, layer, mask)
    np.testing.assert_allclose(got, _loop_attention(w, x, layer, mask), rtol=1e-12, atol=1e-12)
    assert (cache.p[0, :, :, 3:] == 0).all()
    # a row with every key masked: NaN with -inf (as the frameworks filling -inf), finite
    # (uniform attention) with -1e9
    mask[1] = False
    with np.errstate(invalid="ignore"):
        nan_out, _ = attention_forward(w, x, layer, mask)
    assert np.isnan(nan_out[1]).all() and np.isfinite(nan_out[0]).all()
    finite, cache = attention_forward(w, x, layer, mask, fill=-1e9)
    np.testing.assert_allclose(cache.p[1], 1 / T)
    grads, dx = attention_backward(w, cache, np.ones_like(finite), layer)
    assert np.isfinite(dx).all() and all(np.isfinite(g).all() for g in grads.values())


# -- RoPE -----------------------------------------------------------------------------------------


def test_rope_at_position_zero_is_the_identity():
    x = np.random.default_rng(0).normal(size=(B, 1, 3, 6))
    cos, sin = rope_angles(1, 6, 10000.0, np.float64)
    for layout in ("half", "interleaved"):
        np.testing.assert_array_equal(apply_rope(x, cos, sin, layout), x)


def test_rope_interleaved_is_a_complex_multiply():
    # Meta's original code: view (x[2m], x[2m+1]) as x[2m] + i x[2m+1], multiply by
    # exp(i pos theta_m), theta_m = base ** (-2m / hd).
    hd, base = 6, 500.0
    x = np.random.default_rng(0).normal(size=(B, T, 2, hd))
    cos, sin = rope_angles(T, hd, base, np.float64)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    pos = np.arange(T)[:, None, None]
    theta = base ** (-np.arange(0, hd, 2) / hd)
    rotated = z * np.exp(1j * pos * theta)
    want = np.stack([rotated.real, rotated.imag], axis=-1).reshape(x.shape)
    np.testing.assert_allclose(apply_rope(x, cos, sin, "interleaved"), want, atol=1e-13)


def test_rope_half_rotates_x_m_with_x_m_plus_half():
    # Hugging Face's LLaMA: q * cos + rotate_half(q) * sin, cos and sin repeated twice
    hd = 4
    x = np.random.default_rng(0).normal(size=(1, T, 1, hd))
    cos, sin = rope_angles(T, hd, 10000.0, np.float64)
    cos2, sin2 = np.concatenate([cos, cos], -1), np.concatenate([sin, sin], -1)
    rotate_half = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], axis=-1)
    want = x * cos2[:, None] + rotate_half * sin2[:, None]
    np.testing.assert_allclose(apply_rope(x, cos, sin, "half"), want, atol=1e-13)


def test_rope_interleaved_equals_half_after_permuting_head_dim_of_q_and_k():
    hd = 4
    half = Attention(8, 2, kv_heads=1, rope="half", causal=True)
    inter = Attention(8, 2, kv_heads=1, rope="interleaved", causal=True)
    w = inter.init(np.random.default_rng(4), (T, 8))
    perm = np.r_[0:hd:2, 1:hd:2]  # (0, 2, 1, 3)
    permuted = dict(w)
    for name in ("query_kernel", "key_kernel"):
        permuted[name] = w[name][..., perm]
    for name in ("query_bias", "key_bias"):
        permuted[name] = w[name][..., perm]
    x = np.random.default_rng(2).normal(size=(B, T, 8))
    want, _ = attention_forward(w, x, inter)
    got, _ = attention_forward(permuted, x, half)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # without the permutation the two conventions differ: the test can tell them apart
    other, _ = attention_forward(w, x, half)
    assert not np.allclose(other, want, atol=1e-6)


# -- Embedding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer",
    [Embedding(7, 4), Embedding(7, 4, padding_idx=0), Embedding(7, 4, scale=2.0)],
    ids=["plain", "padding-idx", "scale"],
)
def test_embedding_vjp_matches_finite_differences(layer):
    ids = np.array([[0, 3, 3, 6, 0], [1, 0, 2, 3, 5]])
    # the padding row is read three times, yet gets no gradient (torch's convention)
    frozen = [] if layer.padding_idx is None else [("layers.0.embedding", layer.padding_idx)]
    _check_vjp(layer, (T,), ids, with_x=False, frozen_rows=frozen)


def test_embedding_forward_reads_rows_and_scales():
    layer = Embedding(7, 4, padding_idx=2, scale=3.0)
    w = _weights(layer, (T,))
    assert (w["layers.0.embedding"][2] == 0).all()  # torch's init: the padding row is zeros
    w["layers.0.embedding"][2] = 1.5  # the forward pass reads whatever it holds
    ids = np.array([[2, 4, 1, 1, 0]])
    y = layer.forward(w, ids, path="layers.0").output
    np.testing.assert_array_equal(y, w["layers.0.embedding"][ids] * 3.0)
    assert layer.forward(w, ids, path="layers.0").output[0, 0, 0] == 4.5


def test_embedding_ids_out_of_range_name_the_layer_id_and_vocab():
    layer = Embedding(7, 4)
    w = _weights(layer, (T,))
    message = "Embedding layers.0: token id 9 at index (1, 2) is out of range for a vocabulary of 7"
    with pytest.raises(xgrad.InputError, match=re.escape(message)):
        layer.forward(w, np.array([[0, 1, 2, 3, 4], [0, 1, 9, 3, 4]]), path="layers.0")
    with pytest.raises(xgrad.InputError, match="token id -1"):
        layer.forward(w, np.array([[0, -1, 2, 3, 4]]), path="layers.0")
    with pytest.raises(xgrad.InputError, match="integer token ids"):
        layer.forward(w, np.full((1, 5), 0.5), path="layers.0")


# -- GatedMLP and the token-wise layers on (tokens, d) ------------------------------------------

TOKEN_WISE = [
    pytest.param(GatedMLP(6, 10), id="swiglu"),
    pytest.param(GatedMLP(6, 10, "gelu_tanh", use_bias=True), id="geglu-bias"),
    pytest.param(GatedMLP(6, 4, "gelu"), id="geglu-erf"),
    pytest.param(Dense(5, "tanh"), id="dense"),
    pytest.param(LayerNorm(1e-5), id="layernorm"),
    pytest.param(RMSNorm(1e-6), id="rmsnorm"),
    pytest.param(Activation("softmax"), id="activation-softmax"),
    pytest.param(Dropout(0.3, active=True), id="dropout-active"),
]


@pytest.mark.parametrize("layer", TOKEN_WISE)
def test_token_wise_vjp_on_tokens_matches_finite_differences(layer):
    x = np.random.default_rng(5).normal(size=(B, T, 6))
    _check_vjp(layer, (T, 6), x)


@pytest.mark.parametrize("layer", [GatedMLP(6, 10, use_bias=True), Dense(5), LayerNorm()])
def test_token_wise_layers_are_the_same_layer_on_each_token(layer):
    # (B, T, d) gives what (B * T, d) gives, and the weight gradients sum over tokens
    x = np.random.default_rng(5).normal(size=(B, T, 6))
    w = _weights(layer, (T, 6))
    assert layer.weight_shapes((T, 6)) == layer.weight_shapes((6,))
    y3, s3 = forward_sequence([layer], w, x)
    y2, s2 = forward_sequence([layer], w, x.reshape(B * T, 6))
    np.testing.assert_allclose(y3.reshape(y2.shape), y2, rtol=1e-13)
    r = np.random.default_rng(1).normal(size=y3.shape)
    g3, g2 = {}, {}
    vjp_sequence(w, s3, r, g3)
    vjp_sequence(w, s2, r.reshape(y2.shape), g2)
    for name in w:
        np.testing.assert_allclose(g3[name], g2[name], rtol=1e-12)


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,pattern",
    [
        (lambda: Attention(10, 4), "heads=4 does not divide dim=10"),
        (lambda: Attention(8, 4, kv_heads=3), "kv_heads=3 does not divide heads=4"),
        (lambda: Attention(12, 4, rope="half"), "needs an even head_dim .* got head_dim=3"),
        (lambda: Attention(8, 2, rope="neox"), "rope='neox' is unknown.*'half', 'interleaved'"),
        (lambda: Attention(8, 2, qkv="packed"), "qkv='packed' is unknown.*'separate', 'fused'"),
        (lambda: Attention(8, 0), "Attention heads must be a positive integer"),
        (lambda: Attention(8, 2, rope_base=-1.0), "rope_base must be > 0"),
        (lambda: Embedding(5, 4, padding_idx=5), r"padding_idx 5 is outside .*\[0, 5\)"),
        (lambda: Embedding(0, 4), "Embedding vocab must be a positive integer"),
        (lambda: GatedMLP(4, 8, "nope"), "nope"),
        (lambda: xgrad.MLP((T, 6), [Attention(8, 2)]), r"takes examples of shape \(tokens, 8\)"),
        (lambda: xgrad.MLP((T, 6), [GatedMLP(8, 4)]), "last axis is 8 wide"),
        (lambda: xgrad.MLP((T, 8), [Embedding(5, 8)]), r"token ids of shape \(tokens,\)"),
        (
            lambda: xgrad.MLP((T,), [Embedding(5, 8), xgrad.Residual([Embedding(5, 8)])]),
            r"layers.1.layers.0 \(embedding\(5, 8\)\): an Embedding .* only be the first layer",
        ),
        (
            lambda: xgrad.transformer_block(8, 2, 16, norm="batchnorm"),
            "norm='batchnorm' is unknown",
        ),
        (lambda: xgrad.transformer_block(8, 2, 16, mlp="moe"), "mlp='moe' is unknown"),
    ],
)
def test_bad_configurations_raise_spec_error_naming_the_layer_and_fix(make, pattern):
    with pytest.raises(xgrad.SpecError, match=pattern):
        make()


def test_resolved_defaults_and_text_form():
    layer = Attention(16, 4)
    assert (layer.kv_heads, layer.head_dim, layer.groups) == (4, 4, 1)
    assert layer == Attention(16, 4, kv_heads=4, head_dim=4)
    assert Attention(16, 4, kv_heads=2, causal=True, rope="half").describe() == (
        "attention(16, heads=4, kv_heads=2, causal, rope=half)"
    )
    from xgrad.layers.text import parse_layers

    got = parse_layers("attention(16, 4, causal, kv_heads=2, rope=half),gated_mlp(16, 32)")
    assert got == [Attention(16, 4, kv_heads=2, causal=True, rope="half"), GatedMLP(16, 32)]
    assert parse_layers("embedding(20, 16, padding_idx=0)") == [Embedding(20, 16, 0)]


def test_transformer_block_composes_existing_kinds():
    pre = xgrad.transformer_block(8, 2, 16, kv_heads=1, norm="rmsnorm", epsilon=1e-5, rope="half")
    assert [layer.kind for layer in pre] == ["residual", "residual"]
    assert pre[0].layers == (
        RMSNorm(1e-5),
        Attention(8, 2, 1, causal=True, use_bias=False, rope="half"),
    )
    assert pre[1].layers == (RMSNorm(1e-5), GatedMLP(8, 16))
    post = xgrad.transformer_block(8, 2, 16, pre_norm=False, mlp="dense", causal=False)
    assert post[1] == LayerNorm() and post[3] == LayerNorm()
    assert post[0].layers == (Attention(8, 2),)
    assert post[2].layers == (Dense(16, "gelu"), Dense(8))


def test_ids_reach_the_model_as_integers_lists_included():
    from xgrad.frameworks.base import check_input

    got = check_input((3,), [[0, 1, 4]], vocab=5)
    assert got.dtype == np.int64 and got.tolist() == [[0, 1, 4]]
    with pytest.raises(xgrad.InputError, match="must be integer token ids"):
        check_input((3,), np.array([[True, False, True]]), vocab=5)
    with pytest.raises(xgrad.InputError, match=re.escape("token id 5 at index (0, 2)")):
        check_input((3,), [[0, 1, 5]], vocab=5)
