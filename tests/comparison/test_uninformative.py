"""A comparison is uninformative only when it is: when every reference gradient is within its
own rounding, never because dL/d output is large. A sigmoid output under ``bce`` (or a softmax
under ``cce``) near saturation has dL/d output of order 1/p, which the output layer cancels:
its parameter gradients are of order 1, and correct ports pass while real bugs fail."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

needs = pytest.mark.skipif({"torch", "flax"} - INSTALLED, reason="needs torch and flax")
if not {"torch", "flax"} - INSTALLED:
    import jax
    import jax.numpy as jnp
    import torch
    from flax import nnx
    from torch import nn

D, H, B = 6, 8, 8
X = np.random.default_rng(0).standard_normal((B, D)).astype(np.float32)


def _keras_sigmoid_classifier(shift: float):
    """Keras Dense(tanh) -> Dense(1, sigmoid) whose output bias is moved by ``shift``."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((D,)),
            keras.layers.Dense(H, activation="tanh"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    kernel, bias = model.layers[1].get_weights()
    model.layers[1].set_weights([kernel, bias + shift])
    return model


if not {"torch", "flax"} - INSTALLED:

    class TorchPort(nn.Module):
        """The Keras classifier in torch; ``bug`` plants one difference."""

        def __init__(self, out: int = 1, bug: str | None = None):
            super().__init__()
            self.l1, self.l2, self.bug = nn.Linear(D, H), nn.Linear(H, out), bug

        def forward(self, x):
            a = self.l1(x)
            if self.bug == "scaled":  # the first layer's gradient scaled by 0.07
                a = 0.07 * a + (0.93 * a).detach()
            h = nn.functional.gelu(a, approximate="tanh") if self.bug == "gelu" else torch.tanh(a)
            z = self.l2(h)
            return torch.sigmoid(z) if z.shape[-1] == 1 else torch.softmax(z, dim=-1)

    class NnxPort(nnx.Module):
        def __init__(self, out: int, rngs: nnx.Rngs):
            self.l1, self.l2 = nnx.Linear(D, H, rngs=rngs), nnx.Linear(H, out, rngs=rngs)

        def __call__(self, x):
            return jax.nn.softmax(self.l2(jnp.tanh(self.l1(x))))


@needs
@pytest.mark.skipif("tensorflow" not in INSTALLED, reason="needs tensorflow")
def test_a_saturated_sigmoid_under_bce_is_compared_exact_ports_pass_and_bugs_fail():
    reference = _keras_sigmoid_classifier(-14.0)  # p ~ 1e-6 on every row
    p = np.asarray(reference(X))
    assert p.max() < 1e-5 and p.min() > 1e-7  # saturated, inside the clipping bounds
    y = np.ones_like(p)  # every target on the far side: dL/dp = -1 / (B p) ~ -1e5
    # By hand: dL/dz = (p - 1) / B, so the output bias's gradient is mean(p - 1) ~ -1: of
    # order 1, however large dL/d output is.
    exact = xgrad.compare_models(reference, TorchPort(), X, y, loss="bce")
    assert not exact.uninformative and exact.ok, exact.summary()

    scaled = xgrad.compare_models(reference, TorchPort(bug="scaled"), X, y, loss="bce")
    assert not scaled.uninformative and not scaled.ok
    assert scaled.summary().startswith("MISMATCH")
    first = [e for e in scaled.parameters if e.native["torch"].startswith("l1.")]
    assert len(first) == 2  # the first Dense: kernel and bias, both off by 1 - 0.07
    assert all(abs(m.rel_norm - 0.93) < 1e-3 for e in first for m in e.results.values())

    gelu = xgrad.compare_models(reference, TorchPort(bug="gelu"), X, y, loss="bce")
    assert not gelu.uninformative and not gelu.ok
    assert gelu.summary().startswith("MISMATCH")


@needs
def test_a_saturated_softmax_under_cce_passes_on_an_exact_port():
    torch.manual_seed(0)
    reference = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, 3), nn.Softmax(dim=-1))
    with torch.no_grad():
        reference[2].bias[0] += 16.0  # class 0 takes p ~ 1 - 1e-6; the others ~ 2e-7
    p = reference(torch.tensor(X)).detach().numpy()
    y = np.eye(3, dtype=np.float32)[np.full(B, 1)]  # every target on a class of p ~ 2e-7
    assert p[:, 1].max() < 1e-6 and p[:, 1].min() > 1e-7  # inside the clipping bound
    report = xgrad.compare_models(reference, NnxPort(3, nnx.Rngs(0)), X, y, loss="cce")
    assert not report.uninformative and report.ok, report.summary()


@needs
def test_degenerate_comparisons_stay_uninformative():
    torch.manual_seed(0)
    softmax = nn.Sequential(nn.Linear(D, H), nn.Tanh(), nn.Linear(H, 3), nn.Softmax(dim=-1))
    summed = xgrad.compare_models(softmax, softmax, X, loss="sum")  # sum(softmax) == 1
    assert summed.uninformative and not summed.ok
    assert "sum of a softmax output is always 1" in summed.notes[-1]

    dead = nn.Sequential(nn.Linear(D, H), nn.ReLU())
    with torch.no_grad():
        dead[0].bias.fill_(-100.0)  # every unit dead on the whole batch: nothing flows back
    report = xgrad.compare_models(dead, dead, X)
    assert report.uninformative and not report.ok
    assert "exactly zero" in report.notes[-1] and "ReLU dead" in report.notes[-1]

    linear = nn.Sequential(nn.Linear(D, 3))
    target = linear(torch.tensor(X)).detach().numpy()
    at_target = xgrad.compare_models(linear, linear, X, target, loss="mse")  # dL/d output = 0
    assert at_target.uninformative and not at_target.ok
    assert "dL/d output is zero at every output" in at_target.notes[-1]


@needs
def test_kinks_crossed_while_measuring_the_rounding_leave_a_comparison_informative():
    # Four pre-activations exactly at a ReLU's kink: moving the inputs by rounding pushes
    # some across in both measuring runs, and the first layer's gradients then move by 30%
    # or more. The second layer's do not move (a ReLU is continuous): it is informative on
    # its own, so an exact port passes (its own kinks: match-kink) and a 3% bug fails.
    torch.manual_seed(5)
    reference = nn.Sequential(nn.Linear(D, H), nn.ReLU(), nn.Linear(H, 3))
    x = X[:4]
    with torch.no_grad():
        for k in range(4):  # z[k, k] = 0 in float32
            reference[0].bias[k] = -(torch.tensor(x[k]) @ reference[0].weight[k]).item()

    class Relu(nnx.Module):
        def __init__(self, rngs: nnx.Rngs, factor: float = 1.0):
            self.l1, self.l2 = nnx.Linear(D, H, rngs=rngs), nnx.Linear(H, 3, rngs=rngs)
            self.factor = factor

        def __call__(self, x):
            h = jax.nn.relu(self.l1(x))
            h = self.factor * h + jax.lax.stop_gradient((1 - self.factor) * h)
            return self.l2(h)  # dL/dh, and so the first layer's gradients, times factor

    exact = xgrad.compare_models(reference, Relu(nnx.Rngs(0)), x)
    assert exact.ok and not exact.uninformative, exact.summary()
    wrong = xgrad.compare_models(reference, Relu(nnx.Rngs(0), factor=0.97), x)
    assert not wrong.uninformative and not wrong.ok
    assert "layers.0.kernel" in {e.name for e, _, _ in wrong.failures()}
