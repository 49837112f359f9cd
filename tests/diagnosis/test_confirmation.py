"""One confirmation rule for every cause: the *reference's* unit, re-run with its own weights
and input under the alternative convention, must reproduce the candidate, and the unchanged
reference must not. Each test plants a port the way users write one, where a cause used to
be confirmed by what does not explain it (the candidate's own weights, a name instead of
values, a partial drop of the error) or missed (a 16-bit layer)."""

from __future__ import annotations

import numpy as np
import pytest
from _ports import one, reference, x
from conftest import INSTALLED

import xgrad
from xgrad.identify import rel

needs_torch = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")
needs_jax = pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
needs_keras = pytest.mark.skipif(
    "tensorflow" not in INSTALLED, reason="tensorflow/keras is not installed"
)
if "torch" in INSTALLED:
    import torch
    from torch import nn
if "jax" in INSTALLED:
    import jax.numpy as jnp


def _load(port, params, *, skip=(), swap=None, scale=None):
    """Copy an xgrad reference's weights into a torch ``nn.Sequential`` by hand (as a user
    does before ``transfer=False``): Linear ``i`` of the port gets ``layers.i`` (``swap``
    maps a layer index to the one it wrongly takes), LayerNorms their scale and bias (except
    the names in ``skip``); ``scale`` multiplies one weight, by name."""
    linears = [m for m in port if isinstance(m, nn.Linear | nn.LayerNorm)]
    with torch.no_grad():
        for i, module in enumerate(linears):
            j = (swap or {}).get(i, i)
            for native, name in (("weight", "kernel"), ("bias", "bias")):
                if isinstance(module, nn.LayerNorm):
                    name = "scale" if native == "weight" else "bias"
                key = f"layers.{j}.{name}"
                if key in skip:
                    continue
                value = params[key] * (scale or {}).get(key, 1.0)
                value = value.T if name == "kernel" else value
                getattr(module, native).copy_(torch.tensor(np.ascontiguousarray(value)))
    return port


# -- activations named from their values, and the candidate's weights never borrowed -------------


@needs_keras
@needs_torch
def test_keras_ops_gelu_is_the_tanh_form_and_a_port_in_erf_is_named():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation=keras.ops.gelu),  # the tanh form by default
            keras.layers.Dense(3),
        ]
    )
    assert xgrad.read_model(model).layers[0].layer.activation == "gelu_tanh"
    xs = x(6, scale=2)
    torch.manual_seed(0)
    same = nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 3))
    report = xgrad.compare_models(model, same, xs)
    assert report.ok and not report.config_diffs, report.summary()
    erf = nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3))
    report = xgrad.compare_models(model, erf, xs)
    d = one(report)
    assert (d.cause, d.layer, d.where, d.confirmed) == (
        "gelu-approximation",
        "layers.0",
        "forward",
        True,
    )
    assert "reference uses the tanh GELU, candidate the exact erf form" in d.detail
    assert d.residual <= report.tolerance < d.before


@needs_torch
def test_pytorch_gelu_forms_are_read_from_their_values():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.act, self.out = nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)

        def forward(self, x):
            return self.out(nn.functional.gelu(self.act(self.fc(x)), approximate="tanh"))

    layers = [info.layer for info in xgrad.read_model(Block(), input_shape=(6,)).layers]
    assert [getattr(layer, "activation", None) or layer.name for layer in layers] == [
        "gelu",
        "gelu_tanh",
        "linear",
    ]


@needs_torch
def test_a_gelu_port_whose_kernel_is_also_off_gets_weights_differ_first():
    spec, params = reference([xgrad.Dense(8, "gelu"), xgrad.Dense(3)], 6)  # erf GELU
    port = nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 3))
    _load(port, params, scale={"layers.0.kernel": 1.001})  # a loader off by 0.1%
    report = xgrad.compare_models((spec, params), port, x(6, scale=2))
    d = one(report)
    assert (d.cause, d.layer, d.confirmed) == ("unexplained", "layers.0", False)
    assert "weights of layer layers.0 differ from the reference's (kernel rel 0.001" in d.detail
    # the same GELU form, weights loaded right: named and confirmed
    right = _load(
        nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate="tanh"), nn.Linear(8, 3)), params
    )
    d = one(xgrad.compare_models((spec, params), right, x(6, scale=2)))
    assert (d.cause, d.layer, d.confirmed) == ("gelu-approximation", "layers.0", True)


@needs_torch
def test_a_layernorm_scale_never_loaded_is_not_an_epsilon():
    spec, params = reference([xgrad.Dense(8, "tanh"), xgrad.LayerNorm(1e-6), xgrad.Dense(3)], 6)
    rng = np.random.default_rng(3)
    params["layers.1.scale"] = (1 + 0.1 * rng.standard_normal(8)).astype(np.float32)  # trained
    port = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 3))  # 1e-5
    _load(port, params, skip={"layers.1.scale"})  # its weight stays at ones
    report = xgrad.compare_models((spec, params), port, x(6))
    d = one(report)
    assert (d.cause, d.layer, d.confirmed) == ("unexplained", "layers.1", False)
    assert "differ from the reference's (scale rel" in d.detail
    # loaded, the epsilon alone is named
    loaded = _load(
        nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.LayerNorm(8), nn.Linear(8, 3)), params
    )
    report = xgrad.compare_models((spec, params), loaded, x(6, scale=0.01))
    d = one(report)
    assert (d.cause, d.layer, d.confirmed) == ("layernorm-epsilon", "layers.1", True)
    assert d.residual <= report.tolerance < d.before


# -- weight layout: confirmed only by a re-run that reproduces the candidate ----------------------


@needs_torch
def test_a_swapped_pair_of_square_layers_is_confirmed_only_by_a_rerun_that_reproduces_it():
    layers = [xgrad.Dense(8, "tanh"), xgrad.Dense(8, "tanh"), xgrad.Dense(8, "tanh")]
    spec, params = reference([*layers, xgrad.Dense(3)], 6)
    stack = [nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh()]
    port = _load(nn.Sequential(*stack, nn.Linear(8, 3)), params, swap={1: 2, 2: 1})
    report = xgrad.compare_models((spec, params), port, x(6), transfer=False)
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.confirmed) == ("weight-layout", "layers.1", True)
    assert "holds the reference's layer layers.2 kernel" in d.detail
    assert "layers.2 bias" in d.detail
    assert d.residual <= report.tolerance < d.before
    # the same slip in a port that also computes relu there: the re-run with the other
    # layer's weights does not reproduce it, so nothing is confirmed
    stack[3] = nn.ReLU()
    port = _load(nn.Sequential(*stack, nn.Linear(8, 3)), params, swap={1: 2, 2: 1})
    report = xgrad.compare_models((spec, params), port, x(6), transfer=False)
    d = report.diagnoses[0]
    assert (d.cause, d.layer, d.confirmed) == ("unexplained", "layers.1", False)
    assert "something else differs too" in d.detail
    assert d.residual > report.tolerance


# -- dtype: at the layer whose outputs carry 16-bit rounding, whole-layer compute included --------


DENSE4 = {
    "w0": (6, 8),
    "b0": (8,),
    "w1": (8, 8),
    "b1": (8,),
    "w2": (8, 8),
    "b2": (8,),
    "w3": (8, 3),
    "b3": (3,),
}


def _half_at_2(low, whole: bool):
    """A pure-JAX port whose third layer computes in ``low`` (its matmul and bias; with
    ``whole`` its activation too, else in float32 after a cast)."""

    def port(p, x):
        h = jnp.tanh(x @ p["w0"] + p["b0"])
        h = jnp.tanh(h @ p["w1"] + p["b1"])
        z = h.astype(low) @ p["w2"].astype(low) + p["b2"].astype(low)
        h = jnp.tanh(z).astype(jnp.float32) if whole else jnp.tanh(z.astype(jnp.float32))
        return h @ p["w3"] + p["b3"]

    return port, {k: jnp.zeros(s, jnp.float32) for k, s in DENSE4.items()}


@needs_jax
@pytest.mark.parametrize("whole", [True, False], ids=["whole-layer", "activation-in-float32"])
@pytest.mark.parametrize("low", ["bfloat16", "float16"])
def test_a_16_bit_layer_is_named_where_it_is_and_reproduced(low, whole):
    ref = reference([xgrad.Dense(8, "tanh")] * 3 + [xgrad.Dense(3)], 6)
    report = xgrad.compare_models(ref, _half_at_2(getattr(jnp, low), whole), x(6))
    d = one(report)
    assert (d.cause, d.layer, d.where, d.confirmed) == ("dtype", "layers.2", "forward", True)
    assert f"computes this layer in {low}" in d.detail
    # reproduced to a few values rounded the other way, not merely a little better than
    # float32 (2**-8 and 2**-11 are the two dtypes' unit roundoffs)
    assert d.residual <= 0.1 * {"bfloat16": 2.0**-8, "float16": 2.0**-11}[low] < d.before


# -- the rule itself ----------------------------------------------------------------------------


class _Ev:
    tol = fit_tol = 1e-5


def test_the_rule_needs_the_alternative_to_reproduce_and_the_unchanged_not_to():
    from xgrad.diagnosis.records import check

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 4))
    cand = ref + 1e-3 * rng.standard_normal((8, 4))  # the candidate parts at 1e-3
    near = cand + 1e-8 * rng.standard_normal((8, 4))
    assert rel(cand, ref) > _Ev.tol
    assert check(_Ev, cand, near, ref).confirmed
    assert not check(_Ev, cand, ref + 0.5 * (cand - ref), ref).confirmed  # halves the error
    assert not check(_Ev, cand, near, cand).confirmed  # the unchanged re-run reproduces it too
    # a re-run that is not the reference's own computation confirms nothing
    assert not check(_Ev, cand, near, ref + 0.9 * (cand - ref), reference=ref).confirmed
    found = check(_Ev, [cand, cand[:, 0]], [near, cand[:, 0] + 1e-2], [ref, ref[:, 0]])
    assert not found.confirmed and found.residual > 1e-3  # the gradient is not reproduced
