"""xgrad.pairing.params: parameters paired through a reshape of a permutation (a torch
``(d, d)`` projection against a ``(d, heads, head_dim)`` DenseGeneral kernel, GPT-2's fused
``c_attn (d, 3d)`` against three of them), the axis order decided by names or values and left
unpaired, with the reason, when neither tells; transfers through the reshape bit-exact."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from xgrad.pairing import params
from xgrad.pairing.options import pair_params
from xgrad.pairing.params import Join, ParamPairing, Values, fit, regroups

D, H = 8, 2


def test_only_splits_and_merges_of_adjacent_axes_count_as_reshapes():
    assert regroups((D, D), (D, H, D // H)) and regroups((H, D // H, D), (D, D))
    assert regroups((3 * D,), (3, D))
    assert not regroups((D, D), (D, D))  # a permutation, paired elsewhere
    assert not regroups((4, 16), (8, 2, 4))  # 4 | 16 straddles 8: no axis boundary kept
    assert doctest.testmod(params).failed == 0


def test_known_layouts_reshape_as_they_stand_and_opaque_ones_are_decided_by_values():
    assert fit((D, D), (D, H, D // H), known=True).layout is None
    why = fit((D, D), (D, H, D // H), known=False)
    assert isinstance(why, str) and "2 axis orders" in why and "transfer=False" in why
    rng = np.random.default_rng(0)
    w = rng.normal(size=(D, D))  # (out, in), as torch stores it
    loaded = w.T.reshape(D, H, D // H)
    decided = fit((D, D), (D, H, D // H), known=False, values=(w, loaded))
    assert decided.layout == (1, 0)
    # values that are none of the reshapes decide nothing
    assert isinstance(fit((D, D), (D, H, D // H), known=False, values=(w, loaded + 1)), str)


def test_a_fused_kernel_pairs_with_three_head_kernels_and_round_trips_bit_exactly():
    rng = np.random.default_rng(1)
    fused = rng.normal(size=(D, 3 * D)).astype(np.float32)  # GPT-2's c_attn (in, 3 out)
    left_r = [("attn.c_attn.kernel", fused.shape), ("attn.c_attn.bias", (3 * D,))]
    left_c = [
        (f"attn.{p}.{w}", (D, H, D // H) if w == "kernel" else (H, D // H))
        for p in ("query", "key", "value")
        for w in ("kernel", "bias")
    ]
    acc = ParamPairing()
    pair_params(left_r, left_c, acc, Values({}, {}))
    assert left_r == [] and left_c == []
    join = acc.joins["attn.c_attn.kernel"]
    assert join.parts == ("attn.query.kernel", "attn.key.kernel", "attn.value.kernel")
    parts = join.split(fused)
    expected_key = fused[:, D : 2 * D].reshape(D, H, D // H)  # by hand: the middle third
    assert np.array_equal(parts[1], expected_key) and parts[1].dtype == np.float32
    back = join.join(parts)
    assert back.dtype == fused.dtype and np.array_equal(back, fused)


def test_an_ambiguous_reshape_stays_unpaired_with_its_reason():
    acc = ParamPairing()
    left_r, left_c = [("proj.weight", (D, D))], [("proj.w", (D, H, D // H))]
    pair_params(left_r, left_c, acc, Values({}, {}))
    assert left_r and left_c and not acc.joins
    assert "neither the names nor the values tell which" in acc.why["proj.weight"]


def test_a_one_to_one_reshape_of_a_transposed_array_round_trips():
    join = Join(("o",), 0, ((1, 0),), ((H, D // H, 3),), (3, D))
    w = np.arange(3 * D, dtype=np.float64).reshape(3, D)
    (part,) = join.split(w)
    assert np.array_equal(part, w.T.reshape(H, D // H, 3))
    assert np.array_equal(join.join([part]), w)


def test_separate_projections_of_two_widths_pair_with_a_fused_kernel_and_round_trip():
    # LLaMA's q (d, H*hd) and k, v (d, K*hd) kernels against a port's fused (d, H + 2K, hd)
    rng = np.random.default_rng(2)
    heads, kv, hd = 4, 2, 2
    q, k, v = (rng.normal(size=(D, n * hd)) for n in (heads, kv, kv))
    left_r = [("a.q.kernel", q.shape), ("a.k.kernel", k.shape), ("a.v.kernel", v.shape)]
    left_c = [("a.qkv.kernel", (D, heads + 2 * kv, hd))]
    acc = ParamPairing()
    pair_params(left_r, left_c, acc, Values({}, {}))
    assert left_r == [] and left_c == []
    split = acc.splits["a.k.kernel"]
    assert (split.whole, split.axis, split.sizes) == ("a.qkv.kernel", 1, (8, 4, 4))
    fused = split.join([q, k, v])
    expected = np.concatenate([q, k, v], axis=1).reshape(D, heads + 2 * kv, hd)  # by hand
    assert np.array_equal(fused, expected)
    assert np.array_equal(split.part("a.k.kernel", fused), k)
    assert np.array_equal(fused[:, heads : heads + kv, :].reshape(D, kv * hd), k)


def test_an_nnx_attention_reference_fills_a_torch_port_through_the_merge():
    # the other direction: (d, heads, head_dim) kernels merged into torch's (out, in) weights
    pytest.importorskip("torch")
    pytest.importorskip("flax")
    import torch
    from flax import nnx
    from torch import nn

    import xgrad

    class Port(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (p(x).view(b, t, H, D // H).transpose(1, 2) for p in (self.q, self.k, self.v))
            a = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5, -1) @ v
            return self.o(a.transpose(1, 2).reshape(b, t, D))

    reference = nnx.MultiHeadAttention(H, D, decode=False, rngs=nnx.Rngs(0))
    x = np.random.default_rng(3).normal(size=(2, 5, D)).astype(np.float32)
    torch.manual_seed(0)
    report = xgrad.compare_models(reference, Port(), x)
    assert report.ok and report.unpaired == (), report.summary()
    filled = xgrad.convert(reference, into=Port(), x=x)
    out = np.asarray(reference.out.kernel[...])  # (heads, head_dim, d)
    assert np.array_equal(filled.o.weight.detach().numpy(), out.reshape(D, D).T)


def test_weights_a_user_loaded_through_a_reshape_are_kept_and_a_slip_in_them_is_found():
    # transfer='auto' sees the reference's arrays in the candidate through the reshape, so it
    # compares the user's own loading instead of overwriting it
    pytest.importorskip("torch")
    pytest.importorskip("flax")
    import torch
    from flax import nnx
    from torch import nn

    import xgrad

    class Torch(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (p(x).view(b, t, H, D // H).transpose(1, 2) for p in (self.q, self.k, self.v))
            a = torch.softmax(q @ k.transpose(-1, -2) / (D // H) ** 0.5, -1) @ v
            return self.o(a.transpose(1, 2).reshape(b, t, D))

    torch.manual_seed(1)
    reference = Torch()
    port = nnx.MultiHeadAttention(H, D, decode=False, use_bias=False, rngs=nnx.Rngs(0))
    weights = {n: p.detach().numpy() for n, p in reference.named_parameters()}
    for name, module in (("q", port.query), ("k", port.key), ("v", port.value)):
        module.kernel[...] = weights[f"{name}.weight"].T.reshape(D, H, D // H)
    port.out.kernel[...] = weights["o.weight"].T.reshape(H, D // H, D)
    x = np.random.default_rng(4).normal(size=(2, 5, D)).astype(np.float32)
    report = xgrad.compare_models(reference, port, x)
    assert report.ok and "(4 of 4 arrays)" in report.notes[-1], report.notes
    port.key.kernel[...] = weights["k.weight"].reshape(D, H, D // H)  # the slip: no .T
    report = xgrad.compare_models(reference, port, x)
    # still held (transposed), so kept and compared: without the reshape in view the port
    # was overwritten with the reference's weights and the slip came out OK
    assert not report.ok and any("(4 of 4 arrays)" in n for n in report.notes), report.notes
