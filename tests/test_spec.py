"""The spec, activation and loss names: immutable, validated, with actionable messages."""

import dataclasses
import re

import numpy as np
import pytest

import xgrad
from xgrad import MLP, Dense, SpecError


def test_dense_canonicalises_activation_names():
    assert Dense(3, "leaky_relu").activation == "leaky_relu:0.2"
    assert Dense(3, "leaky_relu:0.01").activation == "leaky_relu:0.01"
    assert Dense(3, "swish").activation == "silu"
    assert Dense(3, None).activation == "linear"
    assert Dense(3, "ReLU").activation == "relu"


def test_spec_is_immutable_and_hashable():
    spec = MLP(4, [Dense(3, "relu"), Dense(2)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.input_dim = 5
    assert isinstance(spec.layers, tuple)
    assert hash(spec) == hash(MLP(4, (Dense(3, "relu"), Dense(2))))


def test_param_shapes_follow_the_canonical_layout():
    spec = MLP(4, [Dense(3, "relu", use_bias=False), Dense(2)])
    assert spec.param_shapes() == {
        "layers.0.kernel": (4, 3),
        "layers.1.kernel": (3, 2),
        "layers.1.bias": (2,),
    }
    assert spec.n_params() == 4 * 3 + 3 * 2 + 2
    assert spec.describe() == "4 -> 3:relu (no bias) -> 2:linear"


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (lambda: Dense(0), "Dense units must be a positive integer, got 0"),
        (lambda: Dense(-2), "Dense units must be a positive integer, got -2"),
        (lambda: Dense(2.5), "Dense units must be a positive integer, got float 2.5"),
        (lambda: Dense(True), "Dense units must be a positive integer, got bool True"),
        (lambda: Dense(3, "relu7"), "unknown activation 'relu7'; known names:"),
        (lambda: Dense(3, "leaky_relu:abc"), "leaky_relu slope must be a number, got 'abc'"),
        (lambda: Dense(3, "leaky_relu:nan"), "leaky_relu slope must be finite"),
        (lambda: Dense(3, 7), "activation must be a name (str), got int 7"),
        (lambda: Dense(3, use_bias="yes"), "use_bias must be True or False, got 'yes'"),
        (lambda: MLP(3, []), "a model needs at least one layer, got an empty list"),
        (lambda: MLP(0, [Dense(1)]), "input_dim must be a positive integer, got 0"),
        (lambda: MLP(3, Dense(1)), "wrap it: layers=[Dense(...)]"),
        (
            lambda: MLP(3, [Dense(1), 4]),
            "layers[1] must be an xgrad layer (xgrad.Dense, xgrad.LayerNorm, ...), got int 4",
        ),
    ],
)
def test_bad_specs_raise_spec_error_naming_the_value(make, pattern):
    with pytest.raises(SpecError, match=re.escape(pattern)):
        make()


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(
        SpecError, match=re.escape("unknown loss 'hinge'; known losses: sum, projection, mean")
    ):
        xgrad.get_loss("hinge")


def test_spec_errors_are_value_errors_too():
    with pytest.raises(ValueError):
        Dense(0)


def test_init_params_is_deterministic_float64_with_nonzero_bias():
    spec = MLP(5, [Dense(4, "tanh"), Dense(2)])
    a = xgrad.init_params(spec, seed=3)
    b = xgrad.init_params(spec, seed=3)
    c = xgrad.init_params(spec, seed=4)
    assert list(a) == list(spec.param_shapes())
    for name in a:
        assert a[name].dtype == np.float64
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name])
    assert np.all(a["layers.0.bias"] != 0)
    limit = np.sqrt(6 / (5 + 4))
    assert np.all(np.abs(a["layers.0.kernel"]) <= limit)
    zero = xgrad.init_params(spec, seed=3, bias_scale=0)
    assert not zero["layers.1.bias"].any()


def test_init_params_leaves_global_random_state_alone():
    state = np.random.get_state()[1].copy()  # noqa: NPY002 - the global state is checked
    xgrad.init_params(MLP(3, [Dense(2)]), seed=1)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # noqa: NPY002
