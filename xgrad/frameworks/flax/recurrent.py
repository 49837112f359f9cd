"""The recurrent kinds in Flax NNX: ``nnx.RNN`` over Flax's LSTM cell, and over xgrad's own
GRU cell where Flax's ``nnx.GRUCell`` computes another convention.

``lstm``: ``nnx.RNN(nnx.OptimizedLSTMCell(F, u))``. The cell computes
``y = dense_i(x) + dense_h(h)``, splits it into ``i, f, g, o`` (the canonical gate order)
and updates ``c = sig(f) c + sig(i) tanh(g)``, ``h = sig(o) tanh(c)`` (flax/nnx/nn/
recurrent.py, checked against flax 0.12.8). So the canonical weights are its own arrays:

=====================  ==========================  ===================================
canonical              Flax (below the layer)      note
=====================  ==========================  ===================================
``kernel (F, 4u)``     ``cell/dense_i/kernel``      ``nnx.Linear(F, 4u, use_bias=False)``
``recurrent_kernel``   ``cell/dense_h/kernel``      ``nnx.Linear(u, 4u)``
``bias (4u,)``         ``cell/dense_h/bias``        the single bias lives on the hidden
                                                    projection (the input one has none)
=====================  ==========================  ===================================

``nnx.LSTMCell`` computes the same but holds eight ``Linear`` s (``ii``, ``if_``, ... with
no bias; ``hi``, ``hf``, ... with the biases), one per gate: the canonical kernel is their
kernels side by side. xgrad builds the optimized cell, whose arrays need no cutting.

``gru``: :class:`GRUCell`, xgrad's, in ``nnx.RNN``. Flax's ``nnx.GRUCell`` (gates ``r, z,
n``) has a bias on the input projection only: ``n = tanh(W_in x + b_in + r * (W_hn h))``,
with no recurrent bias inside the reset product, so it cannot hold a canonical
``reset_after=True`` GRU whose ``bias[1]`` (Keras ``recurrent_bias``, torch ``bias_hh``) is
not zero on the ``h`` block, and it has no ``reset_after=False`` form at all. xgrad's cell
holds the canonical (Keras) arrays ``kernel (F, 3u)``, ``recurrent_kernel (u, 3u)``, ``bias
(2, 3u)`` or ``(3u,)`` as ``nnx.Param`` s (``cell/kernel``, ...) and computes the kind's
formula in ``jax.numpy``.

Both take ``(B, T, F)`` (batch first; ``time_major=False``) from zero initial state (given as
``initial_carry``, so the module holds no RNG state) and return every ``h`` or the last one.

Importing this module imports Flax.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from xgrad.errors import SpecError
from xgrad.layers import GRU, LSTM

__all__ = [
    "GRUCell",
    "build_gru",
    "build_lstm",
    "lstm_hints",
    "recurrent_call",
]

LSTM_WEIGHTS = {
    "kernel": "cell/dense_i/kernel",
    "recurrent_kernel": "cell/dense_h/kernel",
    "bias": "cell/dense_h/bias",
}
GRU_WEIGHTS = {name: f"cell/{name}" for name in ("kernel", "recurrent_kernel", "bias")}


def build_lstm(layer: LSTM, path, shape, dtype, rngs, block) -> nnx.Module:
    cell = nnx.OptimizedLSTMCell(shape[-1], layer.units, dtype=dtype, param_dtype=dtype, rngs=rngs)
    return nnx.RNN(cell, rngs=False)


class GRUCell(nnx.RNNCellBase):
    """A GRU cell in Keras' convention (gates ``z, r, h``; ``reset_after`` both ways), for the
    kind ``gru``: see the module docstring for why not ``nnx.GRUCell``.

    Args:
        layer: the kind, for ``units`` and ``reset_after``.
        in_features: ``F``.
        dtype: the parameters' dtype.
        rngs: for the (overwritten) initial values.
    """

    def __init__(self, layer: GRU, in_features: int, *, dtype, rngs: nnx.Rngs) -> None:
        u = layer.units
        self.units = u
        self.reset_after = layer.reset_after
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (in_features, 3 * u), dtype))
        self.recurrent_kernel = nnx.Param(init(rngs.params(), (u, 3 * u), dtype))
        bias = (2, 3 * u) if layer.reset_after else (3 * u,)
        self.bias = nnx.Param(jnp.zeros(bias, dtype))

    def __call__(self, h, x):
        u, rec, bias = self.units, self.recurrent_kernel[...], self.bias[...]
        sig = jax.nn.sigmoid
        b_in = bias[0] if self.reset_after else bias
        xz, xr, xh = jnp.split(x @ self.kernel[...] + b_in, 3, axis=-1)
        if self.reset_after:
            hz, hr, hh = jnp.split(h @ rec + bias[1], 3, axis=-1)
            z, r = sig(xz + hz), sig(xr + hr)
            n = jnp.tanh(xh + r * hh)
        else:
            hz, hr = jnp.split(h @ rec[:, : 2 * u], 2, axis=-1)
            z, r = sig(xz + hz), sig(xr + hr)
            n = jnp.tanh(xh + (r * h) @ rec[:, 2 * u :])
        h = z * h + (1 - z) * n
        return h, h

    def initialize_carry(self, input_shape, rngs=None):
        return jnp.zeros((*input_shape[:-1], self.units), self.kernel.dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


def build_gru(layer: GRU, path, shape, dtype, rngs, block) -> nnx.Module:
    return nnx.RNN(GRUCell(layer, shape[-1], dtype=dtype, rngs=rngs), rngs=False)


def recurrent_call(layer: LSTM | GRU, module: nnx.RNN, x, run):
    """Run the ``nnx.RNN`` on ``x (B, T, F)`` from zeros; every ``h`` or the last one."""
    h0 = jnp.zeros((x.shape[0], layer.units), x.dtype)
    carry = (h0, h0) if layer.kind == "lstm" else h0  # the LSTM cell's carry is (c, h)
    hs = module(x, initial_carry=carry)
    return hs if layer.return_sequences else hs[:, -1]


def lstm_hints(module: nnx.RNN) -> dict:
    """The ``lstm`` an ``nnx.RNN`` of an ``nnx.OptimizedLSTMCell`` computes (every ``h``:
    ``return_sequences=True``).

    Raises:
        SpecError: another cell, a reversed or time-major RNN, or gate/activation functions
            other than the logistic and tanh, naming the setting.
    """
    cell = module.cell
    if not isinstance(cell, nnx.OptimizedLSTMCell):
        raise SpecError(
            f"nnx.RNN of {type(cell).__name__} is not read as an lstm (xgrad reads "
            "nnx.RNN(nnx.OptimizedLSTMCell(...)) whose weights are the canonical arrays)"
        )
    if module.reverse or module.time_major:
        raise SpecError(
            "nnx.RNN with reverse=True or time_major=True is not read as an lstm; xgrad's LSTM "
            "runs forward over batch-first sequences"
        )
    if cell.gate_fn is not jax.nn.sigmoid or cell.activation_fn is not jnp.tanh:
        raise SpecError(
            "nnx.OptimizedLSTMCell with another gate_fn or activation_fn is not read as an "
            "lstm (xgrad's uses the logistic sigmoid and tanh)"
        )
    return {"units": cell.hidden_features, "return_sequences": True}
