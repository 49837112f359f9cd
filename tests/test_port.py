"""xgrad.port: a .keras file ported through a weights file, and which files are whose."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.frameworks.registry import lookup_framework
from xgrad.params import FILE_SUFFIXES
from xgrad.port import is_native_weight_file, model_file_framework, port_model_file


@pytest.mark.parametrize(
    ("to", "name", "native"),
    [
        ("torch", "w.pt", True),
        ("torch", "w.PTH", True),
        ("torch", "w.safetensors", True),  # torch's own state_dict, not canonical names
        ("torch", "w.npz", False),
        ("flax", "w.safetensors", False),
        ("numpy", "w.npz", False),
    ],
)
def test_a_weights_file_is_the_frameworks_own_or_canonical(to, name, native):
    assert is_native_weight_file(to, name) is native


def test_other_weights_files_are_refused_with_the_allowed_suffixes():
    assert FILE_SUFFIXES == (".npz", ".safetensors")
    with pytest.raises(xgrad.InputError, match=re.escape("must end in .npz, .safetensors")):
        is_native_weight_file("flax", "w.pt")
    with pytest.raises(xgrad.InputError, match=re.escape("must end in .npz, .safetensors, .pt")):
        is_native_weight_file("torch", "w.txt")
    with pytest.raises(xgrad.FrameworkError, match="unknown framework 'mxnet'"):
        is_native_weight_file("mxnet", "w.npz")


def test_the_framework_of_a_model_file_is_asked_of_the_frameworks():
    assert model_file_framework(".keras").name == "tensorflow"
    assert model_file_framework(".KERAS").name == "tensorflow"
    with pytest.raises(xgrad.InputError, match=r"no framework reads '\.h5' model files"):
        model_file_framework(".h5")


def test_frameworks_without_files_of_their_own_say_so():
    flax = lookup_framework("flax")
    assert flax.native_files == () and flax.model_files == ()
    with pytest.raises(xgrad.FrameworkError, match="xgrad writes no flax weight files"):
        flax.write_native_file("w.bin", xgrad.MLP(2, [xgrad.Dense(1)]), {}, dtype="float32")
    with pytest.raises(xgrad.FrameworkError, match="xgrad reads no numpy model files"):
        lookup_framework("numpy").load_model_file("m.npz")


needs_keras = pytest.mark.skipif("tensorflow" not in INSTALLED, reason="needs tensorflow")


def _keras_file(path):
    from xgrad.frameworks.tensorflow.ops import keras

    keras.utils.set_random_seed(0)
    keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(6, activation="tanh", name="hidden"),
            keras.layers.Dense(3, name="head"),
        ]
    ).save(path)
    return str(path)


@needs_keras
def test_a_keras_file_ported_to_numpy_round_trips_and_matches(tmp_path):
    model = _keras_file(tmp_path / "m.keras")
    port = port_model_file(model, to="numpy", out=tmp_path / "w.npz", batch=3, seed=1)
    assert port.ok and port.round_trip and port.report.ok
    assert (port.count, port.kind) == (4, "canonical names")
    assert port.summary() == (
        f"weights written to {tmp_path / 'w.npz'} (4 arrays, canonical names); round trip bit-exact"
    )
    assert port.report.title == f"{model} -> numpy (w.npz)" and port.report.batch == 3
    written = xgrad.load_params(tmp_path / "w.npz")
    np.testing.assert_array_equal(written["layers.1.kernel"], port.candidate[1]["layers.1.kernel"])


@needs_keras
@pytest.mark.skipif("torch" not in INSTALLED, reason="needs torch")
def test_a_keras_file_ported_to_torch_writes_its_state_dict(tmp_path):
    model = _keras_file(tmp_path / "m.keras")
    port = port_model_file(model, to="torch", out=tmp_path / "w.pt")
    assert port.ok and (port.count, port.kind) == (4, "a PyTorch state_dict")
    assert sorted(xgrad.frameworks.torch.load_state_dict(tmp_path / "w.pt")) == sorted(
        port.candidate.state_dict()
    )


@needs_keras
def test_nothing_is_written_for_a_wrong_target_or_name(tmp_path):
    model = _keras_file(tmp_path / "m.keras")
    with pytest.raises(xgrad.FrameworkError, match="unknown framework 'flax.linen'"):
        port_model_file(model, to="flax.linen", out=tmp_path / "w.npz")
    with pytest.raises(xgrad.InputError, match="must end in"):
        port_model_file(model, to="numpy", out=tmp_path / "w.pt")
    with pytest.raises(xgrad.InputError, match="batch must be a positive integer, got 0"):
        port_model_file(model, to="numpy", out=tmp_path / "w.npz", batch=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
