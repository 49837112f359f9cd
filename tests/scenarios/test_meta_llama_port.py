"""A Hugging Face ``LlamaForCausalLM`` against a port written like Meta's original LLaMA code
(issue 21, a new user's wrong verdict).

Meta's code applies RoPE to interleaved pairs ``(x[2m], x[2m+1])`` of each head (a complex
multiply) and names its projections ``wq/wk/wv/wo``; Hugging Face rotates the two halves
``(x[m], x[m + hd/2])`` and its conversion script permutes the rows of ``wq`` and ``wk``
within each head so that both compute the same function. The port below loads HF's weights
with that permutation undone, written here from the rule in transformers' own
``core_model_loading.PermuteForRope`` (``view(heads, 2, hd/2, d).transpose(1, 2)`` takes
HF's rows to Meta's); its logits equal HF's, which is the independent check that it is a
correct port. Without the permutation (HF's rows loaded as they stand) it is a real bug.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    "torch" not in INSTALLED or importlib.util.find_spec("transformers") is None,
    reason="torch and transformers are needed",
)

DIM, HEADS, KV, HIDDEN, VOCAB, T = 32, 4, 2, 64, 40, 8
IDS = np.random.default_rng(0).integers(0, VOCAB, size=(2, T))
ATTN = "model.layers.0.self_attn"


def _classes():
    import torch
    from torch import nn

    class Norm(nn.Module):
        def __init__(self, eps=1e-6):
            super().__init__()
            self.eps, self.weight = eps, nn.Parameter(torch.ones(DIM))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.hd = DIM // HEADS
            self.wq = nn.Linear(DIM, HEADS * self.hd, bias=False)
            self.wk = nn.Linear(DIM, KV * self.hd, bias=False)
            self.wv = nn.Linear(DIM, KV * self.hd, bias=False)
            self.wo = nn.Linear(HEADS * self.hd, DIM, bias=False)

        def forward(self, x, turns, mask):
            b, t, _ = x.shape

            def rotate(z, n):  # interleaved pairs as complex numbers times e^{i pos freq}
                pairs = torch.view_as_complex(z.view(b, t, n, self.hd // 2, 2))
                return torch.view_as_real(pairs * turns[:, None, :]).reshape(b, t, n, self.hd)

            q = rotate(self.wq(x), HEADS).transpose(1, 2)
            k = rotate(self.wk(x), KV).repeat_interleave(HEADS // KV, dim=2).transpose(1, 2)
            v = self.wv(x).view(b, t, KV, self.hd).repeat_interleave(HEADS // KV, dim=2)
            scores = q @ k.transpose(2, 3) / self.hd**0.5 + mask
            out = torch.softmax(scores, dim=-1) @ v.transpose(1, 2)
            return self.wo(out.transpose(1, 2).reshape(b, t, DIM))

    class FeedForward(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(DIM, HIDDEN, bias=False)
            self.w2 = nn.Linear(HIDDEN, DIM, bias=False)
            self.w3 = nn.Linear(DIM, HIDDEN, bias=False)

        def forward(self, x):
            return self.w2(nn.functional.silu(self.w1(x)) * self.w3(x))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention, self.feed_forward = Attention(), FeedForward()
            self.attention_norm, self.ffn_norm = Norm(), Norm()

        def forward(self, x, turns, mask):
            h = x + self.attention(self.attention_norm(x), turns, mask)
            return h + self.feed_forward(self.ffn_norm(h))

    class MetaLlama(nn.Module):
        def __init__(self, layers=1):
            super().__init__()
            self.tok_embeddings = nn.Embedding(VOCAB, DIM)
            self.layers = nn.ModuleList([Block() for _ in range(layers)])
            self.norm = Norm()
            self.output = nn.Linear(DIM, VOCAB, bias=False)
            hd = DIM // HEADS
            freqs = 10000.0 ** (-torch.arange(0, hd, 2).float() / hd)
            angles = torch.outer(torch.arange(64).float(), freqs)
            self.turns = torch.polar(torch.ones_like(angles), angles)  # (positions, hd / 2)

        def forward(self, tokens):
            t = tokens.shape[1]
            mask = torch.triu(torch.full((t, t), float("-inf")), diagonal=1)
            h = self.tok_embeddings(tokens)
            for layer in self.layers:
                h = layer(h, self.turns[:t], mask)
            return self.output(self.norm(h))

    return MetaLlama


def _to_meta(w, heads):
    """HF's q/k rows ``(heads * hd, d)`` in Meta's interleaved order (HF's conversion undone:
    transformers' ``PermuteForRope(inverse=True)``)."""
    rows, d = w.shape
    return w.view(heads, 2, rows // heads // 2, d).transpose(1, 2).reshape(rows, d)


def meta_port(hf, *, permute=True, load=True, seed=1):
    import torch

    torch.manual_seed(seed)
    port = _classes()(layers=hf.config.num_hidden_layers).eval()
    if not load:
        return port
    sd = hf.state_dict()
    new = {
        "tok_embeddings.weight": sd["model.embed_tokens.weight"],
        "norm.weight": sd["model.norm.weight"],
        "output.weight": sd["lm_head.weight"],
    }
    for i in range(hf.config.num_hidden_layers):
        p, m = f"model.layers.{i}.", f"layers.{i}."
        wq, wk = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if permute:
            wq, wk = _to_meta(wq, HEADS), _to_meta(wk, KV)
        new |= {
            m + "attention.wq.weight": wq,
            m + "attention.wk.weight": wk,
            m + "attention.wv.weight": sd[p + "self_attn.v_proj.weight"],
            m + "attention.wo.weight": sd[p + "self_attn.o_proj.weight"],
            m + "feed_forward.w1.weight": sd[p + "mlp.gate_proj.weight"],
            m + "feed_forward.w3.weight": sd[p + "mlp.up_proj.weight"],
            m + "feed_forward.w2.weight": sd[p + "mlp.down_proj.weight"],
            m + "attention_norm.weight": sd[p + "input_layernorm.weight"],
            m + "ffn_norm.weight": sd[p + "post_attention_layernorm.weight"],
        }
    port.load_state_dict(new)
    return port


@pytest.fixture(scope="module")
def llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=DIM, intermediate_size=HIDDEN, num_hidden_layers=1,
        num_attention_heads=HEADS, num_key_value_heads=KV, rms_norm_eps=1e-6,
        max_position_embeddings=64, attn_implementation="eager",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def _logits_apart(hf, port) -> float:
    import torch

    with torch.no_grad():
        a = hf(torch.tensor(IDS)).logits.numpy()
        b = port(torch.tensor(IDS)).numpy()
    return float(np.abs(a - b).max())


def _compare(hf, port, **kw):
    import xgrad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xgrad.compare_models(hf, port, IDS, **kw)


def test_the_meta_port_with_hf_s_permutation_undone_is_ok_and_pairs_every_parameter(llama):
    port = meta_port(llama)
    assert _logits_apart(llama, port) < 1e-5  # the port is correct, by its logits
    report = _compare(llama, port)
    assert report.ok, report.summary()
    assert report.unpaired == ()
    native = {e.native["reference"]: e.native["torch"] for e in report.parameters}
    assert len(native) == len(dict(llama.named_parameters()))
    assert native[f"{ATTN}.q_proj.weight"] == "layers.0.attention.wq.weight"
    assert native[f"{ATTN}.k_proj.weight"] == "layers.0.attention.wk.weight"
    assert any("interleaved RoPE order" in n for n in report.notes), report.notes


def test_the_pairing_says_q_and_k_are_stored_in_the_interleaved_order(llama):
    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.registry import capture_model
    from xgrad.pairing import pair_modules
    from xgrad.pairing.rope import RopeOrder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = capture_model(llama, as_batch(IDS))
        cand = capture_model(meta_port(llama), as_batch(IDS))
    pairing = pair_modules(ref, cand)
    q, k = (pairing.joins[f"{ATTN}.{n}.kernel"] for n in ("q_proj", "k_proj"))
    assert isinstance(q, RopeOrder) and isinstance(k, RopeOrder)
    assert (q.head_dim, k.head_dim) == (DIM // HEADS, DIM // HEADS)
    # the candidate's q, read back in the reference's order, is HF's q kernel (in, out)
    wq = cand.weights()["layers.0.attention.wq.kernel"]
    np.testing.assert_array_equal(
        q.join([wq]), llama.state_dict()[f"{ATTN}.q_proj.weight"].numpy().T
    )
    (note,) = [n for n in pairing.notes if "interleaved" in n]
    assert "Meta" in note and "equivalent" in note and "4 heads" in note and "2 heads" in note
    # the other way round: Meta's port is the reference, HF's halves the candidate's order
    back = pair_modules(cand, ref).joins["layers.0.attention.wk.kernel"]
    assert isinstance(back, RopeOrder) and back.to == "half"


def test_the_meta_port_without_the_permutation_is_rope_layout_at_the_attention(llama):
    port = meta_port(llama, permute=False)
    assert _logits_apart(llama, port) > 1e-3  # a real bug: the logits differ
    report = _compare(llama, port)
    assert not report.ok
    found = [d for d in report.diagnoses if d.cause == "rope-layout"]
    assert found and found[0].confirmed and found[0].layer == ATTN, report.summary()
    assert "convert_llama_weights_to_hf" in found[0].detail
    assert "equivalent" in found[0].detail


def test_an_unloaded_meta_port_is_given_hf_s_weights_as_they_stand_and_named(llama):
    """Its own weights are an unrelated initialisation: the values cannot tell which order a
    copy should take, so HF's rows are copied as they stand (as loading HF's checkpoint into
    it would), and the report names rope-layout with the permutation as one of two fixes."""
    report = _compare(llama, meta_port(llama, load=False), transfer=True)
    assert not report.ok
    found = [d for d in report.diagnoses if d.cause == "rope-layout"]
    assert found and found[0].confirmed and found[0].layer == ATTN, report.summary()
    assert "permute" in found[0].detail and "or change" in found[0].detail
