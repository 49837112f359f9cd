"""``compare_models``' default ``read="auto"`` where reading both models as layers of xgrad's
kinds goes wrong (issue 21, a new-user trial):

* torch's ``nn.TransformerEncoderLayer`` (post-LN and ``norm_first``) against a correct NNX
  port: its ``nn.MultiheadAttention`` computes with its own ``in_proj_weight`` and never
  calls its ``out_proj``, so the hooks reader saw it as code between two modules and read it
  as an ``activation(?)``, and the layer pairing refused the two as differing in structure.
  Now such a module is read as one unit (not a layer kind: the model is compared module by
  module), and independently of that, two readings as layers that do not pair are checked
  module by module before anything is refused;
* a pure JAX GPT-style function: a learned position table ``wpe[jnp.arange(T)]`` and a fused
  ``(dim, 3 dim)`` q/k/v matrix split into heads are no chain of xgrad's kinds: refused by
  name (``NoCommonReading``), never a raw ``ValueError``/``IndexError``;
* ``x + h @ w2 + b2`` written without parentheses: the bias belongs to the dense layer of
  ``w2`` inside the residual block (it was read as a layer ``layernorm(?)`` of its own).

The expected values come from torch (the reference) or from the parenthesised function.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)

D, H, FF, T, B, V = 16, 2, 32, 6, 2, 20
HD = D // H

if {"torch", "flax"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.comparison.pair import NoCommonReading

    def unscaled_attention(query, key, value, bias=None, mask=None, **kwargs):
        """``nnx.dot_product_attention`` without the 1/sqrt(head_dim) (the planted slip)."""
        weights = jax.nn.softmax(jnp.einsum("...qhd,...khd->...hqk", query, key), axis=-1)
        return jnp.einsum("...hqk,...khd->...qhd", weights, value)

    class EncoderPort(nnx.Module):
        """``nn.TransformerEncoderLayer(D, H, FF, batch_first=True)`` (ReLU, eps 1e-5)
        ported to NNX, post-LN or ``norm_first``."""

        def __init__(self, rngs, norm_first=False, scale=True):
            self.self_attn = nnx.MultiHeadAttention(
                num_heads=H,
                in_features=D,
                qkv_features=D,
                out_features=D,
                decode=False,
                attention_fn=nnx.dot_product_attention if scale else unscaled_attention,
                rngs=rngs,
            )
            self.linear1 = nnx.Linear(D, FF, rngs=rngs)
            self.linear2 = nnx.Linear(FF, D, rngs=rngs)
            self.norm1 = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)
            self.norm2 = nnx.LayerNorm(D, epsilon=1e-5, rngs=rngs)
            self.norm_first = norm_first

        def __call__(self, x):
            def mlp(h):
                return self.linear2(jax.nn.relu(self.linear1(h)))

            if self.norm_first:
                x = x + self.self_attn(self.norm1(x))
                return x + mlp(self.norm2(x))
            x = self.norm1(x + self.self_attn(x))
            return self.norm2(x + mlp(x))

    def layer_norm(x, p, eps=1e-5):
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]

    def mlp_block(p, x):
        """``x + h @ w2 + b2`` without parentheses, as JAX users write it."""
        h = jax.nn.relu(layer_norm(x, p["ln"]) @ p["w1"] + p["b1"])
        return x + h @ p["w2"] + p["b2"]

    def mlp_block_grouped(p, x):
        h = jax.nn.relu(layer_norm(x, p["ln"]) @ p["w1"] + p["b1"])
        return x + (h @ p["w2"] + p["b2"])

    def mlp_block_gelu(p, x):  # the planted slip: GELU where the reference has ReLU
        h = jax.nn.gelu(layer_norm(x, p["ln"]) @ p["w1"] + p["b1"], approximate=False)
        return x + h @ p["w2"] + p["b2"]

    class TorchMLPBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln, self.fc1, self.fc2 = nn.LayerNorm(D), nn.Linear(D, FF), nn.Linear(FF, D)

        def forward(self, x):
            return x + self.fc2(F.relu(self.fc1(self.ln(x))))

    def attention(p, x):
        """nanoGPT's causal attention on one sequence ``(T, D)``: q/k/v from one ``(D, 3D)``
        matrix, split and reshaped into heads."""
        t = x.shape[0]
        q, k, v = jnp.split(x @ p["w_qkv"] + p["b_qkv"], 3, axis=-1)
        q, k, v = (a.reshape(t, H, HD).transpose(1, 0, 2) for a in (q, k, v))
        s = q @ k.transpose(0, 2, 1) / math.sqrt(HD)
        s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
        y = jax.nn.softmax(s, axis=-1) @ v
        return y.transpose(1, 0, 2).reshape(t, D) @ p["w_o"] + p["b_o"]

    def gpt_one(p, ids, positions=True):
        """A GPT-2-style model on one sequence of ids ``(T,)``: token (and position) table,
        one pre-LN block, final norm, LM head ``(D, V)``."""
        x = p["wte"][ids]
        if positions:
            x = x + p["wpe"][jnp.arange(ids.shape[0])]
        x = x + attention(p["attn"], layer_norm(x, p["ln1"]))
        x = mlp_block(p, x)
        return layer_norm(x, p["ln_f"]) @ p["head"]

    gpt = jax.vmap(gpt_one, in_axes=(None, 0))
    gpt_without_positions = jax.vmap(lambda p, ids: gpt_one(p, ids, False), in_axes=(None, 0))

    class TorchAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn, self.c_proj = nn.Linear(D, 3 * D), nn.Linear(D, D)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (a.view(b, t, H, HD).transpose(1, 2) for a in self.c_attn(x).split(D, 2))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).reshape(b, t, D))

    class TorchGPT(nn.Module):
        """The function in torch, as nanoGPT writes it."""

        def __init__(self, positions=True):
            super().__init__()
            self.wte = nn.Embedding(V, D)
            self.wpe = nn.Embedding(T, D) if positions else None
            self.ln1, self.attn = nn.LayerNorm(D), TorchAttention()
            self.mlp = TorchMLPBlock()
            self.ln_f, self.head = nn.LayerNorm(D), nn.Linear(D, V, bias=False)

        def forward(self, ids):
            x = self.wte(ids)
            if self.wpe is not None:
                x = x + self.wpe(torch.arange(ids.shape[1]))
            x = x + self.attn(self.ln1(x))
            return self.head(self.ln_f(self.mlp(x)))


def _params(**shapes):
    rng = np.random.default_rng(0)
    return {
        k: (0.3 * rng.standard_normal(s)).astype(np.float32) + (1 if k == "scale" else 0)
        for k, s in shapes.items()
    }


def _mlp_params():
    return {
        "ln": _params(scale=(D,), bias=(D,)),
        **_params(w1=(D, FF), b1=(FF,), w2=(FF, D), b2=(D,)),
    }


def _gpt_params():
    return {
        **_params(wte=(V, D), wpe=(T, D), head=(D, V)),
        **{n: _params(scale=(D,), bias=(D,)) for n in ("ln1", "ln_f", "ln")},
        "attn": _params(w_qkv=(D, 3 * D), b_qkv=(3 * D,), w_o=(D, D), b_o=(D,)),
        **_params(w1=(D, FF), b1=(FF,), w2=(FF, D), b2=(D,)),
    }


X = np.random.default_rng(1).standard_normal((B, T, D)).astype(np.float32)
IDS = np.random.default_rng(2).integers(0, V, size=(B, T))


@pytest.fixture(scope="module")
def encoders():
    """torch's encoder layer (ReLU, dropout 0.1 in eval mode), post-LN and ``norm_first``."""
    torch.manual_seed(0)
    return {
        norm_first: nn.TransformerEncoderLayer(
            D, H, FF, batch_first=True, norm_first=norm_first
        ).eval()
        for norm_first in (False, True)
    }


BOTH = pytest.mark.parametrize("norm_first", [False, True], ids=["post-LN", "norm_first"])


# -- 1. torch's TransformerEncoderLayer against an NNX port -----------------------------------


@BOTH
def test_a_transformer_encoder_layer_against_a_correct_port_is_ok(encoders, norm_first):
    report = xgrad.compare_models(encoders[norm_first], EncoderPort(nnx.Rngs(0), norm_first), X)
    assert report.ok, report.summary()
    assert report.unpaired == ()
    assert any("self_attn" in p.native["reference"] for p in report.parameters)


@BOTH
def test_a_multihead_attention_is_read_as_one_module_never_an_activation(encoders, norm_first):
    # its work is not code between two modules: the layer reading refuses it by name
    with pytest.raises(xgrad.AlignmentError, match=r"module 'self_attn' \(MultiheadAttention\)"):
        xgrad.read_model(encoders[norm_first], input_shape=(T, D))


def test_a_port_without_the_attention_scale_is_named_at_self_attn(encoders):
    report = xgrad.compare_models(encoders[False], EncoderPort(nnx.Rngs(0), scale=False), X)
    assert not report.ok
    assert [(d.cause, d.layer, d.confirmed) for d in report.diagnoses] == [
        ("attention-scale", "self_attn", True)
    ]


@pytest.mark.parametrize(
    "norm_first",
    [False, pytest.param(True, marks=pytest.mark.exhaustive)],  # the same path: a depth
    ids=["post-LN", "norm_first"],
)
def test_readings_as_layers_that_do_not_pair_are_checked_module_by_module(
    encoders, norm_first, monkeypatch
):
    # the hooks reader as it was: leaf modules only, so the attention is an activation(?)
    from xgrad.frameworks.torch import reader

    def leaves(module):
        return [(n, m) for n, m in module.named_modules() if not any(True for _ in m.children())]

    monkeypatch.setattr(reader, "_hooked", leaves, raising=False)
    report = xgrad.compare_models(encoders[norm_first], EncoderPort(nnx.Rngs(0), norm_first), X)
    assert report.ok, report.summary()
    assert report.notes[0].startswith(
        "read module by module (read as layers of xgrad's kinds, the two do not pair: "
    )


def test_layers_that_do_not_pair_with_a_function_are_not_called_different_models():
    # a pure JAX function cannot be read module by module: the refusal is said of readings
    def two(p, x):
        return jnp.tanh(x @ p["a"]) @ p["b"]

    ref = nn.Sequential(nn.Linear(D, FF), nn.Tanh(), nn.Linear(FF, FF), nn.Tanh())
    ref.append(nn.Linear(FF, 3))
    with pytest.raises(xgrad.AlignmentError) as info:
        xgrad.compare_models(ref, (two, _params(a=(D, FF), b=(FF, 3))), X[:, 0])
    text = str(info.value)
    assert text.startswith("read as layers of xgrad's kinds, the two models do not pair (")
    assert "the candidate cannot be read module by module" in text
    assert "read='modules'" in text and "the models differ in structure" not in text


# -- 2. pure JAX GPT-style functions ----------------------------------------------------------


def test_a_learned_position_table_is_refused_by_name_never_a_raw_error():
    params = _gpt_params()
    model = xgrad.read_model((gpt, params), input_shape=(T,))
    assert model.layers == ()
    assert model.structure_error.startswith(
        "parameter 'wpe' enters the stream by 'add' as a value of shape (6, 16)"
    )
    with pytest.raises(NoCommonReading) as info:
        xgrad.compare_models(TorchGPT(), (gpt, params), IDS)
    text = str(info.value)
    assert "the candidate, (gpt_one, params), cannot be read module by module" in text
    assert "nor as layers of xgrad's kinds (parameter 'wpe' enters the stream by 'add'" in text
    assert "a position table an nnx.Embed called on jnp.arange(T)" in text


def test_a_fused_qkv_matrix_split_into_heads_is_refused_by_name():
    params = _gpt_params()
    with pytest.raises(NoCommonReading) as info:
        xgrad.compare_models(TorchGPT(False), (gpt_without_positions, params), IDS)
    assert (
        "the code after parameter 'attn/b_qkv' maps examples of shape (6, 48) to (2, 6, 8) "
        "without a parameter"
    ) in str(info.value)


# -- 3. x + h @ w2 + b2 -----------------------------------------------------------------------


def test_a_bias_added_after_the_skip_belongs_to_the_dense_layer():
    params = _mlp_params()
    read = [info.describe() for info in xgrad.read_model((mlp_block, params)).layers]
    grouped = xgrad.read_model((mlp_block_grouped, params)).layers
    assert read == [info.describe() for info in grouped]
    assert read == ["residual(layernorm(eps=1e-05) -> 32:relu -> 16:linear)"]
    torch.manual_seed(0)
    report = xgrad.compare_models(TorchMLPBlock(), (mlp_block, params), X)
    assert report.ok, report.summary()
    assert {"fc2.bias": "b2"}.items() <= {
        p.native["reference"]: p.native["jax"] for p in report.parameters
    }.items()


def test_a_slip_in_that_block_is_localised_at_its_layer():
    torch.manual_seed(0)
    report = xgrad.compare_models(TorchMLPBlock(), (mlp_block_gelu, _mlp_params()), X)
    assert not report.ok
    assert report.first_divergence["path"] == "layers.0.layers.1"
