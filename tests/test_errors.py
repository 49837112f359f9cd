"""The bad-input corpus: every listed mistake raises the right XgradError subclass, with a
message that names the offending value; the CLI turns each into one line and exit 2."""

from __future__ import annotations

import importlib.util
import re
import zipfile

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad import (
    AlignmentError,
    FrameworkError,
    FrameworkNotInstalledError,
    InputError,
    ModelFileError,
    OutputError,
    ParamsError,
    SpecError,
)

SPEC = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
X = np.ones((2, 3))
PARAMS = xgrad.init_params(SPEC)


def _compare(*args, **kwargs):
    kwargs.setdefault("frameworks", "numpy")
    return xgrad.compare(*args, **kwargs)


def _params(**changes):
    p = {k: v.copy() for k, v in PARAMS.items()}
    for k, v in changes.items():
        if v is None:
            del p[k]
        else:
            p[k] = v
    return p


# (id, callable, error class, text that must appear in the message)
CASES = [
    (
        "x-wrong-width",
        lambda: _compare(SPEC, np.ones((2, 5))),
        InputError,
        "x has shape (2, 5) but the model takes 3 input features",
    ),
    (
        "x-1d",
        lambda: _compare(SPEC, np.ones(3)),
        InputError,
        "x must be 2-D (batch, 3), got shape (3,); for one example write x[None]",
    ),
    (
        "x-empty-batch",
        lambda: _compare(SPEC, np.ones((0, 3))),
        InputError,
        "x has an empty batch (shape (0, 3))",
    ),
    (
        "x-integer",
        lambda: _compare(SPEC, np.ones((2, 3), dtype=np.int64)),
        InputError,
        "x has int64 dtype; pass floats",
    ),
    (
        "x-nan",
        lambda: _compare(SPEC, np.array([[1.0, np.nan, 0.0]])),
        InputError,
        "x contains 1 NaN/Inf value(s), the first at index (0, 1)",
    ),
    (
        "x-strings",
        lambda: _compare(SPEC, [["a", "b", "c"]]),
        InputError,
        "x must be an array of numbers",
    ),
    ("unknown-activation", lambda: xgrad.Dense(4, "rleu"), SpecError, "unknown activation 'rleu'"),
    (
        "leaky-slope-not-numeric",
        lambda: xgrad.Dense(4, "leaky_relu:fast"),
        SpecError,
        "leaky_relu slope must be a number, got 'fast'",
    ),
    ("units-zero", lambda: xgrad.Dense(0), SpecError, "got 0"),
    ("units-negative", lambda: xgrad.Dense(-3), SpecError, "got -3"),
    ("units-non-integer", lambda: xgrad.Dense(2.5), SpecError, "got float 2.5"),
    ("empty-layer-list", lambda: xgrad.MLP(3, []), SpecError, "got an empty list"),
    ("unknown-loss", lambda: _compare(SPEC, X, loss="hinge"), SpecError, "unknown loss 'hinge'"),
    (
        "y-missing-mse",
        lambda: _compare(SPEC, X, loss="mse"),
        InputError,
        "loss 'mse' needs targets y of shape (2, 2)",
    ),
    (
        "y-wrong-shape",
        lambda: _compare(SPEC, X, np.ones((2, 3)), loss="mse"),
        InputError,
        "targets y have shape (2, 3) but loss 'mse' needs shape (2, 2)",
    ),
    (
        "y-nan",
        lambda: _compare(SPEC, X, np.array([[0.0, np.inf], [1, 1]]), loss="mse"),
        InputError,
        "targets y contain 1 NaN/Inf value(s), the first at index (0, 1)",
    ),
    (
        "labels-out-of-range",
        lambda: _compare(SPEC, X, np.array([0, 2]), loss="cce_logits"),
        InputError,
        "class label 2 at position 1 is out of range for 2 output units",
    ),
    (
        "labels-not-integers",
        lambda: _compare(SPEC, X, np.array([0.5, 1.0]), loss="cce"),
        InputError,
        "class labels for loss 'cce' must be integers, got dtype float64",
    ),
    (
        "unknown-framework",
        lambda: _compare(SPEC, X, frameworks="mxnet"),
        FrameworkError,
        "unknown framework 'mxnet'; known frameworks: numpy, jax, flax, tensorflow, torch",
    ),
    (
        "params-missing-key",
        lambda: _compare(SPEC, X, params=_params(**{"layers.1.bias": None})),
        ParamsError,
        "missing ['layers.1.bias']",
    ),
    (
        "params-extra-key",
        lambda: _compare(SPEC, X, params=_params(**{"layers.2.kernel": np.ones((2, 2))})),
        ParamsError,
        "unexpected ['layers.2.kernel']",
    ),
    (
        "params-misshaped",
        lambda: _compare(SPEC, X, params=_params(**{"layers.0.kernel": np.ones((4, 3))})),
        ParamsError,
        "param 'layers.0.kernel' has shape (4, 3) but the spec needs (3, 4) "
        "(transposed? canonical kernels are (in, out))",
    ),
    (
        "params-wrong-dtype",
        lambda: _compare(SPEC, X, params=_params(**{"layers.0.bias": np.ones(4, int)})),
        ParamsError,
        "param 'layers.0.bias' has dtype int64; parameters must be floating point",
    ),
    (
        "params-nan",
        lambda: _compare(SPEC, X, params=_params(**{"layers.0.bias": np.array([0, np.nan, 0, 0])})),
        ParamsError,
        "param 'layers.0.bias' contains 1 NaN/Inf value(s), the first at index (1,)",
    ),
    (
        "params-not-a-mapping",
        lambda: _compare(SPEC, X, params=[1, 2]),
        ParamsError,
        "params must be a mapping of canonical names to arrays, got list",
    ),
    (
        "cotangent-wrong-shape",
        lambda: _compare(SPEC, X, cotangent=np.ones((2, 3))),
        InputError,
        "cotangent (grad_output) has shape (2, 3) but the model output has shape (2, 2)",
    ),
    (
        "dtype-unsupported",
        lambda: _compare(SPEC, X, dtype="float8"),
        InputError,
        "dtype 'float8' is not supported; use one of float32, float64, bfloat16, float16",
    ),
    (
        "dtype-not-in-a-framework",
        lambda: _compare(SPEC, X, dtype="bfloat16"),
        InputError,
        "dtype 'bfloat16' is not supported by numpy (which computes in float16, float32, "
        "float64); use another dtype",
    ),
    (
        "rtol-negative",
        lambda: _compare(SPEC, X, rtol=-1e-3),
        InputError,
        "rtol must be a positive finite number, got -0.001",
    ),
    (
        "model-not-a-spec",
        lambda: _compare("10 -> 8", X),
        InputError,
        "compare needs an xgrad.MLP spec as model, got str",
    ),
    (
        "adapter-class-not-instance",
        lambda: _compare(SPEC, X, frameworks=[xgrad.get_framework("numpy").__class__]),
        FrameworkError,
        "pass an instance: NumpyFramework()",
    ),
    (
        "compare-models-unknown-object",
        lambda: xgrad.compare_models(object(), object(), X),
        InputError,
        "cannot read a model of type object",
    ),
    (
        "mapping-unknown-layer",
        lambda: xgrad.compare_models(
            (SPEC, PARAMS),
            (SPEC, PARAMS),
            X,
            mapping={"layers.0": "layers.9", "layers.1": "layers.1"},
        ),
        AlignmentError,
        "mapping names candidate layer 'layers.9', which does not exist",
    ),
    (
        "mapping-not-a-dict",
        lambda: xgrad.compare_models((SPEC, PARAMS), (SPEC, PARAMS), X, mapping="by-name"),
        InputError,
        "mapping must be 'auto' or a non-empty dict of names, got 'by-name'",
    ),
    (
        "depth-differs",
        lambda: xgrad.compare_models(
            (SPEC, PARAMS),
            (xgrad.MLP(3, [xgrad.Dense(2)]), xgrad.init_params(xgrad.MLP(3, [xgrad.Dense(2)]))),
            X,
        ),
        AlignmentError,
        "the reference has 2 layers with weights",
    ),
    (
        "weights-wrong-suffix",
        lambda: xgrad.load_params("weights.pt"),
        ModelFileError,
        "unsupported weight file 'weights.pt': the name must end in .npz or .safetensors",
    ),
    (
        "weights-missing",
        lambda: xgrad.load_params("no/such/file.npz"),
        ModelFileError,
        "weight file 'no/such/file.npz' does not exist",
    ),
    (
        "output-folder-missing",
        lambda: xgrad.save_params("no/such/folder/p.npz", PARAMS),
        OutputError,
        "folder 'no/such/folder' does not exist; create it first",
    ),
    (
        "convert-unknown-target",
        lambda: xgrad.convert((SPEC, PARAMS), to="onnx"),
        InputError,
        "unknown conversion target 'onnx'; choose one of numpy, jax, flax",
    ),
    (
        "init-params-bad-seed",
        lambda: xgrad.init_params(SPEC, seed=-1),
        ParamsError,
        "seed must be a non-negative integer, got -1",
    ),
    (
        "compare-models-given-a-class",
        lambda: xgrad.compare_models(xgrad.MLP, (SPEC, PARAMS), X),
        InputError,
        "the reference is the class MLP, not a model: pass an instance (MLP(...))",
    ),
    (
        "get-adapter-not-a-string",
        lambda: xgrad.get_framework(3),
        FrameworkError,
        "a framework is a name or a framework object, got int 3",
    ),
]


@pytest.mark.parametrize(
    ("make", "error", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_corpus(make, error, text):
    with pytest.raises(error, match=re.escape(text)):
        make()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25


def test_framework_not_installed_names_the_extra(monkeypatch):
    real = importlib.util.find_spec

    def without_tensorflow(name, *args, **kwargs):
        return None if name == "tensorflow" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", without_tensorflow)
    with pytest.raises(
        FrameworkNotInstalledError,
        match=re.escape("install it with: pip install 'xgrad[tensorflow]'"),
    ):
        xgrad.get_framework("tensorflow")
    assert "tensorflow" not in xgrad.available_frameworks()


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_truncated_and_corrupted_weight_files(tmp_path, suffix):
    good = xgrad.save_params(tmp_path / f"good{suffix}", PARAMS)
    data = good.read_bytes()
    (tmp_path / f"cut{suffix}").write_bytes(data[: len(data) // 2])
    (tmp_path / f"junk{suffix}").write_bytes(b"\x00garbage" * 40)
    for name in ("cut", "junk"):
        with pytest.raises(ModelFileError, match=re.escape(f"{name}{suffix}")):
            xgrad.load_params(tmp_path / f"{name}{suffix}")


def test_pickled_npz_is_refused(tmp_path):
    np.savez(tmp_path / "obj.npz", a=np.array([{"code": 1}], dtype=object))
    with pytest.raises(ModelFileError, match="obj.npz"):
        xgrad.load_params(tmp_path / "obj.npz")


def test_npz_with_integer_arrays_is_refused(tmp_path):
    np.savez(tmp_path / "ints.npz", **{"layers.0.kernel": np.ones((2, 2), dtype=np.int32)})
    with pytest.raises(ModelFileError, match=re.escape("array 'layers.0.kernel' has dtype int32")):
        xgrad.load_params(tmp_path / "ints.npz")


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="tensorflow is not installed")
def test_keras_files_truncated_corrupted_or_holding_code(tmp_path):
    import keras

    import xgrad.frameworks.tensorflow.ops  # noqa: F401 - imports TensorFlow quietly
    from xgrad.frameworks.tensorflow import load_keras_file

    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Lambda(lambda t: t + 1), keras.layers.Dense(2)]
    )
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ModelFileError, match="was refused: it holds code"):
        load_keras_file(tmp_path / "lambda.keras")
    good = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    good.save(tmp_path / "good.keras")
    (tmp_path / "cut.keras").write_bytes((tmp_path / "good.keras").read_bytes()[:300])
    with pytest.raises(ModelFileError, match="is not a .keras archive"):
        load_keras_file(tmp_path / "cut.keras")
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as z:
        z.writestr("config.json", "{not json")
    with pytest.raises(ModelFileError, match="cannot load model file"):
        load_keras_file(tmp_path / "empty.keras")
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(ModelFileError, match="is a folder, not a .keras file"):
        load_keras_file(tmp_path / "folder.keras")


@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="tensorflow is not installed")
def test_a_keras_file_with_a_custom_layer_names_it(tmp_path):
    import keras

    from xgrad.frameworks.tensorflow import load_keras_file

    @keras.saving.register_keras_serializable(package="xgradtest")
    class Scale(keras.layers.Layer):
        def call(self, t):
            return t * 2.0

    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), Scale()]).save(tmp_path / "c.keras")
    del keras.saving.get_custom_objects()["xgradtest>Scale"]  # as in a process without its code
    with pytest.raises(ModelFileError, match="holds 'xgradtest>Scale', a layer or function of"):
        load_keras_file(tmp_path / "c.keras")


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
def test_a_jax_model_that_does_not_take_the_width_of_x():
    import jax.numpy as jnp

    def apply(p, x):
        return x @ p["w"]

    with pytest.raises(
        InputError,
        match=re.escape(
            "jax function apply does not run on inputs of shape (5,) (the shape of x's examples)"
        ),
    ):
        xgrad.compare_models((apply, {"w": jnp.ones((3, 2))}), (SPEC, PARAMS), np.ones((2, 5)))


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--input-dim", "3", "--layers", "4:rleu"],
        [
            "compare",
            "--input-dim",
            "3",
            "--layers",
            "4",
            "--loss",
            "mse",
            "--targets",
            "missing.npy",
        ],
        ["compare", "--input-dim", "3", "--layers", "4", "--params", "missing.npz"],
        ["compare", "--input-dim", "3", "--layers", "4", "--markdown", "/proc/no/x.md"],
        ["examples", "--frameworks", "mxnet"],
        ["sweep", "--config", "missing.toml"],
    ],
)
def test_cli_turns_every_error_into_one_line_and_exit_2(capsys, argv):
    from xgrad.cli import main

    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
