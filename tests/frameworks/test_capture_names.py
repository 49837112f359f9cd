"""Names in the framework-neutral capture contract (:mod:`xgrad.frameworks.capture`): a
parameter of the model's own (path ``""``, an ``nn.Parameter`` set on the model itself) is
named by its local name in every listing the comparison reads, so that it is compared; and a
model read without layers has no spec (:meth:`AbstractModel.spec`) instead of an error."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

from xgrad.frameworks.capture import canonical_name


def test_canonical_name_of_a_models_own_weight_is_its_local_name():
    assert canonical_name("", "dec_bias") == "dec_bias"
    assert canonical_name("blocks.0.attn", "in_proj_weight") == "blocks.0.attn.in_proj_weight"


@pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
def test_a_models_own_parameter_is_listed_under_the_name_its_weights_carry():
    import torch

    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.registry import capture_model

    class TiedAutoencoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Linear(6, 3)
            self.dec_bias = torch.nn.Parameter(torch.zeros(6))

        def forward(self, x):
            h = torch.relu(self.enc(x))
            return torch.sigmoid(torch.nn.functional.linear(h, self.enc.weight.t(), self.dec_bias))

    x = np.random.default_rng(0).normal(size=(2, 6)).astype(np.float32)
    model = capture_model(TiedAutoencoder(), as_batch(x))
    assert model.param_names == ("enc.kernel", "enc.bias", "dec_bias")
    assert set(model.weights()) == set(model.param_names)
    assert model.native_names()["dec_bias"] == "dec_bias"
    grads = model.evaluate(x, loss="sum")
    assert set(grads.params) == set(model.param_names)


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
def test_a_function_read_without_layers_has_no_spec():
    import jax.numpy as jnp

    from xgrad import read_model

    def embed(p, x):  # a table lookup: the jaxpr reader reads no layer of it
        idx = jnp.clip(jnp.round(jnp.abs(x[:, 0])).astype(jnp.int32), 0, 3)
        return p["table"][idx] * x[:, 1:2]

    model = read_model((embed, {"table": jnp.ones((4, 3))}), input_shape=(2,))
    assert model.layers == ()
    assert model.spec() is None
