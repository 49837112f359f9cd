"""Reading pure-JAX models written the way people write them: the JAX tutorial's vmap MLP
with (out, in) weights, einsum, x @ W.T, a layer norm by hand, residual additions, any
pytree. Each read model must compute what the NumPy model of the spec xgrad read computes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED, rel_norm

import xgrad
from xgrad.frameworks.kinds import TRANSPOSED

pytestmark = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")

if "jax" in INSTALLED:
    import jax
    import jax.numpy as jnp

RNG = np.random.default_rng(0)


def _agrees(model, x, y=None, loss="projection", tol=1e-5):
    """The read model's gradients, outputs and per-layer values against the NumPy model of
    the spec it was read as, with the weights it holds."""
    spec = model.spec()
    assert spec is not None, [(i.path, i.kind, i.layer) for i in model.walk()]
    if y is None and loss == "projection":
        y = RNG.normal(size=(x.shape[0], spec.output_dim))
    ref = (
        xgrad.get_framework("numpy")
        .build(
            spec,
            {k: np.asarray(v, np.float64) for k, v in model.weights().items()},
            dtype="float64",
        )
        .evaluate(x, y, loss=loss, capture=True)
    )
    got = model.evaluate(x, y, loss=loss, capture=True)
    assert set(got.params) == set(ref.params)
    for name, value in ref.params.items():
        assert rel_norm(got.params[name], value) <= tol, name
    assert rel_norm(got.input, ref.input) <= tol
    assert rel_norm(got.output, ref.output) <= tol
    for path, value in ref.activations.items():
        assert rel_norm(got.activations[path], value) <= tol, path
        assert rel_norm(got.activation_grads[path], ref.activation_grads[path]) <= tol, path
    return got


def _kinds(model):
    return [(info.path, info.kind, info.layer) for info in model.walk()]


def test_the_jax_tutorial_mlp_out_in_weights_under_vmap():
    sizes = [6, 8, 8, 3]
    params = [
        (
            jnp.asarray(RNG.normal(size=(n, m)) * 0.3, jnp.float32),
            jnp.asarray(RNG.normal(size=n) * 0.1, jnp.float32),
        )
        for m, n in zip(sizes[:-1], sizes[1:], strict=True)
    ]

    def predict(params, image):
        activations = image
        for w, b in params[:-1]:
            outputs = jnp.dot(w, activations) + b
            activations = jax.nn.relu(outputs)
        final_w, final_b = params[-1]
        logits = jnp.dot(final_w, activations) + final_b
        return logits - jax.scipy.special.logsumexp(logits)

    model = xgrad.read_model((jax.vmap(predict, in_axes=(None, 0)), params), input_shape=(6,))
    assert [(p, k) for p, k, _ in _kinds(model)] == [
        ("layers.0", "dense"),
        ("layers.1", "dense"),
        ("layers.2", "dense"),
        ("layers.3", "activation"),
    ]
    assert model.spec().describe() == "6 -> 8:relu -> 8:relu -> 3:linear -> log_softmax"
    # each kernel is read stored (out, in): its layout is stated, the bias has none
    assert all(i.layouts == {"kernel": TRANSPOSED} for i in model.walk() if i.kind == "dense")
    assert model.native_names()["layers.0.kernel"] == "0/0"
    # canonical layout: (in, out), the transpose of the user's (out, in)
    np.testing.assert_array_equal(model.weights()["layers.0.kernel"], np.asarray(params[0][0]).T)
    _agrees(model, RNG.normal(size=(5, 6)).astype(np.float32))


def test_einsum_transposed_kernels_a_hand_written_layer_norm_and_a_residual():
    p = {
        "w1": RNG.normal(size=(8, 6)) * 0.4,
        "b1": RNG.normal(size=8) * 0.1,
        "gamma": RNG.uniform(0.5, 1.5, 8),
        "beta": RNG.normal(size=8) * 0.1,
        "w2": RNG.normal(size=(8, 8)) * 0.3,
        "b2": RNG.normal(size=8) * 0.1,
        "w3": RNG.normal(size=(8, 3)) * 0.3,
    }

    def apply(p, x):
        h = jnp.einsum("bi,oi->bo", x, p["w1"]) + p["b1"]
        mean = h.mean(-1, keepdims=True)
        var = ((h - mean) ** 2).mean(-1, keepdims=True)
        h = (h - mean) * jax.lax.rsqrt(var + 1e-5) * p["gamma"] + p["beta"]
        h = jax.nn.gelu(h, approximate=False)
        h = h + jnp.tanh(h @ p["w2"].T + p["b2"])
        return h @ p["w3"]

    with jax.enable_x64(True):
        model = xgrad.read_model((apply, jax.tree_util.tree_map(jnp.asarray, p)), input_shape=(6,))
    assert model.spec().describe() == (
        "6 -> 8:linear -> layernorm(eps=1e-05) -> gelu -> residual(8:tanh) -> 3:linear (no bias)"
    )
    names = model.native_names()
    assert (names["layers.1.scale"], names["layers.1.bias"]) == ("gamma", "beta")
    assert names["layers.3.layers.0.kernel"] == "w2"
    layouts = {i.path: i.layouts for i in model.walk() if i.kind == "dense"}
    # einsum "oi" and h @ W.T store (out, in); h @ W stores the canonical (in, out)
    assert layouts == {
        "layers.0": {"kernel": TRANSPOSED},
        "layers.3.layers.0": {"kernel": TRANSPOSED},
        "layers.4": {},
    }
    _agrees(model, RNG.normal(size=(4, 6)), tol=1e-12)


def test_input_width_found_from_the_params_or_refused_with_the_shape():
    params = {"a": jnp.ones((3, 5)), "b": jnp.ones((5, 2))}
    model = xgrad.read_model((lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"], params))
    assert model.input_shape == (3,)
    with pytest.raises(xgrad.InputError, match=r"does not run on inputs of shape \(4,\)"):
        xgrad.read_model((lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"], params), input_shape=(4,))


def test_a_model_whose_layers_cannot_be_read_compares_by_parameter_mapping():
    table = jnp.asarray(RNG.normal(size=(10, 3)), jnp.float32)

    def embed(p, x):  # a lookup xgrad does not read as a layer
        idx = jnp.clip(jnp.round(jnp.abs(x[:, 0])).astype(jnp.int32), 0, 9)
        return p["table"][idx] * x[:, 1:2] + x @ p["w"]

    params = {"table": table, "w": jnp.asarray(RNG.normal(size=(2, 3)), jnp.float32)}
    model = xgrad.read_model((embed, params), input_shape=(2,))
    assert model.layers == () and "table" in model.structure_error
    x = RNG.normal(size=(4, 2)).astype(np.float32)
    with pytest.raises(xgrad.AlignmentError, match="pass mapping="):
        xgrad.compare_models((embed, params), (embed, params), x)
    report = xgrad.compare_models(
        (embed, params), (embed, params), x, mapping={"table": "table", "w": "w"}
    )
    assert report.ok and report.layers == ()
    assert "per-layer localisation unavailable" in report.notes[0]
    assert [e.name for e in report.parameters] == ["table", "w"]
