"""``xgrad train-compare``: a .keras file or a built-in model against its port, exit 0/1/2."""

from __future__ import annotations

import json

import pytest
from conftest import INSTALLED

from xgrad.cli import main

KERAS_FLAX = pytest.mark.skipif(
    not {"tensorflow", "jax", "flax"} <= INSTALLED, reason="needs keras and flax"
)


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    import keras

    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(2, activation="tanh", kernel_initializer=keras.initializers.Ones()),
            keras.layers.Dense(2, kernel_initializer=keras.initializers.GlorotUniform(seed=1)),
        ]
    )  # seeded: whether a convention shows at float32 depends on the gradients
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    model.save(path)
    return str(path)


@KERAS_FLAX
def test_a_keras_file_and_its_flax_port_train_alike(keras_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["train-compare", keras_file, "--to", "flax", "--optimizer", "sgd:lr=0.1,momentum=0.9"]
    code = main([*args, "--steps", "3", "--quiet", "--json", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    lines = printed.out.strip().splitlines()
    assert lines[-1].startswith("OK: the weights stay within tolerance for 3 step(s)")
    # Keras' SGD holds lr * g in its velocity, optax multiplies by lr at the end: the same
    # arithmetic at a constant learning rate (float64 rounding apart), so not listed
    assert "momentum-convention" not in printed.out
    data = json.loads(out.read_text())
    assert data["schema"] == "xgrad.training/1" and data["ok"]
    assert data["sides"]["reference"]["optimizer"] == "keras SGD"


@KERAS_FLAX
def test_a_different_learning_rate_exits_1_and_is_named(keras_file, tmp_path, capsys):
    md = tmp_path / "r.md"
    code = main(
        [
            "train-compare",
            keras_file,
            "--to",
            "flax",
            "--optimizer",
            "sgd:lr=0.1",
            "--port-optimizer",
            "sgd:lr=0.2",
            "--steps",
            "2",
            "--quiet",
            "--markdown",
            str(md),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 1
    assert "confirmed cause: learning-rate: the candidate's learning rate is 0.2" in printed
    assert printed.strip().splitlines()[-1].startswith("MISMATCH: the runs part at step 1 of 2")
    assert md.read_text().startswith("## ")


@pytest.mark.skipif("torch" not in INSTALLED, reason="needs torch")
def test_a_built_in_model_against_torch(capsys):
    code = main(
        [
            "train-compare",
            "--layers",
            "2:tanh,2",
            "--input-dim",
            "2",
            "--to",
            "torch",
            "--optimizer",
            "adam:lr=0.01",
            "--dtype",
            "float64",
            "--steps",
            "3",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "worst weight" in printed and "OK: the weights stay within tolerance" in printed


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--layers", "2", "--input-dim", "2", "--to", "numpy", "--optimizer", "lbfgs"],
            "unknown optimizer 'lbfgs'",
        ),
        (
            ["--to", "numpy", "--optimizer", "sgd"],
            "give a MODEL.keras file, or --layers and --input-dim",
        ),
        (
            ["--layers", "2", "--input-dim", "2", "--to", "mxnet", "--optimizer", "sgd"],
            "unknown framework 'mxnet'",
        ),
        (
            [
                "--layers",
                "2",
                "--input-dim",
                "2",
                "--to",
                "numpy",
                "--optimizer",
                "sgd",
                "--steps",
                "0",
            ],
            "--steps must be a positive integer",
        ),
        (
            ["x.keras", "--layers", "2", "--to", "numpy", "--optimizer", "sgd"],
            "conflicting flags: MODEL.keras and --layers",
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, message, capsys):
    assert main(["train-compare", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
