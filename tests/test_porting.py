"""Porting: a user's Keras model against hand-written Flax (NNX, Linen) and JAX ports."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif(
    {"jax", "flax", "tensorflow"} - INSTALLED, reason="porting tests need jax, flax and tensorflow"
)

if not {"jax", "flax", "tensorflow"} - INSTALLED:
    import jax
    import jax.numpy as jnp
    import keras
    from flax import linen as nn
    from flax import nnx

    import xgrad.frameworks.tensorflow.ops  # noqa: F401 - imports TensorFlow quietly first

    # The user's own activation choices, written the way a port would write them.
    JAX_ACT = {
        "relu": jax.nn.relu,
        "tanh": jnp.tanh,
        "sigmoid": jax.nn.sigmoid,
        "gelu": lambda x: jax.nn.gelu(x, approximate=False),
        "linear": lambda x: x,
        "elu": jax.nn.elu,
        "softplus": jax.nn.softplus,
        "silu": jax.nn.silu,
        "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
        "softmax": jax.nn.softmax,
    }

    class NnxPort(nnx.Module):
        def __init__(self, dims, acts, *, biases=None, seed=1):
            rngs = nnx.Rngs(seed)
            biases = biases or [True] * len(acts)
            self.layers = nnx.List(
                [
                    nnx.Linear(a, b, use_bias=bias, rngs=rngs)
                    for a, b, bias in zip(dims[:-1], dims[1:], biases, strict=True)
                ]
            )
            self.acts = tuple(acts)

        def __call__(self, x):
            for layer, act in zip(self.layers, self.acts, strict=True):
                x = JAX_ACT[act](layer(x))
            return x

    class LinenPort(nn.Module):
        widths: tuple
        acts: tuple

        @nn.compact
        def __call__(self, x):
            for width, act in zip(self.widths, self.acts, strict=True):
                x = JAX_ACT[act](nn.Dense(width)(x))
            return x


def _init(seed):
    """Seeded initialisers: Keras' defaults draw new weights each run."""
    return {
        "kernel_initializer": keras.initializers.GlorotUniform(seed=seed),
        "bias_initializer": keras.initializers.RandomUniform(-0.1, 0.1, seed=seed + 100),
    }


def keras_sequential(dims, acts, *, name="seq", dropout=False):
    layers = [keras.Input((dims[0],))]
    for width, act in zip(dims[1:], acts, strict=True):
        layers.append(
            keras.layers.Dense(
                width,
                activation=act,
                name=f"d{len(layers) // 2}" if dropout else f"d{len(layers) - 1}",
                **_init(len(layers)),
            )
        )
        if dropout:
            layers.append(keras.layers.Dropout(0.5))
    return keras.Sequential(layers, name=name)


def keras_functional(dims, acts):
    inp = keras.Input((dims[0],))
    h = inp
    for width, act in zip(dims[1:], acts, strict=True):
        h = keras.layers.Dense(width, **_init(width))(h)
        h = keras.layers.Activation(act)(h)
    return keras.Model(inp, h, name="functional")


def linen_pair(dims, acts):
    module = LinenPort(tuple(dims[1:]), tuple(acts))
    return module, module.init(jax.random.key(3), jnp.ones((1, dims[0])))


CONFIGS = [
    ([5, 3], ["sigmoid"]),
    ([6, 8, 4], ["relu", "tanh"]),
    ([4, 7, 7, 3], ["gelu", "elu", "linear"]),
    ([10, 16, 12, 8, 2], ["silu", "relu", "softplus", "softmax"]),
]
IDS = ["depth1", "depth2", "depth3", "depth4"]


def _x(dims, seed=0):
    return np.random.default_rng(seed).normal(size=(6, dims[0]))


@pytest.mark.parametrize("port", ["nnx", "linen"])
@pytest.mark.parametrize("keras_kind", ["sequential", "functional"])
@pytest.mark.parametrize(("dims", "acts"), CONFIGS, ids=IDS)
def test_exact_ports_match_with_both_sides_named(dims, acts, keras_kind, port):
    ref = (
        keras_sequential(dims, acts, dropout=True)
        if keras_kind == "sequential"
        else keras_functional(dims, acts)
    )
    cand = NnxPort(dims, acts) if port == "nnx" else linen_pair(dims, acts)
    report = xgrad.compare_models(ref, cand, _x(dims))  # projection: softmax heads included
    assert report.ok, report.mismatch_message()
    assert report.first_divergence is None
    assert len(report.layers) == len(acts)
    label = report.frameworks[0]
    assert label == ("flax.nnx" if port == "nnx" else "flax.linen")
    first = report.parameters[0].native
    assert first["reference"].endswith("/kernel")
    assert first[label] == ("layers/0/kernel" if port == "nnx" else "params/Dense_0/kernel")
    assert report.to_dict()["first_divergence"] is None


def test_users_objects_are_not_changed():
    dims, acts = [6, 8, 4], ["relu", "tanh"]
    ref = keras_sequential(dims, acts)
    cand = NnxPort(dims, acts)
    ref_before = [w.copy() for w in ref.get_weights()]
    cand_before = np.asarray(cand.layers[0].kernel[...]).copy()
    module, variables = linen_pair(dims, acts)
    linen_before = np.asarray(variables["params"]["Dense_0"]["kernel"]).copy()
    xgrad.compare_models(ref, cand, _x(dims))
    xgrad.compare_models(ref, (module, variables), _x(dims))
    for a, b in zip(ref.get_weights(), ref_before, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.asarray(cand.layers[0].kernel[...]), cand_before)
    np.testing.assert_array_equal(
        np.asarray(variables["params"]["Dense_0"]["kernel"]), linen_before
    )


def _statuses(report, where="forward"):
    label = report.frameworks[0]
    return [getattr(layer, where)[label].status for layer in report.layers]


def test_another_activation_is_flagged_at_its_layer_forward():
    dims = [6, 8, 5, 3]
    ref = keras_sequential(dims, ["relu", "gelu", "linear"])
    cand = NnxPort(dims, ["relu", "gelu_tanh", "linear"])  # the tanh GELU slipped in
    report = xgrad.compare_models(ref, cand, _x(dims))
    assert not report.ok
    assert report.first_divergence["path"] == "layers.1"
    assert report.first_divergence["where"] == "forward"
    assert _statuses(report)[:2] == ["match", "mismatch"]
    assert "first divergence [flax.nnx]: layers.1" in report.to_text(width=200)
    assert report.diagnoses[0].cause == "gelu-approximation"


def test_wrong_derivative_is_flagged_backward_at_its_layer():
    @jax.custom_jvp
    def tanh_bad_grad(x):
        return jnp.tanh(x)

    @tanh_bad_grad.defjvp
    def _(primals, tangents):
        (x,), (t,) = primals, tangents
        return jnp.tanh(x), 0.5 * (1 - jnp.tanh(x) ** 2) * t  # half the true derivative

    dims = [5, 6, 4, 3]

    def apply(p, x):
        x = tanh_bad_grad(x @ p["l0"]["w"] + p["l0"]["b"])
        x = jnp.tanh(x @ p["l1"]["w"] + p["l1"]["b"])
        return x @ p["l2"]["w"] + p["l2"]["b"]

    params = {
        f"l{i}": {"w": jnp.zeros((a, b)), "b": jnp.zeros(b)}
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True))
    }
    ref = keras_sequential(dims, ["tanh", "tanh", "linear"])
    report = xgrad.compare_models(ref, (apply, params), _x(dims))
    assert _statuses(report) == ["match"] * 3
    assert report.first_divergence == {
        "framework": "jax",
        "path": "layers.0",
        "where": "backward",
        "names": {"reference": "d0", "jax": "l0"},
    }
    assert report.parameters[0].results["jax"].status == "mismatch"  # layers.0.kernel
    assert report.parameters[2].results["jax"].status == "match"  # layers.1.kernel


def test_missing_bias_is_rejected_naming_the_layer():
    dims = [6, 8, 4]
    ref = keras_sequential(dims, ["relu", "linear"])
    cand = NnxPort(dims, ["relu", "linear"], biases=[True, False])
    with pytest.raises(
        xgrad.AlignmentError,
        match=re.escape(
            "layer layers.1: reference 'd1' (4:linear) <-> candidate 'layers/1' (4:linear (no "
            "bias)): the reference layer has a bias of shape (4,) but the candidate layer has none"
        ),
    ):
        xgrad.compare_models(ref, cand, _x(dims))


def test_swapped_widths_are_rejected_naming_the_layer():
    ref = keras_sequential([6, 8, 5, 3], ["relu", "relu", "linear"])
    cand = NnxPort([6, 5, 8, 3], ["relu", "relu", "linear"])
    with pytest.raises(
        xgrad.AlignmentError,
        match=re.escape(
            "layer layers.0: reference 'd0' (8:relu) <-> candidate 'layers/0' (5:relu): the "
            "reference maps (6,) -> (8,) features but the candidate maps (6,) -> (5,)"
        ),
    ):
        xgrad.compare_models(ref, cand, _x([6]))


def test_different_depth_is_rejected_listing_both_sides():
    ref = keras_sequential([6, 8, 3], ["relu", "linear"])
    cand = NnxPort([6, 8, 8, 3], ["relu", "relu", "linear"])
    with pytest.raises(
        xgrad.AlignmentError,
        match="the reference has 2 layers with weights .* but the candidate has 3",
    ):
        xgrad.compare_models(ref, cand, _x([6]))


def test_torch_style_transposed_kernel_is_aligned_and_transferred():
    dims = [6, 8, 3]

    def apply(p, x):  # weights stored (out, in), as PyTorch does
        return jnp.tanh(x @ p["fc1"]["weight"].T + p["fc1"]["bias"]) @ p["fc2"]["weight"].T

    params = {
        "fc1": {"weight": jnp.zeros((8, 6)), "bias": jnp.zeros(8)},
        "fc2": {"weight": jnp.zeros((3, 8))},
    }
    ref = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="tanh", **_init(1)),
            keras.layers.Dense(3, use_bias=False, **_init(2)),
        ],
        name="seq",
    )
    report = xgrad.compare_models(ref, (apply, params), _x(dims))
    assert report.ok, report.mismatch_message()
    assert report.parameters[0].native["jax"] == "fc1/weight"


def test_a_kernel_copied_transposed_by_hand_diverges_at_its_layer():
    dims = [5, 5, 3]  # square first kernel: the transposed copy still fits
    ref = keras_sequential(dims, ["tanh", "linear"])
    w = [v.numpy() for v in ref.weights]

    def apply(p, x):
        return jnp.tanh(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]

    wrong = {
        "w0": jnp.asarray(w[0].T),
        "b0": jnp.asarray(w[1]),
        "w1": jnp.asarray(w[2]),
        "b1": jnp.asarray(w[3]),
    }
    report = xgrad.compare_models(ref, (apply, wrong), _x(dims), transfer=False)
    assert report.first_divergence["path"] == "layers.0"
    assert report.first_divergence["where"] == "forward"
    assert report.diagnoses[0].cause == "weight-layout"
    right = {**wrong, "w0": jnp.asarray(w[0])}
    assert xgrad.compare_models(ref, (apply, right), _x(dims), transfer=False).ok


def test_a_transposed_non_square_kernel_is_rejected_before_anything_runs():
    ref = keras_sequential([6, 8, 3], ["tanh", "linear"])

    def apply(p, x):
        return jnp.tanh(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]

    params = {
        "w0": jnp.zeros((6, 8)),
        "b0": jnp.zeros(8),
        "w1": jnp.zeros((8, 3)),
        "b1": jnp.zeros(3),
    }
    swapped = dict(params, w0=jnp.zeros((8, 6)))
    with pytest.raises(
        xgrad.InputError, match=r"does not run on inputs of shape \(6,\) .*\(6,\) and \(8,\)"
    ):
        xgrad.compare_models(ref, (apply, swapped), _x([6]))


def test_explicit_mapping_and_a_name_that_does_not_exist():
    dims, acts = [6, 8, 4], ["relu", "tanh"]
    ref = keras_sequential(dims, acts)
    cand = NnxPort(dims, acts)
    mapping = {"d0": "layers/0", "d1": "layers/1"}
    assert xgrad.compare_models(ref, cand, _x(dims), mapping=mapping).ok
    with pytest.raises(
        xgrad.AlignmentError,
        match=re.escape(
            "mapping names candidate layer 'layers/7', which does not exist; the candidate "
            "layers are: 'layers/0', 'layers/1'"
        ),
    ):
        xgrad.compare_models(ref, cand, _x(dims), mapping={"d0": "layers/7", "d1": "layers/1"})


def test_a_layer_of_no_known_kind_is_compared_module_by_module_and_named():
    # Seeded: with Keras' unseeded defaults (drawn from Python's global `random`, which other
    # tests seed) all five pre-activations came out positive about once in 32, where PReLU (slope
    # 0 at init) is the identity, the models agree and nothing diverges to localise.
    ref = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, **_init(1)), keras.layers.PReLU(name="prelu")],
        name="with_prelu",
    )
    x = np.array([[1.0, 1.0, 1.0, 1.0], [-1.0, -1.0, -1.0, -1.0]])
    assert (np.asarray(ref.layers[0](x)) < 0).any()  # the premise: PReLU is not the identity
    report = xgrad.compare_models(ref, NnxPort([4, 5], ["linear"]), x)
    assert not report.ok  # a learned slope the port lacks: never refused, never OK
    assert "read module by module" in report.notes[0] and "prelu" in report.notes[0]
    assert "reference prelu (PReLU)" in report.divergence_text()
    assert [u["side"] for u in report.unpaired] == ["reference"]


def test_keras_float64_leaky_relu_is_caught_against_xgrad_reference():
    """Keras' float64 leaky_relu uses a float32 slope: xgrad sees it in a port check."""
    spec = xgrad.MLP(4, [xgrad.Dense(6, "leaky_relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec, seed=2)
    model = keras.Sequential(
        [
            keras.Input((4,), dtype="float64"),
            keras.layers.Dense(6, activation="leaky_relu", dtype="float64", **_init(1)),
            keras.layers.Dense(2, dtype="float64", **_init(2)),
        ],
        name="k64",
    )
    x = -np.abs(np.random.default_rng(0).normal(size=(5, 4)))
    report = xgrad.compare_models((spec, params), model, x)
    assert report.dtype == "float64"
    assert report.first_divergence["where"] == "forward"
    assert 1e-9 < report.layers[0].forward["tensorflow"].rel_norm < 1e-7


def test_cotangent_and_losses_with_targets():
    dims, acts = [5, 6, 3], ["tanh", "softmax"]
    ref = keras_sequential(dims, acts)
    cand = NnxPort(dims, acts)
    x = _x(dims)
    assert xgrad.compare_models(ref, cand, x, [0, 1, 2, 0, 1, 2], loss="cce").ok
    cotangent = np.random.default_rng(2).normal(size=(6, 3))  # ones: softmax's VJP gives 0
    report = xgrad.compare_models(ref, cand, x, cotangent=cotangent)
    assert report.ok and report.loss is None


@pytest.mark.parametrize("kind", ["keras", "nnx", "linen", "xgrad"])
def test_convert_round_trips_are_bit_exact(kind):
    dims, acts = [5, 7, 3], ["relu", "sigmoid"]
    spec = xgrad.MLP(5, [xgrad.Dense(7, "relu"), xgrad.Dense(3, "sigmoid")])
    model = {
        "keras": lambda: keras_sequential(dims, acts),
        "nnx": lambda: NnxPort(dims, acts),
        "linen": lambda: linen_pair(dims, acts),
        "xgrad": lambda: (spec, xgrad.init_params(spec, seed=4)),
    }[kind]()
    canonical = xgrad.convert(model, to="numpy", x=_x(dims))
    assert list(canonical) == list(spec.param_shapes())
    for target in ("jax", "flax", "flax.linen", "tensorflow"):
        converted = xgrad.convert(model, to=target, x=_x(dims))
        back = xgrad.convert(_as_model(target, converted, spec), to="numpy", x=_x(dims))
        for name in canonical:
            np.testing.assert_array_equal(back[name], canonical[name], err_msg=f"{target} {name}")
    keras_model = xgrad.convert(model, to="tensorflow", x=_x(dims))
    assert xgrad.compare_models(model, keras_model, _x(dims), transfer=False).ok


def _as_model(target, converted, spec):
    if target == "jax":
        from xgrad.frameworks.jax.builder import apply_fn

        return (apply_fn(spec), converted)
    if target == "flax":
        module = xgrad.get_framework("flax").build(spec, dtype="float32").native
        nnx.update(module, converted)
        return module
    if target == "flax.linen":
        return (LinenPort((7, 3), ("relu", "sigmoid")), converted)
    return converted


def test_activations_of_a_jax_port_are_identified():
    dims = [4, 6, 6, 5, 3]

    def apply(p, x):
        x = jax.nn.leaky_relu(x @ p["a"], negative_slope=0.1)
        x = jax.nn.gelu(x @ p["b"], approximate=True)
        x = jax.nn.relu6(x @ p["c"])
        return x @ p["d"]

    rng = np.random.default_rng(0)
    params = {
        k: jnp.asarray(rng.normal(size=(a, b)), dtype=jnp.float32)
        for k, a, b in zip("abcd", dims[:-1], dims[1:], strict=True)
    }
    model = xgrad.read_model((apply, params))
    assert [i.layer.activation for i in model.layers] == [
        "leaky_relu:0.1",
        "gelu_tanh",
        "relu6",
        "linear",
    ]


def test_save_and_load_params(tmp_path):
    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec)
    for suffix in (".npz", ".safetensors"):
        path = xgrad.save_params(tmp_path / f"p{suffix}", params)
        loaded = xgrad.load_params(path)
        assert list(loaded) == list(params)
        for k in params:
            np.testing.assert_array_equal(loaded[k], params[k])
