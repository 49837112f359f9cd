"""Keras' "text classification with transformer" block against a PyTorch port: Keras'
``MultiHeadAttention(num_heads=2, key_dim=embed_dim)`` has heads ``embed_dim`` wide each
(its query kernel is ``(d, heads, key_dim)``), torch's ``nn.MultiheadAttention(embed_dim, 2)``
heads ``embed_dim // 2`` wide. The port with the wrong width is placed at the attention, and
a note names both widths and the fix; the port whose Keras side takes
``key_dim=embed_dim // num_heads`` is OK, torch's fused ``in_proj_weight`` paired with the
three Keras kernels head by head (issue 21, newcomer trial t3 ``torchmha``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "tensorflow"} <= INSTALLED, reason="torch and keras are needed"
)

VOCAB, TOKENS, D, HEADS, FF = 20, 6, 8, 2, 16

if {"torch", "tensorflow"} <= INSTALLED:
    import keras
    import torch
    from keras import layers
    from torch import nn

    import xgrad

    class KerasBlock(layers.Layer):
        """The Keras tutorial's TransformerBlock (dropout left out)."""

        def __init__(self, key_dim):
            super().__init__()
            self.att = layers.MultiHeadAttention(num_heads=HEADS, key_dim=key_dim)
            self.ffn = keras.Sequential([layers.Dense(FF, activation="relu"), layers.Dense(D)])
            self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
            self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)

        def call(self, inputs):
            out1 = self.layernorm1(inputs + self.att(inputs, inputs))
            return self.layernorm2(out1 + self.ffn(out1))

    def keras_model(key_dim):
        keras.utils.set_random_seed(0)
        inputs = layers.Input(shape=(TOKENS,))
        x = layers.Embedding(VOCAB, D)(inputs)
        x = KerasBlock(key_dim)(x)
        x = layers.GlobalAveragePooling1D()(x)
        return keras.Model(inputs=inputs, outputs=layers.Dense(2)(x))

    class HandAttention(nn.Module):
        """The fix torch allows: q/k/v Linear(d, heads * key_dim), heads key_dim wide."""

        def __init__(self, key_dim):
            super().__init__()
            self.kd = key_dim
            self.query, self.key, self.value = (nn.Linear(D, HEADS * key_dim) for _ in "qkv")
            self.out = nn.Linear(HEADS * key_dim, D)

        def forward(self, x, *_, **__):
            b, t, _ = x.shape
            q, k, v = (
                m(x).view(b, t, HEADS, self.kd).transpose(1, 2)
                for m in (self.query, self.key, self.value)
            )
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            return (self.out(y.transpose(1, 2).reshape(b, t, HEADS * self.kd)),)

    class TorchBlock(nn.Module):
        def __init__(self, key_dim=None):
            super().__init__()
            if key_dim is None:
                self.att = nn.MultiheadAttention(D, HEADS, batch_first=True)
            else:
                self.att = HandAttention(key_dim)
            self.ffn = nn.Sequential(nn.Linear(D, FF), nn.ReLU(), nn.Linear(FF, D))
            self.layernorm1 = nn.LayerNorm(D, eps=1e-6)
            self.layernorm2 = nn.LayerNorm(D, eps=1e-6)

        def forward(self, x):
            out1 = self.layernorm1(x + self.att(x, x, x, need_weights=False)[0])
            return self.layernorm2(out1 + self.ffn(out1))

    class TorchPort(nn.Module):
        def __init__(self, key_dim=None):
            super().__init__()
            self.embedding = nn.Embedding(VOCAB, D)
            self.block = TorchBlock(key_dim)
            self.head = nn.Linear(D, 2)

        def forward(self, ids):
            return self.head(self.block(self.embedding(ids)).mean(dim=1))


IDS = np.random.default_rng(0).integers(0, VOCAB, size=(2, TOKENS))


def _port(key_dim=None):
    torch.manual_seed(0)
    return TorchPort(key_dim).eval()


def test_heads_of_one_width_written_by_hand_ok():
    report = xgrad.compare_models(keras_model(key_dim=D), _port(key_dim=D), IDS)
    assert report.ok and report.unpaired == (), report.summary()
    assert not [n for n in report.notes if "heads of different widths" in n]


def test_heads_of_the_torch_width_ok():
    """Keras' q/k/v kernels ``(d, heads, head_dim)`` are torch's ``in_proj_weight`` rows
    ``[q; k; v]``, each head's ``head_dim`` rows together (once paired each head's q, k and
    v side by side, a false MISMATCH)."""
    report = xgrad.compare_models(keras_model(key_dim=D // HEADS), _port(), IDS)
    assert report.ok and report.unpaired == (), report.summary()
    (key,) = [e for e in report.parameters if e.name.endswith("att._key_dense.kernel")]
    assert key.native["torch"] == "block.att.in_proj_weight (part 2 of 3)", key.native


def test_torch_weights_from_keras_by_hand():
    """The derivation the test above rests on, independent of xgrad: torch's
    ``in_proj_weight`` is ``[q; k; v]`` with row ``h * head_dim + j`` of each the Keras
    kernel's ``[:, h, j]``, ``out_proj.weight`` the output kernel ``(heads, head_dim, d)``
    flattened to ``(d, d)`` and transposed; so loaded, the two attentions agree."""
    model, port = keras_model(key_dim=D // HEADS), _port()
    att = next(la for la in model.layers if isinstance(la, KerasBlock)).att
    kernels = [att._query_dense, att._key_dense, att._value_dense]
    x = np.random.default_rng(1).normal(size=(2, TOKENS, D)).astype("float32")
    mha = port.block.att
    with torch.no_grad():
        mha.in_proj_weight.copy_(
            torch.tensor(np.concatenate([k.kernel.numpy().reshape(D, D).T for k in kernels]))
        )
        mha.in_proj_bias.copy_(
            torch.tensor(np.concatenate([k.bias.numpy().reshape(D) for k in kernels]))
        )
        mha.out_proj.weight.copy_(torch.tensor(att._output_dense.kernel.numpy().reshape(D, D).T))
        mha.out_proj.bias.copy_(torch.tensor(att._output_dense.bias.numpy()))
        got = mha(*(torch.tensor(x),) * 3, need_weights=False)[0].numpy()
    want = np.asarray(att(x, x))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_key_dim_of_embed_dim_named_at_the_attention():
    report = xgrad.compare_models(keras_model(key_dim=D), _port(), IDS)
    assert not report.ok
    first = report.divergence_text()
    pattern = r"first divergence \[torch\]: \S+\.att \(\S+\.att <-> block\.att\)"
    assert re.match(pattern, first), first
    assert "its own computation (its inputs agree)" in first, first
    (note,) = [n for n in report.notes if "heads of different widths" in n]
    assert "16 wide, 2 heads of 8 (Keras' key_dim is the width of each head)" in note, note
    assert "the candidate's 8 wide, heads of 4 if it has 2 too" in note, note
    assert "key_dim=embed_dim // num_heads (4)" in note, note
    assert report.unpaired and all("heads differ in width" in u["reason"] for u in report.unpaired)
