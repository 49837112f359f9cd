"""Verdicts a person (and a CI job) can trust: no vacuous OK, loader bugs caught by default,
each side's own loss, and differences that only rounding makes passing with their reason."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

needs = pytest.mark.skipif({"jax", "torch"} - INSTALLED, reason="needs jax and torch")
if not {"jax", "torch"} - INSTALLED:
    import jax
    import jax.numpy as jnp
    import optax
    import torch
    import torch.nn.functional as F
    from torch import nn

RNG = np.random.default_rng(0)


def test_a_constant_loss_is_uninformative_never_ok():
    spec = xgrad.MLP(4, [xgrad.Dense(5, "relu"), xgrad.Dense(3, "softmax")])
    x = RNG.normal(size=(3, 4))
    report = xgrad.compare(spec, x, frameworks="numpy", loss="sum")  # sum(softmax) == 1
    assert not report.ok and report.uninformative
    assert {m.status for e in report.parameters for m in e.results.values()} == {"uninformative"}
    assert report.summary().startswith("UNINFORMATIVE:") and "loss='projection'" in report.summary()
    assert "sum of a softmax output is always 1" in report.notes[0]
    assert report.diagnoses == ()  # nothing to explain: nothing was seen
    assert xgrad.compare(
        spec, x, frameworks="numpy", loss="projection", y=RNG.normal(size=(3, 3))
    ).ok


def test_a_single_zero_gradient_among_informative_ones_still_matches():
    spec = xgrad.MLP(4, [xgrad.Dense(6), xgrad.BatchNorm(training=True), xgrad.Dense(2)])
    report = xgrad.compare(
        spec,
        RNG.normal(size=(5, 4)),
        frameworks="numpy",
        loss="projection",
        y=RNG.normal(size=(5, 2)),
    )
    assert report.ok and not report.uninformative  # the bias before BatchNorm: zero, judged so


@needs
def test_compare_models_defaults_to_a_projection_loss_that_sees_a_softmax_classifier():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), nn.Softmax(dim=-1))
    report = xgrad.compare_models(ref, ref, RNG.normal(size=(5, 4)).astype(np.float32))
    assert report.loss == "projection" and report.ok and not report.uninformative
    summed = xgrad.compare_models(ref, ref, RNG.normal(size=(5, 4)).astype(np.float32), loss="sum")
    assert summed.uninformative and not summed.ok


@needs
def test_transfer_auto_catches_a_loader_that_transposed_a_kernel():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3))
    w = {k: v.detach().numpy() for k, v in ref.state_dict().items()}

    def port(p, x):
        return jnp.tanh(x @ p["w0"] + p["b0"]) @ p["w1"] + p["b1"]

    loaded_right = {
        "w0": w["0.weight"].T,
        "b0": w["0.bias"],
        "w1": w["2.weight"].T,
        "b1": w["2.bias"],
    }
    loaded_wrong = {**loaded_right, "w0": w["0.weight"]}  # the buggy loader forgot the transpose
    x = RNG.normal(size=(4, 5)).astype(np.float32)
    assert xgrad.compare_models(ref, (port, loaded_right), x).ok
    report = xgrad.compare_models(ref, (port, loaded_wrong), x)  # transfer="auto"
    assert not report.ok
    assert "its own weights were compared" in report.notes[0]
    assert report.diagnoses[0].cause == "weight-layout"
    fresh = {k: jnp.zeros_like(v) for k, v in loaded_right.items()}
    transferred = xgrad.compare_models(ref, (port, fresh), x)
    assert transferred.ok and "unrelated initialisation" in transferred.notes[0]
    with pytest.raises(xgrad.InputError, match="transfer must be True, False or 'auto'"):
        xgrad.compare_models(ref, (port, fresh), x, transfer="yes")


@needs
def test_each_sides_own_loss_function_mean_vs_sum_and_logits_vs_probabilities():
    torch.manual_seed(0)
    x = RNG.normal(size=(6, 5)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[RNG.integers(0, 3, size=6)]
    ref = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))

    def port(p, x):
        return jnp.tanh(x @ p["a"] + p["b"]) @ p["c"] + p["d"]

    zeros = {"a": jnp.zeros((5, 8)), "b": jnp.zeros(8), "c": jnp.zeros((8, 3)), "d": jnp.zeros(3)}

    def torch_loss(out, y):
        return F.cross_entropy(out, y)  # logits, mean over the batch

    def mean_loss(out, y):
        return optax.softmax_cross_entropy(out, y).mean()

    def sum_loss(out, y):
        return optax.softmax_cross_entropy(out, y).sum()

    assert xgrad.compare_models(ref, (port, zeros), x, y, loss=(torch_loss, mean_loss)).ok
    report = xgrad.compare_models(ref, (port, zeros), x, y, loss=(torch_loss, sum_loss))
    assert report.loss == "custom"
    d = report.diagnoses[0]
    assert (
        d.cause == "loss-reduction" and "the candidate sums where the reference means" in d.detail
    )

    probs = nn.Sequential(*ref, nn.Softmax(dim=-1))

    def prob_port(p, x):
        return jax.nn.softmax(port(p, x))

    def nll_of_probabilities(out, y):
        return -(y * torch.log(out)).sum(-1).mean()

    def logits_loss(out, y):  # the port feeds probabilities to a loss that expects logits
        return optax.softmax_cross_entropy(out, y).mean()

    report = xgrad.compare_models(
        probs, (prob_port, zeros), x, y, loss=(nll_of_probabilities, logits_loss)
    )
    d = report.diagnoses[0]
    assert d.cause == "crossentropy-form" and "from probabilities" in d.detail


def test_rounding_across_a_relu_kink_is_match_kink_and_passes():
    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec, seed=3)
    x = RNG.normal(size=(5, 3))
    params["layers.0.bias"][0] = 3e-9 - x[0] @ params["layers.0.kernel"][:, 0]  # z ~ 3e-9
    report = xgrad.compare(spec, x, params=params, frameworks="numpy")  # float32
    statuses = {e.name: e.results["numpy"].status for e in report.entries}
    assert statuses["layers.0.kernel"] == "match-kink" and report.ok
    assert report.input.results["numpy"].rel_norm > 1e-2  # really different...
    assert "rounded to the other side of a kink" in report.notes[-1]  # ...and said why
    assert "match-kink" in report.summary() and "match-kink" in report.to_markdown()


def test_a_real_convention_at_a_kink_still_fails():
    from planted import planted

    def half_at_zero(grads, x, y, loss):
        return grads  # placeholder: exactness is checked below with jnp.maximum's 0.5

    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    params = xgrad.init_params(spec, seed=3)
    params["layers.0.bias"][:] = 0
    x = RNG.normal(size=(6, 3))
    x[::2] = 0  # exactly at the kink, in every precision
    report = xgrad.compare(
        spec, x, params=params, frameworks=[planted("same", change=half_at_zero)]
    )
    assert report.ok  # the same convention: nothing to see
    if "jax" in INSTALLED:

        def port(p, x):
            return jnp.maximum(x @ p["k"] + p["b"], 0) @ p["k2"] + p["b2"]

        zeros = {
            "k": jnp.zeros((3, 4)),
            "b": jnp.zeros(4),
            "k2": jnp.zeros((4, 2)),
            "b2": jnp.zeros(2),
        }
        ref = (spec, {k: v.astype(np.float32) for k, v in params.items()})
        r = xgrad.compare_models(ref, (port, zeros), x.astype(np.float32))
        assert not r.ok and r.diagnoses[0].cause == "kink-convention"


def test_rounding_onto_the_clipping_bound_is_match_clip_never_a_claim_about_the_loss_form():
    spec = xgrad.MLP(2, [xgrad.Dense(3, "sigmoid")])
    params = {
        "layers.0.kernel": np.array([[1.0, 0.2, -0.3], [0.0, 0.1, 0.4]]),
        "layers.0.bias": np.array([16.3, 0.1, 0.2]),  # sigmoid(16.3) = 1 - 8.3e-8
    }
    x = np.array([[0.0, 1.0], [0.5, -1.0]])
    y = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    report = xgrad.compare(spec, x, y, loss="bce", params=params, frameworks="numpy")
    assert report.ok, report.mismatch_message()
    assert "match-clip" in {m.status for e in report.entries for m in e.results.values()}
    assert "clipping bound" in report.notes[-1]
    assert all(d.cause != "crossentropy-clipping" for d in report.diagnoses)
