"""A torch LSTM classifier written as the tutorials write it, ``out, (h, c) = self.lstm(e)``
and ``self.fc(h[-1])``, against its Flax NNX port (``nnx.RNN(OptimizedLSTMCell)``,
``fc(h[:, -1])``), read module by module (issue 22, newcomer trial).

torch's ``out`` gets no gradient (the loss reads ``h_n``), the port's sequence output gets
``dL/d h_n`` at its last step: xgrad compares the torch LSTM's ``dL/d out`` with ``dL/d h_n[-1]``
added onto ``out[:, -1]`` (``h_n[-1]`` is ``out[:, -1]``), so the correct port is OK, and says
so in a note. The expected gradient is derived independently: ``dL/d out`` of a torch model
that reads ``out[:, -1]`` instead of ``h[-1]`` (the same function)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

pytestmark = pytest.mark.skipif(
    not {"torch", "flax"} <= INSTALLED, reason="torch and flax are needed"
)

V, E, H, C, T = 20, 8, 6, 3, 5


def _torch(read_last_step: bool = False):
    import torch
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(V, E)
            self.rnn = nn.LSTM(E, H, batch_first=True)
            self.fc = nn.Linear(H, C)

        def forward(self, x):
            out, (h, _) = self.rnn(self.embedding(x))
            return self.fc(out[:, -1] if read_last_step else h[-1])

    torch.manual_seed(0)
    return Classifier().eval()


def _nnx(net):
    import jax.numpy as jnp
    from flax import nnx

    class Port(nnx.Module):
        def __init__(self, *, rngs):
            self.embedding = nnx.Embed(V, E, rngs=rngs)
            self.rnn = nnx.RNN(nnx.OptimizedLSTMCell(E, H, rngs=rngs))
            self.fc = nnx.Linear(H, C, rngs=rngs)

        def __call__(self, x):
            return self.fc(self.rnn(self.embedding(x))[:, -1])

    def t(p):
        return np.asarray(p.detach().numpy())

    m = Port(rngs=nnx.Rngs(0))
    r = net.rnn
    m.embedding.embedding[...] = jnp.asarray(t(net.embedding.weight))
    cell = m.rnn.cell
    cell.dense_i.kernel[...] = jnp.asarray(t(r.weight_ih_l0).T)  # gates i, f, g, o both
    cell.dense_h.kernel[...] = jnp.asarray(t(r.weight_hh_l0).T)
    cell.dense_h.bias[...] = jnp.asarray(t(r.bias_ih_l0) + t(r.bias_hh_l0))
    m.fc.kernel[...] = jnp.asarray(t(net.fc.weight).T)
    m.fc.bias[...] = jnp.asarray(t(net.fc.bias))
    return m


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, V, (2, T))


def test_torch_lstm_read_through_h_n_is_ok_against_its_nnx_port(ids):
    import xgrad

    net = _torch()
    report = xgrad.compare_models(net, _nnx(net), ids)
    assert report.ok, report.mismatch_message()
    assert any("returns (output, h_n)" in n and "c_n" in n for n in report.notes)


def test_dl_d_lstm_output_is_that_of_a_model_reading_the_last_step(ids):
    """The torch capture's ``dL/d rnn`` equals that of the same model written with
    ``out[:, -1]``, where torch's own ``dL/d out`` is the whole gradient."""
    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.torch.capture import capture_module

    grads = {}
    for last in (False, True):
        model = capture_module(_torch(read_last_step=last), as_batch(ids))
        got = model.evaluate(ids, capture=True)
        grads[last] = got.activation_grads["rnn"]
    assert np.abs(grads[True]).max() > 0 and np.abs(grads[True][:, :-1]).max() == 0
    np.testing.assert_allclose(grads[False], grads[True], rtol=1e-6, atol=1e-7)
