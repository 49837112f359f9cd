"""torch models captured module by module (:mod:`xgrad.frameworks.torch.capture`): a
BatchNorm's running statistics are the module's state (canonical ``mean`` and ``var``), read
with its kind, listed in ``weights()``, written by ``with_weights`` and returned updated by
an evaluation in training mode; the user's module never changes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif("torch" not in INSTALLED, reason="torch is not installed")

if "torch" in INSTALLED:
    import torch
    from torch import nn

    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.torch.capture import capture_module

    class Net(nn.Module):
        """Linear, BatchNorm1d, ReLU, Linear, on two inputs (the second scales the output),
        so that the model is read module by module."""

        def __init__(self, norm: nn.Module | None = None):
            super().__init__()
            self.fc = nn.Linear(6, 8)
            self.bn = norm if norm is not None else nn.BatchNorm1d(8)
            self.head = nn.Linear(8, 2)

        def forward(self, x, s):
            return self.head(torch.relu(self.bn(self.fc(x)))) * s

    class CountingNorm(nn.BatchNorm1d):
        """A BatchNorm of the user's own holding one more floating buffer than the kind."""

        def __init__(self, d):
            super().__init__(d)
            self.register_buffer("seen", torch.zeros(()))

        def forward(self, x):
            self.seen += 1
            return super().forward(x)


def _net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net()
    with torch.no_grad():
        net.bn.running_mean.normal_()
        net.bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def _inputs(batch: int = 5):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, 6)).astype(np.float32)
    return x, rng.uniform(0.5, 1.5, size=(batch, 2)).astype(np.float32)


def test_batchnorm_statistics_are_its_state_read_with_its_kind():
    net = _net()
    model = capture_module(net, as_batch(_inputs()))
    bn = model.module("bn")
    assert (bn.kind, bn.opaque) == ("batchnorm", False)
    assert bn.params == {"scale": "bn.weight", "bias": "bn.bias"}
    assert bn.state == {"mean": "bn.running_mean", "var": "bn.running_var"}
    assert bn.layer.epsilon == pytest.approx(1e-5) and not bn.layer.training
    weights = model.weights()
    np.testing.assert_array_equal(weights["bn.mean"], net.bn.running_mean.numpy())
    np.testing.assert_array_equal(weights["bn.var"], net.bn.running_var.numpy())


def test_with_weights_writes_the_statistics_and_the_output_follows_them():
    net = _net()
    x, s = _inputs()
    model = capture_module(net, as_batch((x, s)))
    mean = np.linspace(-1, 1, 8).astype(np.float32)
    var = np.linspace(0.5, 3, 8).astype(np.float32)
    out = model.with_weights({"bn.mean": mean, "bn.var": var}).evaluate((x, s)).output
    want = copy.deepcopy(net)
    with torch.no_grad():
        want.bn.running_mean.copy_(torch.from_numpy(mean))
        want.bn.running_var.copy_(torch.from_numpy(var))
        expected = want(torch.from_numpy(x), torch.from_numpy(s)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.weights()["bn.mean"], net.bn.running_mean.numpy())


def test_training_mode_returns_the_updated_statistics_and_leaves_the_users_module():
    net = _net().train()
    x, s = _inputs()
    before = net.bn.running_mean.clone()
    grads = capture_module(net, as_batch((x, s))).evaluate((x, s))
    want = copy.deepcopy(net)
    with torch.no_grad():
        want(torch.from_numpy(x), torch.from_numpy(s))
    np.testing.assert_allclose(grads.state["bn.mean"], want.bn.running_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(grads.state["bn.var"], want.bn.running_var.numpy(), rtol=1e-6)
    assert set(grads.params) == {
        "fc.kernel",
        "fc.bias",
        "bn.scale",
        "bn.bias",
        "head.kernel",
        "head.bias",
    }
    assert torch.equal(net.bn.running_mean, before)


def test_inference_mode_updates_no_state():
    x, s = _inputs()
    assert capture_module(_net(), as_batch((x, s))).evaluate((x, s)).state == {}


def test_a_batchnorm_holding_another_floating_buffer_is_opaque_without_state():
    torch.manual_seed(0)
    net = Net(CountingNorm(8)).eval()
    bn = capture_module(net, as_batch(_inputs())).module("bn")
    assert (bn.kind, bn.state) == ("module", {})
    assert set(bn.params) == {"weight", "bias"}


@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")
@pytest.mark.parametrize("epsilon", [1e-5, 1e-3], ids=["port", "epsilon-bug"])
def test_a_port_of_a_batchnorm_model_compares_with_the_statistics_transferred(epsilon):
    from flax import nnx

    import xgrad

    class Port(nnx.Module):
        def __init__(self, *, rngs):
            self.fc = nnx.Linear(6, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(
                8, momentum=0.9, epsilon=epsilon, use_running_average=True, rngs=rngs
            )
            self.head = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x, s):
            return self.head(nnx.relu(self.bn(self.fc(x)))) * s

    report = xgrad.compare_models(_net(), Port(rngs=nnx.Rngs(0)), _inputs())
    assert report.unpaired == ()
    if epsilon == 1e-5:
        assert report.ok, report.summary()
        return
    assert not report.ok
    assert report.first_divergence["path"] == "bn"
    assert report.diagnoses[0].cause == "batchnorm-epsilon"


# -- the model failing on the inputs ----------------------------------------------------------


def _bag():
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, ids):
            return self.head(self.embed(ids).mean(dim=1))

    torch.manual_seed(0)
    return Bag()


@pytest.mark.parametrize(
    ("make", "inputs", "quoted", "hint"),
    [
        (
            _bag,
            lambda: np.arange(14).reshape(7, 2),
            "failed in module 'embed' (Embedding): IndexError: index out of range in self",
            "its ids must lie in [0, 10) (num_embeddings=10); the inputs hold ids from 0 to 13",
        ),
        (
            _bag,
            lambda: np.zeros((7, 2), np.float32),
            "failed in module 'embed' (Embedding): RuntimeError: Expected tensor for argument",
            "token ids must be integers: pass them as an integer array (int64)",
        ),
        (
            _net,
            lambda: _inputs(7)[0],
            "failed: TypeError: Net.forward() missing 1 required positional argument: 's'",
            "xgrad calls Net(x) for one array x, Net(*x) for a tuple or list and Net(**x) for a "
            "dict: give x the way Net.forward takes its inputs",
        ),
        (
            _net,
            lambda: (np.zeros((7, 5), np.float32), np.ones((7, 2), np.float32)),
            "failed in module 'fc' (Linear): RuntimeError: mat1 and mat2 shapes cannot be "
            "multiplied (7x5 and 6x8)",
            "",
        ),
    ],
    ids=["id-out-of-range", "float-ids", "signature", "shape"],
)
def test_the_models_own_error_is_quoted_with_the_module_and_the_users_batch(
    make, inputs, quoted, hint
):
    from xgrad.errors import InputError

    x = inputs()
    with pytest.raises(InputError) as err:
        capture_module(make(), as_batch(x))
    message = str(err.value)
    assert quoted in message and hint in message
    assert "(7, " in message  # the user's batch of 7, not a probe batch


@pytest.mark.skipif("flax" not in INSTALLED, reason="flax is not installed")
def test_a_port_whose_statistics_were_not_loaded_is_not_blamed_on_its_epsilon():
    # the port holds the reference's parameters but its own fresh statistics (mean 0, var 1),
    # compared as it is: re-running the reference's BatchNorm with another epsilon on the
    # port's statistics reproduced the port, which named batchnorm-epsilon wrongly
    import jax.numpy as jnp
    from flax import nnx

    import xgrad

    class Port(nnx.Module):
        def __init__(self, *, rngs):
            self.fc = nnx.Linear(6, 8, rngs=rngs)
            self.bn = nnx.BatchNorm(8, momentum=0.9, use_running_average=True, rngs=rngs)
            self.head = nnx.Linear(8, 2, rngs=rngs)

        def __call__(self, x, s):
            return self.head(nnx.relu(self.bn(self.fc(x)))) * s

    net, port = _net(), Port(rngs=nnx.Rngs(0))
    for ours, theirs, attr in [
        (port.fc.kernel, net.fc.weight, "T"),
        (port.fc.bias, net.fc.bias, ""),
        (port.head.kernel, net.head.weight, "T"),
        (port.head.bias, net.head.bias, ""),
        (port.bn.scale, net.bn.weight, ""),
        (port.bn.bias, net.bn.bias, ""),
    ]:
        value = theirs.detach().numpy()
        ours.value = jnp.asarray(value.T if attr else value)
    report = xgrad.compare_models(net, port, _inputs(), transfer=False)
    assert report.first_divergence["path"] == "bn"
    cause = report.diagnoses[0]
    assert cause.cause == "unexplained" and "were they copied across?" in cause.detail


# -- weights a module's own code uses ---------------------------------------------------------


def _autoencoder(use):
    class AE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(6, 3)
            self.out_bias = nn.Parameter(torch.zeros(6))

        def forward(self, x):
            return use(self, torch.tanh(self.enc(x)))

    torch.manual_seed(0)
    return AE()


def test_a_weight_used_in_the_models_own_code_is_shared_there():
    x = as_batch(np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32))
    for use in (
        lambda m, h: nn.functional.linear(h, m.enc.weight.t(), m.out_bias),
        lambda m, h: h @ m.enc.weight + m.out_bias,
    ):
        root = capture_module(_autoencoder(use), x).module("")
        assert root.shared == {"enc.weight": "enc.kernel"}
        assert root.params == {"out_bias": "out_bias"}
    # reading its shape, dtype or size is no use of its values
    reads = lambda m, h: h @ torch.ones(m.enc.weight.shape, dtype=m.enc.weight.dtype)  # noqa: E731
    assert capture_module(_autoencoder(reads), x).module("").shared == {}


def test_a_tie_registered_twice_is_shared_once():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(7, 4)
            self.head = nn.Linear(4, 7, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    ids = as_batch(np.random.default_rng(0).integers(0, 7, size=(2, 3)))
    captured = capture_module(LM(), ids)
    assert len(captured.module("head").shared) == 1
    assert list(captured.module("head").shared.values()) == ["emb.weight"]
