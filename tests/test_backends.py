"""One .keras file under Keras' own backends (xgrad.backends, ``xgrad backends``).

The reference is xgrad's float64 NumPy model of the file's layers, computed independently of
every Keras backend; each backend runs in its own process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad import backends as backends_module
from xgrad.cli import main

pytestmark = pytest.mark.skipif(
    not {"tensorflow", "jax", "torch"} <= INSTALLED, reason="needs Keras with jax and torch"
)


def _model(gelu=None):
    """A functional Keras model written the way Keras' guides write one: a Dense block with
    a residual connection, BatchNormalization, LayerNormalization, Dropout."""
    import keras

    rng = np.random.default_rng(7)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation=gelu or "gelu")(inputs)
    r = keras.layers.Dense(8, activation="tanh")(h)
    h = keras.layers.Add()([h, r])
    bn = keras.layers.BatchNormalization()
    h = bn(h)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.Dropout(0.3)(h)
    outputs = keras.layers.Dense(3)(h)
    model = keras.Model(inputs, outputs)
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma, beta, rng.normal(size=8) * 0.3, rng.uniform(0.5, 2.0, size=8)])
    return model


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("backends") / "block.keras"
    _model().save(path)
    return path


def test_three_backends_agree_with_the_float64_reference(keras_file, tmp_path):
    out = tmp_path / "r.json"
    code = main(["backends", str(keras_file), "--json", str(out), "--quiet", "--batch", "5"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["ok"] and data["reference"] == {"framework": "numpy", "dtype": "float64"}
    assert data["frameworks"] == ["keras[tensorflow]", "keras[jax]", "keras[torch]"]
    kernel = next(e for e in data["parameters"] if e["name"] == "layers.0.kernel")
    assert set(kernel["results"]) == set(data["frameworks"])
    assert kernel["native"]["keras[jax]"].endswith("/kernel")  # Keras' variable path
    for entry in data["parameters"]:
        for result in entry["results"].values():
            assert result["status"] == "match" and result["rel_norm"] < 1e-5
    # every layer's output and dL/d output were compared, the residual block's inner one too
    paths = {layer["path"] for layer in data["layers"]}
    assert {"layers.0", "layers.1", "layers.1.layers.0", "layers.2", "layers.5"} <= paths
    assert data["models"]["keras[torch]"]["versions"]["torch"].startswith("2.")


def test_a_backend_that_computes_otherwise_is_named_at_its_layer(keras_file, monkeypatch):
    """A stand-in backend computing GELU in its tanh form (evaluated here, in TensorFlow):
    the report fails at layers.0 and the diagnosis names the cause."""
    import keras

    source = xgrad.read_model(keras.saving.load_model(keras_file, safe_mode=True))
    tanh_form = xgrad.read_model(_model(gelu=lambda v: keras.activations.gelu(v, True)))
    tanh_form = tanh_form.with_weights(source.weights())

    def fake(names, model_file, src, plan, inputs, dtypes, timeout):
        grads = tanh_form.evaluate(inputs.x, inputs.y, loss=inputs.loss, capture=True)
        return {"jax": (grads, {"seconds": 0.0, "versions": {}})}

    monkeypatch.setattr(backends_module, "_evaluate_all", fake)
    report = xgrad.compare_backends(keras_file, "jax", batch=16)
    assert not report.ok
    assert report.first_divergence["path"] == "layers.0"
    confirmed = [(d.cause, d.layer) for d in report.diagnoses if d.confirmed]
    assert ("gelu-approximation", "layers.0") in confirmed, report.to_text()


def test_bad_backends_and_failures_are_clear_errors(keras_file, monkeypatch, capsys):
    with pytest.raises(xgrad.InputError, match="choose from tensorflow, jax, torch"):
        xgrad.compare_backends(keras_file, "jax,mxnet")
    with pytest.raises(xgrad.InputError, match="name one twice"):
        xgrad.compare_backends(keras_file, ["jax", "jax"])
    with pytest.raises(xgrad.InputError, match="batch must be a positive integer"):
        xgrad.compare_backends(keras_file, "jax", batch=0)
    with pytest.raises(xgrad.FrameworkError, match="took longer than the timeout"):
        xgrad.compare_backends(keras_file, "jax", timeout=0.01)
    monkeypatch.setattr(backends_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(xgrad.FrameworkError, match=r"pip install 'xgrad\[torch\]'"):
        xgrad.compare_backends(keras_file, "torch")
    assert main(["backends", str(keras_file), "--backends", "torch"]) == 2
    assert "needs torch, which is not installed" in capsys.readouterr().err


@pytest.mark.exhaustive
def test_a_keras_applications_mobilenet_agrees_across_the_three_backends(tmp_path):
    """issue 22: a keras.applications model built with weights=None (52 convs, depthwise
    convs with stride-2 'same' padding folded into ZeroPadding, 52 BatchNorms, 10 residual
    blocks) is read as xgrad's layers and replayed on each Keras backend against the float64
    NumPy reference. About 1-3 minutes, hence make fuzz only."""
    import keras

    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10
    )
    path = tmp_path / "mobilenet.keras"
    model.save(path)
    out = tmp_path / "r.json"
    code = main(["backends", str(path), "--json", str(out), "--quiet", "--batch", "2"])
    data = json.loads(out.read_text())
    assert code == 0 and data["ok"], data.get("summary")
    assert data["frameworks"] == ["keras[tensorflow]", "keras[jax]", "keras[torch]"]
    convs = [e for e in data["parameters"] if e["name"].endswith(".kernel")]
    assert len(convs) >= 50
