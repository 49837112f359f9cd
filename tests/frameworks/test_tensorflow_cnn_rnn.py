"""Keras' entries for the convolutional and recurrent kinds (issue 22): built specs match the
float64 NumPy reference in float32 and float64 (conv with stride 2, an even kernel "same",
dilation, groups and asymmetric explicit padding; max and average pools, count_include_pad
both ways with explicit padding; GlobalAvgPool; GroupNorm; BatchNorm over (h, w, c); LSTM and
GRU in both reset_after forms, last state and sequences), users' Keras models of these
layers read back as kinds (ZeroPadding, DepthwiseConv2D, a Conv's own activation, causal
Conv1D), settings that compute otherwise refused by name, and one planted convention per
family fails."""

from __future__ import annotations

import dataclasses
import importlib.util
import re

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

import xgrad
from xgrad import (
    GRU,
    LSTM,
    MLP,
    Activation,
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Embedding,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    MaxPool,
)
from xgrad.errors import AlignmentError, FrameworkError
from xgrad.frameworks.numpy import FRAMEWORK as NUMPY
from xgrad.frameworks.pool import BuildPool
from xgrad.frameworks.tensorflow import FRAMEWORK, builder
from xgrad.frameworks.tensorflow.kinds import KINDS
from xgrad.frameworks.tensorflow.ops import keras

L = keras.layers
VOCAB, T = 7, 4

CNN = MLP(
    (8, 8, 3),
    [
        Conv(4, 4, strides=2, padding="same"),  # even kernel: the odd zero after
        Activation("tanh"),
        Conv(4, 3, padding=((2, 2), (1, 2)), dilation=2, groups=2),  # ZeroPadding first
        GroupNorm(2, epsilon=1e-5),
        MaxPool(2, strides=1, padding="same"),
        AvgPool(2, strides=1, padding=((1, 0), (0, 1)), count_include_pad=True),
        AvgPool(2, strides=1, padding=((0, 1), (0, 1))),  # == "same": Keras excludes the pad
        BatchNorm(),
        Flatten(),
        Dense(3),
    ],
)
CNN_1D = MLP(
    (7, 3),
    [
        Conv(4, 2, padding="same"),
        MaxPool(2),
        Conv(4, 3, padding=((2, 0),)),
        AvgPool(2, padding=1, count_include_pad=True),
        GlobalAvgPool(),
        Dense(2),
    ],
)
RNN = MLP(
    (T,),
    [
        Embedding(VOCAB, 3),
        LSTM(5, return_sequences=True),
        GRU(4, return_sequences=True, reset_after=False),
        GRU(4),
        Dense(2),
    ],
)
LSTM_CLASSIFIER = MLP((T,), [Embedding(VOCAB, 3), LSTM(5), Dense(2)])


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).standard_normal((2, 8, 8, 3))


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(1).integers(0, VOCAB, size=(2, T))


@pytest.fixture
def planted(monkeypatch):
    """Replace one kind's entry (dataclasses.replace of its fields) for one test, with a pool
    of its own so that no planted Keras model is lent to a later test."""
    monkeypatch.setattr(builder, "POOL", BuildPool(max_idle=0))

    def plant(kind: str, **fields):
        monkeypatch.setitem(KINDS._entries, kind, dataclasses.replace(KINDS[kind], **fields))

    return plant


def _compare(spec, x, dtype="float64"):
    return xgrad.compare(spec, x, frameworks=["numpy", "tensorflow"], dtype=dtype, explain=False)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cnn_spec_matches_the_reference(dtype, images):
    report = _compare(CNN, images, dtype)
    assert report.ok, report.summary()
    assert {e.name for e in report.parameters} == set(CNN.param_names)


def test_1d_cnn_spec_matches_the_reference():
    x = np.random.default_rng(2).standard_normal((2, 7, 3))
    report = _compare(CNN_1D, x, "float32")
    assert report.ok, report.summary()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_recurrent_spec_matches_the_reference(dtype, ids):
    report = _compare(RNN, ids, dtype)
    assert report.ok, report.summary()
    report = _compare(LSTM_CLASSIFIER, ids, dtype)
    assert report.ok, report.summary()


def test_the_built_model_holds_keras_own_layers_and_zero_padding():
    model = FRAMEWORK.build(CNN, xgrad.init_params(CNN), dtype="float32")
    classes = [type(layer).__name__ for layer in model.native.layers]
    assert classes[:6] == [
        "InputLayer", "Conv2D", "Activation", "ZeroPadding2D", "Conv2D", "GroupNormalization"
    ]  # fmt: skip
    assert classes.count("ZeroPadding2D") == 2  # the conv's and count_include_pad's
    assert model.native.get_layer("avgpool_6").padding == "same"
    names = model.native_names()
    assert names["layers.2.kernel"] == "conv_2/kernel"
    assert names["layers.3.scale"] == "groupnorm_3/gamma"


# -- refused by name --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (MaxPool(3, strides=1, padding=((1, 0), (1, 0))), "MaxPooling2D pads only 'valid'"),
        (AvgPool(2, padding=((1, 0), (1, 0))), "count its zeros in the average"),
        (Conv(4, 3, strides=2, dilation=2), "refuses strides > 1 together with dilation"),
    ],
)
def test_what_keras_cannot_compute_is_refused_by_name(layer, message):
    spec = MLP((6, 6, 2), [layer, Flatten(), Dense(2)])
    with pytest.raises(FrameworkError, match=re.escape(message)):
        FRAMEWORK.build(spec, xgrad.init_params(spec), dtype="float32")


# -- users' Keras models read as kinds -------------------------------------------------------


def _read_and_compare(keras_model, x, want: str):
    """Read ``keras_model``, check its spec, and compare its evaluation with the float64
    NumPy model of that spec holding the same weights."""
    model = FRAMEWORK.read(keras_model)
    assert model.spec().describe() == want
    g = model.evaluate(x, loss="sum")
    ref = NUMPY.build(model.spec(), model.weights(), dtype="float64").evaluate(x, loss="sum")
    for name, value in ref.params.items():
        err = np.abs(np.asarray(g.params[name], np.float64) - value).max()
        assert err <= 1e-5 * max(1.0, np.abs(value).max()), name
    np.testing.assert_allclose(np.asarray(g.output, np.float64), ref.output, rtol=1e-5, atol=1e-6)
    return model


def test_a_keras_convnet_reads_with_its_activations_apart():
    net = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, (3, 3), activation="relu"),
            L.MaxPooling2D((2, 2)),
            L.Conv2D(4, 3, activation="tanh", padding="same"),
            L.Flatten(),
            L.Dense(3),
        ]
    )
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 1)).astype("float32")
    want = (
        "8x8x1 -> conv(4, k=3) -> relu -> maxpool(2) -> conv(4, k=3, pad=same) -> tanh -> "
        "flatten -> 3:linear"
    )
    _read_and_compare(net, x, want)


def test_zero_padding_depthwise_and_pools_read_as_kinds():
    net = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.ZeroPadding2D(((0, 1), (0, 1))),
            L.DepthwiseConv2D(3, strides=2, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(6.0),
            L.ZeroPadding2D(1),
            L.AveragePooling2D(2),
            L.GroupNormalization(3),
            L.GlobalAveragePooling2D(),
            L.Dense(2),
        ]
    )
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 3)).astype("float32")
    model = _read_and_compare(
        net,
        x,
        "8x8x3 -> conv(3, k=3, s=2, pad=((0, 1), (0, 1)), groups=3, no bias) -> "
        "batchnorm(eps=0.001, momentum=0.99, inference) -> relu6 -> "
        "avgpool(2, pad=((1, 1), (1, 1)), count_include_pad) -> groupnorm(3, eps=0.001) -> "
        "global_avgpool -> 2:linear",
    )
    # Keras' depthwise kernel (3, 3, C, 1) is the canonical grouped (3, 3, 1, C)
    assert model.weights()["layers.0.kernel"].shape == (3, 3, 1, 3)


def test_causal_conv1d_and_recurrent_layers_read_as_kinds(ids):
    net = keras.Sequential(
        [keras.Input((9, 3)), L.Conv1D(4, 3, padding="causal", dilation_rate=2), L.Flatten()]
    )
    x = np.random.default_rng(5).standard_normal((2, 9, 3)).astype("float32")
    _read_and_compare(net, x, "9x3 -> conv(4, k=3, d=2, pad=((4, 0),)) -> flatten")
    rnn = keras.Sequential(
        [
            keras.Input((T,), dtype="int32"),
            L.Embedding(VOCAB, 3),
            L.LSTM(5, return_sequences=True),
            L.GRU(4, reset_after=False),
            L.Dense(2),
        ]
    )
    want = f"{T} -> embedding({VOCAB}, 3) -> lstm(5, return_sequences) -> "
    _read_and_compare(rnn, ids.astype("int32"), want + "gru(4, reset_after=False) -> 2:linear")


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        ([L.LSTM(3, dropout=0.2)], "has dropout=0.2"),
        ([L.GRU(3, go_backwards=True)], "has go_backwards=True"),
        ([L.LSTM(3, recurrent_activation="hard_sigmoid")], "recurrent_activation=hard_sigmoid"),
        ([L.Conv1D(2, 3, data_format="channels_first")], "data_format='channels_first'"),
        ([L.ZeroPadding1D(1), L.MaxPooling1D(2)], "ZeroPadding1D/2D only directly before"),
    ],
)
def test_what_reads_as_another_computation_is_refused_by_name(layers, message):
    net = keras.Sequential([keras.Input((6, 4)), *layers])
    with pytest.raises(AlignmentError, match=re.escape(message)):
        FRAMEWORK.read(net)


# -- planted conventions fail -----------------------------------------------------------------


def test_a_conv_kernel_written_with_kh_and_kw_swapped_fails(planted, images):
    planted("conv", layouts={"kernel": (1, 0, 2, 3)})  # conv-kernel-layout
    assert not _compare(CNN, images).ok


def test_count_include_pad_built_as_keras_same_fails(planted, images):
    build = KINDS["avgpool"].build

    def excluding(layer, name, dtype, shape):  # pool-padding: Keras' "same" average
        return build(dataclasses.replace(layer, count_include_pad=False), name, dtype, shape)

    planted("avgpool", build=excluding)
    spec = MLP((6, 6, 2), [AvgPool(3, strides=1, padding=1, count_include_pad=True), Flatten()])
    assert not _compare(spec, np.random.default_rng(6).standard_normal((2, 6, 6, 2))).ok


def test_groupnorm_built_with_keras_default_epsilon_fails(planted, images):
    build = KINDS["groupnorm"].build
    planted(
        "groupnorm",
        build=lambda layer, name, dtype, shape: build(
            dataclasses.replace(layer, epsilon=1e-3), name, dtype, shape
        ),
    )
    assert not _compare(CNN, images).ok


def test_recurrent_layers_with_another_gate_activation_or_direction_fail(planted, ids):
    planted(
        "lstm",
        build=lambda layer, name, dtype: L.LSTM(
            layer.units, recurrent_activation="hard_sigmoid", name=name, dtype=dtype
        ),
    )
    assert not _compare(LSTM_CLASSIFIER, ids).ok
    planted(
        "gru",
        build=lambda layer, name, dtype: L.GRU(
            layer.units,
            return_sequences=layer.return_sequences,
            reset_after=layer.reset_after,
            go_backwards=True,
            name=name,
            dtype=dtype,
        ),
    )
    assert not _compare(MLP((T,), [Embedding(VOCAB, 3), GRU(4), Dense(2)]), ids).ok


def test_xgrad_backends_replays_a_zero_padding_read_into_a_conv():
    from xgrad.backends import _plan
    from xgrad.frameworks.tensorflow.backend_worker import _run, keras_leaves

    net = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            L.ZeroPadding2D(((0, 1), (1, 0))),
            L.DepthwiseConv2D(3, strides=2),
            L.Flatten(),
        ]
    )
    model = FRAMEWORK.read(net)
    leaves = keras_leaves(net)
    plan = _plan(model, model.layers, {id(leaf): i for i, leaf in enumerate(leaves)})
    assert plan[0]["pad"] == [[0, 1], [1, 0]]  # the worker pads before the DepthwiseConv2D
    x = np.random.default_rng(7).standard_normal((2, 6, 6, 2)).astype("float32")
    eps = {node["path"]: 0.0 for node in plan}
    replayed = _run(plan, keras.ops.convert_to_tensor(x), leaves, eps, {})
    np.testing.assert_allclose(np.asarray(replayed), np.asarray(net(x)), rtol=1e-6)
