"""The command line: exit codes 0/1/2, one-line errors, outputs, lazy framework imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import INSTALLED

from xgrad.cli import main

needs_jax = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == "xgrad 0.2.0"


def test_compare_match_exits_0_and_prints_the_table(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "compare",
        "--input-dim",
        "10",
        "--layers",
        "8:relu,5:sigmoid",
        "--batch",
        "2",
        "--frameworks",
        "numpy",
        "--json",
        str(tmp_path / "r.json"),
        "--markdown",
        str(tmp_path / "r.md"),
        "--plot",
        str(tmp_path / "r.png"),
    )
    assert code == 0, err
    assert "dL/d layers.0.kernel" in out and "OK: every gradient matches" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["ok"] is True and data["model"] == "10 -> 8:relu -> 5:sigmoid"
    assert (tmp_path / "r.md").read_text().startswith("model 10 -> 8:relu")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_mismatch_exits_1(capsys):
    code, out, _ = run(
        capsys,
        "compare",
        "--input-dim",
        "4",
        "--layers",
        "3:tanh",
        "--frameworks",
        "numpy",
        "--rtol",
        "1e-12",
    )
    assert code == 1
    assert "MISMATCH" in out


def test_compare_nonfinite_exits_1(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.full((1, 2), 1e20))
    code, out, _ = run(
        capsys,
        "compare",
        "--layers",
        "2",
        "--input",
        str(tmp_path / "x.npy"),
        "--loss",
        "mse",
        "--frameworks",
        "numpy",
        "--quiet",
    )
    assert code == 1
    assert "MISMATCH" in out


def test_quiet_prints_the_notes_its_verdict_refers_to(capsys, tmp_path):
    import xgrad

    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec, seed=3)
    x = np.random.default_rng(0).normal(size=(5, 3))
    # one pre-activation 3e-9 above relu's kink: float32 rounds it to the other side, which
    # the report explains in a note and the verdict refers to
    params["layers.0.bias"][0] = 3e-9 - x[0] @ params["layers.0.kernel"][:, 0]
    np.save(tmp_path / "x.npy", x)
    xgrad.save_params(tmp_path / "p.npz", params)
    argv = ["compare", "--layers", "4:relu,2", "--input", str(tmp_path / "x.npy")]
    argv += ["--params", str(tmp_path / "p.npz"), "--frameworks", "numpy", "--quiet"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "see the notes" in out.splitlines()[-1]
    text = " ".join(out.split())
    assert "note: numpy: 1 pre-activation(s) rounded to the other side of a kink" in text
    assert "'match-kink' (they pass)" in text
    assert "dL/d layers.0.kernel" not in out  # still quiet: no table


def test_an_80_column_terminal_gets_every_number_whole(capsys, tmp_path, monkeypatch):
    import re

    from xgrad.report.format import fmt

    for name, value in {"TTY_COMPATIBLE": "1", "COLUMNS": "80", "NO_COLOR": "1"}.items():
        monkeypatch.setenv(name, value)  # a terminal 80 columns wide
    argv = ["compare", "--input-dim", "4", "--layers", "8:relu,3:tanh", "--frameworks", "numpy"]
    code, out, err = run(capsys, *argv, "--rtol", "1e-12", "--json", str(tmp_path / "r.json"))
    assert code == 1, err
    text = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80
    assert "…" not in text
    data = json.loads((tmp_path / "r.json").read_text())
    for entry in [*data["parameters"], data["input"], data["output"]]:
        for result in entry["results"].values():
            assert f" {fmt(result['rel_norm'])} " in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["compare", "--layers", "8"],
            "--input-dim is required unless --input gives a batch of inputs",
        ),
        (["compare", "--input-dim", "3", "--layers", "8:relux"], "unknown activation 'relux'"),
        (
            ["compare", "--input-dim", "3", "--layers", "x:relu"],
            "layer 'x:relu' is neither UNITS[:ACTIVATION], an activation name nor a layer kind",
        ),
        (["compare", "--input-dim", "3", "--layers", "8,,2"], "an empty layer item"),
        (
            ["compare", "--input-dim", "3", "--layers", "2", "--frameworks", "numpy,mxnet"],
            "unknown framework 'mxnet'",
        ),
        (
            ["compare", "--input-dim", "3", "--layers", "2", "--batch", "x"],
            "argument --batch: invalid int value: 'x'",
        ),
        (
            ["compare", "--input-dim", "3", "--layers", "2", "--batch", "0"],
            "--batch must be a positive integer, got 0",
        ),
        (
            ["compare", "--input-dim", "3", "--layers", "2", "--dtype", "float8"],
            "argument --dtype: invalid choice: 'float8'",
        ),
        (
            ["compare", "--input-dim", "3", "--layers", "2", "--json", "/nonexistent/r.json"],
            "folder '/nonexistent' does not exist",
        ),
        (["sweep", "--activations", "relu", "--losses", "hinge"], "unknown loss 'hinge'"),
        (["sweep", "--batch-sizes", "1,b"], "--batch-sizes takes comma-separated integers"),
        (["nosuch"], "invalid choice: 'nosuch'"),
    ],
)
def test_bad_usage_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message in lines[0]


def test_conflicting_flags_exit_2(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 4)))
    np.save(tmp_path / "cot.npy", np.ones((3, 2)))
    base = ["compare", "--layers", "2", "--frameworks", "numpy"]
    for extra, message in [
        (["--input", str(tmp_path / "x.npy"), "--batch", "3"], "conflicting flags: --batch and"),
        (
            ["--input", str(tmp_path / "x.npy"), "--input-dim", "5"],
            "conflicting flags: --input-dim 5 but the input file has examples of shape (4,)",
        ),
        (
            ["--input-dim", "4", "--cotangent", str(tmp_path / "cot.npy"), "--loss", "mse"],
            "conflicting flags: --cotangent and --loss",
        ),
        (
            ["--input-dim", "4", "--targets", str(tmp_path / "x.npy")],
            "conflicting flags: --targets with --loss sum",
        ),
    ]:
        code, _, err = run(capsys, *base, *extra)
        assert code == 2 and message in err, err


def test_input_file_npz_with_targets(capsys, tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.normal(size=(5, 3)), y=np.array([0, 1, 1, 0, 1]))
    code, out, err = run(
        capsys,
        "compare",
        "--layers",
        "4:tanh,2:softmax",
        "--loss",
        "cce",
        "--input",
        str(tmp_path / "data.npz"),
        "--frameworks",
        "numpy",
        "--quiet",
    )
    assert code == 0, err
    np.savez(tmp_path / "bad.npz", x=rng.normal(size=(5, 3)), y=np.array([0, 1, 2, 0, 1]))
    code, _, err = run(
        capsys,
        "compare",
        "--layers",
        "4:tanh,2:softmax",
        "--loss",
        "cce",
        "--input",
        str(tmp_path / "bad.npz"),
        "--frameworks",
        "numpy",
    )
    assert code == 2 and "class label 2 at position 2 is out of range" in err


def test_cotangent_file(capsys, tmp_path):
    np.save(tmp_path / "cot.npy", np.ones((2, 3)))
    code, out, err = run(
        capsys,
        "compare",
        "--input-dim",
        "4",
        "--layers",
        "3:tanh",
        "--cotangent",
        str(tmp_path / "cot.npy"),
        "--frameworks",
        "numpy",
    )
    assert code == 0, err
    assert "given cotangent" in out


def test_examples_runs_the_three_seed_examples(capsys, tmp_path):
    code, out, err = run(
        capsys, "examples", "--frameworks", "numpy", "--json", str(tmp_path / "ex.json")
    )
    assert code == 0, err
    for title in ("Example 1", "Example 2", "Example 3"):
        assert title in out
    data = json.loads((tmp_path / "ex.json").read_text())
    assert [r["model"] for r in data["reports"]] == [
        "3 -> 4:sigmoid",
        "5 -> 3:relu",
        "10 -> 8:relu -> 5:sigmoid",
    ]


def test_sweep_grid_from_flags_and_toml(capsys, tmp_path):
    (tmp_path / "grid.toml").write_text(
        'activations = ["relu", "gelu"]\nlosses = ["sum", "bce"]\ndtypes = ["float64"]\n'
        "batch_sizes = [2]\nseeds = [0, 1]\nhidden = [5]\n"
    )
    code, out, err = run(
        capsys,
        "sweep",
        "--config",
        str(tmp_path / "grid.toml"),
        "--frameworks",
        "numpy",
        "--no-progress",
        "--json",
        str(tmp_path / "s.json"),
    )
    assert code == 0, err
    data = json.loads((tmp_path / "s.json").read_text())
    assert len(data["cells"]) == 2 * 2 * 1 * 1 * 2
    assert {c["activation"] for c in data["cells"]} == {"relu", "gelu"}
    assert "OK: every cell matches" in out
    code, out, _ = run(
        capsys,
        "sweep",
        "--config",
        str(tmp_path / "grid.toml"),
        "--frameworks",
        "numpy",
        "--no-progress",
        "--rtol",
        "1e-12",
        "--activations",
        "tanh",
        "--dtypes",
        "float32",
    )
    assert code == 1 and "MISMATCH" in out and "tanh" in out


def test_sweep_rejects_unknown_toml_keys(capsys, tmp_path):
    (tmp_path / "grid.toml").write_text('activation = ["relu"]\n')
    code, _, err = run(capsys, "sweep", "--config", str(tmp_path / "grid.toml"))
    assert code == 2 and "unknown sweep setting(s) ['activation']" in err


@pytest.mark.parametrize("flag", ["--activations", "--frameworks", "--seeds", "--batch-sizes"])
def test_sweep_refuses_an_empty_flag_instead_of_running_the_default_axis(capsys, flag):
    # "--activations $ACTS" with ACTS unset must not turn a small grid into the full one
    argv = {"--activations": "relu", "--losses": "sum", "--dtypes": "float32",
            "--batch-sizes": "2", "--frameworks": "numpy", "--seeds": "0"}  # fmt: skip
    argv[flag] = ""
    code, _, err = run(capsys, "sweep", "--quiet", *[a for kv in argv.items() for a in kv])
    assert code == 2 and "is empty" in err, err


def _run_cli_in_subprocess(*argv):
    code = (
        "import sys\nfrom xgrad.cli import main\nrc = main(sys.argv[1:])\n"
        "print('IMPORTED', ','.join(m for m in ('tensorflow', 'jax', 'flax') "
        "if m in sys.modules))\nsys.exit(rc)"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300
    )


@needs_jax
def test_only_the_frameworks_asked_for_are_imported():
    result = _run_cli_in_subprocess(
        "compare",
        "--input-dim",
        "10",
        "--layers",
        "8:relu,5:sigmoid",
        "--frameworks",
        "numpy,jax",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    imported = result.stdout.strip().splitlines()[-1]
    assert imported == "IMPORTED jax"


@needs_jax
def test_json_is_identical_across_processes(tmp_path):
    def once(name):
        path = tmp_path / name
        result = _run_cli_in_subprocess(
            "compare",
            "--input-dim",
            "6",
            "--layers",
            "5:gelu,3:softmax",
            "--loss",
            "cce",
            "--frameworks",
            "numpy,jax",
            "--json",
            str(path),
            "--quiet",
        )
        assert result.returncode == 0, result.stderr
        data = json.loads(path.read_text())
        data.pop("timing")
        return json.dumps(data, sort_keys=True)

    assert once("a.json") == once("b.json")


def test_python_dash_m_xgrad():
    result = subprocess.run(
        [sys.executable, "-m", "xgrad", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stdout.strip() == "xgrad 0.2.0"


needs_all = pytest.mark.skipif(
    {"jax", "flax", "tensorflow"} - INSTALLED, reason="port needs jax, flax and tensorflow"
)


def _save_keras(path, *, lam=False):
    import keras

    import xgrad.frameworks.tensorflow.ops  # noqa: F401 - quiet TensorFlow import

    layers = [keras.Input((5,))]
    if lam:
        layers.append(keras.layers.Lambda(lambda t: t * 2))
    layers += [
        keras.layers.Dense(
            6,
            activation="relu",
            name="hidden",
            kernel_initializer=keras.initializers.GlorotUniform(seed=1),
        ),
        keras.layers.Dropout(0.2),
        keras.layers.Dense(
            3, activation="softmax", kernel_initializer=keras.initializers.GlorotUniform(seed=2)
        ),
    ]
    keras.Sequential(layers, name="m").save(path)
    return path


@needs_all
@pytest.mark.parametrize("to", ["flax", "jax", "tensorflow", "numpy"])
def test_port_converts_verifies_and_writes(capsys, tmp_path, to):
    import xgrad

    model = _save_keras(tmp_path / "m.keras")
    out = tmp_path / "p.safetensors"
    code, text, err = run(
        capsys,
        "port",
        str(model),
        "--to",
        to,
        "--out",
        str(out),
        "--json",
        str(tmp_path / "r.json"),
    )
    assert code == 0, err
    assert "round trip bit-exact" in text and "OK: every gradient matches" in text
    params = xgrad.load_params(out)
    # the Dropout between them is layer 1: canonical names follow the model's own layers
    assert list(params) == ["layers.0.kernel", "layers.0.bias", "layers.2.kernel", "layers.2.bias"]
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["parameters"][0]["native"]["reference"].endswith("hidden/kernel")
    assert len(data["layers"]) == 2 and data["first_divergence"] is None


@needs_all
def test_port_refuses_code_and_broken_files(capsys, tmp_path):
    lam = _save_keras(tmp_path / "lam.keras", lam=True)
    code, _, err = run(capsys, "port", str(lam), "--to", "flax", "--out", str(tmp_path / "p.npz"))
    assert code == 2 and "was refused: it holds code" in err
    assert not (tmp_path / "p.npz").exists()
    good = _save_keras(tmp_path / "m.keras")
    (tmp_path / "cut.keras").write_bytes(good.read_bytes()[:200])
    code, _, err = run(
        capsys,
        "port",
        str(tmp_path / "cut.keras"),
        "--to",
        "flax",
        "--out",
        str(tmp_path / "p.npz"),
    )
    assert code == 2 and "is not a .keras archive" in err
    code, _, err = run(capsys, "port", str(good), "--to", "flax", "--out", str(tmp_path / "p.txt"))
    assert code == 2 and "must end in .npz or .safetensors" in err
    code, _, err = run(capsys, "port", str(good), "--to", "mxnet", "--out", str(tmp_path / "p.npz"))
    assert code == 2 and "--to 'mxnet': choose one of" in err
    code, _, err = run(
        capsys, "port", str(good), "--to", "flax.linen", "--out", str(tmp_path / "linen.npz")
    )
    assert code == 2 and "choose one of numpy, jax, flax, tensorflow, torch" in err
    assert not (tmp_path / "linen.npz").exists()  # refused before anything is written


@needs_all
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_port_to_torch_writes_a_state_dict_torch_loads(capsys, tmp_path, suffix):
    """The file is checked with torch's own loading, independently of xgrad: a module
    written the PyTorch way loads it strictly and computes the Keras model's output."""
    import keras
    import torch

    model = _save_keras(tmp_path / "m.keras")
    out = tmp_path / f"p{suffix}"
    code, text, err = run(capsys, "port", str(model), "--to", "torch", "--out", str(out))
    assert code == 0, err
    assert "a PyTorch state_dict); round trip bit-exact" in text
    if suffix == ".pt":
        state = torch.load(out, weights_only=True)
    else:
        import safetensors.torch

        state = safetensors.torch.load_file(out)
    module = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Linear(5, 6), torch.nn.ReLU()),
        torch.nn.Dropout(0.2),
        torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Softmax(dim=-1)),
    )
    module.load_state_dict(state, strict=True)
    module.eval()
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    expected = keras.saving.load_model(model, safe_mode=True)(x)
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), expected, rtol=1e-5)
    code, _, err = run(capsys, "port", str(model), "--to", "flax", "--out", str(tmp_path / "q.pt"))
    assert code == 2 and ".pt files are for --to torch" in err
