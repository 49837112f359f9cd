"""Flax models captured module by module (tier (a)), written the way the Flax docs write them:
an NNX token-wise FFN block and self-attention block on (batch, tokens, d), nnx.Embed on
integer ids, two keyword inputs and a dict output, a tied weight; a Linen MLP with Dropout
and a ``train`` apply keyword, a Linen model of @nn.compact submodules with a LLaMA-style
RMSNorm of its own.

Each model's modules (paths, kinds, opaque ones) are checked, and its gradients against an
independent derivation in float64: ``jax.grad`` of the model's function written out by hand
(or of the user's own ``apply``), one module's ``dL/d output`` by perturbing that module's
output in the hand-written function."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")

if "flax" in INSTALLED:
    import jax
    import jax.numpy as jnp
    from flax import linen as nn
    from flax import nnx

    from xgrad.errors import InputError
    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.flax import FlaxFramework
    from xgrad.frameworks.flax.capture import capture_linen, capture_nnx

    F64 = {"dtype": jnp.float64, "param_dtype": jnp.float64}

    class FFN(nnx.Module):
        """A pre-LN token-wise feed-forward block."""

        def __init__(self, d, hidden, *, rngs):
            self.norm = nnx.LayerNorm(d, rngs=rngs, **F64)
            self.up = nnx.Linear(d, hidden, rngs=rngs, **F64)
            self.down = nnx.Linear(hidden, d, rngs=rngs, **F64)

        def __call__(self, x):
            return x + self.down(nnx.gelu(self.up(self.norm(x))))

    class SelfAttention(nnx.Module):
        def __init__(self, d, heads, *, rngs):
            self.norm = nnx.LayerNorm(d, rngs=rngs, **F64)
            # with dropout_rate 0, Flax calls jax.nn.dot_product_attention, whose softmax
            # runs in float32 whatever the dtype: a float64 check needs Flax's own path
            self.attn = nnx.MultiHeadAttention(
                num_heads=heads, in_features=d, dropout_rate=0.1, decode=False, rngs=rngs, **F64
            )
            self.dropout = nnx.Dropout(0.1, rngs=rngs)

        def __call__(self, x):
            return x + self.dropout(self.attn(self.norm(x)))

    class Pooled(nnx.Module):
        def __init__(self, vocab, d, out, *, rngs):
            self.embed = nnx.Embed(vocab, d, rngs=rngs, **F64)
            self.head = nnx.Linear(d, out, rngs=rngs, **F64)

        def __call__(self, ids):
            return self.head(self.embed(ids).mean(axis=1))

    class TwoInputs(nnx.Module):
        def __init__(self, *, rngs):
            self.left = nnx.Linear(3, 4, rngs=rngs, **F64)
            self.right = nnx.Linear(2, 4, rngs=rngs, **F64)

        def __call__(self, *, a, b):
            h = self.left(a) + nnx.tanh(self.right(b))
            return {"logits": h, "probs": nnx.softmax(h)}

    class Tied(nnx.Module):
        def __init__(self, d, *, rngs):
            self.enc = nnx.Linear(d, d, rngs=rngs)
            self.dec = nnx.Linear(d, d, rngs=rngs)
            self.dec.kernel = self.enc.kernel

        def __call__(self, x):
            return self.dec(nnx.sigmoid(self.enc(x)))

    class Broken(nnx.Module):
        def __init__(self, *, rngs):
            self.linear = nnx.Linear(3, 3, rngs=rngs)

        def __call__(self, x):
            self.linear(x)
            raise ValueError("boom inside the module")

    class LinenMLP(nn.Module):
        hidden: int = 16

        @nn.compact
        def __call__(self, x, train: bool):
            x = nn.relu(nn.Dense(self.hidden)(x))
            x = nn.Dropout(0.3, deterministic=not train)(x)
            return nn.Dense(3)(x)

    class LinenRMSNorm(nn.Module):
        """LLaMA's RMSNorm, written as users write it."""

        eps: float = 1e-6

        @nn.compact
        def __call__(self, x):
            w = self.param("weight", nn.initializers.ones, (x.shape[-1],))
            return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    class LinenBlock(nn.Module):
        @nn.compact
        def __call__(self, x):
            return x + nn.gelu(nn.Dense(x.shape[-1])(LinenRMSNorm()(x)))

    class LinenNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = LinenBlock(name="block")(x)
            return nn.Dense(2)(nn.LayerNorm()(x))


RNG = np.random.default_rng(0)
TOL = {"rtol": 1e-10, "atol": 1e-12}


def _x64(fn, *args):
    with jax.enable_x64(True):
        return fn(*args)


def _grad(fn, *args, argnums=0):
    """``jax.grad`` in float64, as NumPy (a tuple for several argnums)."""
    with jax.enable_x64(True):
        out = jax.grad(fn, argnums=argnums)(*args)
    return jax.tree.map(np.asarray, out)


def _params(model) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(model, nnx.Param)))


def _layer_norm(x, p, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


def _mse(out, y):
    return jnp.sum((out - y) ** 2) / out.size


def _shape_of(model) -> list[tuple]:
    return [(m.path, m.type, m.kind, m.scope, m.opaque) for m in model.modules]


def _snapshot(model) -> list[np.ndarray]:
    out = []
    for leaf in jax.tree.leaves(nnx.state(model)):
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out.append(np.array(leaf))
    return out


# -- NNX --------------------------------------------------------------------------------------


def _ffn_ref(p, x, e):
    u = _layer_norm(x, p["norm"]) @ p["up"]["kernel"] + p["up"]["bias"] + e
    return x + jax.nn.gelu(u, approximate=True) @ p["down"]["kernel"] + p["down"]["bias"]


def test_ffn_block_on_tokens():
    model = _x64(lambda: FFN(8, 16, rngs=nnx.Rngs(0)))
    x = RNG.normal(size=(3, 5, 8))
    y = RNG.normal(size=(3, 5, 8))
    before = _snapshot(model)
    captured = capture_nnx(model, as_batch(x))
    assert _shape_of(captured) == [
        ("norm", "LayerNorm", "layernorm", "", False),
        ("up", "Linear", "dense", "", False),
        ("down", "Linear", "dense", "", False),
        ("", "FFN", "module", None, True),
    ]
    up = captured.module("up")
    assert (up.layer.units, up.input_shape, up.output_shape) == (16, (5, 8), (5, 16))
    assert captured.module("norm").layer.epsilon == 1e-6
    assert captured.dtype == "float64" and captured.output_shape == (5, 8)
    assert not jax.config.jax_enable_x64

    g = captured.evaluate(x, y, loss="mse", capture=True)
    assert not jax.config.jax_enable_x64
    p, zero = _params(model), np.zeros((3, 5, 16))
    gp, gx, ge = _grad(lambda p, x, e: _mse(_ffn_ref(p, x, e), y), p, x, zero, argnums=(0, 1, 2))
    for name, value in g.params.items():
        path, local = name.rsplit(".", 1)
        np.testing.assert_allclose(value, gp[path][local], **TOL, err_msg=name)
        assert value.dtype == np.float64
    np.testing.assert_allclose(g.input, gx, **TOL)
    np.testing.assert_allclose(g.activation_grads["up"], ge, **TOL)
    np.testing.assert_allclose(g.output, _x64(_ffn_ref, p, x, zero), **TOL)
    assert g.activations["up"].shape == (3, 5, 16)
    assert g.module_inputs["down"][0].shape == (3, 5, 16)
    assert all(np.array_equal(a, b) for a, b in zip(before, _snapshot(model), strict=True))


def _attention_ref(p, x, e):
    a = p["attn"]
    h = _layer_norm(x, p["norm"])
    q, k, v = (
        jnp.einsum("btd,dhk->bthk", h, a[n]["kernel"]) + a[n]["bias"]
        for n in ("query", "key", "value")
    )
    w = jax.nn.softmax(jnp.einsum("bqhk,bshk->bhqs", q / np.sqrt(q.shape[-1]), k), axis=-1)
    o = jnp.einsum("bhqs,bshk->bqhk", w, v)
    return x + jnp.einsum("bqhk,hkd->bqd", o, a["out"]["kernel"]) + a["out"]["bias"] + e


def test_self_attention_block():
    model = _x64(lambda: SelfAttention(8, 2, rngs=nnx.Rngs(1)))
    x = RNG.normal(size=(2, 6, 8))
    model.train()
    active = capture_nnx(model, x)  # the user's modes
    assert "training mode" in active.module("dropout").note
    assert active.module("dropout").layer.active
    assert "dropout_rate=0.1" in active.module("attn").note  # attention's own dropout
    captured = capture_nnx(model, x, training=False)
    assert model.dropout.deterministic is False  # the user's module keeps its mode
    assert model.attn.deterministic is False
    assert _shape_of(captured) == [
        ("norm", "LayerNorm", "layernorm", "", False),
        ("attn.query", "LinearGeneral", "module", "attn", True),
        ("attn.key", "LinearGeneral", "module", "attn", True),
        ("attn.value", "LinearGeneral", "module", "attn", True),
        ("attn.out", "LinearGeneral", "module", "attn", True),
        ("attn", "MultiHeadAttention", "module", "", True),
        ("dropout", "Dropout", "dropout", "", False),
        ("", "SelfAttention", "module", None, True),
    ]
    assert captured.module("attn").params == {}  # its LinearGeneral submodules own them
    assert captured.module("attn.query").params == {
        "bias": "attn/query/bias",
        "kernel": "attn/query/kernel",
    }
    assert captured.module("attn.out").input_shapes == ((6, 2, 4),)
    assert captured.module("dropout").note is None

    g = captured.evaluate(x, capture=True)  # loss "sum"
    p, zero = _params(model), np.zeros((2, 6, 8))
    gp, gx, ge = _grad(
        lambda p, x, e: jnp.sum(_attention_ref(p, x, e)), p, x, zero, argnums=(0, 1, 2)
    )
    assert set(g.params) == {
        f"attn.{n}.{w}" for n in ("query", "key", "value", "out") for w in ("kernel", "bias")
    } | {"norm.scale", "norm.bias"}
    for name, value in g.params.items():
        *path, local = name.split(".")
        ref = gp[path[0]] if len(path) == 1 else gp[path[0]][path[1]]
        np.testing.assert_allclose(value, ref[local], **TOL, err_msg=name)
    np.testing.assert_allclose(g.input, gx, **TOL)
    np.testing.assert_allclose(g.activation_grads["attn"], ge, **TOL)


def test_embedding_on_integer_ids():
    model = _x64(lambda: Pooled(11, 6, 3, rngs=nnx.Rngs(2)))
    ids = RNG.integers(0, 11, size=(4, 7))
    captured = capture_nnx(model, ids)
    assert _shape_of(captured) == [
        ("embed", "Embed", "module", "", True),
        ("head", "Linear", "dense", "", False),
        ("", "Pooled", "module", None, True),
    ]
    embed = captured.module("embed")
    assert embed.params == {"embedding": "embed/embedding"}
    assert (embed.input_shapes, embed.output_shape) == ((), (7, 6))
    assert captured.batch.floating == ()

    g = captured.evaluate(ids, capture=True)
    assert g.input.size == 0 and g.inputs == {}
    p = _params(model)

    def ref(p, e):
        pooled = (jnp.take(p["embed"]["embedding"], ids, axis=0) + e).mean(axis=1)
        return jnp.sum(pooled @ p["head"]["kernel"] + p["head"]["bias"])

    gp, ge = _grad(ref, p, np.zeros((4, 7, 6)), argnums=(0, 1))
    np.testing.assert_allclose(g.params["embed.embedding"], gp["embed"]["embedding"], **TOL)
    np.testing.assert_allclose(g.params["head.kernel"], gp["head"]["kernel"], **TOL)
    np.testing.assert_allclose(g.activation_grads["embed"], ge, **TOL)


def test_two_keyword_inputs_and_a_dict_output():
    model = _x64(lambda: TwoInputs(rngs=nnx.Rngs(3)))
    inputs = {"a": RNG.normal(size=(5, 3)), "b": RNG.normal(size=(5, 2))}
    captured = FlaxFramework().capture(model, as_batch(inputs))
    assert _shape_of(captured) == [
        ("left", "Linear", "dense", "", False),
        ("right", "Linear", "dense", "", False),
        ("", "TwoInputs", "module", None, True),
    ]
    assert captured.output_path == "logits"
    assert "probs" in captured.output_note
    probs = capture_nnx(model, inputs, output="probs")
    assert probs.output_path == "probs"

    p = _params(model)

    def ref(p, a, b, e):
        h = a @ p["left"]["kernel"] + p["left"]["bias"]
        h = h + jnp.tanh(b @ p["right"]["kernel"] + p["right"]["bias"] + e)
        return jnp.sum(jax.nn.softmax(h) ** 2)

    g = probs.evaluate(inputs, loss=lambda out, y: jnp.sum(out**2), capture=True)
    zero = np.zeros((5, 4))
    gp, ga, gb, ge = _grad(ref, p, inputs["a"], inputs["b"], zero, argnums=(0, 1, 2, 3))
    np.testing.assert_allclose(g.inputs["input.a"], ga, **TOL)
    np.testing.assert_allclose(g.inputs["input.b"], gb, **TOL)
    np.testing.assert_allclose(g.input, ga, **TOL)
    np.testing.assert_allclose(g.params["right.kernel"], gp["right"]["kernel"], **TOL)
    np.testing.assert_allclose(g.activation_grads["right"], ge, **TOL)


def test_tied_weight_is_owned_once():
    model = Tied(4, rngs=nnx.Rngs(4))
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    captured = capture_nnx(model, x)
    enc, dec = captured.module("enc"), captured.module("dec")
    # nnx.split keeps the array under dec/kernel; the module called first owns it
    assert enc.kind == "dense" and enc.params == {"kernel": "dec/kernel", "bias": "enc/bias"}
    assert dec.opaque and dec.params == {"bias": "dec/bias"}
    assert dec.shared == {"kernel": "enc.kernel"}
    g = captured.evaluate(x)
    p = _params(model)

    def ref(p):
        w = p["dec"]["kernel"]  # where nnx.split keeps the tied array
        return jnp.sum(jax.nn.sigmoid(x @ w + p["enc"]["bias"]) @ w + p["dec"]["bias"])

    gp = jax.grad(ref)(p)
    np.testing.assert_allclose(g.params["enc.kernel"], gp["dec"]["kernel"], rtol=1e-5)


def test_training_switches_a_copy_and_weights_round_trip():
    model = _x64(lambda: SelfAttention(8, 2, rngs=nnx.Rngs(5)))
    model.eval()
    x = RNG.normal(size=(2, 3, 8))
    captured = capture_nnx(model, x, training=True)
    assert captured.module("dropout").layer.active
    assert model.dropout.deterministic is True
    once, twice = captured.evaluate(x), captured.evaluate(x)
    np.testing.assert_array_equal(once.output, twice.output)  # the same mask every time

    weights = captured.weights()
    assert weights["attn.query.kernel"].shape == (8, 2, 4)
    np.testing.assert_array_equal(weights["norm.scale"], model.norm.scale[...])
    changed = captured.with_weights({"norm.scale": 2 * weights["norm.scale"]})
    np.testing.assert_array_equal(changed.weights()["norm.scale"], 2 * weights["norm.scale"])
    np.testing.assert_array_equal(captured.weights()["norm.scale"], weights["norm.scale"])
    assert _x64(lambda: float(changed.native.norm.scale[...][0])) == 2 * weights["norm.scale"][0]
    assert not np.allclose(changed.evaluate(x).output, once.output)


def test_the_step_is_compiled_once_per_shape():
    traces = []

    class Counted(nnx.Module):
        def __init__(self, *, rngs):
            self.linear = nnx.Linear(3, 2, rngs=rngs)

        def __call__(self, x):
            traces.append(1)
            return self.linear(x)

    captured = capture_nnx(Counted(rngs=nnx.Rngs(0)), RNG.normal(size=(4, 3)))
    x = RNG.normal(size=(4, 3))
    captured.evaluate(x, capture=True)
    n = len(traces)
    captured.evaluate(x + 1, capture=True)
    assert len(traces) == n


def test_a_module_called_inside_a_transformation_is_not_tapped():
    class Vmapped(nnx.Module):
        def __init__(self, *, rngs):
            self.inner = nnx.Linear(4, 4, rngs=rngs)
            self.head = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.head(jax.vmap(self.inner)(x))

    model = Vmapped(rngs=nnx.Rngs(0))
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    captured = capture_nnx(model, x)
    inner = captured.module("inner")
    assert inner.opaque and "JAX transformation" in inner.note
    g = captured.evaluate(x, capture=True)
    assert set(g.activation_grads) == {"head", ""}
    p = _params(model)

    def ref(p):
        h = x @ p["inner"]["kernel"] + p["inner"]["bias"]
        return jnp.sum(h @ p["head"]["kernel"] + p["head"]["bias"])

    np.testing.assert_allclose(
        g.params["inner.kernel"], jax.grad(ref)(p)["inner"]["kernel"], rtol=1e-5
    )


def test_an_error_inside_the_module_leaves_no_class_patched():
    linear_call, broken_call = nnx.Linear.__call__, Broken.__call__
    with pytest.raises(InputError, match="boom inside the module"):
        capture_nnx(Broken(rngs=nnx.Rngs(0)), np.ones((2, 3), np.float32))
    assert nnx.Linear.__call__ is linear_call
    assert Broken.__call__ is broken_call
    with pytest.raises(InputError, match=r"inputs \(2, 5\) float32 failed"):
        capture_nnx(_x64(lambda: FFN(8, 4, rngs=nnx.Rngs(0))), np.ones((2, 5), np.float32))
    assert nnx.Linear.__call__ is linear_call


# -- Linen ------------------------------------------------------------------------------------


def _f64(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def test_linen_mlp_with_dropout_and_train_keyword():
    module = LinenMLP()
    x = RNG.normal(size=(6, 5))
    variables = _f64(module.init(jax.random.key(0), x.astype(np.float32), train=False))
    captured = capture_linen(module, variables, x, apply_kwargs={"train": False})
    assert _shape_of(captured) == [
        ("Dense_0", "Dense", "dense", "", False),
        ("Dropout_0", "Dropout", "dropout", "", False),
        ("Dense_1", "Dense", "dense", "", False),
        ("", "LinenMLP", "module", None, True),
    ]
    assert captured.module("Dense_0").params == {
        "kernel": "params/Dense_0/kernel",
        "bias": "params/Dense_0/bias",
    }
    assert captured.module("Dropout_0").note is None
    p = variables["params"]

    def ref(p, x, e):
        h = jax.nn.relu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"] + e)
        return jnp.sum(h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])

    g = captured.evaluate(x, capture=True)
    gp, gx, ge = _grad(ref, p, x, np.zeros((6, 16)), argnums=(0, 1, 2))
    np.testing.assert_allclose(g.params["Dense_0.kernel"], gp["Dense_0"]["kernel"], **TOL)
    np.testing.assert_allclose(g.params["Dense_1.bias"], gp["Dense_1"]["bias"], **TOL)
    np.testing.assert_allclose(g.input, gx, **TOL)
    np.testing.assert_allclose(g.activation_grads["Dense_0"], ge, **TOL)

    # train=True without rngs: a deterministic key, said on the Dropout
    train = capture_linen(module, variables, x, apply_kwargs={"train": True})
    assert train.module("Dropout_0").layer.active
    assert "jax.random.key(0)" in train.module("Dropout_0").note
    key = jax.random.key(0)

    def own(p, x):  # the user's own apply, same key
        return jnp.sum(module.apply({"params": p}, x, train=True, rngs={"dropout": key}))

    g = train.evaluate(x)
    gp, gx = _grad(own, p, x, argnums=(0, 1))
    np.testing.assert_allclose(g.params["Dense_0.kernel"], gp["Dense_0"]["kernel"], **TOL)
    np.testing.assert_allclose(g.input, gx, **TOL)
    given = capture_linen(module, variables, x, apply_kwargs={"train": True}, rngs={"dropout": key})
    assert "jax.random.key(0)" not in given.module("Dropout_0").note
    off = capture_linen(module, variables, x, apply_kwargs={"train": True}, training=False)
    assert not off.module("Dropout_0").layer.active
    np.testing.assert_allclose(off.evaluate(x).output, captured.evaluate(x).output, **TOL)


def test_linen_compact_submodules_and_an_rmsnorm_of_its_own():
    module = LinenNet()
    x = RNG.normal(size=(4, 6))
    variables = module.init(jax.random.key(1), x.astype(np.float32))
    noise = np.random.default_rng(1)
    variables = jax.tree.map(
        lambda a: np.asarray(a, np.float64) + 0.3 * noise.normal(size=a.shape), variables
    )
    captured = FlaxFramework().capture((module, variables), as_batch(x))
    assert _shape_of(captured) == [
        ("block.LinenRMSNorm_0", "LinenRMSNorm", "rmsnorm", "block", False),
        ("block.Dense_0", "Dense", "dense", "block", False),
        ("block", "LinenBlock", "module", "", True),
        ("LayerNorm_0", "LayerNorm", "layernorm", "", False),
        ("Dense_0", "Dense", "dense", "", False),
        ("", "LinenNet", "module", None, True),
    ]
    rms = captured.module("block.LinenRMSNorm_0")
    assert rms.params == {"scale": "params/block/LinenRMSNorm_0/weight"}
    assert rms.layer.epsilon == 1e-6 and "identified numerically" in rms.note
    assert not jax.config.jax_enable_x64
    p = variables["params"]

    def ref(p, x, e):
        b = p["block"]
        w = b["LinenRMSNorm_0"]["weight"]
        r = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * w
        h = x + jax.nn.gelu(r @ b["Dense_0"]["kernel"] + b["Dense_0"]["bias"]) + e
        out = _layer_norm(h, p["LayerNorm_0"]) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
        return jnp.sum(jnp.sin(out))

    g = captured.evaluate(x, loss=lambda out, y: jnp.sum(jnp.sin(out)), capture=True)
    gp, gx, ge = _grad(ref, p, x, np.zeros((4, 6)), argnums=(0, 1, 2))
    np.testing.assert_allclose(
        g.params["block.LinenRMSNorm_0.scale"], gp["block"]["LinenRMSNorm_0"]["weight"], **TOL
    )
    np.testing.assert_allclose(g.params["LayerNorm_0.scale"], gp["LayerNorm_0"]["scale"], **TOL)
    np.testing.assert_allclose(g.input, gx, **TOL)
    np.testing.assert_allclose(g.activation_grads["block"], ge, **TOL)
    assert not jax.config.jax_enable_x64


def test_linen_refusals_are_xgrad_errors():
    module = LinenMLP()
    x = np.ones((2, 5), np.float32)
    variables = module.init(jax.random.key(0), x, train=False)
    with pytest.raises(InputError, match="train"):
        capture_linen(module, variables, x)  # __call__ needs train=
    with pytest.raises(InputError, match="'params' collection"):
        capture_linen(module, {"batch_stats": {}}, x)
    with pytest.raises(InputError, match="also inputs"):
        capture_linen(module, variables, {"x": x, "train": x}, apply_kwargs={"train": False})


def test_linen_rngs_given_among_apply_kwargs_as_compare_models_passes_them():
    module = LinenMLP()
    x = RNG.normal(size=(6, 5)).astype(np.float32)
    variables = module.init(jax.random.key(0), x, train=False)
    key = jax.random.key(7)
    default = capture_linen(module, variables, x, apply_kwargs={"train": True})
    assert "apply_kwargs={'rngs'" in default.module("Dropout_0").note
    given = capture_linen(
        module, variables, x, apply_kwargs={"train": True, "rngs": {"dropout": key}}
    )
    assert "jax.random.key(0)" not in given.module("Dropout_0").note
    own = module.apply(variables, x, train=True, rngs={"dropout": key})
    np.testing.assert_allclose(given.evaluate(x).output, own, rtol=1e-6)
    with pytest.raises(InputError, match="given twice"):
        capture_linen(module, variables, x, apply_kwargs={"rngs": key}, rngs=key)
