"""Facts about the JAX and Flax builds of the transformer kinds that only they have: Flax
builds ``nnx.Embed`` and ``nnx.MultiHeadAttention`` where the interface says so (and its own
``nnx.LinearGeneral`` module elsewhere), every new weight goes canonical -> native ->
canonical bit for bit, the causal mask is the reference's (keys after the query masked), ids
have no input gradient and the padding row none either, and ``nnx.MultiHeadAttention``'s
float64 softmax stays float64. The numerical agreement of every kind with the float64
reference is tests/frameworks/test_transformer_kinds.py's."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import rel_norm

pytest.importorskip("flax")
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

import xgrad  # noqa: E402
from xgrad.frameworks.flax.modules import GatedMLPLayer, SelfAttention  # noqa: E402
from xgrad.frameworks.jax.ops import x64  # noqa: E402
from xgrad.frameworks.kinds import KindNotSupportedError  # noqa: E402
from xgrad.layers import (  # noqa: E402
    Activation,
    Attention,
    Dense,
    Dropout,
    Embedding,
    GatedMLP,
    LayerNorm,
    Residual,
    RMSNorm,
)

T, V, D, B = 5, 7, 8, 2
IDS = np.array([[0, 3, 0, 6, 2], [5, 0, 1, 3, 3]])
FRAMEWORKS = ["jax", "flax"]

# Flax's own attention: no RoPE, separate q/k/v, the default scale (grouped-query included)
MHA_SPEC = xgrad.MLP(
    (T, D),
    [Attention(D, 4, causal=True), Residual([Attention(D, 4, kv_heads=2, use_bias=False)])],
)
# xgrad's own module: RoPE, a fused q/k/v kernel, another scale
OWN_SPEC = xgrad.MLP(
    (T,),
    [
        Embedding(V, D, padding_idx=0, scale=2.0),
        Attention(D, 2, qkv="fused", rope="interleaved", causal=True),
        Residual([Attention(D, 4, kv_heads=2, scale=0.3, rope="half")]),
        GatedMLP(D, 12, use_bias=True),
    ],
)


def _exact(spec: xgrad.MLP, dtype: str, seed: int = 3) -> dict[str, np.ndarray]:
    """Random canonical weights that ``dtype`` holds exactly (float64 arrays)."""
    w = xgrad.init_params(spec, seed=seed)
    return {k: np.asarray(v, dtype=dtype).astype(np.float64) for k, v in w.items()}


def _native_array(framework: str, model, native_name: str) -> np.ndarray:
    """The framework's own array behind a native name: a pytree path of the JAX params
    (``[1]['qkv_kernel']``), an NNX state path (``layers/1/qkv/kernel``)."""
    if framework == "jax":
        node = model.native[1]
        for index, key in re.findall(r"\[(\d+)\]|\['([^']+)'\]", native_name):
            node = node[int(index)] if index else node[key]
        return np.asarray(node)
    node = xgrad.get_framework("flax").native_weights(model)
    for part in native_name.split("/"):
        node = node[int(part) if part.isdigit() else part]
    return np.asarray(node[...])


def _kernel_shape(module, name: str) -> tuple[int, ...]:
    return tuple(getattr(module, name).kernel.shape)


# -- the modules ------------------------------------------------------------------------------


def test_flax_builds_its_own_modules_where_they_compute_the_layer():
    mha = xgrad.get_framework("flax").build(MHA_SPEC, dtype="float32").native
    first, grouped = mha.layers[0], mha.layers[1].layers[0]
    assert type(first) is nnx.MultiHeadAttention and type(grouped) is nnx.MultiHeadAttention
    assert (first.num_heads, first.num_kv_heads, first.head_dim) == (4, 4, 2)
    assert grouped.num_kv_heads == 2 and grouped.decode is False
    shapes = {n: _kernel_shape(grouped, n) for n in ("query", "key", "value", "out")}
    assert shapes == {"query": (D, 4, 2), "key": (D, 2, 2), "value": (D, 2, 2), "out": (4, 2, D)}

    own = xgrad.get_framework("flax").build(OWN_SPEC, dtype="float32").native
    embed, fused, gated = own.layers[0], own.layers[1], own.layers[3]
    rotary = own.layers[2].layers[0]
    assert type(embed) is nnx.Embed and embed.embedding.shape == (V, D)
    assert type(fused) is SelfAttention and fused.qkv.kernel.shape == (D, 2 + 2 * 2, 4)
    assert type(rotary) is SelfAttention and rotary.key.kernel.shape == (D, 2, 2)
    assert type(gated) is GatedMLPLayer
    assert [type(getattr(gated, n)) for n in ("gate", "up", "down")] == [nnx.Linear] * 3
    assert gated.down.kernel.shape == (12, D)


# -- weights ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_new_weight_round_trips_bit_exact(framework, dtype):
    fw = xgrad.get_framework(framework)
    for spec in (MHA_SPEC, OWN_SPEC):
        weights = _exact(spec, dtype)
        model = fw.build(spec, weights, dtype=dtype)
        natives = model.native_names()
        for name, value in weights.items():
            # the native array is the canonical one as it is (no layout), in the model's dtype
            native = _native_array(framework, model, natives[name])
            assert native.dtype == np.dtype(dtype), name
            np.testing.assert_array_equal(native, value, err_msg=name)
            np.testing.assert_array_equal(model.weights()[name], value, err_msg=name)
        others = _exact(spec, dtype, seed=4)
        back = model.with_weights(others).weights()
        for name, value in others.items():
            np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_linen_variables_name_nn_embed_and_refuse_attention():
    flax = xgrad.get_framework("flax")
    spec = xgrad.MLP((T,), [Embedding(V, D), Dense(3)])
    weights = _exact(spec, "float32")
    variables = flax.linen_variables(spec, weights, "float32")
    assert sorted(variables["params"]) == ["Dense_0", "Embed_0"]
    table = np.asarray(variables["params"]["Embed_0"]["embedding"])
    np.testing.assert_array_equal(table, weights["layers.0.embedding"])
    with pytest.raises(KindNotSupportedError, match="no Linen module for a attention layer"):
        flax.linen_variables(MHA_SPEC, _exact(MHA_SPEC, "float32"), "float32")


# -- ids and the padding row ------------------------------------------------------------------


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_ids_have_no_gradient_and_the_padding_row_none(framework):
    spec = xgrad.MLP((T,), [Embedding(V, D, padding_idx=0, scale=2.0), GatedMLP(D, 4)])
    weights = _exact(spec, "float64")
    weights["layers.0.embedding"][0] = 0.5  # init zeros the row (torch's); it is read as is
    ref = xgrad.get_framework("numpy").build(spec, weights, dtype="float64").evaluate(IDS)
    got = xgrad.get_framework(framework).build(spec, weights, dtype="float64").evaluate(IDS)
    assert got.input is None
    table = got.params["layers.0.embedding"]
    assert np.all(table[0] == 0)  # row 0, read four times, gets no gradient (torch's rule)
    assert np.abs(table[[1, 2, 3, 5, 6]]).min(axis=1).min() > 0  # the rows read do
    np.testing.assert_allclose(table, ref.params["layers.0.embedding"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.output, ref.output, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_token_wise_layers_act_on_the_last_axis(framework):
    """Dense, LayerNorm, RMSNorm, an active Dropout (xgrad's mask over batch and tokens), an
    Activation and a residual block on (batch, tokens, d); weight gradients summed over batch
    and tokens, as the reference sums them."""
    layers = [LayerNorm(), Dense(6, "gelu"), Dropout(0.3, active=True), RMSNorm()]
    spec = xgrad.MLP((T, D), [*layers, Activation("tanh"), Residual([Dense(6)])])
    weights = xgrad.init_params(spec, seed=1)
    x = np.random.default_rng(2).normal(size=(B, T, D))
    ref = xgrad.get_framework("numpy").build(spec, weights, dtype="float64")
    ref = ref.evaluate(x, capture=True)
    got = xgrad.get_framework(framework).build(spec, weights, dtype="float64")
    got = got.evaluate(x, capture=True)
    for name, value in ref.params.items():
        assert rel_norm(got.params[name], value) < 1e-12, name
    for path, value in ref.activation_grads.items():
        assert got.activation_grads[path].shape == (B, T, 6 if path != "layers.0" else D)
        assert rel_norm(got.activation_grads[path], value) < 1e-12, path
    assert rel_norm(got.input, ref.input) < 1e-12


# -- the causal mask --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def causal():
    """``(spec, weights, x, the float64 reference)`` of one causal MHA layer."""
    spec = xgrad.MLP((T, D), [Attention(D, 4, causal=True)])
    weights = _exact(spec, "float64")
    x = np.random.default_rng(0).normal(size=(B, T, D))
    ref = xgrad.get_framework("numpy").build(spec, weights, dtype="float64").evaluate(x)
    return spec, weights, x, ref


def _run(fn, x: np.ndarray) -> np.ndarray:
    """``fn(x)`` compiled once, in float64 (eager dispatch compiles every op: seconds)."""
    with x64("float64"):
        return np.asarray(jax.jit(fn)(jnp.asarray(x)))


def test_flax_causal_mask_is_the_references(causal):
    spec, weights, x, ref = causal
    # nnx.make_causal_mask: (batch, 1, query, key), True where key j <= query i
    mask = np.asarray(nnx.make_causal_mask(jnp.asarray(x[..., 0])))
    expected = np.broadcast_to(np.tril(np.ones((T, T))), (B, 1, T, T))
    np.testing.assert_array_equal(mask, expected)
    with x64("float64"):
        native = xgrad.get_framework("flax").build(spec, weights, dtype="float64").native
    # the model's __call__ runs the builder's path, mask included
    np.testing.assert_allclose(_run(native, x), ref.output, rtol=1e-12, atol=1e-12)
    # planted: the same nnx.MultiHeadAttention under a mask shifted by one (j <= i + 1)
    idx = jnp.arange(T)
    shifted = nnx.make_attention_mask(idx, idx - 1, jnp.greater_equal)
    wrong = _run(lambda a: native.layers[0](a, mask=shifted), x)
    assert np.abs(wrong - ref.output).max() > 1e-3


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_no_token_sees_a_later_one(framework, causal):
    spec, weights, x, ref = causal
    model = xgrad.get_framework(framework).build(spec, weights, dtype="float64")
    later = x.copy()
    later[:, -1] += 1.0  # only the last token changes
    before, after = model.evaluate(x).output, model.evaluate(later).output
    np.testing.assert_array_equal(after[:, :-1], before[:, :-1])
    assert np.abs(after[:, -1] - before[:, -1]).max() > 1e-3
    np.testing.assert_allclose(before, ref.output, rtol=1e-12, atol=1e-12)


def test_flax_float64_attention_keeps_its_softmax_in_float64(causal):
    """nnx.MultiHeadAttention's default attention_fn calls jax.nn.dot_product_attention,
    whose softmax is float32 whatever the dtype (jax/_src/nn/functions.py): in float64 xgrad
    gives it Flax's dot_product_attention_weights instead. If this fails because the default
    reached float64, the replacement (flax/modules.py weights_attention) may go."""
    spec, weights, x, ref = causal
    with x64("float64"):
        module = xgrad.get_framework("flax").build(spec, weights, dtype="float64").native.layers[0]
        mask = nnx.make_causal_mask(jnp.asarray(x[..., 0]))
    ours = _run(lambda a: module(a, mask=mask), x)
    module.attention_fn = nnx.dot_product_attention  # Flax's default
    default = _run(lambda a: module(a, mask=mask), x)
    assert ours.dtype == default.dtype == np.float64
    assert np.abs(ours - ref.output).max() < 1e-13
    assert np.abs(default - ref.output).max() > 1e-10


def test_flax_attention_differentiates_in_float16():
    """The default attention's F16_F16_F32 matmul fails on CPU when differentiated (JAX
    0.10.2): float16 gets weights_attention too, and agrees with the reference at float16's
    tolerance."""
    spec = xgrad.MLP((T, D), [Attention(D, 4, causal=True)])
    weights = _exact(spec, "float16")
    x = np.asarray(np.random.default_rng(3).normal(size=(B, T, D)), dtype=np.float16)
    ref = xgrad.get_framework("numpy").build(spec, weights, dtype="float64").evaluate(x)
    got = xgrad.get_framework("flax").build(spec, weights, dtype="float16").evaluate(x)
    for name, value in ref.params.items():
        if "key_bias" not in name:  # its gradient is 0: softmax ignores a shift per query
            assert rel_norm(got.params[name], value) < 1e-2, name
    assert rel_norm(got.input, ref.input) < 1e-2
