"""Each porting convention planted in a Flax NNX port of Hugging Face's ``LlamaForCausalLM``
(``tests/_transformer_ports.py``, one keyword knob each) is named at the first block's module
where it acts, and confirmed there (issue 21, items 3 and 4).

The reference is the tiny LLaMA itself (2 layers, width 16, 4 heads, 2 key/value heads),
built from its config class; xgrad reads ``LlamaAttention`` and ``LlamaRMSNorm`` as no kind,
fits them from their values and re-runs them under the port's convention. The expected
cause and module are what each knob plants. Also named, each where it acts:

* ``qkv_order``: a fused q/k/v projection holding LLaMA's q, k and v stacked (loaded by hand,
  as a user loads them) and split in another order;
* ``softmax_dtype="bfloat16"``: the jitted port's bfloat16 softmax, as XLA compiles it;
* ``mask_fill=-inf`` with a padding mask given to both (Hugging Face's ``attention_mask``
  and the port's argument, one dict of inputs): the NaN rows;
* ``embed_scale``: the port's sqrt(d) in its own code between the embedding and the first
  block (no module's);
* ``tied``: the port's head is its ``nnx.Embed``'s ``attend``, LLaMA's a module of its own.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = [
    pytest.mark.skipif(
        not {"torch", "flax"} <= INSTALLED or importlib.util.find_spec("transformers") is None,
        reason="torch, flax and transformers are needed",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("_transformer_ports") is None,
        reason="the LLaMA port (tests/_transformer_ports.py) is not in this checkout",
    ),
]

IDS = np.random.default_rng(0).integers(0, 32, size=(2, 6))
ATTN = "model.layers.0.self_attn"


@pytest.fixture(scope="module")
def llama():
    from _transformer_ports import hf_llama

    return hf_llama()


def _diagnosis(llama, x=IDS, port=None, transfer="auto", **knob):
    from _transformer_ports import llama_port

    import xgrad

    with warnings.catch_warnings():  # transformers' own notices on tiny configs
        warnings.simplefilter("ignore")
        candidate = port or llama_port(llama, **knob)
        report = xgrad.compare_models(llama, candidate, x, transfer=transfer)
    assert not report.ok, report.summary()
    return report.diagnoses[0]


def test_the_correct_port_is_ok(llama):
    from _transformer_ports import llama_port

    import xgrad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = xgrad.compare_models(llama, llama_port(llama), IDS)
    assert report.ok, report.summary()


@pytest.mark.parametrize(
    ("knob", "cause", "layer"),
    [
        ({"rope": "interleaved"}, "rope-layout", ATTN),
        # theta matters little at head_dim 4 and 6 tokens: the difference is placed at
        # o_proj (its input differs by less than 10x the tolerance), the cause at its attention
        ({"rope_theta": 500000.0}, "rope-base", f"{ATTN}.o_proj"),
        ({"scale": "none"}, "attention-scale", ATTN),
        ({"scale": "twice"}, "attention-scale", ATTN),
        ({"causal": "none"}, "causal-mask", ATTN),
        ({"causal": "shifted"}, "causal-mask", ATTN),
        ({"gqa": "tile"}, "gqa-repeat", ATTN),
        ({"heads_layout": "head_dim_first"}, "qkv-layout", ATTN),
        ({"rms_eps": "outside"}, "rmsnorm-epsilon-placement", "model.layers.0.input_layernorm"),
        ({"rms_offset": True}, "rmsnorm-offset", "model.layers.0.input_layernorm"),
    ],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else None,
)
def test_each_planted_convention_is_named_at_the_first_block(llama, knob, cause, layer):
    d = _diagnosis(llama, **knob)
    assert (d.cause, d.confirmed, d.layer) == (cause, True, layer), d.text()
    if layer.startswith(ATTN):
        assert f"the reference's {ATTN} was read from its values as attention with 4 heads" in (
            d.detail
        )


def test_tiled_kv_heads_name_the_heads_that_differ(llama):
    d = _diagnosis(llama, gqa="tile")
    # 4 query heads on 2 kv heads: repeat_kv reads kv 0, 0, 1, 1; tile 0, 1, 0, 1
    assert f"only heads 1, 2 of 4 differ: {ATTN} heads 1, 2" in d.detail, d.detail


def test_a_softmax_in_bfloat16_is_named_as_xla_compiles_it(llama):
    # jitted, XLA rounds the scores, exponentials and their sum to bfloat16 and divides in
    # float32; no re-run of whole bfloat16 steps reproduces that, the fused one does
    d = _diagnosis(llama, softmax_dtype="bfloat16")
    assert (d.cause, d.confirmed, d.layer) == ("softmax-precision", True, ATTN), d.text()
    assert "the candidate computes the softmax on bfloat16 scores as XLA compiles" in d.detail


def _stacked_qkv(llama, port):
    """The port's fused projections filled by hand from LLaMA's q, k and v (torch's ``(out,
    in)`` weights transposed, stacked q, k, v, heads of head_dim 4): as a user loads them."""
    sd = {k: v.detach().numpy() for k, v in llama.state_dict().items()}
    for i, block in enumerate(port.blocks):
        parts = [sd[f"model.layers.{i}.self_attn.{p}_proj.weight"].T for p in "qkv"]
        block.attn.qkv_proj.kernel[...] = np.concatenate(parts, axis=1).reshape(16, 8, 4)
    return port


def test_a_fused_projection_split_in_another_order_is_named(llama):
    from _transformer_ports import llama_port

    # transfer=True: the other weights copied too (a port partly loaded is left as it is)
    port = _stacked_qkv(llama, llama_port(llama, qkv_order="kqv"))
    d = _diagnosis(llama, port=port, transfer=True)
    assert (d.cause, d.confirmed, d.layer) == ("qkv-layout", True, ATTN), d.text()
    assert "the candidate splits the fused projection's heads in the order k, q, v" in d.detail
    assert "separate q, k and v projections" in d.detail


def test_a_minus_inf_mask_fill_is_named_with_its_nan_rows(llama):
    mask = np.ones_like(IDS)
    mask[0, :2] = 0  # left padding: query rows 0 and 1 of the first sequence see no key
    x = {"input_ids": IDS, "attention_mask": mask}  # both models take both by name
    d = _diagnosis(llama, x, mask_fill=float("-inf"))
    assert (d.cause, d.confirmed, d.layer) == ("mask-fill", True, ATTN), d.text()
    # Hugging Face adds finfo(float32).min to masked scores: read from its captured mask
    assert "fills masked scores with the dtype's lowest value (finfo.min, Hugging Face)" in (
        d.detail
    )
    assert "the candidate with -inf" in d.detail and "2 rows of the candidate's output are NaN" in (
        d.detail
    )


def test_embeddings_scaled_in_the_ports_own_code_are_named(llama):
    d = _diagnosis(llama, embed_scale=True)
    assert (d.cause, d.confirmed, d.layer) == ("embedding-scale", True, "(the model)"), d.text()
    assert "in the model's own code between model.embed_tokens and model.layers.0" in d.detail
    assert "the candidate multiplies them by sqrt(dim) = sqrt(16)" in d.detail


def test_a_head_tied_to_the_embedding_in_the_port_only_is_named(llama):
    # the port's head is self.embed.attend(h): its table used in the port's own code
    d = _diagnosis(llama, tied=True)
    assert (d.cause, d.confirmed, d.layer, d.where) == (
        "tied-weights",
        True,
        "lm_head",
        "forward",
    ), d.text()
    assert "the candidate ties embed.attend to embed.embedding" in d.detail
    assert "separate parameter lm_head.kernel" in d.detail


# -- the other direction: each convention planted on Hugging Face's side ---------------------------
#
# The reference is the tiny LLaMA with one convention planted (tests/_transformer_ports.py
# plant_llama: a LlamaAttention computing the same thing with one knob changed, HF's own
# GemmaRMSNorm, a LlamaForCausalLM whose forward scales its embeddings; rope_theta through the
# config); the candidate is the correct port. xgrad fits the reference's module from its values
# (now under the unusual convention) and re-runs it under the candidate's. One case in make test,
# the rest under `exhaustive` (make fuzz).

NORM = "model.layers.0.input_layernorm"
REVERSED = [
    ({"causal": "shifted"}, "causal-mask", ATTN),
    ({"rope": "interleaved"}, "rope-layout", ATTN),
    ({"rope_theta": 500000.0}, "rope-base", f"{ATTN}.o_proj"),
    ({"scale": "none"}, "attention-scale", ATTN),
    ({"scale": "twice"}, "attention-scale", ATTN),
    ({"causal": "none"}, "causal-mask", ATTN),
    ({"gqa": "tile"}, "gqa-repeat", ATTN),
    ({"heads_layout": "head_dim_first"}, "qkv-layout", ATTN),
    ({"rms_eps": "outside"}, "rmsnorm-epsilon-placement", NORM),
    ({"rms_offset": True}, "rmsnorm-offset", NORM),
]


def _planted(llama, knob):
    from _transformer_ports import hf_llama, plant_llama

    if "rope_theta" in knob:  # LLaMA 3's base, as its config.json sets it
        return hf_llama(rope_theta=knob["rope_theta"])
    return plant_llama(llama, **knob)


def _reversed(llama, reference, x=IDS, port=None, transfer="auto"):
    from _transformer_ports import llama_port

    import xgrad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = xgrad.compare_models(reference, port or llama_port(llama), x, transfer=transfer)
    assert not report.ok, report.summary()
    return report.diagnoses[0]


@pytest.mark.parametrize(
    ("knob", "cause", "layer"),
    [REVERSED[0], *(pytest.param(*r, marks=pytest.mark.exhaustive) for r in REVERSED[1:])],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) if isinstance(v, dict) else None,
)
def test_each_convention_planted_in_the_reference_is_named_at_the_first_block(
    llama, knob, cause, layer
):
    d = _reversed(llama, _planted(llama, knob))
    assert (d.cause, d.confirmed, d.layer) == (cause, True, layer), d.text()
    if layer.startswith(ATTN):
        assert f"the reference's {ATTN} was read from its values as attention with 4 heads" in (
            d.detail
        )
    if cause == "rmsnorm-offset":
        assert "the reference scales by (1 + weight)" in d.detail


@pytest.mark.exhaustive
def test_tiled_kv_heads_in_the_reference_name_the_heads_that_differ(llama):
    d = _reversed(llama, _planted(llama, {"gqa": "tile"}))
    assert d.detail.startswith("the reference tiles the key/value heads"), d.detail
    assert f"only heads 1, 2 of 4 differ: {ATTN} heads 1, 2" in d.detail, d.detail


@pytest.mark.exhaustive
def test_a_scale_applied_twice_in_the_reference_is_worded_both_ways_it_reads(llama):
    # head_dim 4, width 16: 1/head_dim = 1/sqrt(dim); both readings are said, neither dropped
    d = _reversed(llama, _planted(llama, {"scale": "twice"}))
    assert d.detail.startswith(
        "the reference scales the scores by 1/head_dim = 1/4 (the scale applied twice) or "
        "1/sqrt(dim) = 1/sqrt(16)"
    ), d.detail


@pytest.mark.exhaustive
def test_a_softmax_in_bfloat16_in_the_reference_is_named(llama):
    # torch's CPU softmax on bfloat16 scores: computed wider, its output rounded
    d = _reversed(llama, _planted(llama, {"softmax_dtype": "bfloat16"}))
    assert (d.cause, d.confirmed, d.layer) == ("softmax-precision", True, ATTN), d.text()
    assert "the reference computes the softmax on bfloat16 scores, its output rounded" in d.detail


@pytest.mark.exhaustive
def test_a_fused_projection_split_in_another_order_in_the_reference_is_named(llama):
    from _transformer_ports import llama_port

    # the reference's one qkv_proj holds LLaMA's q, k, v stacked and cuts it k, q, v; the port
    # keeps separate q, k, v, filled by hand from LLaMA's (a fused reference of GQA widths
    # pairs with nothing, see the report), the rest copied by xgrad
    port = llama_port(llama)
    sd = {k: v.detach().numpy() for k, v in llama.state_dict().items()}
    for i, block in enumerate(port.blocks):
        for p, heads in (("q", 4), ("k", 2), ("v", 2)):
            w = sd[f"model.layers.{i}.self_attn.{p}_proj.weight"].T  # (in, out)
            getattr(block.attn, f"{p}_proj").kernel[...] = w.reshape(16, heads, 4)
    reference = _planted(llama, {"qkv_order": "kqv"})
    d = _reversed(llama, reference, port=port, transfer=True)
    assert (d.cause, d.confirmed, d.layer) == ("qkv-layout", True, ATTN), d.text()
    assert "the reference splits the fused projection's heads in the order k, q, v" in d.detail


@pytest.mark.exhaustive
def test_a_minus_inf_mask_fill_in_the_reference_is_named_with_its_nan_rows(llama):
    mask = np.ones_like(IDS)
    mask[0, :2] = 0  # left padding: query rows 0 and 1 of the first sequence see no key
    x = {"input_ids": IDS, "attention_mask": mask}
    d = _reversed(llama, _planted(llama, {"mask_fill": "-inf"}), x)
    assert (d.cause, d.confirmed, d.layer) == ("mask-fill", True, ATTN), d.text()
    assert d.detail.startswith("the reference fills masked scores with -inf, the candidate with")
    assert "2 rows of the reference's output are NaN" in d.detail


@pytest.mark.exhaustive
def test_embeddings_scaled_in_the_references_own_code_are_named(llama):
    d = _reversed(llama, _planted(llama, {"embed_scale": True}))
    assert (d.cause, d.confirmed, d.layer) == ("embedding-scale", True, "(the model)"), d.text()
    assert "in the model's own code between model.embed_tokens and model.layers.0" in d.detail
    assert "the reference multiplies them by sqrt(dim) = sqrt(16)" in d.detail
