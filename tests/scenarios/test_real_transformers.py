"""Real transformers against hand-written ports, module by module (issue 21, Real models):

* Hugging Face ``LlamaForCausalLM`` against a Flax NNX port (``tests/_transformer_ports.py``:
  ``nnx.Embed``, ``LinearGeneral`` q/k/v ``(d, heads, head_dim)`` and o ``(heads, head_dim,
  d)``, RoPE with ``rotate_half``, ``repeat_kv``, ``nnx.RMSNorm``, SwiGLU, LM head): the
  correct port is OK; ``xgrad.convert(hf, into=port)`` fills it bit-exactly (read back against
  the torch state dict by hand: q is ``W_q.T`` reshaped, o is ``W_o.T`` reshaped); each planted
  convention (one keyword knob of the port) is not OK and placed at the module of the first
  block where it acts, on both sides.
* Hugging Face ``GPT2LMHeadModel`` against a Keras model around keras-hub's ``GPT2Backbone``
  with its LM head tied to the token embedding (``token_embedding(h, reverse=True)``, as
  ``GPT2CausalLM`` computes logits): ``c_attn (d, 3d)`` (a ``Conv1D``, read as dense from its
  values) pairs with three ``(d, heads, head_dim)`` kernels; OK when correct, both float32 and
  both the tanh GELU (HF ``gelu_new``; keras-hub ``keras.activations.gelu(approximate=True)``);
  another LayerNorm epsilon or the erf GELU on the Keras side is named at its block.

The causes each knob is named by are tested in test_real_transformer_causes.py; the models are
tiny (width 32, 4 heads, 2 kv heads, head_dim 8: RoPE's frequencies then differ by theta).
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED or importlib.util.find_spec("transformers") is None,
    reason="torch, flax and transformers are needed",
)

IDS = np.random.default_rng(0).integers(0, 32, size=(2, 6))
ATTN = ("model.layers.0.self_attn", "blocks.0.attn")
NORM = ("model.layers.0.input_layernorm", "blocks.0.attn_norm")
BETWEEN_V_O = {
    "reference": ["model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj"],
    "flax.nnx": ["blocks.0.attn.v_proj", "blocks.0.attn.o_proj"],
}


def _compare(reference, candidate, x=IDS):
    import xgrad

    with warnings.catch_warnings():  # transformers' own notices on tiny configs
        warnings.simplefilter("ignore")
        return xgrad.compare_models(reference, candidate, x)


@pytest.fixture(scope="module")
def llama():
    from _transformer_ports import hf_llama

    return hf_llama(vocab=48, dim=32, heads=4, kv_heads=2, hidden=64, layers=1)


def _first(report) -> dict:
    assert not report.ok, report.summary()
    first = report.first_divergence
    assert first is not None and first["where"] == "forward", report.summary()
    return first


# -- LLaMA -----------------------------------------------------------------------------------------


def test_the_nnx_port_of_llama_is_ok_and_pairs_every_parameter(llama):
    from _transformer_ports import llama_port

    report = _compare(llama, llama_port(llama))
    assert report.ok, report.summary()
    assert report.unpaired == ()
    names = {layer.path: layer.names for layer in report.layers}
    assert names[ATTN[0]] == {"reference": ATTN[0], "flax.nnx": ATTN[1]}
    native = {e.native["reference"]: e.native["flax.nnx"] for e in report.parameters}
    assert native["model.layers.0.self_attn.q_proj.weight"] == "blocks/0/attn/q_proj/kernel"


def test_convert_fills_the_nnx_port_bit_exactly(llama):
    from _transformer_ports import llama_port

    import xgrad

    port = llama_port(llama)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled = xgrad.convert(llama, into=port, x=IDS)
    sd = {k: v.detach().numpy() for k, v in llama.state_dict().items()}
    d, heads, hd = 32, 4, 8
    block, attn = filled.blocks[0], filled.blocks[0].attn

    def torch_weight(name):
        return sd[f"model.layers.0.{name}.weight"].T  # (out, in) -> (in, out)

    expected = {  # by hand: heads lie on torch's out axis, head-major
        "embed": (filled.embed.embedding, sd["model.embed_tokens.weight"]),
        "q": (attn.q_proj.kernel, torch_weight("self_attn.q_proj").reshape(d, heads, hd)),
        "k": (attn.k_proj.kernel, torch_weight("self_attn.k_proj").reshape(d, 2, hd)),
        "v": (attn.v_proj.kernel, torch_weight("self_attn.v_proj").reshape(d, 2, hd)),
        "o": (attn.o_proj.kernel, torch_weight("self_attn.o_proj").reshape(heads, hd, d)),
        "gate": (block.mlp.gate_proj.kernel, torch_weight("mlp.gate_proj")),
        "down": (block.mlp.down_proj.kernel, torch_weight("mlp.down_proj")),
        "attn_norm": (block.attn_norm.scale, sd["model.layers.0.input_layernorm.weight"]),
        "norm": (filled.norm.scale, sd["model.norm.weight"]),
        "head": (filled.lm_head.kernel, sd["lm_head.weight"].T),
    }
    for name, (variable, want) in expected.items():
        got = np.asarray(variable[...])
        assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want), name
    assert not np.array_equal(np.asarray(port.blocks[0].attn.q_proj.kernel[...]), expected["q"][1])


ATTENTION_KNOBS = [
    {"rope": "interleaved"},
    {"rope_theta": 500000.0},
    {"scale": "none"},
    {"scale": "twice"},
    {"causal": "shifted"},
    {"causal": "none"},
    {"gqa": "tile"},
    {"heads_layout": "head_dim_first"},
    {"softmax_dtype": "bfloat16"},
]


@pytest.mark.parametrize(
    "knob",
    # one knob in make test; each is named, at this module, in test_real_transformer_causes.py,
    # and all are placed here in make fuzz
    [
        ATTENTION_KNOBS[0],
        *(pytest.param(k, marks=pytest.mark.exhaustive) for k in ATTENTION_KNOBS[1:]),
    ],
    ids=lambda k: "-".join(f"{a}={b}" for a, b in k.items()),
)
def test_an_attention_convention_is_placed_in_the_first_blocks_attention(llama, knob):
    from _transformer_ports import llama_port

    first = _first(_compare(llama, llama_port(llama, **knob)))
    assert (first["path"], first["names"]["flax.nnx"]) == ATTN
    # q, k and v agree (paired through their reshape): the code after them parts
    assert first["between"] == BETWEEN_V_O


def test_a_fused_qkv_projection_pairs_with_the_three_and_a_split_in_another_order_is_placed(
    llama,
):
    from _transformer_ports import llama_port

    ok = _compare(llama, llama_port(llama, qkv_order="qkv"))
    assert ok.ok, ok.summary()
    native = {e.native["reference"]: e.native["flax.nnx"] for e in ok.parameters}
    assert native["model.layers.0.self_attn.k_proj.weight"] == (
        "blocks/0/attn/qkv_proj/kernel (part 2 of 3)"
    )
    first = _first(_compare(llama, llama_port(llama, qkv_order="kqv")))
    assert (first["path"], first["names"]["flax.nnx"]) == ATTN


def test_a_minus_inf_mask_fill_gives_nan_rows_placed_in_the_attention(llama):
    from _transformer_ports import llama_port

    mask = np.ones_like(IDS)
    mask[0, :2] = 0  # left padding: query rows 0 and 1 of the first sequence see no key
    x = {"input_ids": IDS, "attention_mask": mask}
    assert _compare(llama, llama_port(llama), x).ok  # -1e9 rows attend uniformly, as HF's
    report = _compare(llama, llama_port(llama, mask_fill=float("-inf")), x)
    first = _first(report)
    assert (first["path"], first["names"]["flax.nnx"]) == ATTN
    assert "nonfinite" in report.summary()


@pytest.mark.parametrize(
    "knob", [{"rms_eps": "outside"}, {"rms_offset": True}], ids=["eps-outside", "gemma-offset"]
)
def test_an_rmsnorm_form_is_placed_at_the_first_norm(llama, knob):
    from _transformer_ports import llama_port

    first = _first(_compare(llama, llama_port(llama, **knob)))
    assert (first["path"], first["names"]["flax.nnx"]) == NORM
    assert first["detail"] == "its own computation (its inputs agree)"


def test_embeddings_scaled_by_sqrt_d_are_placed_between_the_embedding_and_the_first_block(
    llama,
):
    from _transformer_ports import llama_port

    first = _first(_compare(llama, llama_port(llama, embed_scale=True)))
    assert first["path"] == ""  # the port's own code, no module's
    assert first["between"] == {
        "reference": ["model.embed_tokens", "model.layers.0"],
        "flax.nnx": ["embed", "blocks.0"],
    }


def test_a_head_tied_to_the_embedding_in_the_port_only_is_placed_at_the_head(llama):
    from _transformer_ports import llama_port

    report = _compare(llama, llama_port(llama, tied=True))
    first = _first(report)
    assert first["path"] == "" and "reference lm_head (Linear)" in first["detail"]
    # lm_head's kernel pairs with the port's nnx.Embed.attend use of its table: tied-weights
    # (named in test_real_transformer_causes.py), nothing unpaired
    assert report.unpaired == ()


def test_a_head_tied_in_the_reference_only_is_named_tied_weights_at_the_embedding():
    from _transformer_ports import hf_llama, llama_port

    reference = hf_llama(vocab=48, dim=32, heads=4, kv_heads=2, hidden=64, layers=1, tied=True)
    report = _compare(reference, llama_port(reference))
    assert not report.ok
    first = report.first_divergence  # the port's head got the tied array: outputs agree
    assert (first["path"], first["where"]) == ("model.embed_tokens", "backward")
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.layer) == ("tied-weights", True, "model.embed_tokens")
    assert _compare(reference, llama_port(reference, tied=True)).ok


# -- GPT-2 against keras-hub ----------------------------------------------------------------------

needs_keras_hub = pytest.mark.skipif(
    "tensorflow" not in INSTALLED or importlib.util.find_spec("keras_hub") is None,
    reason="tensorflow and keras-hub are needed",
)
GPT2_IDS = np.random.default_rng(1).integers(0, 50, size=(2, 7))


@pytest.fixture(scope="module")
def gpt2():
    from _transformer_ports import hf_gpt2

    return hf_gpt2()


@needs_keras_hub
def test_gpt2_against_a_keras_hub_backbone_with_a_tied_head_is_ok_and_filled_bit_exactly(gpt2):
    from _transformer_ports import keras_gpt2

    import xgrad

    report = _compare(gpt2, keras_gpt2(gpt2), GPT2_IDS)
    assert report.ok, report.summary()
    assert report.unpaired == () and report.dtype == "float32"
    assert any("c_attn: identified numerically as dense" in n for n in report.notes)
    assert any("gelu_tanh" in n for n in report.notes)  # HF's gelu_new, from its values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        filled = xgrad.convert(gpt2, into=keras_gpt2(gpt2), x=GPT2_IDS)
    sd = {k: v.detach().numpy() for k, v in gpt2.state_dict().items()}
    d, heads = 16, 2
    attn = filled.backbone.transformer_layers[1]._self_attention_layer
    c_attn_w = sd["transformer.h.1.attn.c_attn.weight"]  # Conv1D: (in, out), columns [q | k | v]
    c_attn_b = sd["transformer.h.1.attn.c_attn.bias"]
    c_proj_w = sd["transformer.h.1.attn.c_proj.weight"]
    expected = {  # by hand
        "wte": (filled.backbone.token_embedding.embeddings, sd["transformer.wte.weight"]),
        "key": (attn._key_dense.kernel, c_attn_w[:, d : 2 * d].reshape(d, heads, d // heads)),
        "key bias": (attn._key_dense.bias, c_attn_b[d : 2 * d].reshape(heads, d // heads)),
        "out": (attn._output_dense.kernel, c_proj_w.reshape(heads, d // heads, d)),
    }
    for name, (variable, want) in expected.items():
        got = np.asarray(variable.numpy())
        assert got.dtype == np.float32 and np.array_equal(got, want), name


@needs_keras_hub
def test_another_layernorm_epsilon_in_keras_is_named_at_its_block(gpt2):
    from _transformer_ports import keras_gpt2

    report = _compare(gpt2, keras_gpt2(gpt2, ln_epsilon=(1, 1e-3)), GPT2_IDS)
    first = _first(report)
    assert first["path"] == "transformer.h.1.ln_1"
    assert first["names"]["tensorflow"] == "backbone.transformer_layers.1.self_attention_layer_norm"
    assert report.diagnoses[0].cause == "layernorm-epsilon", report.diagnoses[0].detail


@needs_keras_hub
def test_the_erf_gelu_in_keras_is_named_in_its_blocks_feed_forward():
    import torch
    from _transformer_ports import hf_gpt2, keras_gpt2

    reference = hf_gpt2()
    with torch.no_grad():  # pre-activations of order one, as trained: the GELU forms part
        for block in reference.transformer.h:
            block.mlp.c_fc.weight.mul_(25.0)
    first = _first(_compare(reference, keras_gpt2(reference, erf_gelu=1), GPT2_IDS))
    assert first["path"] == "transformer.h.1"
    assert first["between"]["reference"] == [
        "transformer.h.1.mlp.c_fc",
        "transformer.h.1.mlp.c_proj",
    ]


@needs_keras_hub
@pytest.mark.parametrize(
    ("reference_config", "unscaled", "words"),
    [
        # the candidate's first block leaves its scores unscaled (Keras' query scale set to 1)
        ({}, 0, "the reference scales the scores by 1/sqrt(head_dim) = 1/sqrt(8), the "
         "candidate by no scale (1)"),
        # the other direction: Hugging Face's GPT2Config(scale_attn_weights=False)
        pytest.param({"scale_attn_weights": False}, None, "the reference scales the scores by "
                     "no scale (1), the candidate by 1/sqrt(head_dim) = 1/sqrt(8)",
                     marks=pytest.mark.exhaustive),
    ],
    ids=["keras-unscaled", "hf-unscaled"],
)  # fmt: skip
def test_attention_scores_unscaled_on_one_side_are_named_at_the_first_blocks_attention(
    reference_config, unscaled, words
):
    from _transformer_ports import hf_gpt2, keras_gpt2

    reference = hf_gpt2(**reference_config)
    report = _compare(reference, keras_gpt2(reference, unscaled=unscaled), GPT2_IDS)
    first = _first(report)
    assert first["path"] == "transformer.h.0.attn"
    assert first["names"]["tensorflow"] == "backbone.transformer_layers.0.self_attention"
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.layer) == ("attention-scale", True, "transformer.h.0.attn")
    assert d.detail.startswith(words), d.detail


@needs_keras_hub
def test_gpt2s_scale_by_inverse_layer_index_is_fitted_and_named_at_the_second_blocks_attention():
    from _transformer_ports import hf_gpt2, keras_gpt2

    # GPT2Config(scale_attn_by_inverse_layer_idx=True): block l scales by 1/(sqrt(hd) (l + 1)),
    # so block 0 agrees with keras-hub's 1/sqrt(hd) and block 1 scales by half of it
    reference = hf_gpt2(scale_attn_by_inverse_layer_idx=True)
    report = _compare(reference, keras_gpt2(reference), GPT2_IDS)
    first = _first(report)
    assert first["path"] == "transformer.h.1.attn"
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.layer) == ("attention-scale", True, "transformer.h.1.attn")
    fitted = f"{1 / (8**0.5 * 2):g}"  # head_dim 8, layer index 1: 0.176777
    assert d.detail.startswith(
        f"the reference scales the scores by 1/(sqrt(head_dim) * 2) = {fitted}, the candidate "
        "by 1/sqrt(head_dim)"
    ), d.detail


@needs_keras_hub
@pytest.mark.parametrize(
    "side",
    ["keras", pytest.param("hf", marks=pytest.mark.exhaustive)],
)
def test_a_missing_causal_mask_is_named_at_the_first_blocks_attention(gpt2, side):
    from _transformer_ports import keras_gpt2, plant_gpt2

    if side == "keras":  # keras-hub's TransformerDecoder called with use_causal_mask=False
        reference, candidate = gpt2, keras_gpt2(gpt2, uncausal=0)
        words = "the reference masks the future (token i sees keys j <= i); the candidate "
        words += "attends to every token (no causal mask)"
    else:  # GPT2Attention adding no mask to its scores
        reference, candidate = plant_gpt2(gpt2, 0, causal="none"), keras_gpt2(gpt2)
        words = "the reference attends to every token (no causal mask); the candidate masks "
        words += "the future (token i sees keys j <= i)"
    report = _compare(reference, candidate, GPT2_IDS)
    assert _first(report)["path"] == "transformer.h.0.attn"
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.layer) == ("causal-mask", True, "transformer.h.0.attn")
    assert d.detail.startswith(words), d.detail


def _loaded_in_order(reference, order: str):
    """A keras-hub port holding ``reference``'s weights, its block 0's query, key and value
    kernels and biases filled from c_attn's thirds in ``order`` (a loader's slip)."""
    from _transformer_ports import keras_gpt2

    import xgrad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        port = xgrad.convert(reference, into=keras_gpt2(reference), x=GPT2_IDS)
    sd = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    w, b = sd["transformer.h.0.attn.c_attn.weight"], sd["transformer.h.0.attn.c_attn.bias"]
    d, heads = w.shape[0], reference.config.n_head
    attn = port.backbone.transformer_layers[0]._self_attention_layer
    dense = {"q": attn._query_dense, "k": attn._key_dense, "v": attn._value_dense}
    for third, name in enumerate(order):  # c_attn's columns are [q | k | v]
        cols = slice(third * d, (third + 1) * d)
        dense[name].kernel.assign(w[:, cols].reshape(d, heads, d // heads))
        dense[name].bias.assign(b[cols].reshape(heads, d // heads))
    return port


@needs_keras_hub
@pytest.mark.parametrize(
    "side",
    ["keras", pytest.param("hf", marks=pytest.mark.exhaustive)],
)
def test_c_attn_split_in_another_order_is_named_qkv_layout_at_the_first_blocks_attention(
    gpt2, side
):
    from _transformer_ports import keras_gpt2, plant_gpt2

    qkv = "in the order q, k, v (GPT-2's c_attn, torch's in_proj_weight)"
    if side == "keras":  # c_attn's first third loaded into the keys, its second into queries
        reference, candidate = gpt2, _loaded_in_order(gpt2, "kqv")
        words = f"the reference splits the fused projection's heads {qkv}; the candidate "
        words += "splits the fused projection's heads in the order k, q, v"
    else:  # GPT2Attention cutting c_attn's output as k, q, v
        reference, candidate = plant_gpt2(gpt2, 0, qkv_order="kqv"), keras_gpt2(gpt2)
        words = "the reference splits the fused projection's heads in the order k, q, v; the "
        words += f"candidate splits the fused projection's heads {qkv}"
    report = _compare(reference, candidate, GPT2_IDS)
    assert _first(report)["path"] == "transformer.h.0.attn"
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.layer) == ("qkv-layout", True, "transformer.h.0.attn")
    assert d.detail.startswith(words), d.detail


@needs_keras_hub
@pytest.mark.exhaustive
def test_a_keras_hub_port_loaded_in_c_attns_own_order_is_ok(gpt2):
    report = _compare(gpt2, _loaded_in_order(gpt2, "qkv"), GPT2_IDS)
    assert report.ok, report.summary()
