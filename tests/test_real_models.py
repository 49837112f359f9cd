"""The models people port, written the way their frameworks' docs write them: Keras
functional graphs with LayerNormalization, BatchNormalization, Dropout and a residual Add;
the Flax NNX module that mirrors one; a PyTorch nn.Sequential and its Flax port; the JAX
tutorial's MLP. Exact ports match after transfer; planted conventions are named."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif(
    {"jax", "flax", "tensorflow", "torch"} - INSTALLED, reason="needs every framework"
)

if not {"jax", "flax", "tensorflow", "torch"} - INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torch import nn

    import xgrad.frameworks.tensorflow.ops  # noqa: F401 - imports TensorFlow quietly
    from xgrad.frameworks.tensorflow.ops import keras

    class FlaxMirror(nnx.Module):
        """The NNX module a user writes to port :func:`keras_residual_net`."""

        def __init__(self, rngs: nnx.Rngs):
            self.dense1 = nnx.Linear(12, 16, rngs=rngs)
            self.norm1 = nnx.LayerNorm(16, epsilon=1e-3, rngs=rngs)
            self.dense2 = nnx.Linear(16, 16, rngs=rngs)
            self.bn = nnx.BatchNorm(16, epsilon=1e-3, momentum=0.99, rngs=rngs)
            self.dropout = nnx.Dropout(0.1, rngs=rngs)
            self.out = nnx.Linear(16, 4, rngs=rngs)

        def __call__(self, x):
            x = x.reshape(x.shape[0], -1)
            h = nnx.relu(self.norm1(self.dense1(x)))
            h = h + nnx.relu(self.bn(self.dense2(h)))
            return self.out(self.dropout(h))


def keras_residual_net():
    inputs = keras.Input((3, 4))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(16)(x)
    x = keras.layers.LayerNormalization()(x)
    h = keras.layers.Activation("relu")(x)
    y = keras.layers.Dense(16)(h)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Activation("relu")(y)
    h = keras.layers.Add()([h, y])
    h = keras.layers.Dropout(0.1)(h)
    return keras.Model(inputs, keras.layers.Dense(4)(h), name="residual_net")


X = np.random.default_rng(0).normal(size=(6, 3, 4)).astype(np.float32)


def test_a_keras_residual_net_and_its_nnx_mirror_match_after_transfer():
    keras_model = keras_residual_net()
    port = FlaxMirror(nnx.Rngs(0))
    port.eval()
    report = xgrad.compare_models(keras_model, port, X)
    assert report.ok, report.mismatch_message()
    assert [layer.kind for layer in report.layers] == [
        "dense",
        "layernorm",
        "dense",
        "batchnorm",
        "residual",
        "dense",
    ]
    names = {e.name: e.native for e in report.parameters}
    assert names["layers.2.scale"]["flax.nnx"] == "norm1/scale"
    assert names["layers.2.scale"]["reference"].endswith("/gamma")  # Keras numbers its layers


def test_the_same_mirror_left_in_training_mode_is_named_with_the_fix():
    report = xgrad.compare_models(keras_residual_net(), FlaxMirror(nnx.Rngs(0)), X)
    assert not report.ok
    d = report.diagnoses[0]
    assert d.cause == "batchnorm-mode" and "model.eval()" in d.detail


def test_weights_go_into_the_users_own_models_under_their_own_names():
    keras_model = keras_residual_net()
    port = FlaxMirror(nnx.Rngs(0))
    port.eval()
    filled = xgrad.convert(keras_model, into=port)
    assert isinstance(filled, FlaxMirror) and filled is not port
    kernel = keras_model.layers[2].kernel.numpy()
    np.testing.assert_array_equal(np.asarray(filled.dense1.kernel[...]), kernel)
    assert not np.array_equal(np.asarray(port.dense1.kernel[...]), kernel)  # untouched
    assert xgrad.compare_models(keras_model, filled, X, transfer=False).ok


def torch_mlp(approximate="none"):
    return nn.Sequential(
        nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(approximate=approximate), nn.Linear(16, 3)
    )


class FlaxPort(nnx.Module if "flax" in INSTALLED else object):
    def __init__(self, rngs, approximate=False):
        self.fc1 = nnx.Linear(8, 16, rngs=rngs)
        self.ln = nnx.LayerNorm(16, epsilon=1e-5, rngs=rngs)
        self.fc2 = nnx.Linear(16, 3, rngs=rngs)
        self.approximate = approximate

    def __call__(self, x):
        return self.fc2(jax.nn.gelu(self.ln(self.fc1(x)), approximate=self.approximate))


XT = np.random.default_rng(1).normal(size=(5, 8)).astype(np.float32)


def test_a_torch_mlp_and_its_flax_port_match_and_the_gelu_form_is_named():
    torch.manual_seed(0)
    ref = torch_mlp()
    report = xgrad.compare_models(ref, FlaxPort(nnx.Rngs(0)), XT)
    assert report.ok, report.mismatch_message()
    assert report.parameters[0].native == {"reference": "0.weight", "flax.nnx": "fc1/kernel"}
    tanh = xgrad.compare_models(ref, FlaxPort(nnx.Rngs(0), approximate=True), XT)
    (d,) = tanh.diagnoses
    assert (d.cause, d.layer, d.where) == ("gelu-approximation", "layers.1", "forward")
    tanh_torch = xgrad.compare_models(torch_mlp("tanh"), FlaxPort(nnx.Rngs(0)), XT)
    assert tanh_torch.diagnoses[0].cause == "gelu-approximation"


def test_keras_to_torch_to_flax_round_trip_is_bit_exact():
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16),
            keras.layers.LayerNormalization(epsilon=1e-5),
            keras.layers.Activation("gelu"),
            keras.layers.Dense(3),
        ]
    )
    original = xgrad.convert(model, to="numpy")
    state_dict = xgrad.convert(model, to="torch")  # xgrad's own torch model of the spec
    np.testing.assert_array_equal(
        state_dict["0.0.weight"].numpy(), original["layers.0.kernel"].T.astype(np.float32)
    )
    into_torch = xgrad.convert(model, into=torch_mlp())  # the user's own torch module
    back = xgrad.convert(into_torch, into=FlaxPort(nnx.Rngs(3)))
    again = xgrad.convert(back, to="numpy")
    assert list(again) == list(original)
    for name in original:
        np.testing.assert_array_equal(again[name], original[name], err_msg=name)
    assert xgrad.compare_models(model, back, XT, transfer=False).ok


def test_the_jax_tutorial_mlp_against_keras():
    def predict(params, image):
        activations = image
        for w, b in params[:-1]:
            activations = jax.nn.relu(jnp.dot(w, activations) + b)
        final_w, final_b = params[-1]
        logits = jnp.dot(final_w, activations) + final_b
        return logits - jax.scipy.special.logsumexp(logits)

    sizes = [12, 16, 4]
    key = jax.random.key(0)
    params = [
        (jax.random.normal(key, (n, m)), jax.random.normal(key, (n,)))
        for m, n in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    keras_model = keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(4, activation="log_softmax"),
        ]
    )
    x = X.reshape(6, 12)
    report = xgrad.compare_models(keras_model, (jax.vmap(predict, in_axes=(None, 0)), params), x)
    assert report.ok, report.mismatch_message()
    assert report.parameters[0].native["jax"] == "0/0"
