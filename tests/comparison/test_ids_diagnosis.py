"""Models on token ids have no ``dL/dinput`` (``Gradients.input`` is ``None``): diagnosis works
without it and names the same cause as on float tokens, and two of xgrad's builds of an
id-model compare read into layer kinds (ids checked against the embedding's vocabulary), in
``compare_models`` and ``compare_training``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import INSTALLED
from planted import planted

import xgrad
from xgrad import MLP, Attention, Dense, Embedding
from xgrad.training import SGD, compare_training

VOCAB, DIM, TOKENS = 20, 16, 6
IDS = np.random.default_rng(0).integers(0, VOCAB, size=(2, TOKENS))
ATTENTION = Attention(DIM, 4, rope="half", causal=True)
ON_IDS = MLP((TOKENS,), [Embedding(VOCAB, DIM), ATTENTION, Dense(VOCAB)])
ON_FLOATS = MLP((TOKENS, DIM), [ATTENTION, Dense(VOCAB)])


def _interleaved(layer):
    """The planted convention: RoPE on interleaved pairs where the spec rotates halves."""
    return dataclasses.replace(layer, rope="interleaved") if isinstance(layer, Attention) else layer


def _twice(grads, x, y, loss):
    """The planted reduction: every gradient doubled (no dL/dinput to double on ids)."""
    params = {k: 2 * v for k, v in grads.params.items()}
    layers = {k: 2 * v for k, v in (grads.activation_grads or {}).items()}
    return dataclasses.replace(grads, params=params, activation_grads=layers or None)


def test_a_rope_layout_swap_on_token_ids_is_named_as_it_is_on_float_tokens():
    floats = np.random.default_rng(1).standard_normal((2, TOKENS, DIM))
    found = {}
    for spec, x in ((ON_IDS, IDS), (ON_FLOATS, floats)):
        report = xgrad.compare(spec, x, frameworks=["numpy", planted("rope", swap=_interleaved)])
        assert not report.ok
        (d,) = report.diagnoses
        found[len(spec.input_shape)] = (d.cause, d.confirmed, d.where)
    assert found[1] == found[2] == ("rope-layout", True, "forward")


def test_a_loss_reduction_on_token_ids_is_named_from_the_weight_gradients_alone():
    report = xgrad.compare(ON_IDS, IDS, frameworks=["numpy", planted("twice", change=_twice)])
    assert report.input is None and not report.ok
    assert [d.cause for d in report.diagnoses] == ["loss-reduction"]
    assert "times 2" in report.diagnoses[0].detail


def test_two_builds_of_an_id_model_compare_read_into_layer_kinds():
    params = xgrad.init_params(ON_IDS, 0)
    numpy = xgrad.get_framework("numpy")
    report = xgrad.compare_models(numpy.build(ON_IDS, params), numpy.build(ON_IDS, params), IDS)
    assert report.ok, report.summary()
    assert report.input is None and not any("module by module" in n for n in report.notes)
    bad = MLP(ON_IDS.input_shape, [_interleaved(layer) for layer in ON_IDS.layers])
    report = xgrad.compare_models(
        numpy.build(ON_IDS, params), numpy.build(bad, params), IDS, read="layers"
    )
    assert [(d.cause, d.layer) for d in report.diagnoses] == [("rope-layout", "layers.1")]
    with pytest.raises(xgrad.InputError, match=r"token id 20 at index \(1, 5\), out of range"):
        xgrad.compare_models(numpy.build(ON_IDS, params), numpy.build(ON_IDS, params), IDS + 2)


@pytest.mark.parametrize("names", [("numpy", "numpy"), ("torch", "flax")], ids=["built", "native"])
def test_two_builds_of_an_id_model_train_side_by_side(names):
    # xgrad's models are read into layer kinds; torch's and Flax's modules module by module
    if not set(names) <= INSTALLED | {"numpy"}:
        pytest.skip(f"needs {' and '.join(names)}")
    spec = MLP((TOKENS,), [Embedding(VOCAB, DIM), Dense(VOCAB)])
    params = xgrad.init_params(spec, 0)
    ref, cand = (xgrad.get_framework(n).build(spec, params) for n in names)
    if names[0] != "numpy":
        ref, cand = ref.native, cand.native
    report = compare_training(ref, cand, IDS, loss="sum", optimizers=(SGD(0.1), SGD(0.1)), steps=2)
    assert report.ok, report.summary()
