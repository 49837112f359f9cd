"""Each porting convention planted in a Flax NNX port of Hugging Face's ``LlamaForCausalLM``
(``tests/_transformer_ports.py``, one keyword knob each) is named at the first block's module
where it acts, and confirmed there (issue 21, items 3 and 4).

The reference is the tiny LLaMA itself (2 layers, width 16, 4 heads, 2 key/value heads),
built from its config class; xgrad reads ``LlamaAttention`` and ``LlamaRMSNorm`` as no kind,
fits them from their values and re-runs them under the port's convention. The expected
cause and module are what each knob plants.

Not named here, and why: ``softmax_dtype="bfloat16"`` (XLA fuses the jitted bfloat16
softmax into float32 steps that no re-run of whole bfloat16 steps reproduces; the torch
form is named in ``tests/diagnosis/test_transformer_causes.py``), ``embed_scale`` (the
port multiplies in its own code between the embedding and the first block, which is not a
module) and ``mask_fill`` (needs a padding mask, which the model's ids-only call has none of).
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


def _diagnosis(llama, **knob):
    from _transformer_ports import llama_port

    import xgrad

    with warnings.catch_warnings():  # transformers' own notices on tiny configs
        warnings.simplefilter("ignore")
        report = xgrad.compare_models(llama, llama_port(llama, **knob), IDS)
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
