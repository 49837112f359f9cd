"""A GRU text model (Embedding + GRU + Dense on token ids) ported from PyTorch to Keras and to
Flax NNX, the weights copied by hand as a user does (issue 22):

* torch: ``nn.Embedding``, ``nn.GRU(batch_first=True)``, ``nn.Linear`` on the last step;
  ``weight_ih_l0 (3u, F)`` with row blocks in the gate order r, z, n, two biases;
* Keras: ``Sequential([Embedding, GRU, Dense])`` (``reset_after=True``, the default):
  ``kernel (F, 3u)`` with column blocks z, r, h, ``bias (2, 3u)`` (input, recurrent);
* NNX: ``nnx.Embed``, ``nnx.RNN`` of xgrad's Flax GRU cell (Keras' arrays and gate order, the
  cell ``xgrad.convert`` builds), ``nnx.Linear``.

A correct port transposes each array and swaps the first two gate blocks, and stacks
torch's two biases (each reordered) into Keras' one: it is ok with every parameter paired
(through the block permutation, said in a note). A port that copies the blocks in torch's
order is named lstm-gate-order at the GRU. Two Keras GRUs that differ in ``reset_after``
(biases ``(2, 3u)`` against ``(3u,)``) are a configuration difference, not a crash. Tiny sizes:
vocabulary 20, width 8, 6 units, 5 tokens, batch 2.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax", "tensorflow"} <= INSTALLED, reason="torch, flax and tensorflow are needed"
)

V, D, U, T, B, C = 20, 8, 6, 5, 2, 3
TORCH_TO_KERAS = (1, 0, 2)  # torch's blocks r, z, n taken as Keras' z, r, h
AS_IS = (0, 1, 2)

if {"torch", "flax", "tensorflow"} <= INSTALLED:
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.frameworks.flax.recurrent import GRUCell
    from xgrad.frameworks.tensorflow.ops import keras
    from xgrad.layers import GRU

    class TorchGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(V, D)
            self.gru = nn.GRU(D, U, batch_first=True)
            self.fc = nn.Linear(U, C)

        def forward(self, ids):
            out, _ = self.gru(self.embed(ids))
            return self.fc(out[:, -1])

    class NnxGRU(nnx.Module):
        def __init__(self, rngs):
            self.embed = nnx.Embed(V, D, rngs=rngs)
            self.gru = nnx.RNN(GRUCell(GRU(U), D, dtype=jnp.float32, rngs=rngs))
            self.fc = nnx.Linear(U, C, rngs=rngs)

        def __call__(self, ids):
            return self.fc(self.gru(self.embed(ids))[:, -1])


def _keras_gru():
    return keras.Sequential(
        [
            keras.Input((T,), dtype="int32"),
            keras.layers.Embedding(V, D),
            keras.layers.GRU(U),
            keras.layers.Dense(C),
        ]
    )


def _rows(a, order):
    """torch's row blocks (axis 0) in ``order``."""
    pieces = np.split(a, 3, axis=0)
    return np.concatenate([pieces[i] for i in order], axis=0)


def _keras_arrays(t, order) -> dict:
    """torch's weights as Keras' arrays, the gate blocks taken in ``order``."""
    g = {k: v.detach().numpy() for k, v in t.state_dict().items()}
    return {
        "embed": g["embed.weight"],
        "kernel": _rows(g["gru.weight_ih_l0"], order).T,
        "recurrent": _rows(g["gru.weight_hh_l0"], order).T,
        "bias": np.stack([_rows(g["gru.bias_ih_l0"], order), _rows(g["gru.bias_hh_l0"], order)]),
        "dense": g["fc.weight"].T,
        "dense_bias": g["fc.bias"],
    }


def to_keras(t, order=TORCH_TO_KERAS):
    w = _keras_arrays(t, order)
    k = _keras_gru()
    k.layers[0].set_weights([w["embed"]])
    k.layers[1].set_weights([w["kernel"], w["recurrent"], w["bias"]])
    k.layers[2].set_weights([w["dense"], w["dense_bias"]])
    return k


def to_nnx(t, order=TORCH_TO_KERAS):
    w = {k: np.asarray(v, np.float32) for k, v in _keras_arrays(t, order).items()}
    f = NnxGRU(nnx.Rngs(1))
    f.embed.embedding.value = w["embed"]
    cell = f.gru.cell
    cell.kernel.value, cell.recurrent_kernel.value = w["kernel"], w["recurrent"]
    cell.bias.value = w["bias"]
    f.fc.kernel.value, f.fc.bias.value = w["dense"], w["dense_bias"]
    return f


@pytest.fixture(scope="module")
def torch_model():
    torch.manual_seed(0)
    return TorchGRU()


@pytest.fixture(scope="module")
def keras_port(torch_model):
    return to_keras(torch_model)


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, V, size=(B, T)).astype(np.int32)


TORCH_NAMES = {"gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0", "gru.bias_hh_l0"}


def _check_correct(report):
    assert report.ok, report.summary()
    assert not report.unpaired, report.unpaired
    names = {e.name for e in report.parameters}
    assert TORCH_NAMES <= names and len(names) == 7, names
    assert any("torch orders the GRU gates r, z, n; Keras z, r, h" in n for n in report.notes)


def test_correct_keras_port_is_ok_with_every_parameter_paired(torch_model, keras_port, ids):
    _check_correct(xgrad.compare_models(torch_model, keras_port, ids, transfer=False))
    # a transfer writes the reference's weights through the same permutation: still ok
    assert xgrad.compare_models(torch_model, keras_port, ids, transfer=True).ok


def test_the_pairing_goes_through_the_gate_permutation_and_says_so(torch_model, keras_port, ids):
    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.registry import capture_model
    from xgrad.pairing import pair_modules
    from xgrad.pairing.blocks import BlockOrder, BlockSplit

    ref, cand = (capture_model(m, as_batch(ids)) for m in (torch_model, keras_port))
    pairing = pair_modules(ref, cand)
    kernel = pairing.joins["gru.weight_ih_l0"]
    assert isinstance(kernel, BlockOrder) and kernel.order == TORCH_TO_KERAS
    bias = pairing.splits["gru.bias_hh_l0"]
    assert isinstance(bias, BlockSplit) and bias.parts == ("gru.bias_ih_l0", "gru.bias_hh_l0")
    # the candidate's arrays read back in torch's layout are torch's own
    g = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    w = cand.weights()
    np.testing.assert_array_equal(kernel.join([w[kernel.parts[0]]]), g["gru.weight_ih_l0"])
    np.testing.assert_array_equal(bias.part("gru.bias_hh_l0", w[bias.whole]), g["gru.bias_hh_l0"])
    # and torch's written into the candidate's are the port's (a transfer)
    out = pairing.to_candidate(ref.weights())
    np.testing.assert_array_equal(out[bias.whole], keras_port.layers[1].get_weights()[2])
    (note,) = [n for n in pairing.notes if "gate blocks" in n]
    assert "torch orders the GRU gates r, z, n; Keras z, r, h" in note


@pytest.mark.exhaustive  # nnx.RNN's scan compiles for several seconds
def test_correct_nnx_port_is_ok_with_every_parameter_paired(torch_model, ids):
    _check_correct(xgrad.compare_models(torch_model, to_nnx(torch_model), ids, transfer=False))


def test_unrelated_keras_values_leave_the_biases_unpaired(torch_model, ids):
    fresh = to_keras(torch_model)
    kernel, recurrent, bias = fresh.layers[1].get_weights()
    rng = np.random.default_rng(5)
    fresh.layers[1].set_weights([kernel, recurrent, rng.normal(size=bias.shape)])
    report = xgrad.compare_models(torch_model, fresh, ids, transfer=False)
    unpaired = {u["name"]: u["reason"] for u in report.unpaired}
    assert {"gru.bias_ih_l0", "gru.bias_hh_l0"} <= set(unpaired), unpaired
    assert "neither the names nor the values tell" in unpaired["gru.bias_ih_l0"]


def test_gate_blocks_copied_in_torch_order_are_named_at_the_gru(torch_model, ids):
    report = xgrad.compare_models(torch_model, to_keras(torch_model, AS_IS), ids, transfer=False)
    assert not report.ok
    assert not any("GRU gates" in n for n in report.notes), report.notes
    d = report.diagnoses[0]
    assert (d.cause, d.confirmed, d.where, d.layer) == ("lstm-gate-order", True, "forward", "gru")
    assert d.residual <= report.tolerance < d.before
    assert "hold the reference's r, z, h (PyTorch's order r, z, n)" in d.detail


def _keras_float_gru(reset_after: bool):
    return keras.Sequential(
        [keras.Input((T, D)), keras.layers.GRU(U, reset_after=reset_after), keras.layers.Dense(2)]
    )


@pytest.mark.parametrize("transfer", [False, pytest.param(True, marks=pytest.mark.exhaustive)])
def test_keras_grus_differing_in_reset_after_are_a_config_difference(transfer):
    x = np.random.default_rng(1).normal(size=(B, T, D)).astype(np.float32)
    ref, cand = _keras_float_gru(True), _keras_float_gru(False)
    report = xgrad.compare_models(ref, cand, x, transfer=transfer)
    assert not report.ok
    assert any(
        diff.kind == "gru" and diff.fields.get("reset_after") == (True, False)
        for diff in report.config_diffs
    ), report.config_diffs
    unpaired = {(u["side"], u["name"]): u["reason"] for u in report.unpaired}
    assert set(unpaired) == {("reference", "layers.0.bias"), ("candidate", "layers.0.bias")}
    assert (
        "one of shape (18,) where this one's is (2, 18)" in unpaired[("reference", "layers.0.bias")]
    )
