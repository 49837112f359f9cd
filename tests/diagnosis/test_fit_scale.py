"""fit_attention names a score scale of any value (a one-parameter fit, fit_scale): GPT-2's
scale_attn_by_inverse_layer_idx scales block l by 1/(sqrt(hd) (l + 1)), which no fixed list
holds. The outputs are computed here by hand (softmax of scaled scores, causal), not by the
code under test."""

from __future__ import annotations

import numpy as np

from xgrad.diagnosis.fit_transformer import attention_weights, fit_attention

B, T, D, H = 2, 5, 8, 2


def _by_hand(scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, D))
    tree = {f"w{n}.kernel": rng.normal(size=(D, D)) / np.sqrt(D) for n in "qkvo"}
    q, k, v = (
        (x @ tree[f"w{n}.kernel"]).reshape(B, T, H, D // H).transpose(0, 2, 1, 3) for n in "qkv"
    )
    s = q @ k.transpose(0, 1, 3, 2) * scale
    s = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = (p @ v).transpose(0, 2, 1, 3).reshape(B, T, D) @ tree["wo.kernel"]
    return attention_weights(tree, D)[:1], x, y  # Meta's names wq, wk, wv, wo: read in that order


def test_an_arbitrary_scale_is_fitted_and_a_simple_one_kept_exactly():
    options, x, y = _by_hand(0.2345)
    _, c, err = fit_attention(options, x, y, "float64")
    assert (c.heads, c.causal) == (H, True) and err <= 1e-12
    assert abs(c.scale / 0.2345 - 1) < 1e-9, c.scale
    half = 1 / (2 * np.sqrt(D // H))  # 1/(sqrt(hd) * 2): GPT-2's second block
    _, c, _ = fit_attention(*_by_hand(half), "float64")
    assert c.scale == half


def test_no_scale_reproduces_an_output_that_is_no_scaled_attention():
    options, x, y = _by_hand(0.2345)
    y = y + 1e-3 * np.random.default_rng(1).normal(size=y.shape)  # not an attention's
    assert fit_attention(options, x, y, "float64") is None


def test_a_scale_of_one_over_sqrt_head_dim_times_k_is_worded_as_such():
    """GPT-2's scale_attn_by_inverse_layer_idx scales layer l by 1/(sqrt(hd) * (l + 1))."""
    from types import SimpleNamespace

    from xgrad.diagnosis.transformer import _scale

    words = _scale(SimpleNamespace(head_dim=8, score_scale=1 / (8**0.5 * 3)), 16)
    assert words.startswith("1/(sqrt(head_dim) * 3)")
    assert _scale(SimpleNamespace(head_dim=8, score_scale=0.2345), 16) == "0.2345"


def test_only_an_output_projection_is_hinted_as_the_output():
    """A bare 'proj' names the output (timm's attn.proj), 'q_proj' never does."""
    from xgrad.diagnosis.fit_transformer import _ROLES

    hinted = [
        n
        for n in ("q_proj.kernel", "k_proj", "o_proj", "attn.proj", "c_proj")
        if _ROLES["o"].search(n)
    ]
    assert hinted == ["o_proj", "attn.proj", "c_proj"]
