"""Tiny random Hugging Face models (built from their config classes, nothing downloaded)
compared module by module: GPT-2 (its ``Conv1D`` projections opaque, its LM head tied to the
token embedding) and LLaMA (its own ``LlamaRMSNorm`` and SiLU modules named from their
values). A copy with another norm epsilon is named at the first norm, with its cause; the
same model twice is OK."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif(
    "torch" not in INSTALLED or importlib.util.find_spec("transformers") is None,
    reason="torch and transformers are needed",
)

IDS = np.random.default_rng(0).integers(0, 50, size=(2, 7))


def _gpt2(eps: float = 1e-5):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
        layer_norm_epsilon=eps, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def _llama(eps: float = 1e-6):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=50, max_position_embeddings=32, rms_norm_eps=eps,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _compare(reference, candidate):
    with warnings.catch_warnings():  # transformers' own notices on tiny configs
        warnings.simplefilter("ignore")
        return xgrad.compare_models(reference, candidate, IDS)


def test_gpt2_against_itself_is_ok_with_its_tied_head_compared_once():
    report = _compare(_gpt2(), _gpt2())
    assert report.ok, report.summary()
    names = [e.name for e in report.parameters]
    assert "transformer.wte.weight" in names and not any("lm_head" in n for n in names)
    assert any("gelu_tanh" in n for n in report.notes)  # NewGELUActivation, from its values


def test_gpt2_with_another_layernorm_epsilon_is_named_at_the_first_norm():
    report = _compare(_gpt2(), _gpt2(eps=1e-3))
    assert not report.ok
    d = report.divergences[0]
    assert (d.path, d.where) == ("transformer.h.0.ln_1", "forward")
    assert d.detail == "its own computation (its inputs agree)"
    assert (report.diagnoses[0].cause, report.diagnoses[0].confirmed) == (
        "layernorm-epsilon",
        True,
    )
    assert report.config_diffs[0].fields == {"epsilon": (1e-5, 1e-3)}


def test_llama_rmsnorm_modules_are_read_from_their_values_and_an_epsilon_is_named():
    assert _compare(_llama(), _llama()).ok
    report = _compare(_llama(), _llama(eps=1e-5))
    assert not report.ok
    assert report.divergences[0].path == "model.layers.0.input_layernorm"
    assert (report.diagnoses[0].cause, report.diagnoses[0].confirmed) == (
        "rmsnorm-epsilon",
        True,
    )
