"""PyTorch models on token ids and on several inputs against Flax NNX ports (issue 20's
scenarios), with inputs passed to ``compare_models`` as users pass them:

* ``nn.Embedding`` + mean over tokens + ``nn.Linear`` on integer ids against ``nnx.Embed``:
  no ``dL/dinput`` (the report says why); the port scaling its embeddings by ``sqrt(d)``
  (as transformer embeddings often are) is named where it happens;
* a model taking ``(x, mask)`` positionally, inputs as a tuple; one taking ``tokens`` and a
  keyword-only ``mask`` as a dict; a keyword-only ``scale``: one input entry per floating
  input; a port inverting the mask convention (1 = padding) is named;
* wrong inputs (a missing key, a wrong shape, ids out of the embedding's range, float ids)
  are ``XgradError`` quoting the model's own error and the user's batch; an input given as a
  ``torch`` tensor that requires grad is taken as it is and left unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)

VOCAB, D, OUT = 20, 8, 3

if {"torch", "flax"} <= INSTALLED:
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.errors import InputError, XgradError

    class BagOfEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(VOCAB, D)
            self.head = nn.Linear(D, OUT)

        def forward(self, ids):
            return self.head(self.embed(ids).mean(dim=1))

    class BagOfEmbeddingsPort(nnx.Module):
        def __init__(self, *, scaled: bool = False, rngs: nnx.Rngs):
            self.embed = nnx.Embed(VOCAB, D, rngs=rngs)
            self.head = nnx.Linear(D, OUT, rngs=rngs)
            self.scaled = scaled

        def __call__(self, ids):
            h = self.embed(ids)
            if self.scaled:  # the planted bug: the torch model does not scale
                h = h * math.sqrt(D)
            return self.head(h.mean(axis=1))

    class MaskedPool(nn.Module):
        """Token features, averaged over the tokens the mask keeps (1 = keep)."""

        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(D, D)
            self.head = nn.Linear(D, OUT)

        def forward(self, x, mask):
            h = torch.tanh(self.proj(x)) * mask.unsqueeze(-1)
            return self.head(h.sum(dim=1) / mask.sum(dim=1, keepdim=True))

    class MaskedPoolPort(nnx.Module):
        def __init__(self, *, padding_mask: bool = False, rngs: nnx.Rngs):
            self.proj = nnx.Linear(D, D, rngs=rngs)
            self.head = nnx.Linear(D, OUT, rngs=rngs)
            self.padding_mask = padding_mask

        def __call__(self, x, mask):
            keep = 1.0 - mask if self.padding_mask else mask  # the planted bug: 1 = padding
            h = jnp.tanh(self.proj(x)) * keep[..., None]
            return self.head(h.sum(axis=1) / keep.sum(axis=1, keepdims=True))

    class KeywordPool(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(D, D)
            self.head = nn.Linear(D, OUT)

        def forward(self, tokens, *, mask, scale):
            h = torch.tanh(self.proj(tokens)) * mask.unsqueeze(-1)
            return self.head(h.mean(dim=1)) * scale

    class KeywordPoolPort(nnx.Module):
        def __init__(self, *, padding_mask: bool = False, rngs: nnx.Rngs):
            self.proj = nnx.Linear(D, D, rngs=rngs)
            self.head = nnx.Linear(D, OUT, rngs=rngs)
            self.padding_mask = padding_mask

        def __call__(self, tokens, *, mask, scale):
            keep = 1.0 - mask if self.padding_mask else mask
            h = jnp.tanh(self.proj(tokens)) * keep[..., None]
            return self.head(h.mean(axis=1)) * scale


def _torch(cls):
    torch.manual_seed(0)
    return cls()


def _ids(batch: int = 4, tokens: int = 6) -> np.ndarray:
    return np.random.default_rng(3).integers(0, VOCAB, size=(batch, tokens))


def _masked(batch: int = 3, tokens: int = 5):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(batch, tokens, D)).astype(np.float32)
    mask = (rng.random((batch, tokens)) > 0.4).astype(np.float32)
    mask[:, 0] = 1.0  # every example keeps a token
    return x, mask


def _keywords(batch: int = 3):
    x, mask = _masked(batch)
    scale = np.random.default_rng(7).uniform(0.5, 2.0, size=(batch, 1)).astype(np.float32)
    return {"tokens": x, "mask": mask, "scale": scale}


# -- 3. token ids ---------------------------------------------------------------------------------


def test_embedding_bag_on_token_ids_is_ok_without_an_input_gradient():
    report = xgrad.compare_models(
        _torch(BagOfEmbeddings), BagOfEmbeddingsPort(rngs=nnx.Rngs(0)), _ids()
    )
    assert report.ok, report.summary()
    assert report.input is None and report.inputs == ()
    assert any("holds integers (token ids" in note for note in report.notes), report.notes
    names = {e.name for e in report.parameters}
    assert names == {"embed.weight", "head.kernel", "head.bias"}


def test_embeddings_scaled_on_one_side_are_named_after_the_embedding():
    report = xgrad.compare_models(
        _torch(BagOfEmbeddings), BagOfEmbeddingsPort(scaled=True, rngs=nnx.Rngs(0)), _ids()
    )
    assert not report.ok
    first = report.first_divergence
    assert (first["path"], first["where"]) == ("", "forward")
    assert first["between"] == {"reference": ["embed", "head"], "flax.nnx": ["embed", "head"]}
    entries = {layer.path: layer for layer in report.layers}
    assert entries["embed"].forward["flax.nnx"].status == "match"  # the embedding agrees
    assert report.diagnoses[0].cause == "unexplained"


# -- 6. several inputs ----------------------------------------------------------------------------


def test_two_positional_inputs_as_a_tuple_are_ok_with_an_entry_each():
    report = xgrad.compare_models(_torch(MaskedPool), MaskedPoolPort(rngs=nnx.Rngs(0)), _masked())
    assert report.ok, report.summary()
    assert report.input.name == "input.0" and report.input.shape == (3, 5, D)
    assert [e.name for e in report.inputs] == ["input.1"]


def test_keyword_inputs_as_a_dict_are_ok_with_an_entry_each():
    report = xgrad.compare_models(
        _torch(KeywordPool), KeywordPoolPort(rngs=nnx.Rngs(0)), _keywords()
    )
    assert report.ok, report.summary()
    assert report.input.name == "input.tokens"
    assert [e.name for e in report.inputs] == ["input.mask", "input.scale"]


@pytest.mark.parametrize("how", ["tuple", "dict"])
def test_a_mask_read_the_other_way_round_is_named_in_the_code_that_uses_it(how):
    if how == "tuple":
        reference, port = _torch(MaskedPool), MaskedPoolPort(padding_mask=True, rngs=nnx.Rngs(0))
        x = _masked()
    else:
        reference, port = _torch(KeywordPool), KeywordPoolPort(padding_mask=True, rngs=nnx.Rngs(0))
        x = _keywords()
    report = xgrad.compare_models(reference, port, x)
    assert not report.ok
    first = report.first_divergence
    assert (first["path"], first["where"]) == ("", "forward")
    assert first["between"] == {"reference": ["proj", "head"], "flax.nnx": ["proj", "head"]}
    entries = {layer.path: layer for layer in report.layers}
    assert entries["proj"].forward["flax.nnx"].status == "match"


# -- wrong inputs, inputs as tensors -------------------------------------------------------------


def _raises(reference, port, x) -> str:
    with pytest.raises(XgradError) as err:
        xgrad.compare_models(reference, port, x)
    assert isinstance(err.value, InputError)
    return str(err.value)


def test_a_missing_key_quotes_the_models_error_and_how_inputs_are_passed():
    x = _keywords(batch=6)
    del x["scale"]
    message = _raises(_torch(KeywordPool), KeywordPoolPort(rngs=nnx.Rngs(0)), x)
    assert "missing 1 required keyword-only argument: 'scale'" in message
    assert "input.tokens (6, 5, 8) float32" in message
    assert "KeywordPool(**x) for a dict" in message


def test_a_wrong_shape_names_the_module_that_fails_and_the_users_shapes():
    x, mask = _masked(batch=6)
    message = _raises(_torch(MaskedPool), MaskedPoolPort(rngs=nnx.Rngs(0)), (x[..., :5], mask))
    assert "input.0 (6, 5, 5) float32" in message
    assert "in module 'proj' (Linear)" in message and "mat1 and mat2 shapes" in message


def test_ids_out_of_the_embeddings_range_quote_its_range():
    message = _raises(
        _torch(BagOfEmbeddings), BagOfEmbeddingsPort(rngs=nnx.Rngs(0)), _ids(batch=7) + VOCAB
    )
    assert "(7, 6) int64" in message and "in module 'embed' (Embedding)" in message
    assert "index out of range in self" in message
    assert f"ids must lie in [0, {VOCAB})" in message


def test_float_ids_are_refused_with_what_to_pass():
    ids = torch.from_numpy(_ids(batch=7)).float()
    message = _raises(_torch(BagOfEmbeddings), BagOfEmbeddingsPort(rngs=nnx.Rngs(0)), ids)
    assert "(7, 6) float32" in message and "pass them as an integer array" in message


def test_the_port_failing_on_inputs_the_reference_takes_is_an_input_error_too():
    class FlaxNamedPort(MaskedPoolPort):
        def __call__(self, inputs, mask):  # Flax's name for the first input
            return super().__call__(inputs, mask)

    x, mask = _masked(batch=6)
    message = _raises(_torch(MaskedPool), FlaxNamedPort(rngs=nnx.Rngs(0)), {"x": x, "mask": mask})
    assert "FlaxNamedPort" in message and "input.x (6, 5, 8) float32" in message
    assert "unexpected keyword argument 'x'" in message
    message = _raises(_torch(KeywordPool), KeywordPoolPort(rngs=nnx.Rngs(0)), (x, mask, mask))
    assert "takes 2 positional arguments but 4 were given" in message


def test_an_input_that_requires_grad_is_taken_as_it_is_and_left_unchanged():
    torch.manual_seed(1)
    x = torch.randn(6, 5, D, requires_grad=True)
    mask = torch.ones(6, 5)
    before = x.detach().clone()
    report = xgrad.compare_models(_torch(MaskedPool), MaskedPoolPort(rngs=nnx.Rngs(0)), (x, mask))
    assert report.ok, report.summary()
    assert report.batch == 6
    assert x.grad is None and torch.equal(x.detach(), before)
