"""The recurrent kinds in torch: ``lstm`` and ``gru``, batch-first, one layer, one direction.

=========  ==============================================  =====================================
kind       built as                                        weights (torch names, as canonical)
=========  ==============================================  =====================================
``lstm``   :class:`LSTM` (``nn.LSTM(batch_first=True)``,    ``weight_ih_l0 (4u, in)`` = kernel^T,
           the last state or every state)                  ``weight_hh_l0 (4u, u)`` =
                                                           recurrent_kernel^T (gates i, f, g, o
                                                           as canonical i, f, c, o);
                                                           ``bias_ih_l0 + bias_hh_l0`` = bias
``gru``    :class:`GRU` (``nn.GRU(batch_first=True)``)      ``weight_ih_l0 (3u, in)``,
           with ``reset_after=True``; :class:`GRUResetBefore`  ``weight_hh_l0 (3u, u)``: the
           (torch's primitives) with ``reset_after=False``   kernels transposed, gate blocks
                                                           ``r, z, n`` against canonical
                                                           ``z, r, h``; ``bias_ih_l0`` =
                                                           bias[0], ``bias_hh_l0`` = bias[1]
                                                           (reset_after=False: ``bias_ih_l0``
                                                           = bias, no ``bias_hh_l0``)
=========  ==============================================  =====================================

The biases. torch's LSTM adds two bias vectors where the canonical (Keras) LSTM has one: only
their sum counts. Converting a canonical LSTM to torch writes ``(bias, 0)``; reading torch's
sums them; the canonical bias's gradient is each of torch's two (they are equal, since the
sum enters every step alone). These layouts are :class:`~xgrad.frameworks.kinds.NativeParts`
(an axis permutation cannot say a sum, nor a reordering of gate blocks).

``reset_after=False`` (Keras' other GRU, the original paper: ``n = tanh(W_in x + b_n +
W_hn (r * h))``) is a form ``nn.GRU`` cannot compute (torch applies ``r`` after ``W_hn h``):
:class:`GRUResetBefore` computes it step by step from torch's matmuls, sigmoid and tanh, its
weights named and laid out as ``nn.GRU``'s (without ``bias_hh_l0``), so that a Keras
``GRU(reset_after=False)`` still has a torch port to compare against.

Reading: these classes are read back as their kinds. A user's ``nn.LSTM`` / ``nn.GRU``
returns a tuple ``(output, state)`` and may be time-first: the reader refuses it, and
:func:`xgrad.compare_models` compares it module by module (``layout="TNC"`` for a time-first
one).

Importing this module imports torch.
"""

from __future__ import annotations

import torch
from torch import nn

from xgrad.errors import AlignmentError
from xgrad.frameworks.kinds import TRANSPOSED, Layout, NativeParts
from xgrad.frameworks.torch.found import Found
from xgrad.layers import GRU as GRULayer
from xgrad.layers import LSTM as LSTMLayer
from xgrad.layers import Shape

__all__ = [
    "GRU",
    "GRU_WEIGHTS",
    "LSTM",
    "LSTM_LAYOUTS",
    "LSTM_WEIGHTS",
    "GRUResetBefore",
    "build_gru",
    "build_lstm",
    "gru_layouts",
    "read_gru",
    "read_lstm",
]

LSTM_WEIGHTS = {"kernel": "weight_ih_l0", "recurrent_kernel": "weight_hh_l0", "bias": "bias_ih_l0"}
GRU_WEIGHTS = LSTM_WEIGHTS

LSTM_LAYOUTS: dict[str, Layout | NativeParts] = {
    "kernel": TRANSPOSED,
    "recurrent_kernel": TRANSPOSED,
    "bias": NativeParts(("bias_hh_l0",), "sum"),  # bias_ih_l0 + bias_hh_l0
}

_RZN = (0, (1, 0, 2))  # torch's gate blocks r, z, n are canonical blocks 1, 0, 2 (z, r, h)
_GRU_KERNEL = NativeParts((), "sum", layout=TRANSPOSED, blocks=_RZN)


def gru_layouts(layer: GRULayer, shape: Shape) -> dict[str, NativeParts]:
    """The GRU's layouts: kernels transposed and reordered; the bias ``(2, 3u)`` as
    ``bias_ih_l0`` and ``bias_hh_l0`` (``reset_after``), else ``(3u,)`` as ``bias_ih_l0``."""
    combine = "stack" if layer.reset_after else "sum"
    bias = NativeParts(("bias_hh_l0",) if layer.reset_after else (), combine, blocks=_RZN)
    return {"kernel": _GRU_KERNEL, "recurrent_kernel": _GRU_KERNEL, "bias": bias}


class _Sequence:
    """The output of a recurrent layer: every hidden state ``(B, T, u)`` or the last
    ``(B, u)``."""

    return_sequences: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = super().forward(x)
        return out if self.return_sequences else out[:, -1]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {'every state' if self.return_sequences else 'last state'}"


class LSTM(_Sequence, nn.LSTM):
    """``nn.LSTM(batch_first=True)`` returning its hidden states (not the tuple)."""


class GRU(_Sequence, nn.GRU):
    """``nn.GRU(batch_first=True)`` (``reset_after=True``) returning its hidden states."""


class GRUResetBefore(nn.Module):
    """A GRU with the reset gate before the recurrent matmul (Keras ``reset_after=False``),
    from torch's primitives: ``nn.GRU`` computes the other form only.

    Weights as ``nn.GRU``'s: ``weight_ih_l0 (3u, in)``, ``weight_hh_l0 (3u, u)``,
    ``bias_ih_l0 (3u,)``, gate blocks ``r, z, n``. On ``x (B, T, in)``::

        r, z, n_x = split(x_t W_ih^T + b_ih)         W_hr, W_hz, W_hn = split(W_hh)
        r = sig(r + h W_hr^T)   z = sig(z + h W_hz^T)   n = tanh(n_x + (r * h) W_hn^T)
        h = z * h + (1 - z) * n
    """

    def __init__(self, features: int, units: int, *, dtype=None) -> None:
        super().__init__()
        self.hidden_size = units
        self.return_sequences = False
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * units, features, dtype=dtype))
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * units, units, dtype=dtype))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * units, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.hidden_size
        gates = x @ self.weight_ih_l0.T + self.bias_ih_l0  # (B, T, 3u): r, z, n
        w_r, w_z, w_n = self.weight_hh_l0.split(u)
        h = x.new_zeros(x.shape[0], u)
        states = []
        for t in range(x.shape[1]):
            x_r, x_z, x_n = gates[:, t].split(u, dim=-1)
            r = torch.sigmoid(x_r + h @ w_r.T)
            z = torch.sigmoid(x_z + h @ w_z.T)
            n = torch.tanh(x_n + (r * h) @ w_n.T)
            h = z * h + (1 - z) * n
            states.append(h)
        return torch.stack(states, dim=1) if self.return_sequences else h

    def extra_repr(self) -> str:
        features = self.weight_ih_l0.shape[1]
        return f"{features}, {self.hidden_size}, reset_after=False, batch_first=True"


def build_lstm(layer: LSTMLayer, path: str, shape: Shape, dtype, child) -> nn.Module:
    module = LSTM(shape[-1], layer.units, batch_first=True, dtype=dtype)
    module.return_sequences = layer.return_sequences
    return module


def build_gru(layer: GRULayer, path: str, shape: Shape, dtype, child) -> nn.Module:
    if layer.reset_after:
        module = GRU(shape[-1], layer.units, batch_first=True, dtype=dtype)
    else:
        module = GRUResetBefore(shape[-1], layer.units, dtype=dtype)
    module.return_sequences = layer.return_sequences
    return module


def _named(name: str) -> dict[str, str]:
    return {local: f"{name}.{native}" if name else native for local, native in LSTM_WEIGHTS.items()}


def _check_rnn(module: nn.RNNBase, name: str) -> None:
    """Refuse a configuration the canonical kind cannot express, by name."""
    where = f"module {name!r} ({type(module).__name__})"
    checks = (
        (module.num_layers != 1, f"num_layers={module.num_layers}", "one layer"),
        (module.bidirectional, "bidirectional=True", "one direction"),
        (getattr(module, "proj_size", 0), f"proj_size={getattr(module, 'proj_size', 0)}", "none"),
        (not module.batch_first, "batch_first=False", "batch-first"),
        (not module.bias, "bias=False", "a bias"),
    )
    for bad, setting, wanted in checks:
        if bad:
            raise AlignmentError(
                f"{where} with {setting} is not a layer xgrad reads (its recurrent kinds have "
                f"{wanted}); compare it module by module: xgrad.compare_models(..., "
                'read="modules")'
            )


def read_lstm(module: LSTM, name: str, dtype: str, ndim: int) -> Found:
    """xgrad's :class:`LSTM` as the kind ``lstm`` (its biases summed)."""
    _check_rnn(module, name)
    layer = LSTMLayer(module.hidden_size, return_sequences=module.return_sequences)
    return Found(layer, params=_named(name), layouts=dict(LSTM_LAYOUTS))


def read_gru(module: GRU | GRUResetBefore, name: str, dtype: str, ndim: int) -> Found:
    """xgrad's :class:`GRU` (``reset_after=True``) or :class:`GRUResetBefore` as ``gru``."""
    reset_after = isinstance(module, nn.GRU)
    if reset_after:
        _check_rnn(module, name)
    layer = GRULayer(
        module.hidden_size, return_sequences=module.return_sequences, reset_after=reset_after
    )
    return Found(layer, params=_named(name), layouts=gru_layouts(layer, ()))
