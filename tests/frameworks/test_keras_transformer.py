"""Keras-only facts of the transformer kinds (xgrad/frameworks/tensorflow/transformer.py).

Which Keras layer computes each configuration (Keras' own ``Embedding``,
``MultiHeadAttention`` and ``GroupQueryAttention`` where they compute xgrad's definition,
xgrad's registered layers elsewhere), canonical weights crossing bit-exactly, the causal mask
checked from values (an earlier token's output does not move when a later token changes),
Keras' float64 score scale rounded to float32 (the reason float64 attention is built with
xgrad's layer unless that scale is exact), a user's Keras model read and a ``.keras`` file
of xgrad's layers loaded in safe mode. Expected values come from the formulas by hand
(NumPy einsums) or xgrad's NumPy reference. Every model is float64 and tiny; the Keras
models are built once per module.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from xgrad.frameworks.tensorflow import load_keras_file
from xgrad.frameworks.tensorflow.builder import SpecModel
from xgrad.frameworks.tensorflow.keras_layers import (
    XgradAttention,
    XgradEmbedding,
    XgradGatedMLP,
)
from xgrad.frameworks.tensorflow.kinds import KINDS, keras_weight
from xgrad.frameworks.tensorflow.ops import keras
from xgrad.frameworks.tensorflow.reader import read_keras_model
from xgrad.layers import Attention, Dense, Embedding, GatedMLP, Residual, RMSNorm
from xgrad.layers.base import forward_sequence, vjp_sequence
from xgrad.params import init_params
from xgrad.spec import MLP

T, D, V = 5, 8, 11
MHA, GQA = keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention


def _built(layer, dtype: str):
    return type(KINDS[layer.kind].build(layer, "x", dtype))


@pytest.mark.parametrize(
    "layer, dtype, cls",
    [
        (Embedding(V, D), "float64", keras.layers.Embedding),
        (Embedding(V, D, padding_idx=0), "float32", XgradEmbedding),
        (Embedding(V, D, scale=D**0.5), "float32", XgradEmbedding),
        (Attention(D, 2, causal=True), "float64", MHA),  # head_dim 4: 1/2 exact in float32
        (Attention(D, 4), "float32", MHA),
        (Attention(D, 4), "float64", XgradAttention),  # 1/sqrt(2) rounded by Keras
        (Attention(16, 4, kv_heads=2), "float64", GQA),
        (Attention(D, 2, rope="half"), "float32", XgradAttention),
        (Attention(D, 2, qkv="fused"), "float32", XgradAttention),
        (Attention(D, 2, scale=0.5), "float32", XgradAttention),
        (GatedMLP(D, 12), "float32", XgradGatedMLP),
    ],
    ids=lambda v: getattr(v, "__name__", None) or str(getattr(v, "describe", lambda: v)()),
)
def test_keras_own_layers_are_built_where_they_compute_xgrads_definition(layer, dtype, cls):
    assert _built(layer, dtype) is cls


def _einsum_attention(x, w, heads, scale, causal):
    """Multi-head self-attention by hand: kernels (D, H, hd), out (H, hd, D), biases."""
    q, k, v = (
        np.einsum("btd,dhk->bthk", x, w[n + "_kernel"]) + w[n + "_bias"]
        for n in ("query", "key", "value")
    )
    s = np.einsum("bihd,bjhd->bhij", q, k) * scale
    if causal:
        s = np.where(np.triu(np.ones(s.shape[-2:], bool), 1), -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("bhij,bjhd->bihd", p, v)
    return np.einsum("bihd,hdo->bio", o, w["out_kernel"]) + w["out_bias"]


def test_multi_head_attention_scales_float64_scores_by_a_float32_constant():
    """Keras 3.15's MultiHeadAttention (TensorFlow backend) computes the formula with
    1/sqrt(key_dim) rounded to float32 in float64: with key_dim 2 the exact scale misses by
    ~1e-8, far beyond float64's tolerance, and the reader reads that rounded scale."""
    layer = MHA(4, 2, dtype="float64")
    x = np.random.default_rng(0).standard_normal((2, T, D))
    layer(x, x)
    rng = np.random.default_rng(1)
    for var in layer.trainable_variables:
        var.assign(rng.standard_normal(tuple(var.shape)))
    entry = KINDS["attention"]
    w = {n: keras_weight(entry, layer, n).numpy() for n in Attention(D, 4).param_names()}
    y = np.asarray(layer(x, x, use_causal_mask=True))
    rounded = float(np.float32(1 / math.sqrt(2)))
    assert np.abs(y - _einsum_attention(x, w, 4, rounded, True)).max() < 1e-13
    assert np.abs(y - _einsum_attention(x, w, 4, 1 / math.sqrt(2), True)).max() > 1e-10

    inputs = keras.Input((T, D), dtype="float64")
    read = read_keras_model(keras.Model(inputs, layer(inputs, inputs, use_causal_mask=True)))
    config = read.layers[0].layer
    assert config.scale == rounded and config.causal
    assert "rounded to float32" in read.layers[0].note


SPECS = {
    "keras": MLP(
        (T,),
        [
            Embedding(V, D),
            Residual([RMSNorm(), Attention(D, 2, causal=True)]),  # MultiHeadAttention
            GatedMLP(D, 12, use_bias=True),
            Dense(V),
        ],
    ),
    "gqa": MLP((T, 16), [Attention(16, 4, kv_heads=2, causal=True), Dense(3)]),
    "own": MLP(
        (T,),
        [
            Embedding(V, D, padding_idx=3, scale=D**0.5),
            Attention(D, 4, kv_heads=2, rope="interleaved", qkv="fused", causal=True),
            GatedMLP(D, 12, "gelu_tanh"),
        ],
    ),
}


@pytest.fixture(scope="module")
def models():
    """Each spec as a float64 Keras model holding its init_params weights."""
    out = {}
    for name, spec in SPECS.items():
        weights = init_params(spec, 0)
        out[name] = (spec, weights, SpecModel(spec, weights, "float64"))
    return out


def _batch(spec: MLP, seed: int):
    rng = np.random.default_rng(seed)
    if spec.layers[0].kind == "embedding":
        ids = rng.integers(0, V, (2, T))
        ids[:, 1] = 3  # the padding id of "own", read twice
        ids[0, 3] = 3
        return ids
    return rng.standard_normal((2, *spec.input_shape))


@pytest.mark.parametrize("name", list(SPECS))
def test_weights_cross_bit_exactly_in_canonical_shapes(models, name):
    spec, weights, model = models[name]
    for path, layer in spec.walk():
        for local in layer.param_names():
            variable = keras_weight(KINDS[layer.kind], model.keras_layer(path), local)
            assert tuple(variable.shape) == weights[f"{path}.{local}"].shape  # no layout
    back = model.weights()
    assert set(back) == set(weights)
    for key, value in weights.items():
        assert back[key].dtype == np.float64 and np.array_equal(back[key], value), key


@pytest.mark.parametrize("name", list(SPECS))
def test_keras_models_compute_the_numpy_reference(models, name):
    spec, weights, model = models[name]
    x = _batch(spec, 1)
    cot = np.random.default_rng(2).standard_normal((2, *spec.output_shape))
    got = model.evaluate(x, cotangent=cot)
    out, steps = forward_sequence(spec.layers, weights, x)
    grads: dict = {}
    vjp_sequence(weights, steps, cot, grads)
    assert np.abs(got.output - out).max() <= 1e-12 * np.abs(out).max()
    for key, g in grads.items():
        assert np.abs(got.params[key] - g).max() <= 1e-12 * max(np.abs(g).max(), 1.0), key
    if spec.layers[0].kind == "embedding":
        assert got.input is None  # token ids have no gradient
        assert model.native.inputs[0].dtype == "int32"


def test_padding_row_is_read_but_gets_no_gradient(models):
    spec, weights, model = models["own"]
    ids = _batch(spec, 1)
    got = model.evaluate(ids, cotangent=np.ones((2, *spec.output_shape)))
    table = got.params["layers.0.embedding"]
    assert np.all(table[3] == 0) and np.all(table[ids[0, 0]] != 0)
    # the forward pass reads the padding row: a non-zero row moves the output
    moved = model.with_weights({"layers.0.embedding": weights["layers.0.embedding"] + 1.0})
    assert not np.allclose(moved.evaluate(ids, cotangent=np.ones_like(got.output)).output, 0)


@pytest.mark.parametrize("name", ["keras", "gqa", "own"])
def test_causal_attention_never_sees_a_later_token(models, name):
    """Changing the last token moves the last output only (by hand: the definition)."""
    spec, _, model = models[name]
    x = _batch(spec, 3)
    later = x.copy()
    if spec.layers[0].kind == "embedding":
        later[:, -1] = (later[:, -1] + 1) % V
    else:
        later[:, -1] += 1.0
    cot = np.zeros((2, *spec.output_shape))
    a, b = model.evaluate(x, cotangent=cot).output, model.evaluate(later, cotangent=cot).output
    assert np.array_equal(a[:, :-1], b[:, :-1]) and not np.allclose(a[:, -1], b[:, -1])


def test_a_users_keras_attention_is_read_with_its_mask_from_values():
    """use_causal_mask is an argument of the call, not of the layer: read from the output
    (causal and non-causal compared; a planted non-causal call is read non-causal)."""
    for causal in (True, False):
        ids = keras.Input((T,), dtype="int32")
        h = keras.layers.Embedding(V, 16, dtype="float64")(ids)
        h = GQA(4, 4, 2, dtype="float64")(h, h, use_causal_mask=causal)
        model = keras.Model(ids, keras.layers.Dense(3, dtype="float64")(h))
        read = read_keras_model(model)
        assert read.spec() == MLP(
            (T,), [Embedding(V, 16), Attention(16, 4, 2, 4, causal=causal), Dense(3)]
        )
        assert read.evaluate(_batch(read.spec(), 0), loss="sum").input is None


@pytest.mark.parametrize("name", ["keras", "own"])
def test_a_keras_file_loads_in_safe_mode_and_reads_back(models, tmp_path, name):
    """xgrad's own layers (registered) and Keras' (MultiHeadAttention called with
    use_causal_mask, RMSNormalization on tokens) read back as the spec they were built from."""
    spec, _, model = models[name]
    path = tmp_path / "model.keras"
    model.native.save(path)
    read = read_keras_model(load_keras_file(path))
    assert read.spec() == spec
    ids, cot = _batch(spec, 4), np.ones((2, *spec.output_shape))
    mine, theirs = model.evaluate(ids, cotangent=cot), read.evaluate(ids, cotangent=cot)
    assert np.array_equal(mine.output, theirs.output)
    assert all(np.array_equal(mine.params[k], theirs.params[k]) for k in mine.params)
