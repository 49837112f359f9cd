"""Issue 22's kinds in Flax NNX (nnx.Conv, Flax's pooling functions, nnx.GroupNorm,
nnx.BatchNorm on (h, w, c), nnx.RNN over nnx.OptimizedLSTMCell and over xgrad's GRU cell)
against the float64 NumPy reference in float32 and float64, planted slips that must fail, and
a user's NNX CNN read back as these kinds."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from _cnn_rnn import CNN, CNN_1D, IDS, IMAGES, RECURRENT, RNG, agrees, recurrent_spec
from conftest import INSTALLED

import xgrad
from xgrad import (
    GRU,
    MLP,
    Activation,
    AvgPool,
    Conv,
    Dense,
    Flatten,
    GlobalAvgPool,
    GroupNorm,
    MaxPool,
)

pytestmark = pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")


def _report(spec, x, dtype="float64"):
    return xgrad.compare(spec, x, frameworks=["numpy", "flax"], dtype=dtype, explain=False)


# float64 is the exact check (float32 of these kinds: torch and Keras files, here make fuzz)
@pytest.mark.parametrize(
    "dtype", [pytest.param("float32", marks=pytest.mark.exhaustive), "float64"]
)
@pytest.mark.parametrize(
    ("spec", "x"), [(CNN, IMAGES), (CNN_1D, IMAGES[:, 0, :7])], ids=["2d", "1d"]
)
def test_cnn_specs_match_the_reference(spec, x, dtype):
    report = _report(spec, x, dtype)
    assert report.ok, report.summary()
    assert {e.name for e in report.parameters} == set(spec.param_names)


# float64 is the exact check; float32 of every recurrent form runs in make fuzz
@pytest.mark.parametrize(
    "dtype", [pytest.param("float32", marks=pytest.mark.exhaustive), "float64"]
)
@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_specs_match_the_reference(name, dtype):
    report = _report(recurrent_spec(RECURRENT[name]), IDS, dtype)
    assert report.ok, report.summary()


def test_native_names_are_flax_state_paths():
    from xgrad.frameworks.flax.builder import native_name

    lstm, gru, conv = xgrad.LSTM(4), GRU(4), xgrad.Conv(2, 3)
    assert native_name("layers.1", "bias", lstm) == "layers/1/cell/dense_h/bias"
    assert native_name("layers.1", "kernel", lstm) == "layers/1/cell/dense_i/kernel"
    assert native_name("layers.1", "bias", gru) == "layers/1/cell/bias"
    assert native_name("layers.0", "kernel", conv) == "layers/0/kernel"


@pytest.fixture
def planted(monkeypatch):
    from xgrad.frameworks.flax.kinds import KINDS

    def plant(kind, **changes):
        entry = replace(KINDS[kind], **changes)
        monkeypatch.setattr(KINDS, "_entries", {**dict(KINDS.items()), kind: entry})

    return plant


def test_an_average_pool_counting_the_padding_is_a_mismatch(planted):
    from xgrad.frameworks.flax.cnn import PoolLayer

    def build(layer, path, shape, *_):  # the slip: torch's default count_include_pad=True
        return PoolLayer(replace(layer, count_include_pad=True), shape)

    planted("avgpool", build=build)
    spec = MLP((5, 4, 2), [AvgPool(2, padding=((1, 0), (1, 0))), Flatten(), Dense(2)])
    assert not _report(spec, IMAGES[:, :5, :4, :2]).ok


def test_a_gru_cell_computing_reset_before_is_a_mismatch(planted):
    from xgrad.frameworks.flax import recurrent

    class ResetBefore(recurrent.GRUCell):
        def __call__(self, h, x):  # the slip: the reset gate before the recurrent matmul
            self.reset_after = False
            bias = self.bias[...]
            with_one_bias = self.bias
            self.bias = type(with_one_bias)(bias[0] + bias[1])
            try:
                return super().__call__(h, x)
            finally:
                self.bias, self.reset_after = with_one_bias, True

    def build(layer, path, shape, dtype, rngs, block):
        cell = ResetBefore(layer, shape[-1], dtype=dtype, rngs=rngs)
        return recurrent.nnx.RNN(cell, rngs=False)

    planted("gru", build=build)
    assert not _report(recurrent_spec(GRU(3, return_sequences=True)), IDS).ok


# -- xgrad's own NNX model, read back --------------------------------------------------------

ROUND_TRIP = MLP(
    (12, 12, 3),
    [
        Conv(4, 3, strides=2, padding="same"),
        Activation("relu"),
        MaxPool(2),
        GroupNorm(2),
        Conv(6, 3, groups=2),
        GlobalAvgPool(),  # a 1x1 mean: jnp.mean's division by 1 once read as an activation
        Dense(5),
    ],
)


def test_a_cnn_converted_to_nnx_reads_back_as_its_spec_and_weights():
    from flax import nnx

    rng = np.random.default_rng(3)
    weights = {
        k: (0.4 * rng.standard_normal(s)).astype(np.float32)
        for k, s in ROUND_TRIP.weight_shapes().items()
    }
    state = xgrad.convert((ROUND_TRIP, weights), to="flax")  # an nnx.State
    module = xgrad.get_framework("flax").build(ROUND_TRIP, None, dtype="float32").native
    nnx.update(module, state)
    model = xgrad.read_model(module, input_shape=ROUND_TRIP.input_dim)
    assert model.structure_error is None
    assert model.spec() == ROUND_TRIP  # conv sizes equal on both axes written once, as here
    got = model.weights()
    assert set(got) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(np.asarray(got[name], np.float32), value, err_msg=name)


# -- a user's NNX CNN, read back --------------------------------------------------------------


@pytest.fixture(scope="module")
def user_cnn():
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv1 = nnx.Conv(3, 4, (3, 3), strides=2, padding="SAME", rngs=rngs)
            self.gn = nnx.GroupNorm(4, num_groups=2, rngs=rngs)
            self.conv2 = nnx.Conv(4, 4, (2, 2), padding="VALID", feature_group_count=2, rngs=rngs)
            self.out = nnx.Linear(16, 2, rngs=rngs)

        def __call__(self, x):
            x = self.gn(nnx.relu(self.conv1(x)))
            x = nnx.max_pool(self.conv2(x), (2, 2), (1, 1), "SAME")
            x = nnx.avg_pool(x, (2, 2), (1, 1), ((0, 1), (0, 1)), count_include_pad=False)
            return self.out(x.reshape(x.shape[0], -1))

    return CNN(nnx.Rngs(0))


def test_a_users_nnx_cnn_reads_as_the_kinds(user_cnn):
    model = xgrad.read_model(user_cnn, input_shape=(6, 6, 3))
    assert model.spec().describe() == (
        "6x6x3 -> conv(4, k=3, s=2, pad=same) -> relu -> groupnorm(2, eps=1e-06) -> "
        "conv(4, k=2, groups=2) -> maxpool(2, s=1, pad=same) -> avgpool(2, s=1, "
        "pad=same) -> flatten -> 2:linear"
    )
    names = model.native_names()
    assert names["layers.0.kernel"] == "conv1/kernel" and names["layers.2.scale"] == "gn/scale"
    assert all(not i.layouts for i in model.walk())  # Flax stores HWIO: no layout
    agrees(model, RNG.normal(size=(3, 6, 6, 3)).astype(np.float32))


def test_module_hints_state_the_kind_or_nothing():
    from flax import nnx

    from xgrad.frameworks.flax.reader import module_hints

    rngs = nnx.Rngs(0)
    lstm = nnx.RNN(nnx.OptimizedLSTMCell(3, 5, rngs=rngs), rngs=False)
    assert module_hints(lstm) == {"kind": "lstm", "units": 5, "return_sequences": True}
    assert module_hints(nnx.RNN(nnx.GRUCell(3, 5, rngs=rngs))) == {}  # another convention
    assert module_hints(nnx.Conv(3, 4, 3, padding="CIRCULAR", rngs=rngs)) == {}
    assert module_hints(nnx.GroupNorm(6, num_groups=3, epsilon=1e-5, rngs=rngs)) == {
        "kind": "groupnorm",
        "groups": 3,
        "epsilon": 1e-5,
        "use_scale": True,
        "use_bias": True,
    }
