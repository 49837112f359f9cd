"""Keras models read layer by layer (tier (a): :mod:`xgrad.frameworks.tensorflow.capture`).

Each model is written as Keras' own guides write it; each test states the modules found
(paths, kinds, opaque ones) and checks the gradients against central finite differences of
the model's own loss, computed by calling the Keras model directly, in float64 (the layers
are built under Keras' float64 ``floatx`` and dtype policy, restored afterwards): a few
parameters, the input, and one module's ``dL/d`` output (that module's output shifted by a
small delta through its ``call``).
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

if importlib.util.find_spec("tensorflow") is None:
    pytest.skip("tensorflow is not installed", allow_module_level=True)

from xgrad.errors import InputError
from xgrad.frameworks.capture import as_batch
from xgrad.frameworks.tensorflow import FRAMEWORK
from xgrad.frameworks.tensorflow.kinds import BATCHNORM_NOTE, DROPOUT_NOTE
from xgrad.frameworks.tensorflow.ops import keras, tf
from xgrad.layers import BatchNorm, Dense, Dropout, LayerNorm

H = 1e-6
"""The finite-difference step: in float64 the central difference's truncation error (h^2)
and its rounding error (1e-16 * |L| / h) both stay below 1e-8 relative."""

RTOL = 1e-6


@contextlib.contextmanager
def float64():
    """Layers and inputs built inside compute in float64: Keras' ``floatx`` and global dtype
    policy (which Keras fixes from ``floatx`` when it is first asked), both restored after."""
    floatx, policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_floatx(floatx)
        keras.config.set_dtype_policy(policy)


def randomized(model, seed: int):
    """``model`` with every trainable weight drawn from N(0, 0.5^2) (no zero bias, no unit
    scale: gradients that a degenerate initialisation would hide)."""
    rng = np.random.default_rng(seed)
    for var in model.trainable_variables:
        var.assign(rng.normal(0.0, 0.5, size=tuple(var.shape)))
    return model


# -- the models, as Keras' guides write them -----------------------------------------------------


class FeedForward(keras.Model):
    """A token-wise transformer feed-forward block on ``(batch, tokens, d)``."""

    def __init__(self, d_model=8, d_ff=16):
        super().__init__()
        self.norm = keras.layers.LayerNormalization()
        self.dense_1 = keras.layers.Dense(d_ff, activation="gelu")
        self.dense_2 = keras.layers.Dense(d_model)

    def call(self, x):
        return x + self.dense_2(self.dense_1(self.norm(x)))


def two_inputs() -> keras.Model:
    """A Functional model of two named inputs returning a dict."""
    features = keras.Input(shape=(5,), name="features")
    context = keras.Input(shape=(3,), name="context")
    hidden = keras.layers.Dense(4, activation="tanh", name="encode")(features)
    joined = keras.layers.Concatenate(name="join")([hidden, context])
    score = keras.layers.Dense(2, name="score")(joined)
    return keras.Model(inputs=[features, context], outputs={"score": score, "hidden": joined})


class MLPBlock(keras.layers.Layer):
    """A custom layer holding two Dense layers (the subclassing guide's ``MLPBlock``)."""

    def __init__(self):
        super().__init__()
        self.linear_1 = keras.layers.Dense(16)
        self.linear_2 = keras.layers.Dense(6)

    def call(self, inputs):
        x = self.linear_1(inputs)
        x = tf.nn.relu(x)
        return self.linear_2(x)


class Classifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.block = MLPBlock()
        self.classifier = keras.layers.Dense(3)

    def call(self, inputs):
        return self.classifier(self.block(inputs))


class AttentionBlock(keras.Model):
    """Post-LN self-attention with Keras' ``MultiHeadAttention`` on ``(batch, tokens, d)``."""

    def __init__(self, num_heads=2, key_dim=4):
        super().__init__()
        self.attention = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim)
        self.norm = keras.layers.LayerNormalization()

    def call(self, x):
        return self.norm(x + self.attention(x, x))


def bag_of_embeddings() -> keras.Model:
    """Token ids -> Embedding -> mean over tokens -> Dense."""
    return keras.Sequential(
        [
            keras.Input(shape=(6,), dtype="int32"),
            keras.layers.Embedding(input_dim=10, output_dim=4, name="embed"),
            keras.layers.GlobalAveragePooling1D(name="pool"),
            keras.layers.Dense(3, name="head"),
        ]
    )


# -- finite differences of the model's own loss ----------------------------------------------------


@dataclass
class Case:
    """A model, its inputs as a user passes them, how the user calls it, and the loss:
    ``sum(P * output)`` for a fixed random ``P`` (a projection: every gradient informative)."""

    model: keras.Model
    inputs: object
    call: Callable
    pick: Callable = lambda out: out
    seed: int = 0

    def projection(self, out):
        rng = np.random.default_rng(self.seed + 100)
        return tf.constant(rng.standard_normal(tuple(out.shape)), out.dtype)

    def loss_fn(self, out, y):
        return tf.reduce_sum(out * self.projection(out))

    def loss(self, inputs=None) -> float:
        out = self.pick(self.call(self.inputs if inputs is None else inputs))
        return float(self.loss_fn(out, None))

    def capture(self, **kwargs):
        return FRAMEWORK.capture(self.model, as_batch(self.inputs), **kwargs)

    def gradients(self, captured, capture=True):
        return captured.evaluate(self.inputs, loss=self.loss_fn, capture=capture)


def central(f: Callable[[float], float]) -> float:
    return (f(H) - f(-H)) / (2 * H)


def fd_variable(case: Case, native: str, index) -> float:
    var = next(v for v in case.model.variables if v.path == native)
    old = var.numpy()

    def at(delta: float) -> float:
        value = old.copy()
        value[index] += delta
        var.assign(value)
        return case.loss()

    try:
        return central(at)
    finally:
        var.assign(old)


def fd_input(case: Case, name, index) -> float:
    def at(delta: float) -> float:
        if isinstance(case.inputs, dict | tuple | list):
            inputs = dict(case.inputs) if isinstance(case.inputs, dict) else list(case.inputs)
            inputs[name] = inputs[name].copy()
            inputs[name][index] += delta
            inputs = inputs if isinstance(case.inputs, dict) else type(case.inputs)(inputs)
        else:
            inputs = case.inputs.copy()
            inputs[index] += delta
        return case.loss(inputs)

    return central(at)


def fd_module_output(case: Case, layer, index) -> float:
    """``dL/d`` the layer's output at ``index`` (its first call's): that output shifted. A
    Dense's output is taken before its own activation (``Dense(3, activation="tanh")``: the
    output an ``nn.Linear`` followed by ``tanh`` has)."""
    original = layer.call
    fn = getattr(layer, "activation", None)
    if not isinstance(layer, keras.layers.Dense) or fn is keras.activations.linear:
        fn = None

    def before_activation(*args, **kwargs):
        if fn is None:
            return original(*args, **kwargs)
        object.__setattr__(layer, "activation", keras.activations.linear)
        try:
            return original(*args, **kwargs)
        finally:
            object.__setattr__(layer, "activation", fn)

    def at(delta: float) -> float:
        calls = []

        def shifted(*args, **kwargs):
            out = before_activation(*args, **kwargs)
            calls.append(1)
            if len(calls) > 1:
                return out if fn is None else fn(out)
            bump = np.zeros(tuple(out.shape))
            bump[index] = delta
            out = out + tf.constant(bump, out.dtype)
            return out if fn is None else fn(out)

        object.__setattr__(layer, "call", shifted)
        try:
            return case.loss()
        finally:
            object.__delattr__(layer, "call")

    return central(at)


def check_gradients(case: Case, captured, params: list[str], module: str, layer) -> None:
    """The captured gradients of ``params`` (canonical names), of the first floating input
    and of ``module``'s output against finite differences, at the largest entry and one
    drawn at random."""
    __tracebackhide__ = True
    g = case.gradients(captured)
    rng = np.random.default_rng(case.seed)
    natives = captured.native_names()

    def indices(arr):
        big = np.unravel_index(np.argmax(np.abs(arr)), arr.shape)
        return [big, tuple(int(rng.integers(n)) for n in arr.shape)]

    for name in params:
        for index in indices(g.params[name]):
            fd = fd_variable(case, natives[name], index)
            np.testing.assert_allclose(g.params[name][index], fd, rtol=RTOL, atol=1e-9)
    if g.input.size:
        first = as_batch(case.inputs).floating[0]
        key = first.removeprefix("input.") if first != "input" else None
        key = int(key) if key is not None and key.isdigit() else key
        for index in indices(g.input):
            np.testing.assert_allclose(g.input[index], fd_input(case, key, index), rtol=RTOL)
    grad = g.activation_grads[module]
    for index in indices(grad):
        fd = fd_module_output(case, layer, index)
        np.testing.assert_allclose(grad[index], fd, rtol=RTOL, atol=1e-9)


def outline(captured) -> list[tuple]:
    return [(i.path, i.kind, i.type, i.scope) for i in captured.modules]


def snapshot(model) -> list[np.ndarray]:
    return [v.numpy().copy() for v in model.variables]


def assert_untouched(model, before: list[np.ndarray]) -> None:
    """The user's model holds the weights (and moving statistics) it held, and no layer
    keeps a wrapper of xgrad's."""
    __tracebackhide__ = True
    after = snapshot(model)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    wrapped = [layer.name for layer in model._flatten_layers() if "call" in vars(layer)]
    assert not wrapped, f"layers left wrapped: {wrapped}"


# -- (1) a token-wise feed-forward block ----------------------------------------------------------


def feed_forward_case() -> Case:
    x = np.random.default_rng(1).standard_normal((3, 5, 8))
    with float64():
        model = FeedForward()
        model(x)
    randomized(model, 1)
    return Case(model, x, lambda x: model(x), seed=1)


def test_feed_forward_block_on_tokens():
    case = feed_forward_case()
    before = snapshot(case.model)
    captured = case.capture()
    assert outline(captured) == [
        ("norm", "layernorm", "LayerNormalization", ""),
        ("dense_1", "dense", "Dense", ""),
        ("dense_2", "dense", "Dense", ""),
        ("", "module", "FeedForward", None),
    ]
    norm, dense_1, dense_2, root = captured.modules
    assert norm.layer == LayerNorm(epsilon=1e-3)
    # dense_1's gelu runs after its output, as torch's F.gelu after an nn.Linear would
    assert dense_1.layer == Dense(16) and dense_2.layer == Dense(8)
    assert dense_1.note.startswith("compared before its activation gelu")
    assert norm.params["scale"].endswith("/gamma") and norm.params["bias"].endswith("/beta")
    assert dense_1.input_shape == (5, 8) and dense_1.output_shape == (5, 16)
    assert root.opaque and not root.params
    assert captured.dtype == "float64" and captured.input_shape == (5, 8)
    check_gradients(
        case,
        captured,
        ["norm.scale", "dense_1.kernel", "dense_2.bias"],
        "norm",
        case.model.norm,
    )
    assert_untouched(case.model, before)


# -- (2) two inputs, a dict output --------------------------------------------------------------


def two_inputs_case(as_dict: bool) -> Case:
    rng = np.random.default_rng(2)
    features, context = rng.standard_normal((4, 5)), rng.standard_normal((4, 3))
    with float64():
        model = two_inputs()
    randomized(model, 2)
    if as_dict:
        inputs = {"features": features, "context": context}
        return Case(model, inputs, lambda d: model(d), lambda out: out["score"], seed=2)
    return Case(model, (features, context), lambda t: model(list(t)), lambda o: o["score"], 2)


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_two_inputs_and_a_dict_output(as_dict):
    case = two_inputs_case(as_dict)
    before = snapshot(case.model)
    captured = case.capture()
    assert outline(captured) == [
        ("encode", "dense", "Dense", ""),
        ("join", "module", "Concatenate", ""),
        ("score", "dense", "Dense", ""),
        ("", "module", "Functional", None),
    ]
    assert captured.module("join").input_shapes == ((4,), (3,))
    assert captured.module("").input_shapes == ((5,), (3,))
    assert captured.output_path == "score" and "hidden" in captured.output_note
    encode = case.model.get_layer("encode")
    check_gradients(case, captured, ["encode.kernel", "score.kernel"], "encode", encode)
    g = case.gradients(captured, capture=False)
    names = ("input.features", "input.context") if as_dict else ("input.0", "input.1")
    assert tuple(g.inputs) == names and g.inputs[names[1]].shape == (4, 3)
    assert np.array_equal(g.input, g.inputs[names[0]])
    assert_untouched(case.model, before)


def test_output_picks_another_leaf():
    case = two_inputs_case(as_dict=True)
    captured = case.capture(output="hidden")
    assert captured.output_path == "hidden" and captured.output_shape == (7,)
    g = captured.evaluate(case.inputs)
    assert g.output.shape == (4, 7)


# -- (3) a custom layer holding Dense layers ------------------------------------------------------


def test_nested_custom_layer():
    x = np.random.default_rng(3).standard_normal((4, 5))
    with float64():
        model = Classifier()
        model(x)
    randomized(model, 3)
    case = Case(model, x, lambda x: model(x), seed=3)
    before = snapshot(model)
    captured = case.capture()
    assert outline(captured) == [
        ("block.linear_1", "dense", "Dense", "block"),
        ("block.linear_2", "dense", "Dense", "block"),
        ("block", "module", "MLPBlock", ""),
        ("classifier", "dense", "Dense", ""),
        ("", "module", "Classifier", None),
    ]
    assert captured.module("block").opaque and not captured.module("block").params
    check_gradients(
        case,
        captured,
        ["block.linear_1.kernel", "block.linear_2.bias", "classifier.kernel"],
        "block",
        model.block,
    )
    assert_untouched(model, before)


# -- (4) Keras' MultiHeadAttention ----------------------------------------------------------------


def test_multi_head_attention_block():
    x = np.random.default_rng(4).standard_normal((2, 5, 8))
    with float64():
        model = AttentionBlock()
        model(x)
    randomized(model, 4)
    case = Case(model, x, lambda x: model(x), seed=4)
    before = snapshot(model)
    captured = case.capture()
    projections = [f"attention._{n}_dense" for n in ("query", "key", "value", "output")]
    found = outline(captured)
    # Keras' fused attention calls no softmax or dropout layer; an unfused one calls them
    inside = [row for row in found if row[3] == "attention"]
    assert [row[0] for row in inside if row[2] == "EinsumDense"] == projections
    assert {row[0] for row in inside} <= {
        *projections,
        "attention._softmax",
        "attention._dropout_layer",
    }
    assert found[-3:] == [
        ("attention", "module", "MultiHeadAttention", ""),
        ("norm", "layernorm", "LayerNormalization", ""),
        ("", "module", "AttentionBlock", None),
    ]
    attention = captured.module("attention")
    assert attention.opaque and attention.input_shapes == ((5, 8), (5, 8))
    query = captured.module("attention._query_dense")
    assert query.opaque and list(query.params) == ["kernel", "bias"]
    assert query.params["kernel"].endswith("/query/kernel")  # Keras' own paths
    assert captured.weights()["attention._query_dense.kernel"].shape == (8, 2, 4)
    check_gradients(
        case,
        captured,
        ["attention._query_dense.kernel", "attention._output_dense.bias", "norm.scale"],
        "attention._value_dense",
        model.attention._value_dense,
    )
    assert_untouched(model, before)


# -- (5) Embedding on integer ids -----------------------------------------------------------------


def test_embedding_on_integer_ids():
    ids = np.random.default_rng(5).integers(0, 10, size=(4, 6))
    with float64():
        model = bag_of_embeddings()
    randomized(model, 5)
    case = Case(model, ids, lambda x: model(x), seed=5)
    before = snapshot(model)
    captured = case.capture()
    assert outline(captured) == [
        ("embed", "module", "Embedding", ""),
        ("pool", "global_avgpool", "GlobalAveragePooling1D", ""),  # a kind since issue 22
        ("head", "dense", "Dense", ""),
        ("", "module", "Sequential", None),
    ]
    assert captured.module("embed").input_shapes == ()  # ids: no floating input
    assert captured.module("embed").params["embeddings"].endswith("/embed/embeddings")
    g = case.gradients(captured)
    assert g.input.shape == (0,) and g.inputs == {}
    assert g.params["embed.embeddings"].shape == (10, 4)  # dense, not IndexedSlices
    check_gradients(
        case, captured, ["embed.embeddings", "head.kernel"], "pool", model.get_layer("pool")
    )
    assert_untouched(model, before)


# -- a module output used twice -------------------------------------------------------------------


class Skip(keras.Model):
    def __init__(self):
        super().__init__()
        self.proj = keras.layers.Dense(4)
        self.out = keras.layers.Dense(4, activation="tanh")

    def call(self, x):
        h = self.proj(x)
        return self.out(h) + h


def test_module_output_gradient_is_total_derivative():
    """``dL/d proj`` goes through ``out`` and the skip connection both."""
    x = np.random.default_rng(6).standard_normal((3, 4))
    with float64():
        model = Skip()
        model(x)
    randomized(model, 6)
    case = Case(model, x, lambda x: model(x), seed=6)
    captured = case.capture()
    check_gradients(case, captured, ["proj.kernel"], "proj", model.proj)


# -- modes -----------------------------------------------------------------------------------------


class TrainingInCall(keras.Model):
    """A BatchNormalization called with ``training=True`` written in ``call``."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(4)
        self.bn = keras.layers.BatchNormalization(momentum=0.9)
        self.head = keras.layers.Dense(2)

    def call(self, x):
        return self.head(self.bn(self.dense(x), training=True))


def test_training_written_in_call_is_respected():
    x = np.random.default_rng(7).standard_normal((6, 3))
    with float64():
        model = TrainingInCall()
        model(x)
    randomized(model, 7)
    case = Case(model, x, lambda x: model(x), seed=7)
    before, mean = snapshot(model), model.bn.moving_mean.numpy()
    captured = case.capture()  # training=None: the mode call() sets holds
    bn = captured.module("bn")
    assert bn.layer == BatchNorm(momentum=0.9, training=True) and bn.note == BATCHNORM_NOTE
    assert list(bn.state) == ["mean", "var"] and bn.state["var"].endswith("/moving_variance")
    g = case.gradients(captured)
    assert_untouched(model, before)  # moving statistics restored after the call
    h = x @ model.dense.kernel.numpy() + model.dense.bias.numpy()
    np.testing.assert_allclose(g.state["bn.mean"], 0.9 * mean + 0.1 * h.mean(axis=0))
    check_gradients(case, captured, ["bn.scale", "dense.kernel"], "bn", model.bn)


def dropout_model():
    with float64():
        return keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(4, name="dense"),
                keras.layers.Dropout(0.5, name="drop"),
            ]
        )


def test_training_flag_passed_to_the_call():
    model = dropout_model()
    x = np.random.default_rng(8).standard_normal((5, 4))
    inference = FRAMEWORK.capture(model, as_batch(x)).module("drop")
    assert inference.layer == Dropout(0.5) and inference.note is None
    before = snapshot(model)
    captured = FRAMEWORK.capture(model, as_batch(x), training=True)
    training = captured.module("drop")
    assert training.layer == Dropout(0.5, active=True) and training.note == DROPOUT_NOTE
    first = captured.evaluate(x).output
    np.testing.assert_array_equal(captured.evaluate(x).output, first)  # seeds restored
    assert (first == 0).any()
    assert_untouched(model, before)


# -- copies, failures, dtypes ---------------------------------------------------------------------


def test_with_weights_works_on_a_copy():
    case = two_inputs_case(as_dict=False)
    before = snapshot(case.model)
    captured = case.capture()
    weights = captured.weights()
    new = captured.with_weights({"score.kernel": np.zeros((7, 2))})
    assert new.native is not case.model
    assert outline(new) == outline(captured)
    assert np.array_equal(new.weights()["score.kernel"], np.zeros((7, 2)))
    assert np.array_equal(new.weights()["encode.kernel"], weights["encode.kernel"])
    np.testing.assert_allclose(
        new.evaluate(case.inputs).output, np.broadcast_to(weights["score.bias"], (4, 2))
    )
    assert_untouched(case.model, before)


class Epsilon(keras.Model):
    """A subclassed port whose constructor takes its LayerNorm epsilon (no get_config)."""

    def __init__(self, epsilon):
        super().__init__()
        self.norm = keras.layers.LayerNormalization(epsilon=epsilon)
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(self.norm(x))


class EpsilonDefault(Epsilon):
    def __init__(self, epsilon=1e-3):
        super().__init__(epsilon)


@pytest.mark.parametrize("cls", [Epsilon, EpsilonDefault], ids=["required", "default"])
def test_with_weights_refuses_a_copy_that_computes_otherwise(cls):
    x = np.random.default_rng(9).standard_normal((4, 3)).astype("float32")
    model = cls(epsilon=0.5)
    model(x)
    captured = FRAMEWORK.capture(model, as_batch(x))
    before = snapshot(model)
    with pytest.raises(InputError, match="get_config"):
        captured.with_weights({"dense.bias": np.ones(2, "float32")})
    assert_untouched(model, before)


def test_a_model_failing_on_the_inputs():
    case = two_inputs_case(as_dict=False)
    before = snapshot(case.model)
    bad = (np.zeros((4, 7)), np.zeros((4, 3)))
    with pytest.raises(InputError, match=r"model\(\[0, 1\]\).*expected shape=\(None, 5\)"):
        FRAMEWORK.capture(case.model, as_batch(bad))
    assert_untouched(case.model, before)


def test_refusals():
    layer = keras.layers.Dense(3)
    with pytest.raises(InputError, match="wrap the layer"):
        FRAMEWORK.capture(layer, as_batch(np.zeros((2, 3))))
    with pytest.raises(InputError, match="not built"):
        FRAMEWORK.capture(Classifier(), as_batch(np.zeros((2, 5))))


def test_mixed_bfloat16():
    x = np.random.default_rng(10).standard_normal((4, 5)).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4, activation="relu", dtype="mixed_bfloat16", name="a"),
            keras.layers.Dense(2, dtype="mixed_bfloat16", name="b"),
        ]
    )
    captured = FRAMEWORK.capture(model, as_batch(x))
    assert captured.dtype == "bfloat16"
    assert [(i.path, i.kind) for i in captured.modules] == [
        ("a", "dense"),
        ("b", "dense"),
        ("", "module"),
    ]
    g = captured.evaluate(x, capture=True)
    assert g.params["a.kernel"].dtype == np.float32  # variables stay float32
    assert str(g.activation_grads["b"].dtype) == "bfloat16"
    assert all(np.isfinite(v.astype(np.float64)).all() for v in g.params.values())


# -- inputs as users pass them, a layer called twice ---------------------------------------------


class Pair(keras.Model):
    """``call(self, a, b)``: two positional inputs."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, a, b):
        return self.dense(a) * b


class Packed(Pair):
    """``call(self, inputs)``: the two inputs as one list."""

    def call(self, inputs):
        a, b = inputs
        return self.dense(a) * b


class Masked(keras.Model):
    """``call(self, ids, mask=None)``: token ids and a float mask by keyword."""

    def __init__(self):
        super().__init__()
        self.embed = keras.layers.Embedding(10, 2)

    def call(self, ids, mask=None):
        return tf.reduce_sum(self.embed(ids) * mask[..., None], axis=1)


@pytest.mark.parametrize(
    ("cls", "inputs", "direct"),
    [
        (Pair, "tuple", lambda m, a, b: m(a, b)),
        (Packed, "tuple", lambda m, a, b: m([a, b])),
        (Masked, "dict", lambda m, ids, mask: m(ids=ids, mask=mask)),
    ],
    ids=["positional", "one-list", "keywords"],
)
def test_inputs_passed_as_the_call_takes_them(cls, inputs, direct):
    rng = np.random.default_rng(11)
    model = cls()
    if inputs == "tuple":
        a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
        batch, args = (a, b), (a, b)
    else:
        ids, mask = rng.integers(0, 10, (3, 5)), rng.random((3, 5))
        batch, args = {"ids": ids, "mask": mask}, (ids, mask)
    tensors = [tf.constant(v, "float32" if v.dtype.kind == "f" else None) for v in args]
    expected = direct(model, *tensors).numpy()
    captured = FRAMEWORK.capture(model, as_batch(batch))
    g = captured.evaluate(batch)
    np.testing.assert_allclose(g.output, expected, rtol=1e-6)
    assert tuple(g.inputs) == as_batch(batch).floating
    copy = captured.with_weights({})  # a copy built by a call made as yours
    np.testing.assert_array_equal(copy.evaluate(batch).output, g.output)
    assert all("call" not in vars(layer) for layer in model._flatten_layers())


class Twice(keras.Model):
    """One Dense applied twice: its weights are used by both calls."""

    def __init__(self):
        super().__init__()
        self.shared = keras.layers.Dense(3, activation="tanh")

    def call(self, x):
        return self.shared(self.shared(x))


def test_a_layer_called_twice():
    x = np.random.default_rng(12).standard_normal((4, 3))
    with float64():
        model = Twice()
        model(x)
    randomized(model, 12)
    case = Case(model, x, lambda x: model(x), seed=12)
    captured = case.capture()
    assert [(i.path, i.calls) for i in captured.modules] == [("shared", 2), ("", 1)]
    assert captured.module("shared").input_shape == (3,)  # its first call's
    # the gradient sums both uses; dL/d output is the first call's
    check_gradients(case, captured, ["shared.kernel"], "shared", model.shared)


def test_modules_are_named_by_their_attribute_paths_not_keras_names():
    case = feed_forward_case()
    captured = case.capture()
    assert [m.name for m in captured.modules[:3]] == ["norm", "dense_1", "dense_2"]
    assert captured.modules[-1].name == case.model.name  # the model itself: its Keras name
