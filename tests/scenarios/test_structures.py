"""Models whose structure is not one chain of layers against their ports (issue 20's
scenarios), written as the PyTorch, Flax and Keras docs write them:

* outputs by name: a torch model returning ``{"logits": ..., "hidden": ...}`` or a
  ``ModelOutput``-like dataclass, against an NNX port returning a dict or a tuple; the loss sees
  the first floating tensor (the report says which) or the one ``output=`` names, per side too;
  a port dividing its logits by a temperature is named in the model's own code;
* a tied autoencoder (the decoder is the encoder's weight transposed, a sigmoid output)
  against an NNX port tying the same way: the shared weight compared once, its gradient the
  sum of both uses (a port whose decoder stops that gradient fails at the encoder); a tanh
  output is named in the model's own code; a port that unties the decoder is not ok;
* a Keras subclassed port taking its LayerNormalization epsilon in its constructor, without
  ``get_config`` (as the Keras guides write one): the right epsilon compares or is refused
  with the reason, a wrong one is never OK;
* a port with LayerNorm scale and bias where the reference has none: listed, not ok unless
  ``ignore=`` names them (native names or globs), an unknown name listing the nearest.
"""

from __future__ import annotations

import importlib.util
import re
from collections import OrderedDict
from dataclasses import dataclass, fields

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)

D, HIDDEN, OUT = 8, 16, 4
needs_keras = pytest.mark.skipif("tensorflow" not in INSTALLED, reason="tensorflow is needed")

if {"torch", "flax"} <= INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F
    from flax import nnx
    from torch import nn

    import xgrad
    from xgrad.errors import InputError, XgradError

    # -- outputs by name --------------------------------------------------------------------

    class Tagger(nn.Module):
        """A token tagger returning its logits and hidden states by name."""

        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(D, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN)
            self.classifier = nn.Linear(HIDDEN, OUT)

        def forward(self, x):
            hidden = self.norm(F.gelu(self.encoder(x)))
            return {"logits": self.classifier(hidden), "hidden": hidden}

    @dataclass
    class TaggerOutput(OrderedDict):
        """Built the way ``transformers.utils.ModelOutput`` is: a dataclass that is an ordered
        dict of its fields that are not ``None``."""

        logits: torch.Tensor | None = None
        hidden_states: torch.Tensor | None = None

        def __post_init__(self):
            for f in fields(self):
                value = getattr(self, f.name)
                if value is not None:
                    self[f.name] = value

    class TaggerWithOutput(Tagger):
        def forward(self, x):
            out = super().forward(x)
            return TaggerOutput(logits=out["logits"], hidden_states=out["hidden"])

    class TaggerPort(nnx.Module):
        def __init__(self, *, as_tuple=False, temperature=1.0, rngs: nnx.Rngs):
            self.encoder = nnx.Linear(D, HIDDEN, rngs=rngs)
            self.norm = nnx.LayerNorm(HIDDEN, epsilon=1e-5, rngs=rngs)
            self.classifier = nnx.Linear(HIDDEN, OUT, rngs=rngs)
            self.as_tuple = as_tuple
            self.temperature = temperature

        def __call__(self, x):
            hidden = self.norm(nnx.gelu(self.encoder(x), approximate=False))
            logits = self.classifier(hidden) / self.temperature  # the planted bug: 2.0
            return (logits, hidden) if self.as_tuple else {"logits": logits, "hidden": hidden}

    # -- a tied autoencoder -----------------------------------------------------------------

    class TiedAutoencoder(nn.Module):
        """The decoder is the encoder's weight transposed."""

        def __init__(self, d: int = 12, code: int = 6):
            super().__init__()
            self.enc = nn.Linear(d, code)
            self.dec_bias = nn.Parameter(torch.zeros(d))

        def forward(self, x):
            h = torch.relu(self.enc(x))
            return torch.sigmoid(F.linear(h, self.enc.weight.t(), self.dec_bias))

    class TiedAutoencoderPort(nnx.Module):
        def __init__(self, d=12, code=6, *, act=jax.nn.sigmoid, stop=False, rngs: nnx.Rngs):
            self.enc = nnx.Linear(d, code, rngs=rngs)
            self.dec_bias = nnx.Param(jnp.zeros(d))
            self.act = act
            self.stop = stop

        def __call__(self, x):
            h = jax.nn.relu(self.enc(x))
            w = self.enc.kernel[...]  # (d, code): the decoder is its transpose
            if self.stop:  # the planted bug: only the encoder's use reaches the gradient
                w = jax.lax.stop_gradient(w)
            return self.act(h @ w.T + self.dec_bias[...])

    class UntiedAutoencoderPort(nnx.Module):
        def __init__(self, d=12, code=6, *, rngs: nnx.Rngs):
            self.enc = nnx.Linear(d, code, rngs=rngs)
            self.dec = nnx.Linear(code, d, rngs=rngs)

        def __call__(self, x):
            return jax.nn.sigmoid(self.dec(jax.nn.relu(self.enc(x))))

    # -- norms with and without affine terms --------------------------------------------------

    class PlainNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(D, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN, elementwise_affine=False)
            self.out = nn.Linear(HIDDEN, OUT)

        def forward(self, x):
            return self.out(self.norm(torch.tanh(self.fc(x))))

    class AffineNormPort(nnx.Module):
        def __init__(self, *, rngs: nnx.Rngs):
            self.fc = nnx.Linear(D, HIDDEN, rngs=rngs)
            self.norm = nnx.LayerNorm(HIDDEN, epsilon=1e-5, rngs=rngs)  # scale and bias
            self.out = nnx.Linear(HIDDEN, OUT, rngs=rngs)

        def __call__(self, x):
            return self.out(self.norm(jnp.tanh(self.fc(x))))

    class NormHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(D, HIDDEN)
            self.norm = nn.LayerNorm(HIDDEN)  # eps 1e-5
            self.head = nn.Linear(HIDDEN, OUT)

        def forward(self, x):
            return self.head(self.norm(torch.relu(self.dense(x))))


if "tensorflow" in INSTALLED:
    import keras

    class NormHeadKeras(keras.Model):
        """Written as the Keras guides write a subclassed model: no ``get_config``."""

        def __init__(self, eps=1e-3):
            super().__init__()
            self.dense = keras.layers.Dense(HIDDEN, activation="relu")
            self.norm = keras.layers.LayerNormalization(epsilon=eps)
            self.head = keras.layers.Dense(OUT)

        def call(self, x):
            return self.head(self.norm(self.dense(x)))


def _torch(cls, **kwargs):
    torch.manual_seed(0)
    return cls(**kwargs)


def _x(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _first(report) -> dict:
    assert not report.ok, report.summary()
    first = report.first_divergence
    assert first is not None, report.summary()
    return first


def _says(report, text: str) -> bool:
    return any(text in note for note in report.notes)


# -- 1. outputs by name ---------------------------------------------------------------------------


@pytest.mark.parametrize("as_tuple", [False, True], ids=["dict", "tuple"])
def test_a_dict_output_against_a_port_returning_a_dict_or_a_tuple_is_ok(as_tuple):
    port = TaggerPort(as_tuple=as_tuple, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(Tagger), port, _x(3, 5, D))
    assert report.ok, report.summary()
    assert _says(report, "reference: the model returns 2 tensors; the loss sees logits (3, 5, 4)")
    seen = "0 (3, 5, 4)" if as_tuple else "logits (3, 5, 4)"
    assert _says(report, f"candidate: the model returns 2 arrays; the loss sees {seen}")
    assert report.output.shape == (3, 5, OUT)


def test_output_picks_another_output_on_both_sides_or_per_side():
    x = _x(3, 5, D)
    report = xgrad.compare_models(_torch(Tagger), TaggerPort(rngs=nnx.Rngs(0)), x, output="hidden")
    assert report.ok, report.summary()
    assert _says(report, "the loss sees hidden (3, 5, 16)")
    assert report.output.shape == (3, 5, HIDDEN)
    per_side = {"reference": "hidden", "candidate": 1}
    port = TaggerPort(as_tuple=True, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(Tagger), port, x, output=per_side)
    assert report.ok, report.summary()
    assert _says(report, "candidate: the model returns 2 arrays; the loss sees 1 (3, 5, 16)")
    with pytest.raises(InputError, match=r"output='hidden' names no output .* 0 \(3, 5, 4\)"):
        xgrad.compare_models(_torch(Tagger), port, x, output="hidden")


@pytest.mark.parametrize(
    "as_tuple, output",
    [(False, None), (True, {"reference": "logits", "candidate": 0})],
    ids=["dict-default", "tuple-per-side"],
)
def test_a_temperature_on_the_logits_is_named_in_the_models_own_code(as_tuple, output):
    port = TaggerPort(as_tuple=as_tuple, temperature=2.0, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(Tagger), port, _x(3, 5, D), output=output)
    first = _first(report)
    assert (first["path"], first["where"]) == ("", "forward")
    assert first["names"] == {"reference": "Tagger", "flax.nnx": "TaggerPort"}
    assert first["detail"] == "its own code after its submodules (theirs agree)"
    assert report.diagnoses[0].cause == "unexplained"  # a division in forward: no kind


def test_the_other_output_differing_is_reported_when_the_loss_sees_the_right_one():
    # the loss sees hidden, which agrees; the model's own output (its logits) does not
    port = TaggerPort(temperature=2.0, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(Tagger), port, _x(3, 5, D), output="hidden")
    assert not report.failures(), "every gradient of the loss on hidden matches"
    first = _first(report)
    assert (first["path"], first["where"]) == ("", "forward")


def test_a_mismatch_summary_names_a_comparison_beyond_tolerance():
    port = TaggerPort(temperature=2.0, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(Tagger), port, _x(3, 5, D), output="hidden")
    found = re.search(r"rel_norm (\S+) \(tolerance (\S+)\)", report.summary())
    assert found and float(found[1]) > float(found[2]), report.summary()
    assert "worst output of (the model) (TaggerPort)" in report.summary()


def test_a_model_output_dataclass_is_read_by_its_fields():
    x = _x(3, 5, D)
    report = xgrad.compare_models(_torch(TaggerWithOutput), TaggerPort(rngs=nnx.Rngs(0)), x)
    assert report.ok, report.summary()
    assert _says(report, "reference: the model returns 2 tensors; the loss sees logits")
    report = xgrad.compare_models(
        _torch(TaggerWithOutput),
        TaggerPort(as_tuple=True, rngs=nnx.Rngs(0)),
        x,
        output={"reference": "hidden_states", "candidate": 1},
    )
    assert report.ok, report.summary()
    bug = TaggerPort(temperature=2.0, rngs=nnx.Rngs(0))
    first = _first(xgrad.compare_models(_torch(TaggerWithOutput), bug, x))
    assert first["names"] == {"reference": "TaggerWithOutput", "flax.nnx": "TaggerPort"}


@pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed"
)
def test_a_transformers_model_output_is_read_by_its_fields():
    from transformers.modeling_outputs import TokenClassifierOutput

    class HFTagger(Tagger):
        def forward(self, x):
            out = super().forward(x)
            return TokenClassifierOutput(logits=out["logits"], hidden_states=(out["hidden"],))

    x = _x(3, 5, D)
    report = xgrad.compare_models(_torch(HFTagger), TaggerPort(rngs=nnx.Rngs(0)), x)
    assert report.ok, report.summary()
    assert _says(report, "the loss sees logits")
    per_side = {"reference": "hidden_states.0", "candidate": "hidden"}
    report = xgrad.compare_models(
        _torch(HFTagger), TaggerPort(rngs=nnx.Rngs(0)), x, output=per_side
    )
    assert report.ok, report.summary()


# -- 2. a tied autoencoder ------------------------------------------------------------------------


def test_a_tied_autoencoder_port_tying_the_same_way_is_ok_its_weight_compared_once():
    report = xgrad.compare_models(
        _torch(TiedAutoencoder), TiedAutoencoderPort(rngs=nnx.Rngs(0)), _x(4, 12)
    )
    assert report.ok, report.summary()
    names = [e.name for e in report.parameters]
    assert names == ["enc.kernel", "enc.bias", "dec_bias"]  # the model's own bias too
    assert report.parameters[2].native == {"reference": "dec_bias", "flax.nnx": "dec_bias"}


def test_the_tied_gradient_is_the_sum_of_both_uses():
    # a port whose decoder stops the weight's gradient computes the same outputs; only the
    # encoder's use reaches enc.kernel, and that is all that differs
    port = TiedAutoencoderPort(stop=True, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(TiedAutoencoder), port, _x(4, 12))
    assert [e.name for e, _, _ in report.failures()] == ["enc.kernel"]
    first = _first(report)
    assert (first["path"], first["where"]) == ("enc", "backward")
    assert first["names"] == {"reference": "enc", "flax.nnx": "enc"}


def test_a_tanh_output_in_place_of_the_sigmoid_is_named_in_the_models_own_code():
    port = TiedAutoencoderPort(act=jnp.tanh, rngs=nnx.Rngs(0))
    report = xgrad.compare_models(_torch(TiedAutoencoder), port, _x(4, 12))
    first = _first(report)
    assert (first["path"], first["where"]) == ("", "forward")
    assert first["names"] == {"reference": "TiedAutoencoder", "flax.nnx": "TiedAutoencoderPort"}
    assert first["detail"] == "its own code after its submodules (theirs agree)"
    # the decoder's matmul and the activation are one piece of code: no activation alone
    assert report.diagnoses[0].cause == "unexplained"


def test_an_untied_port_of_a_tied_autoencoder_is_named_tied_weights():
    # the reference ties in its own forward (F.linear(h, self.enc.weight.t())): only a run
    # shows it; the port's decoder has a kernel of its own
    report = xgrad.compare_models(
        _torch(TiedAutoencoder), UntiedAutoencoderPort(rngs=nnx.Rngs(0)), _x(4, 12)
    )
    assert not report.ok and not report.unpaired
    (d,) = report.diagnoses
    assert (d.cause, d.confirmed) == ("tied-weights", True), report.diagnoses
    assert "dec.kernel" in d.detail
    assert _says(report, "the reference ties enc.weight to enc.kernel")
    # the copy's decoder got the encoder's values: the outputs agree, one gradient parts
    assert [e.name for e, _, _ in report.failures()] == ["enc.kernel"]


def test_a_flax_reference_tied_in_its_own_code_against_an_untied_torch_port_is_not_ok():
    # the JAX layer reader sees enc.kernel used twice and reads no layer: module by module
    # instead, where the tie (written in __call__, not a variable held twice) is not seen,
    # so the torch decoder's kernel pairs with nothing
    class Untied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Linear(12, 6), nn.Linear(6, 12, bias=False)
            self.dec_bias = nn.Parameter(torch.zeros(12))

        def forward(self, x):
            return torch.sigmoid(self.dec(torch.relu(self.enc(x))) + self.dec_bias)

    report = xgrad.compare_models(TiedAutoencoderPort(rngs=nnx.Rngs(0)), _torch(Untied), _x(4, 12))
    assert not report.ok
    assert _says(report, "read module by module")
    assert [u["native"] for u in report.unpaired] == ["dec.weight"]


# -- 3. a Keras subclassed port taking its epsilon in its constructor -----------------------------


def _keras_port(eps: float, x: np.ndarray, weights_of=None):
    """The Keras port, built by a call; with ``weights_of``, holding that torch model's
    weights, loaded by hand (kernels transposed)."""
    model = NormHeadKeras(eps=eps)
    model(x)
    if weights_of is not None:
        t = {k: v.detach().numpy() for k, v in weights_of.state_dict().items()}
        model.dense.set_weights([t["dense.weight"].T, t["dense.bias"]])
        model.norm.set_weights([t["norm.weight"], t["norm.bias"]])
        model.head.set_weights([t["head.weight"].T, t["head.bias"]])
    return model


@needs_keras
def test_the_right_constructor_epsilon_compares_or_is_refused_with_the_reason():
    x = _x(4, D)
    try:
        report = xgrad.compare_models(_torch(NormHead), _keras_port(1e-5, x), x)
    except XgradError as err:  # the copy Keras builds would have another epsilon
        assert "get_config" in str(err) and "transfer=False" in str(err)
        assert "eps=1e-05" in str(err) and "eps=0.001" in str(err)
    else:
        assert report.ok and not report.config_diffs, report.summary()
    # the way out the refusal names: the user's own weights, compared as they are
    reference = _torch(NormHead)
    port = _keras_port(1e-5, x, weights_of=reference)
    report = xgrad.compare_models(reference, port, x, transfer=False)
    assert report.ok, report.summary()


@needs_keras
@pytest.mark.parametrize("transfer", ["auto", False])
def test_a_wrong_constructor_epsilon_is_never_ok(transfer):
    x = _x(4, D)
    reference = _torch(NormHead)
    port = _keras_port(1e-3, x, weights_of=reference if transfer is False else None)
    try:
        report = xgrad.compare_models(reference, port, x, transfer=transfer)
    except XgradError as err:
        assert "get_config" in str(err)
        return
    assert not report.ok, report.summary()
    assert report.diagnoses[0].cause == "layernorm-epsilon", report.diagnoses
    assert report.first_divergence["names"]["reference"] == "norm"
    (diff,) = report.config_diffs
    assert diff.fields == {"epsilon": (1e-5, 1e-3)}


@needs_keras
def test_a_keras_dense_with_its_activation_ported_from_linear_and_relu_on_tokens_is_ok():
    inputs = keras.Input((3, D))
    h = keras.layers.Dense(HIDDEN, activation="relu", name="dense")(inputs)
    h = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")(h)
    port = keras.Model(inputs, keras.layers.Dense(OUT, name="head")(h))
    report = xgrad.compare_models(_torch(NormHead), port, _x(4, 3, D))
    assert report.ok, report.summary()
    assert port.get_layer("dense").activation is keras.activations.relu  # as it was
    assert any("compared before its activation relu" in n for n in report.notes)


# -- 4. affine terms on one side only -----------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, D), (4, 3, D)], ids=["vectors", "tokens"])
def test_a_norm_with_scale_and_bias_the_reference_lacks_is_listed_and_not_ok(shape):
    x = _x(*shape)
    report = xgrad.compare_models(_torch(PlainNorm), AffineNormPort(rngs=nnx.Rngs(0)), x)
    assert not report.ok
    assert report.summary().startswith("INCOMPLETE"), report.summary()
    assert [(u["side"], u["native"]) for u in report.unpaired] == [
        ("candidate", "norm/scale"),
        ("candidate", "norm/bias"),
    ]
    for ignore in (["norm/scale", "norm/bias"], ["norm/*"]):
        report = xgrad.compare_models(
            _torch(PlainNorm), AffineNormPort(rngs=nnx.Rngs(0)), x, ignore=ignore
        )
        assert report.ok, report.summary()
        assert _says(report, "ignored as you asked: candidate norm/scale")


def test_an_unknown_ignore_name_lists_the_nearest():
    x = _x(4, 3, D)
    with pytest.raises(InputError, match=r"ignore='norm/scal' .*'norm/scale'"):
        xgrad.compare_models(
            _torch(PlainNorm), AffineNormPort(rngs=nnx.Rngs(0)), x, ignore=["norm/scal"]
        )
