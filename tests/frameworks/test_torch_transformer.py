"""Facts about torch's build of the transformer kinds that only torch has: the modules are
torch's own where one exists (``nn.Embedding``, ``nn.Linear``), every weight goes canonical ->
native -> canonical bit for bit, ``padding_idx`` withholds its row's gradient, and
``F.scaled_dot_product_attention``'s causal mask is the reference's (keys after the query
masked). The numerical agreement of every kind with the float64 reference, in every framework,
is tests/frameworks/test_transformer_kinds.py's."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import xgrad  # noqa: E402
from xgrad.frameworks.torch.builder import build_model  # noqa: E402
from xgrad.frameworks.torch.modules import ScaledEmbedding, SelfAttention  # noqa: E402
from xgrad.layers import Attention, Embedding, GatedMLP, Residual  # noqa: E402

T, V, D = 5, 7, 8
IDS = np.array([[0, 3, 0, 6, 2], [5, 0, 1, 3, 3]])


def _spec(*, scale=None, padding_idx=0, qkv="separate", use_bias=True) -> xgrad.MLP:
    return xgrad.MLP(
        (T,),
        [
            Embedding(V, D, padding_idx=padding_idx, scale=scale),
            Residual([Attention(D, 4, kv_heads=2, causal=True, rope="half", qkv=qkv)]),
            Residual([GatedMLP(D, 12, use_bias=use_bias)]),
        ],
    )


def _weights(spec: xgrad.MLP, dtype: str) -> dict[str, np.ndarray]:
    """Random canonical weights that ``dtype`` holds exactly (float64 arrays)."""
    w = xgrad.init_params(spec, seed=3)
    return {k: np.asarray(v, dtype=dtype).astype(np.float64) for k, v in w.items()}


# -- the modules ------------------------------------------------------------------------------


def test_the_built_modules_are_torchs_own():
    plain = build_model(_spec(), xgrad.init_params(_spec()), "float32").native
    assert type(plain[0]) is nn.Embedding and plain[0].padding_idx == 0
    mlp = plain[2][0]
    assert all(type(getattr(mlp, n)) is nn.Linear for n in ("gate_proj", "up_proj", "down_proj"))
    attention = plain[1][0]
    assert isinstance(attention, SelfAttention)
    assert {n: tuple(p.shape) for n, p in attention.named_parameters()} == {
        "query_kernel": (D, 4, 2),
        "key_kernel": (D, 2, 2),
        "value_kernel": (D, 2, 2),
        "query_bias": (4, 2),
        "key_bias": (2, 2),
        "value_bias": (2, 2),
        "out_kernel": (4, 2, D),
        "out_bias": (D,),
    }
    scaled = build_model(_spec(scale=D**0.5), xgrad.init_params(_spec()), "float32").native
    assert isinstance(scaled[0], ScaledEmbedding) and isinstance(scaled[0], nn.Embedding)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("qkv", ["separate", "fused"])
def test_canonical_native_canonical_is_bit_exact(dtype, qkv):
    spec = _spec(qkv=qkv)
    w = _weights(spec, dtype)
    model = build_model(spec, w, dtype)
    native = {k: v.double().numpy() for k, v in model.native.state_dict().items()}
    # the native forms, by hand: nn.Linear holds the kernel transposed, the rest as it is
    assert np.array_equal(native["0.weight"], w["layers.0.embedding"])
    for name in ("gate", "up", "down"):
        assert np.array_equal(
            native[f"2.0.{name}_proj.weight"], w[f"layers.2.layers.0.{name}_kernel"].T
        )
        assert np.array_equal(native[f"2.0.{name}_proj.bias"], w[f"layers.2.layers.0.{name}_bias"])
    for name in [n for n in w if n.startswith("layers.1.")]:
        assert np.array_equal(native[f"1.0.{name.rsplit('.', 1)[1]}"], w[name]), name
    back = model.weights()
    assert set(back) == set(w)
    for name, value in w.items():
        assert back[name].dtype == np.dtype(dtype)
        assert np.array_equal(back[name], value), name
    again = model.with_weights(back).weights()
    assert all(np.array_equal(again[k], back[k]) for k in back)


# -- padding_idx ------------------------------------------------------------------------------


@pytest.mark.parametrize("padding_idx", [0, None])
def test_the_padding_row_gets_no_gradient(padding_idx):
    scale = 1.5
    spec = xgrad.MLP((T,), [Embedding(V, D, padding_idx=padding_idx, scale=scale)])
    model = build_model(spec, _weights(spec, "float64"), "float64")
    cot = np.random.default_rng(0).normal(size=(2, T, D))
    g = model.evaluate(IDS, cotangent=cot).params["layers.0.embedding"]
    # by hand: row v gathers scale * dL/dy at every position holding v
    want = np.zeros((V, D))
    np.add.at(want, IDS.reshape(-1), scale * cot.reshape(-1, D))
    if padding_idx is not None:
        want[padding_idx] = 0
    assert np.abs(want[0]).max() > 0 or padding_idx is not None  # row 0 is read: 3 times
    np.testing.assert_allclose(g, want, rtol=1e-14, atol=0)


# -- the causal mask of scaled_dot_product_attention ------------------------------------------


def _masked_attention(x, w, causal: bool) -> np.ndarray:
    """Attention by hand in float64 (no RoPE, as many kv heads as heads): scores masked
    with -inf for keys after the query, softmax over keys."""
    q = np.einsum("btd,dnh->btnh", x, w["query_kernel"]) + w["query_bias"]
    k = np.einsum("btd,dnh->btnh", x, w["key_kernel"]) + w["key_bias"]
    v = np.einsum("btd,dnh->btnh", x, w["value_kernel"]) + w["value_bias"]
    s = np.einsum("binh,bjnh->bnij", q, k) / np.sqrt(q.shape[-1])
    if causal:
        s = np.where(np.arange(T)[None, :] > np.arange(T)[:, None], -np.inf, s)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    o = np.einsum("bnij,bjnh->binh", p, v)
    return np.einsum("binh,nhd->bid", o, w["out_kernel"]) + w["out_bias"]


@pytest.fixture(scope="module")
def causal_model():
    spec = xgrad.MLP((T, D), [Attention(D, 2, causal=True)])
    w = _weights(spec, "float64")
    return build_model(spec, w, "float64"), {k.split(".")[-1]: v for k, v in w.items()}


def _check_causal(model, w, x):
    out = model.evaluate(x, cotangent=np.zeros((2, T, D))).output
    np.testing.assert_allclose(out, _masked_attention(x, w, causal=True), rtol=1e-12, atol=1e-13)
    # dL/dx of an output at token 2 reaches tokens 0..2 only
    cot = np.zeros((2, T, D))
    cot[:, 2] = 1.0
    dx = model.evaluate(x, cotangent=cot).input
    assert np.all(dx[:, 3:] == 0) and np.all(np.abs(dx[:, :3]).max(axis=-1) > 0)


def test_sdpas_causal_mask_is_the_references(causal_model):
    model, w = causal_model
    _check_causal(model, w, np.random.default_rng(1).normal(size=(2, T, D)))


def test_a_mask_left_off_is_caught(causal_model):
    model, w = causal_model
    module = model.native[0]
    module.causal = False  # planted: the module attends to every key
    try:
        with pytest.raises(AssertionError):
            _check_causal(model, w, np.random.default_rng(1).normal(size=(2, T, D)))
    finally:
        module.causal = True
