"""The recurrent kinds in JAX: one step function per kind, run over time by ``lax.scan``.

=========  =================================================================  =================
kind       one step (``h``, ``c`` start at zeros; ``sig`` the logistic)       weights (Keras)
=========  =================================================================  =================
``lstm``   ``i, f, g, o = split(x_t @ kernel + bias + h @ recurrent_kernel)``  ``kernel (F,
           ``c = sig(f) c + sig(i) tanh(g)``, ``h = sig(o) tanh(c)``           4u)``,
                                                                               ``recurrent_
                                                                               kernel (u, 4u)``,
                                                                               ``bias (4u,)``
``gru``    ``xz, xr, xh = split(x_t @ kernel + b_in)``; ``reset_after``:       ``kernel (F,
           ``hz, hr, hh = split(h @ recurrent_kernel + b_rec)``,               3u)``,
           ``n = tanh(xh + r hh)``; else ``n = tanh(xh + (r h) @ R_h)``;      ``recurrent_
           ``h = z h + (1 - z) n``                                             kernel (u, 3u)``,
                                                                               ``bias (2, 3u)``
                                                                               or ``(3u,)``
=========  =================================================================  =================

Gate blocks along the last axis: LSTM ``i, f, c(=g), o``, GRU ``z, r, h`` (Keras' order, the
canonical one). The input projection of every step is computed before the scan (one matmul);
the scan carries the state. Input ``(B, T, F)`` (batch first); output the last ``h`` ``(B,
u)`` or every ``h`` ``(B, T, u)`` with ``return_sequences``.

Importing this module imports JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from xgrad.layers import GRU, LSTM

__all__ = ["gru", "lstm"]


def _scan(step, carry, zx, layer):
    """Run ``step`` over time on the precomputed input terms ``zx (B, T, n)``; the last
    hidden state or every one, batch first."""
    carry, hs = lax.scan(step, carry, jnp.swapaxes(zx, 0, 1))
    return jnp.swapaxes(hs, 0, 1) if layer.return_sequences else hs[-1]


def lstm(layer: LSTM, path: str, block):
    """``(w, x) -> (y, {})``: ``x (B, T, F)`` -> ``(B, u)`` or ``(B, T, u)``."""
    sig = jax.nn.sigmoid

    def run(w, x):
        zeros = jnp.zeros((x.shape[0], layer.units), x.dtype)

        def step(carry, zx_t):
            h, c = carry
            i, f, g, o = jnp.split(zx_t + h @ w["recurrent_kernel"], 4, axis=-1)
            c = sig(f) * c + sig(i) * jnp.tanh(g)
            h = sig(o) * jnp.tanh(c)
            return (h, c), h

        return _scan(step, (zeros, zeros), x @ w["kernel"] + w["bias"], layer), {}

    return run


def gru(layer: GRU, path: str, block):
    """``(w, x) -> (y, {})``: ``x (B, T, F)`` -> ``(B, u)`` or ``(B, T, u)``."""
    sig = jax.nn.sigmoid
    u = layer.units

    def run(w, x):
        rec = w["recurrent_kernel"]
        b_in = w["bias"][0] if layer.reset_after else w["bias"]

        def step(h, zx_t):
            xz, xr, xh = jnp.split(zx_t, 3, axis=-1)
            if layer.reset_after:
                hz, hr, hh = jnp.split(h @ rec + w["bias"][1], 3, axis=-1)
                z, r = sig(xz + hz), sig(xr + hr)
                n = jnp.tanh(xh + r * hh)
            else:
                hz, hr = jnp.split(h @ rec[:, : 2 * u], 2, axis=-1)
                z, r = sig(xz + hz), sig(xr + hr)
                n = jnp.tanh(xh + (r * h) @ rec[:, 2 * u :])
            h = z * h + (1 - z) * n
            return h, h

        h0 = jnp.zeros((x.shape[0], u), x.dtype)
        return _scan(step, h0, x @ w["kernel"] + b_in, layer), {}

    return run
