"""Issue 22's kinds in pure JAX: a CNN spec (Conv with stride 2 and "same" on an even kernel,
dilation, groups; MaxPool; AvgPool with explicit padding both count_include_pad ways;
GroupNorm; BatchNorm on (h, w, c); Flatten; Dense), a 1-D CNN with GlobalAvgPool, and
Embedding -> LSTM / GRU -> Dense, each against the float64 NumPy reference in float32 and
float64; a planted slip per family shows the comparison fails; and users' pure functions
on lax.conv_general_dilated (NHWC and OIHW between transposes) and lax.reduce_window read
back as these kinds, checked against the NumPy reference from the read weights."""

from __future__ import annotations

import numpy as np
import pytest
from _cnn_rnn import CNN, CNN_1D, IDS, IMAGES, RECURRENT, RNG, agrees, recurrent_spec
from conftest import INSTALLED

import xgrad
from xgrad import (
    GRU,
    LSTM,
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

pytestmark = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")


def _ok(spec, x, dtype="float64", framework="jax"):
    report = xgrad.compare(spec, x, frameworks=["numpy", framework], dtype=dtype, explain=False)
    return report


# float64 is the exact check (float32 of these kinds: torch and Keras files, here make fuzz)
@pytest.mark.parametrize(
    "dtype", [pytest.param("float32", marks=pytest.mark.exhaustive), "float64"]
)
@pytest.mark.parametrize(
    ("spec", "x"), [(CNN, IMAGES), (CNN_1D, IMAGES[:, 0, :7])], ids=["2d", "1d"]
)
def test_cnn_specs_match_the_reference(spec, x, dtype):
    report = _ok(spec, x, dtype)
    assert report.ok, report.summary()
    assert {e.name for e in report.parameters} == set(spec.param_names)


# float64 is the exact check; float32 of every recurrent form runs in make fuzz
@pytest.mark.parametrize(
    "dtype", [pytest.param("float32", marks=pytest.mark.exhaustive), "float64"]
)
@pytest.mark.parametrize("name", list(RECURRENT))
def test_recurrent_specs_match_the_reference(name, dtype):
    spec = recurrent_spec(RECURRENT[name])
    report = _ok(spec, IDS, dtype)
    assert report.ok, report.summary()


# -- planted slips: the comparison can fail -------------------------------------------------


@pytest.fixture
def planted(monkeypatch):
    """Replace one kind's JAX entry for the test (specs used here only: compiled functions
    are cached per spec)."""
    from xgrad.frameworks.jax.kinds import KINDS, JaxKind

    def plant(kind, forward):
        monkeypatch.setattr(KINDS, "_entries", {**dict(KINDS.items()), kind: JaxKind(forward)})

    return plant


def test_a_same_padding_with_the_extra_zero_first_is_a_mismatch(planted):
    from jax import lax

    from xgrad.frameworks.jax.cnn import DIMENSION_NUMBERS

    def conv(layer, path, block):
        def run(w, x):
            win = layer.window(x.shape[1:])
            pads = [(hi, lo) for lo, hi in win.pads]  # the slip: symmetric-first padding
            y = lax.conv_general_dilated(
                x, w["kernel"], win.strides, pads, dimension_numbers=DIMENSION_NUMBERS[2]
            )
            return y + w["bias"], {}

        return run

    planted("conv", conv)
    spec = MLP((5, 5, 2), [Conv(3, 2, strides=2, padding="same"), Flatten(), Dense(2)])
    report = _ok(spec, IMAGES[:, :5, :5, :2])  # pads (0, 1) on each axis
    assert not report.ok


def test_an_average_pool_counting_the_padding_is_a_mismatch(planted):
    from xgrad.frameworks.jax import cnn

    planted("avgpool", lambda layer, p, b: cnn.avgpool(layer.__class__(**{
        **layer.__dict__, "count_include_pad": True}), p, b))  # fmt: skip
    spec = MLP((5, 5, 2), [AvgPool(2, padding=((1, 0), (1, 0))), Flatten(), Dense(2)])
    assert not _ok(spec, IMAGES[:, :5, :5, :2]).ok


def test_lstm_gates_in_another_order_are_a_mismatch(planted):
    import jax.numpy as jnp

    from xgrad.frameworks.jax import recurrent

    def lstm(layer, path, block):
        run = recurrent.lstm(layer, path, block)

        def swapped(w, x):  # the slip: torch-ported kernels with f and i blocks swapped
            i, f, g, o = jnp.split(w["kernel"], 4, axis=-1)
            return run({**w, "kernel": jnp.concatenate([f, i, g, o], axis=-1)}, x)

        return swapped

    planted("lstm", lstm)
    assert not _ok(recurrent_spec(LSTM(3)), IDS).ok


@pytest.mark.exhaustive  # the same sensitivity as the LSTM gate order above
def test_a_gru_computed_reset_before_is_a_mismatch(planted):
    from dataclasses import replace

    from xgrad.frameworks.jax import recurrent

    def gru(layer, path, block):
        other = recurrent.gru(replace(layer, reset_after=False), path, block)
        return lambda w, x: other({**w, "bias": w["bias"][0] + w["bias"][1]}, x)

    planted("gru", gru)
    assert not _ok(recurrent_spec(GRU(3)), IDS).ok


# -- users' functions read as the kinds -----------------------------------------------------


def _params(*shapes):
    import jax.numpy as jnp

    return [jnp.asarray(RNG.normal(size=s) * 0.4, jnp.float32) for s in shapes]


def test_a_torch_style_nchw_conv_between_transposes_reads_as_a_channels_last_conv():
    import jax
    import jax.numpy as jnp
    from jax import lax

    params = _params((4, 3, 3, 3), (4,), (36, 2))  # OIHW kernel, bias, dense

    def apply(p, x):  # x (B, H, W, C)
        h = jnp.transpose(x, (0, 3, 1, 2))
        h = lax.conv_general_dilated(
            h, p[0], (2, 2), ((1, 1), (1, 1)), dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        h = jnp.transpose(h, (0, 2, 3, 1)) + p[1]
        h = lax.reduce_window(jax.nn.relu(h), -jnp.inf, lax.max, (1, 2, 2, 1), (1, 1, 1, 1), "SAME")
        h = lax.reduce_window(h, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME") / 9.0
        return h.reshape(h.shape[0], -1) @ p[2]

    model = xgrad.read_model((apply, params), input_shape=(6, 6, 3))
    infos = list(model.walk())
    assert [i.kind for i in infos] == [
        "conv",
        "activation",
        "maxpool",
        "avgpool",
        "flatten",
        "dense",
    ]
    # torch's padding=1, not "same" (which pads (0, 1) here, the odd zero last)
    assert infos[0].layer == Conv(4, 3, strides=2, padding=1)
    assert infos[0].layouts == {"kernel": (3, 2, 0, 1)}  # OIHW, stated
    np.testing.assert_array_equal(
        model.weights()["layers.0.kernel"], np.transpose(np.asarray(params[0]), (2, 3, 1, 0))
    )
    assert infos[2].layer == MaxPool(2, strides=1, padding="same")
    assert infos[3].layer == AvgPool(3, strides=1, padding="same", count_include_pad=True)
    agrees(model, RNG.normal(size=(3, 6, 6, 3)).astype(np.float32))


def test_a_function_computing_nchw_throughout_is_not_named_a_channels_last_conv():
    import jax.numpy as jnp
    from jax import lax

    params = _params((4, 3, 3, 3), (64, 2))

    def apply(p, x):  # x (B, C, H, W): the flatten orders features (c, h, w)
        h = lax.conv_general_dilated(
            x, p[0], (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        return jnp.tanh(h).reshape(h.shape[0], -1) @ p[1]

    model = xgrad.read_model((apply, params), input_shape=(3, 4, 4))
    conv = next(i for i in model.walk() if i.kind == "conv")
    assert conv.layer is None and "channels-first (NCHW)" in conv.note


# -- xgrad's own JAX function, read back ----------------------------------------------------

ROUND_TRIP = MLP(
    (12, 12, 3),
    [
        Conv(4, 3, strides=2, padding="same"),
        Activation("relu"),
        MaxPool(2),  # after the ReLU: once left unread (its segment took GroupNorm's reshape)
        GroupNorm(2),  # statistics on (..., G, C/G), reshaped back
        Conv(6, 3, groups=2),
        GlobalAvgPool(),  # a 1x1 mean: jnp.mean's division by 1 once read as an activation
        Dense(5),
    ],
)


def test_a_cnn_converted_to_jax_reads_back_as_its_spec_and_weights():
    rng = np.random.default_rng(3)
    weights = {
        k: (0.4 * rng.standard_normal(s)).astype(np.float32)
        for k, s in ROUND_TRIP.weight_shapes().items()
    }
    native = xgrad.convert((ROUND_TRIP, weights), to="jax")  # a list of per-layer dicts
    apply = xgrad.get_framework("jax").build(ROUND_TRIP, None, dtype="float32").native[0]
    model = xgrad.read_model((apply, native), input_shape=ROUND_TRIP.input_dim)
    assert model.structure_error is None
    assert model.spec() == ROUND_TRIP
    got = model.weights()
    assert set(got) == set(weights)
    for name, value in weights.items():
        np.testing.assert_array_equal(np.asarray(got[name], np.float32), value, err_msg=name)
