"""``mapping=`` with a real mismatch, and the crashes issue 20 lists, as scenarios:

* ``mapping=`` on torch, Flax NNX, Keras and pure JAX models, for models xgrad reads layer by
  layer (vectors in a chain) and module by module (token-wise inputs): the planted bug is
  reported (never ``SpecError: a model needs at least one layer`` from inside diagnosis) and a
  name that does not exist is an ``AlignmentError`` listing the names there are;
* two inputs as a tuple, a list and a dict; ``nn.LSTM`` returning a tuple inside a model; a
  Linen port with an active ``Dropout`` (random keys, not a shape problem); a Keras
  ``training=True`` written inside ``call()`` (a correct port of a training-mode BatchNorm is
  ok and the user's moving statistics are left as they were; a momentum slip is
  ``batchnorm-momentum``, not ``batchnorm-mode``); error texts with the user's batch and no fx
  dumps.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)
needs_keras = pytest.mark.skipif("tensorflow" not in INSTALLED, reason="tensorflow is needed")

D, HIDDEN, OUT = 8, 16, 4

if {"torch", "flax"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import linen, nnx
    from torch import nn

    import xgrad
    from xgrad.errors import AlignmentError, InputError

    class GeluMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(D, HIDDEN)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(HIDDEN, OUT)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class GeluMLPPort(nnx.Module):
        """The port names its layers otherwise: pairing them by name needs ``mapping=``."""

        def __init__(self, *, approximate: bool = False, rngs: nnx.Rngs):
            self.hidden = nnx.Linear(D, HIDDEN, rngs=rngs)
            self.head = nnx.Linear(HIDDEN, OUT, rngs=rngs)
            self.approximate = approximate  # the planted bug: True, nnx.gelu's default

        def __call__(self, x):
            return self.head(nnx.gelu(self.hidden(x), approximate=self.approximate))

    class NormMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(D, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN)
            self.fc2 = nn.Linear(HIDDEN, OUT)

        def forward(self, x):
            return self.fc2(self.norm(torch.relu(self.fc1(x))))

    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, D)
            self.b = nn.Linear(4, D)
            self.head = nn.Linear(D, OUT)

        def forward(self, x1, x2):
            return self.head(torch.tanh(self.a(x1) + self.b(x2)))

    class TwoInputsPort(nnx.Module):
        def __init__(self, *, swapped: bool = False, rngs: nnx.Rngs):
            self.a = nnx.Linear(6, D, rngs=rngs)
            self.b = nnx.Linear(4, D, rngs=rngs)
            self.head = nnx.Linear(D, OUT, rngs=rngs)
            self.swapped = swapped

        def __call__(self, x1, x2):
            # the planted bug: b reads the first input's features instead of the second's
            h = self.a(x1) + (self.b(x1[:, :4]) if self.swapped else self.b(x2))
            return self.head(jnp.tanh(h))

    class LastStep(nn.Module):
        """A sequence classifier on the LSTM's last step (``nn.LSTM`` returns a tuple)."""

        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(4, 6, batch_first=True)
            self.head = nn.Linear(6, 2)

        def forward(self, x):
            out, (h, c) = self.lstm(x)
            return self.head(out[:, -1])

    class FirstStep(LastStep):
        def forward(self, x):  # the planted bug: the first step
            out, _ = self.lstm(x)
            return self.head(out[:, 0])

    class DropMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(D, HIDDEN)
            self.drop = nn.Dropout(0.5)
            self.fc2 = nn.Linear(HIDDEN, OUT)

        def forward(self, x):
            return self.fc2(self.drop(torch.relu(self.fc1(x))))

    class LinenDropMLP(linen.Module):
        """A Linen port whose Dropout is active (deterministic=False) in every call."""

        @linen.compact
        def __call__(self, x):
            h = linen.relu(linen.Dense(HIDDEN)(x))
            return linen.Dense(OUT)(linen.Dropout(0.5, deterministic=False)(h))

    class BatchNormMLPPort(nnx.Module):
        def __init__(self, *, rngs: nnx.Rngs):
            self.fc = nnx.Linear(D, HIDDEN, rngs=rngs)
            self.bn = nnx.BatchNorm(HIDDEN, momentum=0.9, epsilon=1e-3, rngs=rngs)
            self.out = nnx.Linear(HIDDEN, OUT, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.bn(self.fc(x))))

    class ViewError(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            return self.fc(x).view(-1, 7)  # fails on every batch

    def mlp_fn(p, x):
        """A pure JAX MLP (exact GELU)."""
        h = jax.nn.gelu(x @ p["hidden"]["w"] + p["hidden"]["b"], approximate=False)
        return h @ p["head"]["w"] + p["head"]["b"]

    def mlp_fn_tanh(p, x):
        h = jax.nn.gelu(x @ p["hidden"]["w"] + p["hidden"]["b"])  # the tanh form
        return h @ p["head"]["w"] + p["head"]["b"]

    def embed(p, x):
        """docs/porting.md's table lookup, which no layer of xgrad reads."""
        idx = jnp.clip(jnp.round(jnp.abs(x[:, 0])).astype(jnp.int32), 0, 9)
        return p["table"][idx] * x[:, 1:2] + x @ p["w"]

    def embed_slip(p, x):
        idx = jnp.clip(jnp.round(jnp.abs(x[:, 0])).astype(jnp.int32), 0, 9)
        return p["table"][idx] * x[:, 0:1] + x @ p["w"]  # the one-character slip


if "tensorflow" in INSTALLED:
    import keras

    def norm_mlp_keras(eps: float, shape: tuple[int, ...]):
        """A Functional port of ``NormMLP`` with layer names of its own."""
        inputs = keras.Input(shape)
        h = keras.layers.ReLU(name="relu")(keras.layers.Dense(HIDDEN, name="hidden")(inputs))
        h = keras.layers.LayerNormalization(epsilon=eps, name="ln")(h)
        return keras.Model(inputs, keras.layers.Dense(OUT, name="head")(h))

    class TrainingBatchNorm(keras.Model):
        """A subclassed model whose ``call`` runs its BatchNorm in training mode."""

        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(HIDDEN)
            self.bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
            self.out = keras.layers.Dense(OUT)

        def call(self, x):
            return self.out(keras.ops.relu(self.bn(self.fc(x), training=True)))

    def training_batchnorm_keras(momentum: float):
        inputs = keras.Input((D,))
        h = keras.layers.Dense(HIDDEN, name="fc")(inputs)
        bn = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-3, name="bn")
        h = keras.layers.ReLU()(bn(h, training=True))
        return keras.Model(inputs, keras.layers.Dense(OUT, name="out")(h))


def _torch(cls, **kwargs):
    torch.manual_seed(0)
    return cls(**kwargs)


def _x(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _first(report) -> dict:
    assert not report.ok, report.summary()
    first = report.first_divergence
    assert first is not None, report.summary()
    return first


LAYERS = {"fc1": "hidden", "fc2": "head"}
VECTORS, TOKENS = (4, D), (4, 3, D)


# -- 5. mapping= with a real mismatch -----------------------------------------------------------


def test_mapping_on_torch_and_nnx_read_layer_by_layer():
    x = _x(*VECTORS)
    port = GeluMLPPort(rngs=nnx.Rngs(0))
    assert xgrad.compare_models(_torch(GeluMLP), port, x, mapping=LAYERS).ok
    bug = GeluMLPPort(approximate=True, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(GeluMLP), bug, x, mapping=LAYERS)
    first = _first(report)
    assert first["names"] == {"reference": "fc1", "flax.nnx": "hidden"}
    assert report.diagnoses[0].cause == "gelu-approximation"


def test_mapping_on_torch_and_nnx_read_module_by_module():
    x = _x(*TOKENS)
    port = GeluMLPPort(rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(GeluMLP), port, x, mapping=LAYERS)
    assert report.ok, report.summary()
    assert {tuple(e.names.values()) for e in report.layers} >= {("fc1", "hidden"), ("fc2", "head")}
    bug = GeluMLPPort(approximate=True, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(GeluMLP), bug, x, mapping=LAYERS)
    first = _first(report)
    assert "between fc1 and fc2" in first["detail"] and "act (GELU)" in first["detail"]
    assert report.diagnoses[0].cause == "gelu-approximation"
    params = {"fc1.weight": "hidden/kernel", "fc1.bias": "hidden/bias"}
    params |= {"fc2.weight": "head/kernel", "fc2.bias": "head/bias"}
    report = xgrad.compare_models(_torch(GeluMLP), bug, x, mapping=params)
    assert not report.ok and report.diagnoses[0].cause == "gelu-approximation"


@needs_keras
@pytest.mark.parametrize("shape", [VECTORS, TOKENS], ids=["layers", "modules"])
def test_mapping_on_torch_and_keras_both_ways(shape):
    x = _x(*shape)
    mapping = {"fc1": "hidden", "norm": "ln", "fc2": "head"}
    report = xgrad.compare_models(
        _torch(NormMLP), norm_mlp_keras(1e-5, shape[1:]), x, mapping=mapping
    )
    assert report.ok, report.summary()
    bug = norm_mlp_keras(1e-3, shape[1:])  # Keras' default epsilon
    report = xgrad.compare_models(_torch(NormMLP), bug, x, mapping=mapping)
    first = _first(report)
    assert first["names"] == {"reference": "norm", "tensorflow": "ln"}
    assert report.diagnoses[0].cause == "layernorm-epsilon"
    inverse = {v: k for k, v in mapping.items()}
    report = xgrad.compare_models(bug, _torch(NormMLP), x, mapping=inverse)
    assert _first(report)["names"] == {"reference": "ln", "torch": "norm"}
    assert report.diagnoses[0].cause == "layernorm-epsilon"


def _jax_params():
    rng = np.random.default_rng(1)
    return {
        "hidden": {
            "w": jnp.asarray(rng.normal(size=(D, HIDDEN)), jnp.float32),
            "b": jnp.zeros(HIDDEN),
        },
        "head": {
            "w": jnp.asarray(rng.normal(size=(HIDDEN, OUT)), jnp.float32),
            "b": jnp.zeros(OUT),
        },
    }


def test_mapping_on_pure_jax_functions_by_layer_and_by_parameter():
    x, p = _x(*VECTORS), _jax_params()
    layers = {"hidden": "hidden", "head": "head"}
    assert xgrad.compare_models((mlp_fn, p), (mlp_fn, p), x, mapping=layers).ok
    report = xgrad.compare_models((mlp_fn, p), (mlp_fn_tanh, p), x, mapping=layers)
    assert _first(report)["names"] == {"reference": "hidden", "jax": "hidden"}
    assert report.diagnoses[0].cause == "gelu-approximation"
    params = {f"{k}/{w}": f"{k}/{w}" for k in ("hidden", "head") for w in ("w", "b")}
    report = xgrad.compare_models((mlp_fn, p), (mlp_fn_tanh, p), x, mapping=params)
    assert not report.ok and "per-layer localisation unavailable" in report.notes


def test_a_parameter_mapping_of_functions_without_layers_reports_a_mismatch():
    # issue 20: any real mismatch raised SpecError: a model needs at least one layer
    rng = np.random.default_rng(3)
    weights = {
        "table": jnp.asarray(rng.standard_normal((10, 3)), jnp.float32),
        "w": jnp.asarray(rng.standard_normal((2, 3)), jnp.float32),
    }
    ids = rng.standard_normal((4, 2)).astype(np.float32)
    mapping = {"table": "table", "w": "w"}
    report = xgrad.compare_models((embed, weights), (embed_slip, weights), ids, mapping=mapping)
    assert not report.ok and report.layers == ()
    assert "per-layer localisation unavailable" in report.notes
    with pytest.raises(AlignmentError, match=r"candidate parameter 'tabel'.*'table', 'w'"):
        xgrad.compare_models((embed, weights), (embed, weights), ids, mapping={"table": "tabel"})


@pytest.mark.parametrize("shape", [VECTORS, TOKENS], ids=["layers", "modules"])
def test_a_mapping_naming_what_does_not_exist_lists_the_names(shape):
    x = _x(*shape)
    port = GeluMLPPort(rngs=nnx.Rngs(0))
    typo = {"fc1": "hiden", "fc2": "head"}
    with pytest.raises(AlignmentError, match=r"candidate (layer )?'hiden'.*'hidden', 'head'"):
        xgrad.compare_models(_torch(GeluMLP), port, x, mapping=typo)
    with pytest.raises(AlignmentError, match=r"reference (layer )?'fc3'.*'fc1'"):
        xgrad.compare_models(_torch(GeluMLP), port, x, mapping={"fc3": "hidden", "fc2": "head"})
    with pytest.raises(
        AlignmentError, match=r"candidate (parameter )?'hidden/kernal'.*'hidden/kernel'"
    ):
        xgrad.compare_models(_torch(GeluMLP), port, x, mapping={"fc1.weight": "hidden/kernal"})


# -- 6. the crashes issue 20 lists ----------------------------------------------------------------


def _two_inputs(kind: str, batch: int = 5):
    x1, x2 = _x(batch, 6, seed=1), _x(batch, 4, seed=2)
    return {"tuple": (x1, x2), "list": [x1, x2], "dict": {"x1": x1, "x2": x2}}[kind]


@pytest.mark.parametrize("kind", ["tuple", "list", "dict"])
def test_two_inputs_as_users_pass_them(kind):
    x = _two_inputs(kind)
    report = xgrad.compare_models(_torch(TwoInputs), TwoInputsPort(rngs=nnx.Rngs(0)), x)
    assert report.ok, report.summary()
    names = ("input.x1", "input.x2") if kind == "dict" else ("input.0", "input.1")
    assert (report.input.name, *(e.name for e in report.inputs)) == names  # one entry each
    bug = TwoInputsPort(swapped=True, rngs=nnx.Rngs(0))
    first = _first(xgrad.compare_models(_torch(TwoInputs), bug, x))
    assert first["path"] == "" and "between a and b" in first["detail"]


def test_two_inputs_of_other_batch_sizes_are_an_input_error():
    x1, x2 = _x(5, 6), _x(4, 4)
    with pytest.raises(InputError, match=r"batch sizes differ \(input.0 5, input.1 4\)"):
        xgrad.compare_models(_torch(TwoInputs), TwoInputsPort(rngs=nnx.Rngs(0)), (x1, x2))


def test_an_lstm_returning_a_tuple_is_compared_module_by_module():
    x = _x(3, 5, 4)
    torch.manual_seed(1)
    port = LastStep()  # other weights: the reference's are copied in
    report = xgrad.compare_models(_torch(LastStep), port, x)
    assert report.ok, report.summary()
    assert [e.names["torch"] for e in report.layers] == ["lstm", "head", "LastStep"]
    first = _first(xgrad.compare_models(_torch(LastStep), _torch(FirstStep), x))
    assert first["path"] == "" and "between lstm and head" in first["detail"]


def test_a_linen_port_with_an_active_dropout_gets_random_keys_not_a_shape_refusal():
    x = _x(4, D)
    module = LinenDropMLP()
    variables = module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x)
    report = xgrad.compare_models((module, variables), (module, variables), x)
    assert report.ok, report.summary()
    assert not any("transposed kernel" in note for note in report.notes)
    assert any("draws random numbers" in note for note in report.notes)
    assert any("jax.random.key(0)" in note for note in report.notes)
    keyed = {"rngs": {"dropout": jax.random.key(5)}}  # another key, as the note says
    report = xgrad.compare_models((module, variables), (module, variables), x, apply_kwargs=keyed)
    assert report.ok, report.summary()
    reference = _torch(DropMLP).eval()
    report = xgrad.compare_models(reference, (module, variables), x)
    first = _first(report)
    assert first["names"] == {"reference": "drop", "flax.linen": "Dropout_0"}
    assert report.diagnoses[0].cause == "dropout-active"


@needs_keras
def test_keras_training_true_in_call_is_respected_and_the_model_left_as_it_was():
    x = _x(6, D)
    reference = TrainingBatchNorm()
    reference(x)
    before = [np.array(v.numpy()) for v in reference.weights]
    port = BatchNormMLPPort(rngs=nnx.Rngs(0))
    port.train()
    report = xgrad.compare_models(reference, port, x)
    assert report.ok, report.summary()
    assert any("training=True in call()" in note for note in report.notes)
    for old, var in zip(before, reference.weights, strict=True):
        np.testing.assert_array_equal(var.numpy(), old)
    assert not any(d.cause == "batchnorm-mode" for d in report.diagnoses)


@needs_keras
def test_a_momentum_slip_in_a_training_batchnorm_is_not_called_its_mode():
    x = _x(6, D)
    reference = TrainingBatchNorm()
    reference(x)
    assert xgrad.compare_models(reference, training_batchnorm_keras(0.9), x).ok
    report = xgrad.compare_models(reference, training_batchnorm_keras(0.99), x)
    assert not report.ok
    causes = [d.cause for d in report.diagnoses]
    assert causes[0] == "batchnorm-momentum" and "batchnorm-mode" not in causes
    assert report.diagnoses[0].layer == "bn"


def test_errors_show_the_users_batch_and_no_fx_dump():
    x = _x(3, 6)
    with pytest.raises(InputError) as err:
        xgrad.compare_models(_torch(ViewError), _torch(ViewError), x)
    text = str(err.value)
    assert "(3, 6)" in text and "(5, " not in text
    assert "fx" not in text and "Original traceback" not in text
    with pytest.raises(InputError, match=r"\(3, 6\).*module 'fc1' \(Linear\)") as err:
        xgrad.compare_models(_torch(GeluMLP), GeluMLPPort(rngs=nnx.Rngs(0)), x)
    assert "(5, " not in str(err.value)
