"""``xgrad port`` and ``xgrad.convert(to=... / into=...)`` on issue 22's kinds.

Three specs: images through Conv (strided "same", grouped), MaxPool, GroupNorm and
GlobalAvgPool; token ids through an LSTM and a GRU (reset_after=True); and a GRU with
reset_after=False then an LSTM. The expected arrays are the canonical weights the models were
built from, located in each native form by hand from each framework's documented names and
layouts (torch's conv ``(out, in/groups, kh, kw)``, nn.LSTM's transposed kernels with gates
``i, f, g, o`` and two biases, nn.GRU's gates ``r, z, n``; Flax's OptimizedLSTMCell
``dense_i``/``dense_h`` whose ``i, f, g, o`` split is read from flax/nnx/nn/recurrent.py;
Keras' variables in order), never through xgrad's own layout tables. The every-pair matrix is
``exhaustive``; make test runs one representative set.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad import (
    GRU,
    LSTM,
    MLP,
    Activation,
    Conv,
    Dense,
    Embedding,
    GlobalAvgPool,
    GroupNorm,
    MaxPool,
)
from xgrad.cli import main
from xgrad.port import port_model_file, sample_batch

pytestmark = pytest.mark.skipif("tensorflow" not in INSTALLED, reason="ports read .keras files")

SPECS = {
    "cnn": MLP(
        (12, 12, 3),
        [
            Conv(4, 3, strides=2, padding="same"),
            Activation("relu"),
            MaxPool(2),
            GroupNorm(2),
            Conv(6, 3, groups=2),
            GlobalAvgPool(),
            Dense(5),
        ],
    ),
    "rnn": MLP((6,), [Embedding(20, 8), LSTM(6, return_sequences=True), GRU(5), Dense(2)]),
    "gru0": MLP(
        (6,),
        [Embedding(20, 8), GRU(5, return_sequences=True, reset_after=False), LSTM(3), Dense(2)],
    ),
}
FRAMEWORKS = [f for f in ("numpy", "jax", "flax", "tensorflow", "torch") if f in INSTALLED]


def _weights(spec: MLP, seed: int) -> dict[str, np.ndarray]:
    """Random float32 values (as float64) for every weight, biases and scales included, so a
    gate block or bias row put in the wrong place cannot go unnoticed."""
    rng = np.random.default_rng(seed)
    return {
        k: (0.4 * rng.standard_normal(s)).astype(np.float32).astype(np.float64)
        for k, s in spec.weight_shapes().items()
    }


# -- each native form, by hand ----------------------------------------------------------------

_GRU_TORCH = [1, 0, 2]  # torch's gate blocks r, z, n are the canonical z, r, h blocks 1, 0, 2


def _gates(arr: np.ndarray, order, axis: int = 0) -> np.ndarray:
    blocks = np.split(arr, len(order), axis=axis)
    return np.concatenate([blocks[i] for i in order], axis=axis)


def _torch_state(spec: MLP, weights) -> dict[str, np.ndarray]:
    """The state_dict xgrad's torch model of ``spec`` holds, built by hand: nn.Sequential
    indices as module names, Dense as nn.Sequential(nn.Linear, activation)."""
    out = {}
    for i, layer in enumerate(spec.layers):
        w = {k.rsplit(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"layers.{i}.")}
        if layer.kind == "conv":
            out |= {f"{i}.weight": w["kernel"].transpose(3, 2, 0, 1), f"{i}.bias": w["bias"]}
        elif layer.kind == "groupnorm":
            out |= {f"{i}.weight": w["scale"], f"{i}.bias": w["bias"]}
        elif layer.kind == "dense":
            out |= {f"{i}.0.weight": w["kernel"].T, f"{i}.0.bias": w["bias"]}
        elif layer.kind == "embedding":
            out[f"{i}.weight"] = w["embedding"]
        elif layer.kind == "lstm":  # one bias written as (bias, 0)
            out |= {
                f"{i}.weight_ih_l0": w["kernel"].T,
                f"{i}.weight_hh_l0": w["recurrent_kernel"].T,
                f"{i}.bias_ih_l0": w["bias"],
                f"{i}.bias_hh_l0": np.zeros_like(w["bias"]),
            }
        elif layer.kind == "gru":
            out |= {
                f"{i}.weight_ih_l0": _gates(w["kernel"].T, _GRU_TORCH),
                f"{i}.weight_hh_l0": _gates(w["recurrent_kernel"].T, _GRU_TORCH),
            }
            if layer.reset_after:  # nn.GRU's bias_ih and bias_hh are the bias rows
                out[f"{i}.bias_ih_l0"] = _gates(w["bias"][0], _GRU_TORCH)
                out[f"{i}.bias_hh_l0"] = _gates(w["bias"][1], _GRU_TORCH)
            else:  # xgrad's own cell from torch's primitives: one bias
                out[f"{i}.bias_ih_l0"] = _gates(w["bias"], _GRU_TORCH)
    return out


def _flax_state(spec: MLP, weights) -> dict[tuple, np.ndarray]:
    """NNX state path -> array: nnx.RNN(OptimizedLSTMCell) keeps the LSTM in cell/dense_i
    (kernel, no bias) and cell/dense_h (kernel and the one bias); the GRU cell and the other
    kinds hold the canonical names."""
    out = {}
    for name, value in weights.items():
        _, i, local = name.split(".")
        kind = spec.layers[int(i)].kind
        if kind == "lstm":
            path = {
                "kernel": ("cell", "dense_i", "kernel"),
                "recurrent_kernel": ("cell", "dense_h", "kernel"),
                "bias": ("cell", "dense_h", "bias"),
            }[local]
        else:
            path = ("cell", local) if kind == "gru" else (local,)
        out[("layers", int(i), *path)] = value
    return out


def _expected(to: str, spec: MLP, weights) -> dict:
    """Each native array the target holds, keyed as :func:`_got` keys them, by hand."""
    if to == "numpy":
        return dict(weights)
    if to == "jax":  # a list of per-layer dicts in canonical local names
        return {(int(k.split(".")[1]), k.split(".")[2]): v for k, v in weights.items()}
    if to == "flax":
        return _flax_state(spec, weights)
    if to == "torch":
        return _torch_state(spec, weights)
    return dict(enumerate(weights.values()))  # Keras: its variables in order, canonically


def _got(to: str, native) -> dict:
    """Each array of a native form, as NumPy, by its native key."""
    if to == "numpy":
        return dict(native)
    if to == "jax":
        return {(i, k): np.asarray(v) for i, layer in enumerate(native) for k, v in layer.items()}
    if to == "flax":
        from flax import nnx

        return {tuple(k): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(native)}
    if to == "torch":
        return {k: v.detach().numpy() for k, v in native.items()}
    return dict(enumerate(v.numpy() for v in native.weights))


def assert_holds(to: str, native, spec: MLP, weights, dtype, where: str = "") -> None:
    """``native`` holds exactly ``weights`` (bit for bit, in ``dtype``) where the target
    keeps them."""
    got, want = _got(to, native), _expected(to, spec, weights)
    assert sorted(map(str, got)) == sorted(map(str, want)), where
    for key, expected in want.items():
        value = np.asarray(got[key])
        assert value.dtype == dtype, (where, key, value.dtype)
        np.testing.assert_array_equal(value, expected, err_msg=f"{where} {key}")


# -- the models ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (spec, canonical float32 weights as float64, .keras file built from them)."""
    tf = xgrad.get_framework("tensorflow")
    out = {}
    for seed, (name, spec) in enumerate(SPECS.items()):
        weights = _weights(spec, seed)
        path = tmp_path_factory.mktemp("port") / f"{name}.keras"
        tf.build(spec, weights, dtype="float32").native.save(path)
        out[name] = (spec, weights, path)
    return out


@pytest.fixture(scope="module")
def source(models):
    """(name, framework) -> a model of the framework holding the weights, built when first
    asked for (float32; numpy: the float64 ``(spec, params)`` pair)."""
    built = {}

    def get(name: str, framework: str):
        if (name, framework) not in built:
            spec, weights, _ = models[name]
            if framework == "numpy":
                built[name, framework] = (spec, weights)
            else:
                model = xgrad.get_framework(framework).build(spec, weights, dtype="float32")
                built[name, framework] = model.native if framework == "tensorflow" else model
        return built[name, framework]

    return get


def _pairs():
    """Every (spec, source, target); make test runs a representative few (each kind from
    and to torch and Keras, the GRU reset_after=False through Flax)."""
    representative = {
        ("cnn", "tensorflow", "torch"),
        ("cnn", "torch", "flax"),
        ("rnn", "torch", "tensorflow"),
        ("rnn", "tensorflow", "torch"),
        ("gru0", "flax", "torch"),
    }
    for name in SPECS:
        for src in FRAMEWORKS:
            for to in FRAMEWORKS:
                marks = () if (name, src, to) in representative else pytest.mark.exhaustive
                yield pytest.param(name, src, to, marks=marks, id=f"{name}-{src}-{to}")


@pytest.mark.parametrize(("name", "src", "to"), list(_pairs()))
def test_convert_carries_the_kinds_bit_exactly(models, source, name, src, to):
    spec, weights, _ = models[name]
    native = xgrad.convert(source(name, src), to=to)
    dtype = np.float64 if "numpy" in (src, to) else np.float32
    assert_holds(to, native, spec, weights, dtype, f"{src} -> {to}")
    if to in ("jax", "flax") and name != "cnn":  # a recurrent model is not read back: below
        return
    back = xgrad.convert(_model_of(to, native, spec), to=src, x=_inputs(spec))  # and back
    assert_holds(src, back, spec, weights, dtype, f"{src} -> {to} -> {src}")


def _inputs(spec: MLP) -> np.ndarray:
    return sample_batch(spec, 2, 0, "sum")[0]


def _model_of(to: str, native, spec: MLP):
    """A model of framework ``to`` holding the native form ``native`` (a torch state_dict
    loaded by torch into a module of ``spec`` built with other weights).

    The JAX pytree goes with xgrad's JAX function of ``spec``, the NNX state into its NNX
    module. Only the CNN is read back from them: neither reader reads a recurrent layer
    (lax.scan / nnx.RNN) from the jaxpr."""
    if to == "numpy":
        return (spec, native)
    if to == "tensorflow":
        return native
    if to == "jax":
        return (xgrad.get_framework("jax").build(spec, None, dtype="float32").native[0], native)
    if to == "flax":
        from flax import nnx

        module = xgrad.get_framework("flax").build(spec, None, dtype="float32").native
        nnx.update(module, native)
        return module
    model = xgrad.get_framework(to).build(spec, _weights(spec, 99), dtype="float32").native
    model.load_state_dict(native)
    return model


# -- PyTorch's two LSTM biases ------------------------------------------------------------------


needs_torch = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")


@needs_torch
def test_a_torch_checkpoint_with_both_lstm_biases_converts_to_their_sum(models, caplog):
    import torch

    spec, weights, _ = models["rnn"]
    module = xgrad.get_framework("torch").build(spec, weights, dtype="float32").native
    b_ih = (0.3 * np.random.default_rng(7).standard_normal(24)).astype(np.float32)
    b_hh = (0.3 * np.random.default_rng(8).standard_normal(24)).astype(np.float32)
    module.load_state_dict(
        {
            **module.state_dict(),
            "1.bias_ih_l0": torch.tensor(b_ih),
            "1.bias_hh_l0": torch.tensor(b_hh),
        }
    )
    x = _inputs(spec)
    with caplog.at_level(logging.WARNING, logger="xgrad.convert"):
        got = xgrad.convert(module, to="numpy", x=x)
    np.testing.assert_array_equal(got["layers.1.bias"], (b_ih + b_hh).astype(np.float64))
    assert "layers.1.bias is the sum 1.bias_ih_l0 + 1.bias_hh_l0" in caplog.text
    assert "both non-zero" in caplog.text
    # Keras holds the one bias; back in torch it is (sum, 0)
    keras_model = xgrad.convert(module, to="tensorflow", x=x)
    np.testing.assert_array_equal(keras_model.layers[1].cell.bias.numpy(), b_ih + b_hh)
    state = xgrad.convert(keras_model, to="torch")
    np.testing.assert_array_equal(state["1.bias_ih_l0"].numpy(), b_ih + b_hh)
    assert not state["1.bias_hh_l0"].any()


@needs_torch
def test_xgrads_own_b_and_zero_needs_no_note(models, source, caplog):
    spec, weights, _ = models["rnn"]
    with caplog.at_level(logging.WARNING, logger="xgrad.convert"):
        got = xgrad.convert(source("rnn", "torch"), to="numpy")
    assert np.array_equal(got["layers.1.bias"], weights["layers.1.bias"])
    assert caplog.text == ""


# -- xgrad port -----------------------------------------------------------------------------------


PORTS = [  # make test: the CNN to torch's own file, the LSTM/GRU to torch's safetensors
    ("cnn", "torch", "w.pt"),
    ("rnn", "torch", "w.safetensors"),
    *(
        pytest.param(name, to, file, marks=pytest.mark.exhaustive)
        for name in SPECS
        for to, file in [
            ("numpy", "w.npz"),
            ("jax", "w.safetensors"),
            ("flax", "w.npz"),
            ("tensorflow", "w.npz"),
            ("torch", "w.npz"),
            ("torch", "w.pt"),
        ]
        if (name, to, file) not in {("cnn", "torch", "w.pt")}
    ),
    pytest.param("gru0", "torch", "w.safetensors", marks=pytest.mark.exhaustive),
]


@pytest.mark.parametrize(("name", "to", "file"), PORTS)
def test_port_round_trips_and_the_gradients_match(models, tmp_path, name, to, file):
    if to not in INSTALLED:
        pytest.skip(f"{to} is not installed")
    spec, weights, path = models[name]
    port = port_model_file(path, to=to, out=tmp_path / file, batch=2, loss="sum")
    assert port.round_trip and port.ok, port.report.summary()
    assert {e.name for e in port.report.parameters} == set(spec.param_shapes())
    assert (port.report.input is None) == (name != "cnn")  # ids have no gradient
    read = _read_file(to, tmp_path / file)
    if to == "torch" and file != "w.npz":  # torch's own state_dict, located by hand
        want = _torch_state(spec, weights)
    else:
        want = weights
    assert sorted(read) == sorted(want)
    for k, expected in want.items():
        assert read[k].dtype == np.float32, k
        np.testing.assert_array_equal(read[k], expected, err_msg=k)
    lstm = [f"{n} is held by torch as the sum" for n in ("layers.1.bias", "layers.2.bias")]
    said = [n for n in port.notes if any(n.startswith(s) for s in lstm)]
    assert len(said) == (to == "torch" and name != "cnn")
    assert set(port.notes) <= set(port.report.notes)


def _read_file(to: str, path) -> dict[str, np.ndarray]:
    """The file read with NumPy, safetensors and torch themselves."""
    if path.suffix == ".pt":
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.numpy() for k, v in state.items()}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_port_draws_images_and_token_ids(models):
    images, _ = sample_batch(SPECS["cnn"], 2, 0, "sum")
    assert images.shape == (2, 12, 12, 3) and images.dtype == np.float64
    ids, _ = sample_batch(SPECS["rnn"], 2, 0, "sum")
    assert ids.shape == (2, 6) and ids.dtype.kind == "i" and 0 <= ids.min() and ids.max() < 20


@needs_torch
def test_xgrad_port_says_how_the_lstm_bias_was_written(models, tmp_path, capsys):
    _, _, path = models["rnn"]
    out = tmp_path / "w.pt"
    for quiet in ([], ["--quiet"]):
        code = main(["port", str(path), "--to", "torch", "--out", str(out), "--batch", "2", *quiet])
        text = " ".join(capsys.readouterr().out.split())
        assert code == 0, text
        assert (
            "note: layers.1.bias is held by torch as the sum 1.bias_ih_l0 + 1.bias_hh_l0: "
            "written as 1.bias_ih_l0 = layers.1.bias and 1.bias_hh_l0 = 0"
        ) in text
        assert "round trip bit-exact" in text


@pytest.mark.parametrize(
    ("name", "src", "into"),
    [
        pytest.param("cnn", "torch", "tensorflow", marks=needs_torch),
        # token ids: read as layers, each reader lays out torch's two LSTM biases (b, 0) and
        # the GRU's (2, 3u) bias and gate order r, z, n (module by module left them unpaired)
        pytest.param("rnn", "tensorflow", "torch", marks=needs_torch),
        pytest.param("gru0", "tensorflow", "torch", marks=needs_torch),
    ],
)
def test_convert_into_a_model_of_other_weights(models, source, name, src, into):
    spec, weights, _ = models[name]
    other = xgrad.get_framework(into).build(spec, _weights(spec, 99), dtype="float32").native
    filled = xgrad.convert(source(name, src), into=other, x=_inputs(spec))
    native = filled.state_dict() if into == "torch" else filled
    assert_holds(into, native, spec, weights, np.float32, f"{src} into {into}")
