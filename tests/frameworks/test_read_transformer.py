"""The readers read the transformer kinds back (issue 21, item 2, the spec tier).

* xgrad's own builds of a transformer spec on token ids (Embedding -> a pre-LN block with
  causal, grouped-query, RoPE attention and a gated MLP -> Dense head), of an Embedding with
  ``padding_idx`` and ``scale``, and of attention specs on floats (``nnx.MultiHeadAttention``
  in Flax, fused projections), read by each framework's reader from the native object alone
  (``xgrad.read_model``) as the same spec, every weight bit-exact;
* ``xgrad.convert(native, to=X)`` for every target, equal bit for bit to X's own build of
  the spec with the same weights, and gradients equal by ``xgrad.compare_models`` between
  frameworks read as layers;
* users' embeddings (``nn.Embedding``, ``F.embedding``, ``lut(x) * sqrt(d)``, ``nnx.Embed``,
  ``jnp.take``) read as the ``embedding`` kind on ids in ``[0, vocab)``;
* a hand-written torch attention (q/k/v/o ``nn.Linear``, softmax) is no chain of layers: the
  reader refuses it, and ``compare_models(read="auto")`` compares it module by module, where a
  planted missing scale is named ``attention-scale`` at the attention module.

Expected specs and weights are those the models were built from; nothing is read back from
the reader under test to build an expectation. Tiny shapes (dim 16, 6 tokens, batch 2).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad import MLP, Attention, Dense, Embedding, transformer_block

READERS = [name for name in ("torch", "flax", "jax", "tensorflow") if name in INSTALLED]
VOCAB, DIM, TOKENS, BATCH = 20, 16, 6, 2
IDS = np.random.default_rng(0).integers(0, VOCAB, size=(BATCH, TOKENS))
X = np.random.default_rng(1).standard_normal((BATCH, TOKENS, DIM)).astype(np.float32)

SPECS = {
    "ids": MLP(
        (TOKENS,),
        [Embedding(VOCAB, DIM), *transformer_block(DIM, 4, 32, kv_heads=2, rope="half"), Dense(20)],
    ),
    "padded": MLP((TOKENS,), [Embedding(VOCAB, DIM, padding_idx=3, scale=4.0), Dense(5)]),
    "floats": MLP((TOKENS, DIM), [Attention(DIM, 4, causal=True), Dense(3)]),
    "fused": MLP(
        (TOKENS, DIM),
        [Attention(DIM, 4, kv_heads=2, qkv="fused", rope="interleaved", scale=0.25), Dense(3)],
    ),
}


def _weights(spec: MLP) -> dict[str, np.ndarray]:
    """Random canonical weights that float32 holds exactly (float64 arrays)."""
    w = xgrad.init_params(spec, seed=3)
    return {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in w.items()}


def _inputs(spec: MLP) -> np.ndarray:
    return IDS if spec.layers[0].kind == "embedding" else X


_BUILT: dict = {}


def _built(framework: str, name: str):
    """xgrad's float32 build of ``SPECS[name]`` in ``framework`` (cached: module scope)."""
    if (framework, name) not in _BUILT:
        spec = SPECS[name]
        _BUILT[framework, name] = xgrad.get_framework(framework).build(
            spec, _weights(spec), dtype="float32"
        )
    return _BUILT[framework, name]


_READ: dict = {}


def _read(framework: str, name: str):
    """The native object of :func:`_built` read back by ``xgrad.read_model`` (cached)."""
    if (framework, name) not in _READ:
        native = _built(framework, name).native
        _READ[framework, name] = xgrad.read_model(native, input_shape=SPECS[name].input_shape)
    return _READ[framework, name]


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("framework", READERS)
def test_xgrads_own_build_reads_back_as_its_spec(framework, name):
    spec = SPECS[name]
    read = _read(framework, name)
    assert read.spec().describe() == spec.describe()
    got, want = read.weights(), _weights(spec)
    assert set(got) == set(want)
    for key, value in want.items():
        assert np.array_equal(np.asarray(got[key], dtype=np.float64), value), key


def _arrays(native) -> list[np.ndarray]:
    """The arrays of a converted model's weights, in a fixed order (a Keras model's
    ``get_weights()``, a state dict's values, a pytree's leaves)."""
    if hasattr(native, "get_weights"):
        return [np.asarray(v) for v in native.get_weights()]
    if isinstance(native, dict) and all(hasattr(v, "detach") for v in native.values()):
        return [v.detach().numpy() for _, v in sorted(native.items())]
    import jax

    return [np.asarray(v) for v in jax.tree_util.tree_leaves(native)]


def _same(converted, target: str) -> bool:
    """Whether ``converted`` holds, bit for bit, what ``target``'s own build of the spec with
    the same weights holds."""
    want = _arrays(xgrad.get_framework(target).native_weights(_built(target, "ids")))
    got = _arrays(converted)
    return len(got) == len(want) and all(
        np.array_equal(a, b) for a, b in zip(got, want, strict=True)
    )


@pytest.mark.parametrize("framework", READERS)
def test_convert_from_each_native_to_every_target(framework):
    native, w = _built(framework, "ids").native, _weights(SPECS["ids"])
    nxt = READERS[(READERS.index(framework) + 1) % len(READERS)]
    assert _same(xgrad.convert(native, to=nxt, x=IDS), nxt)  # from the native object
    read = _read(framework, "ids")  # what convert reads native into, read once
    converted = xgrad.convert(read, to="numpy")
    assert all(np.array_equal(converted[k], w[k]) for k in w) and set(converted) == set(w)
    for target in READERS:
        assert _same(xgrad.convert(read, to=target), target), target
    # gradients: this framework's model read as layers against the next one's build
    report = xgrad.compare_models(read, _built(nxt, "ids"), IDS, read="layers")
    assert report.ok, report.summary()


# -- users' embeddings -----------------------------------------------------------------------


@pytest.mark.skipif("torch" not in INSTALLED, reason="torch is needed")
def test_torch_embeddings_as_users_write_them():
    import torch
    from torch import nn

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.table = nn.Parameter(torch.randn(VOCAB, DIM))
            self.head = nn.Linear(DIM, 3)

        def forward(self, ids):
            return self.head(nn.functional.embedding(ids, self.table, padding_idx=-1))

    class Scaled(nn.Module):  # the Annotated Transformer's Embeddings
        def __init__(self):
            super().__init__()
            self.lut = nn.Embedding(VOCAB, DIM, padding_idx=0)
            self.head = nn.Linear(DIM, 3)

        def forward(self, ids):
            return self.head(self.lut(ids) * math.sqrt(DIM))

    for model, first in [
        (Functional(), f"embedding({VOCAB}, {DIM}, padding_idx={VOCAB - 1})"),
        (Scaled(), f"embedding({VOCAB}, {DIM}, padding_idx=0, scale=4)"),
        (nn.Sequential(nn.Embedding(VOCAB, DIM), nn.Linear(DIM, 3)), f"embedding({VOCAB}, 16)"),
    ]:
        read = xgrad.read_model(model, input_shape=(TOKENS,))
        assert [i.describe() for i in read.layers] == [first, "3:linear"]
        grads = read.gradients(IDS)  # evaluated on ids: no input gradient
        assert grads.input is None and grads.params["layers.0.embedding"].shape == (VOCAB, DIM)
    with pytest.raises(xgrad.InputError, match=r"input_shape=\(tokens,\)"):
        xgrad.read_model(Scaled())


@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is needed")
def test_nnx_embed_and_jnp_take_as_users_write_them():
    import jax.numpy as jnp
    from flax import nnx

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(VOCAB, DIM, rngs=rngs)
            self.head = nnx.Linear(DIM, 3, rngs=rngs)

        def __call__(self, ids):
            return self.head(self.embed(ids))

    read = xgrad.read_model(Model(nnx.Rngs(0)), input_shape=(TOKENS,))
    assert [i.describe() for i in read.layers] == [f"embedding({VOCAB}, {DIM})", "3:linear"]
    rng = np.random.default_rng(2)
    params = {"table": jnp.asarray(rng.standard_normal((VOCAB, DIM)), jnp.float32)}
    params["w"] = jnp.asarray(rng.standard_normal((DIM, 3)), jnp.float32)

    def apply(p, ids):
        return (jnp.take(p["table"], ids, axis=0) * 4.0) @ p["w"]

    read = xgrad.read_model((apply, params), input_shape=(TOKENS,))
    assert [i.describe() for i in read.layers] == [
        f"embedding({VOCAB}, {DIM}, scale=4)",
        "3:linear (no bias)",
    ]
    assert read.gradients(IDS).input is None


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is needed")
def test_a_swiglu_as_users_write_it_in_jax():
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    w = {k: jnp.asarray(rng.standard_normal(s), jnp.float32) for k, s in [("w1", (24, DIM)),
         ("w3", (24, DIM)), ("w2", (DIM, 24))]}  # fmt: skip

    def swiglu(p, x):  # Meta's LLaMA: w2(silu(w1(x)) * w3(x)), weights (out, in)
        return (jax.nn.silu(x @ p["w1"].T) * (x @ p["w3"].T)) @ p["w2"].T

    read = xgrad.read_model((swiglu, w), input_shape=(TOKENS, DIM))
    assert [i.describe() for i in read.layers] == [f"gated_mlp({DIM}, 24, silu)"]
    assert read.layers[0].params == {"gate_kernel": "w1", "up_kernel": "w3", "down_kernel": "w2"}
    canonical = read.weights()
    assert np.array_equal(canonical["layers.0.gate_kernel"], np.asarray(w["w1"]).T)

    def up_first(p, x):  # the same, the up projection computed first: told from its values
        return ((x @ p["w3"].T) * jax.nn.silu(x @ p["w1"].T)) @ p["w2"].T

    read = xgrad.read_model((up_first, w), input_shape=(TOKENS, DIM))
    assert read.layers[0].params == {"gate_kernel": "w1", "up_kernel": "w3", "down_kernel": "w2"}

    def bilinear(p, x):  # two products multiplied and no down projection: no layer
        return jnp.tanh(x @ p["w1"].T) * (x @ p["w3"].T)

    read = xgrad.read_model((bilinear, w), input_shape=(TOKENS, DIM))
    assert "nor as a gated mlp" in read.structure_error


# -- a hand-written attention: no chain ------------------------------------------------------

if "torch" in INSTALLED:
    import torch
    from torch import nn

    class HandAttention(nn.Module):
        """Self-attention as users write it: q/k/v/o ``nn.Linear``, scores, softmax."""

        def __init__(self, *, scaled=True, heads=4, branchy=True):
            super().__init__()
            self.heads, self.hd, self.scaled, self.branchy = heads, DIM // heads, scaled, branchy
            self.q_proj, self.k_proj = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
            self.v_proj, self.o_proj = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = (
                p(x).view(b, t, self.heads, self.hd).transpose(1, 2)
                for p in (self.q_proj, self.k_proj, self.v_proj)
            )
            s = q @ k.transpose(-1, -2)
            if self.branchy and t > 1:  # Python control flow: torch.fx cannot trace it
                s = s + 0.0
            if self.scaled:
                s = s / math.sqrt(self.hd)
            o = torch.softmax(s, dim=-1) @ v
            return self.o_proj(o.transpose(1, 2).reshape(b, t, DIM))

    class Residualish(nn.Module):
        """``x + fc(x)`` behind Python control flow (read through hooks)."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(DIM, DIM)

        def forward(self, x):
            if x.shape[1] > 1:
                return x + self.fc(x)
            return x

    class Block(nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.norm, self.attn = nn.LayerNorm(DIM), HandAttention(**kwargs)
            self.head = nn.Linear(DIM, 3)

        def forward(self, x):
            return self.head(self.attn(self.norm(x)))


@pytest.mark.skipif("torch" not in INSTALLED, reason="torch is needed")
def test_a_hand_written_attention_is_no_chain_of_layers():
    torch.manual_seed(0)
    with pytest.raises(xgrad.AlignmentError, match="'attn.k_proj'.* no chain of layers"):
        xgrad.read_model(Block(), input_shape=(TOKENS, DIM))  # fx cannot trace: hooks
    with pytest.raises(xgrad.AlignmentError, match="not a layer xgrad reads"):
        xgrad.read_model(Block(branchy=False), input_shape=(TOKENS, DIM))  # traced by fx
    chain = nn.Sequential(nn.LayerNorm(DIM), nn.Linear(DIM, DIM), nn.ReLU(), nn.Flatten())
    read = xgrad.read_model(chain, input_shape=(TOKENS, DIM))  # a chain still reads
    assert [i.describe() for i in read.layers] == ["layernorm(eps=1e-05)", "16:relu", "flatten"]
    nested = nn.Sequential(nn.Linear(DIM, DIM), Residualish())  # hooks, with x + f(x)
    read = xgrad.read_model(nested, input_shape=(TOKENS, DIM))
    assert [i.kind for i in read.layers] == ["dense", "residual"]


@pytest.mark.skipif("torch" not in INSTALLED, reason="torch is needed")
def test_a_hand_written_attention_compares_module_by_module():
    torch.manual_seed(0)
    reference = Block()
    torch.manual_seed(1)
    report = xgrad.compare_models(reference, Block(scaled=False), X)  # read="auto"
    assert any("no chain of layers" in note for note in report.notes), report.notes
    assert not report.ok
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.layer) == ("attention-scale", True, "attn"), d.text()
