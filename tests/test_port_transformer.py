"""``xgrad port``, ``xgrad.convert(to=...)`` and ``xgrad backends`` on the transformer kinds.

Two specs: token ids into an Embedding and a pre-LN block (GQA, RoPE, gated MLP), and float
examples ``(tokens, dim)`` into Keras' own attention layers (a causal MultiHeadAttention and a
GroupQueryAttention) and a gated MLP with biases. The expected arrays are the canonical
weights the models were built from (``init_params``), located in each written file or native
object by hand from each framework's documented names and layouts (read with NumPy,
safetensors and torch themselves), never through xgrad's own mapping.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.cli import main
from xgrad.layers import Attention, Dense, Embedding, GatedMLP, RMSNorm, transformer_block
from xgrad.port import port_model_file

pytestmark = pytest.mark.skipif("tensorflow" not in INSTALLED, reason="ports read .keras files")

SPECS = {
    "ids": xgrad.MLP(
        (6,),
        [
            Embedding(20, 16),
            *transformer_block(16, 4, 32, kv_heads=2, rope="half"),
            Dense(20),
        ],
    ),
    "floats": xgrad.MLP(
        (5, 8),
        [
            Attention(8, 2, causal=True),  # Keras' MultiHeadAttention
            RMSNorm(),
            Attention(8, 4, kv_heads=2),  # Keras' GroupQueryAttention
            GatedMLP(8, 12, use_bias=True),
            Dense(3),
        ],
    ),
}

# the torch names of each kind's local weights, and whether torch stores it transposed
# (nn.Linear's (out, in)): Dense is nn.Sequential(nn.Linear, activation), the norms and
# nn.Embedding hold ``weight``, SelfAttention holds the canonical names, GatedMLP three
# nn.Linear called gate_proj, up_proj and down_proj
_TORCH_LOCAL = {
    "dense": {"kernel": ("0.weight", True), "bias": ("0.bias", False)},
    "layernorm": {"scale": ("weight", False), "bias": ("bias", False)},
    "rmsnorm": {"scale": ("weight", False)},
    "embedding": {"embedding": ("weight", False)},
}


def _torch_key(spec: xgrad.MLP, name: str) -> tuple[str, bool]:
    """``(state_dict key, transposed)`` of a canonical weight, by hand."""
    path, local = name.rsplit(".", 1)
    layer = dict(spec.walk())[path]
    module = ".".join(path.split(".")[1::2])
    if layer.kind == "attention":
        return f"{module}.{local}", False
    if layer.kind == "gated_mlp":
        proj, what = local.split("_")
        return f"{module}.{proj}_proj.{'weight' if what == 'kernel' else 'bias'}", what == "kernel"
    torch_local, transposed = _TORCH_LOCAL[layer.kind][local]
    return f"{module}.{torch_local}", transposed


def _flax_path(spec: xgrad.MLP, name: str) -> tuple:
    """The NNX state path of a canonical weight: attention and gated-MLP weights live in a
    submodule per projection (``query/kernel``), the rest as named."""
    path, local = name.rsplit(".", 1)
    parts = tuple(int(p) if p.isdigit() else p for p in path.split("."))
    layer = dict(spec.walk())[path]
    if layer.kind in ("attention", "gated_mlp"):
        return (*parts, *local.split("_"))
    return (*parts, local)


def _jax_leaf(tree, name: str):
    """The pure-JAX pytree's leaf: a list of layers, a residual block's ``{"layers": [...]}``."""
    parts = name.split(".")
    node = tree
    for i in range(1, len(parts) - 1, 2):
        node = node[int(parts[i])]
        if i + 2 < len(parts) - 1:
            node = node["layers"]
    return node[parts[-1]]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (spec, canonical float32 weights as float64, .keras path)."""
    tf = xgrad.get_framework("tensorflow")
    out = {}
    for name, spec in SPECS.items():
        weights = {
            k: v.astype(np.float32).astype(np.float64)
            for k, v in xgrad.init_params(spec, seed=3).items()
        }
        path = tmp_path_factory.mktemp("port") / f"{name}.keras"
        tf.build(spec, weights, dtype="float32").native.save(path)
        out[name] = (spec, weights, path)
    return out


def _read_back(to: str, path, spec, weights) -> dict[str, np.ndarray]:
    """The file read with NumPy / safetensors / torch themselves, as canonical name -> array
    (torch's own names and layouts undone by hand)."""
    if to == "torch" and path.suffix in (".pt", ".safetensors"):
        import torch

        if path.suffix == ".pt":
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            state = load_file(str(path))
        out = {}
        for name in weights:
            key, transposed = _torch_key(spec, name)
            value = state.pop(key).numpy()
            out[name] = value.T if transposed else value
        assert not state, f"unexpected tensors {list(state)}"
        return out
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    from safetensors.numpy import load_file

    return load_file(str(path))


PORTS = [  # every target from the ids file; the float file where its layers differ most
    *(
        ("ids", to, file)
        for to, file in [
            ("numpy", "w.npz"),
            ("jax", "w.safetensors"),
            ("flax", "w.npz"),
            ("tensorflow", "w.safetensors"),
            ("torch", "w.npz"),
            ("torch", "w.pt"),
            ("torch", "w.safetensors"),  # torch's own state_dict
        ]
    ),
    ("floats", "numpy", "w.safetensors"),
    ("floats", "flax", "w.npz"),  # Keras' MultiHeadAttention and GroupQueryAttention
    ("floats", "torch", "w.pt"),  # against SelfAttention
]


@pytest.mark.parametrize(
    ("name", "to", "file"),
    [
        pytest.param(*p, marks=pytest.mark.skipif(p[1] not in INSTALLED, reason="not installed"))
        for p in PORTS
    ],
)
def test_port_round_trips_bit_exactly_and_the_gradients_match(models, tmp_path, name, to, file):
    spec, weights, path = models[name]
    port = port_model_file(path, to=to, out=tmp_path / file, batch=2, loss="sum")
    assert port.round_trip and port.ok, port.report.summary()
    assert port.summary().endswith("round trip bit-exact")
    # every parameter compared, paired by its canonical name (not guessed by shape)
    assert {e.name for e in port.report.parameters} == set(spec.param_shapes())
    assert (port.report.input is None) == (name == "ids")  # ids have no gradient
    read = _read_back(to, tmp_path / file, spec, weights)
    assert set(read) == set(weights)
    for k, expected in weights.items():
        assert read[k].dtype == np.float32, k
        np.testing.assert_array_equal(read[k], expected, err_msg=k)


def test_xgrad_port_on_the_command_line(models, tmp_path, capsys):
    spec, weights, path = models["ids"]
    out = tmp_path / "w.safetensors"
    code = main(["port", str(path), "--to", "numpy", "--out", str(out), "--batch", "2"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "round trip bit-exact" in text and "OK: every gradient matches" in text
    from safetensors.numpy import load_file

    read = load_file(str(out))
    assert set(read) == set(weights)
    assert all(np.array_equal(read[k], v) for k, v in weights.items())


# -- convert(to=...) --------------------------------------------------------------------


def _native_arrays(to: str, native, spec) -> dict[str, np.ndarray]:
    """Canonical name -> array, located by hand in each target's native form."""
    names = list(spec.weight_shapes())
    if to == "numpy":
        return dict(native)
    if to == "jax":
        return {n: np.asarray(_jax_leaf(native, n)) for n in names}
    if to == "flax":
        from flax import nnx

        flat = {tuple(k): v.get_value() for k, v in nnx.to_flat_state(native)}
        return {n: np.asarray(flat.pop(_flax_path(spec, n))) for n in names}
    if to == "torch":
        out = {}
        for n in names:
            key, transposed = _torch_key(spec, n)
            value = native[key].detach().numpy()
            out[n] = value.T if transposed else value
        return out
    # Keras: every kind in the canonical layout (kernels (in, out), attention (dim, H, hd),
    # out (H, hd, dim)), the variables in the canonical order
    values = [v.numpy() for v in native.weights]
    assert len(values) == len(names)
    return dict(zip(names, values, strict=True))


@pytest.fixture(scope="module")
def sources(models):
    """name -> {source framework: a model of it holding the weights} (float32 except numpy)."""
    out = {}
    for name, (spec, weights, _) in models.items():
        built = {"numpy": (spec, weights)}
        for fw in ("jax", "flax", "tensorflow", "torch"):
            if fw in INSTALLED:
                model = xgrad.get_framework(fw).build(spec, weights, dtype="float32")
                built[fw] = model.native if fw == "tensorflow" else model
        out[name] = built
    return out


@pytest.mark.parametrize("name", list(SPECS))
def test_convert_between_every_pair_of_frameworks_is_bit_exact(models, sources, name):
    spec, weights, _ = models[name]
    targets = [t for t in ("numpy", "jax", "flax", "tensorflow", "torch") if t in INSTALLED]
    for source, model in sources[name].items():
        for to in targets:
            native = xgrad.convert(model, to=to)
            got = _native_arrays(to, native, spec)
            assert list(got) == list(spec.weight_shapes()), (source, to)
            for k, expected in weights.items():
                want = np.float64 if "numpy" in (source, to) else np.float32
                assert np.asarray(got[k]).dtype == want, (source, to, k)
                np.testing.assert_array_equal(got[k], expected, err_msg=f"{source} -> {to} {k}")
        back = xgrad.convert(xgrad.convert(model, to="tensorflow"), to="numpy")  # round trip
        assert all(np.array_equal(back[k], v) for k, v in weights.items()), source


@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")
def test_convert_to_linen_refuses_attention_by_name(sources):
    with pytest.raises(xgrad.XgradError, match=r"layers\.0: flax names no Linen module"):
        xgrad.convert(sources["floats"]["numpy"], to="flax.linen")


# -- xgrad backends -----------------------------------------------------------------------


def test_backends_refuse_xgrads_own_keras_layers_by_name(models):
    _, _, path = models["ids"]  # RoPE attention and GatedMLP: xgrad's own Keras layers
    message = "layer layers.1.layers.1 (attention(16, heads=4, kv_heads=2, causal, rope=half"
    with pytest.raises(xgrad.InputError, match=re.escape(message)) as info:
        xgrad.compare_backends(path, "jax", batch=2)
    assert "XgradAttention" in str(info.value)


@pytest.mark.skipif(not {"jax"} <= INSTALLED, reason="needs Keras on JAX")
def test_backends_replay_ids_and_causal_attention_of_keras_own_layers(tmp_path):
    spec = xgrad.MLP(
        (5,),
        [Embedding(11, 8), Attention(8, 4, kv_heads=2, causal=True), Attention(8, 2), Dense(3)],
    )
    model = xgrad.get_framework("tensorflow").build(
        spec, xgrad.init_params(spec, 1), dtype="float32"
    )
    path = tmp_path / "m.keras"
    model.native.save(path)
    from xgrad.backends import _plan
    from xgrad.frameworks.tensorflow.backend_worker import keras_leaves

    source = xgrad.read_model(xgrad.get_framework("tensorflow").load_model_file(path))
    leaves = {id(layer): i for i, layer in enumerate(keras_leaves(source.native))}
    plan = _plan(source, source.layers, leaves)
    assert [n.get("kwargs") for n in plan] == [
        None,
        {"use_causal_mask": True},
        {"use_causal_mask": False},
        None,
    ]
    report = xgrad.compare_backends(path, "jax", batch=2)  # ids never differentiated
    assert report.ok, report.summary()
    assert report.input is None
    assert {e.name for e in report.parameters} == set(spec.param_shapes())


@pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
def test_a_keras_attention_against_torch_module_by_module_pairs_the_right_kernels(models):
    """Neither side's reader is asked for kinds here: the modules are paired by call order
    and shapes, and torch's SelfAttention must hold its parameters in the canonical order
    (query, key, value, out) for the equal-shaped kernels to pair with Keras' own."""
    spec = xgrad.MLP((5, 8), [Attention(8, 2, causal=True), Dense(3)])
    weights = xgrad.init_params(spec, seed=5)
    keras_model = xgrad.get_framework("tensorflow").build(spec, weights, dtype="float32").native
    module = xgrad.get_framework("torch").build(spec, weights, dtype="float32").native
    assert [n for n, _ in module[0].named_parameters()][::2] == [
        "query_kernel",
        "key_kernel",
        "value_kernel",
        "out_kernel",
    ]
    x = np.random.default_rng(0).standard_normal((2, 5, 8))
    report = xgrad.compare_models(keras_model, module, x, loss="sum", read="modules")
    assert report.ok, report.summary()
    natives = [e.native["torch"] for e in report.parameters]
    assert natives[:8:2] == ["0.query_kernel", "0.key_kernel", "0.value_kernel", "0.out_kernel"]
