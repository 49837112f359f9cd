"""The JAX and Flax kind tables (``xgrad/frameworks/{jax,flax}/kinds.py``): a layer kind
neither table has is refused by name, before anything is built; the NNX classes a Flax entry
reads state what the jaxpr reader cannot see."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import INSTALLED, framework_param

import xgrad
from xgrad.frameworks.kinds import KindNotSupportedError
from xgrad.layers import LAYERS, AbstractLayer, register_layer
from xgrad.layers.base import Step


@dataclass(frozen=True)
class Shift(AbstractLayer):
    """``y = x + t``, ``t`` of shape ``(features,)``: a kind no framework table holds."""

    kind = "toy_shift"

    def param_names(self):
        return ("t",)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def weight_shapes(self, input_shape):
        return {"t": tuple(input_shape)}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        return {"t": rng.uniform(-bias_scale, bias_scale, size=input_shape)}

    def forward(self, weights, x, *, path):
        return Step(path, self, x, x + weights[f"{path}.t"])

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        grads[f"{step.path}.t"] = grad_output.sum(axis=0)
        return grad_output


@pytest.fixture
def shift():
    """The ``toy_shift`` kind, registered for one test and removed after it."""
    register_layer(Shift)
    try:
        yield Shift()
    finally:
        LAYERS.pop(Shift.kind, None)


FRAMEWORKS = [framework_param("jax"), framework_param("flax")]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_kind_missing_from_the_table_is_refused_naming_kind_and_framework(framework, shift):
    spec = xgrad.MLP(4, [xgrad.Dense(3), xgrad.Residual([shift])])
    fw = xgrad.get_framework(framework)
    assert shift.kind not in fw.kinds() and "dense" in fw.kinds()
    message = re.escape(
        f"layer layers.1.layers.0: xgrad cannot build a toy_shift layer in {framework}"
    )
    with pytest.raises(KindNotSupportedError, match=message):
        fw.build(spec)
    # the runner builds through the framework's _build: refused there too, by name
    x = np.random.default_rng(0).normal(size=(3, 4))
    with pytest.raises(KindNotSupportedError, match=f"toy_shift layer in {framework}"):
        xgrad.compare(spec, x, frameworks=f"numpy,{framework}")


@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")
def test_linen_variables_refuse_a_kind_flax_lacks(shift):
    spec = xgrad.MLP(4, [xgrad.Dense(3), shift])
    with pytest.raises(KindNotSupportedError, match="toy_shift layer in flax"):
        xgrad.get_framework("flax").linen_variables(spec, xgrad.init_params(spec), "float32")


@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")
def test_nnx_modules_read_as_a_kind_state_their_configuration():
    from flax import nnx

    from xgrad.frameworks.flax.reader import module_hints

    rngs = nnx.Rngs(0)
    assert module_hints(nnx.LayerNorm(3, epsilon=1e-5, rngs=rngs)) == {
        "kind": "layernorm",
        "epsilon": 1e-5,
    }
    assert module_hints(nnx.RMSNorm(3, rngs=rngs)) == {"kind": "rmsnorm", "epsilon": 1e-6}
    assert module_hints(nnx.BatchNorm(3, momentum=0.9, rngs=rngs)) == {
        "kind": "batchnorm",
        "epsilon": 1e-5,
        "momentum": 0.9,
    }
    assert module_hints(nnx.Linear(3, 2, rngs=rngs)) == {} == module_hints(None)
