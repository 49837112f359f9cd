"""``LSTM`` and ``GRU``: recurrent layers over ``(time, features)`` examples, Keras' layouts.

An example is a sequence ``(time, features)`` (a batch ``(batch, time, features)``, batch
first). The state starts at zeros; the layer returns the last hidden state ``(units,)``, or
every hidden state ``(time, units)`` with ``return_sequences=True``. The activation is
``tanh`` and the recurrent (gate) activation the logistic sigmoid ``1 / (1 + exp(-a))``
(Keras 3's ``"sigmoid"``; not Keras 2's ``hard_sigmoid``).

Weights are stored in Keras' layout, the gates side by side along the last axis, ``u`` the
units:

* LSTM, gates ``i, f, c, o`` (PyTorch calls ``c`` ``g``; same order): ``kernel (features,
  4u)``, ``recurrent_kernel (u, 4u)``, ``bias (4u,)``. PyTorch's ``weight_ih_l0 (4u, in)`` is
  ``kernel.T``, ``weight_hh_l0 (4u, u)`` is ``recurrent_kernel.T``; its two biases enter only
  as their sum, ``bias_ih_l0 + bias_hh_l0 == bias`` (written to PyTorch as ``(bias, 0)``).
* GRU, gates ``z, r, h`` (update, reset, candidate): ``kernel (features, 3u)``,
  ``recurrent_kernel (u, 3u)``, ``bias (2, 3u)`` with ``reset_after=True`` (row 0 on the
  input side, row 1 on the recurrent side) or ``bias (3u,)`` with ``reset_after=False``.
  PyTorch's GRU is the ``reset_after=True`` form with its gates in the order ``r, z, n``.

The backward passes are backpropagation through time, written out in each class's ``vjp``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.errors import SpecError
from xgrad.layers.base import AbstractLayer, Shape, Step, check_bool, check_positive_int

__all__ = ["GRU", "LSTM"]


def sigmoid(a: np.ndarray) -> np.ndarray:
    """The logistic ``1 / (1 + exp(-a))``, written as ``(1 + tanh(a / 2)) / 2`` (no overflow)."""
    return 0.5 * (1 + np.tanh(0.5 * a))


def _check_sequence_shape(name: str, input_shape: Shape) -> None:
    if len(input_shape) != 2:
        raise SpecError(
            f"{name} takes examples of shape (time, features), got {tuple(input_shape)}; "
            "give the model input a time axis, e.g. MLP((time, features), ...), put an "
            "Embedding before it, or set return_sequences=True on a recurrent layer before it"
        )


def _recurrent_init(rng: np.random.Generator, units: int, gates: int) -> np.ndarray:
    """An orthogonal ``(units, gates * units)`` matrix (Keras' ``orthogonal``: rows
    orthonormal), from the QR factors of a Gaussian matrix with the signs fixed."""
    q, r = np.linalg.qr(rng.standard_normal((gates * units, units)))
    return (q * np.sign(np.diag(r))).T


def _glorot(rng: np.random.Generator, n_in: int, n_out: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (n_in + n_out))
    return rng.uniform(-limit, limit, size=(n_in, n_out))


def _sequence_output(hs: np.ndarray, return_sequences: bool) -> np.ndarray:
    """``hs (batch, time, u)``: all of it, or the last state ``(batch, u)``."""
    return hs if return_sequences else hs[:, -1]


def _sequence_grad(grad_output: np.ndarray, shape, return_sequences: bool) -> np.ndarray:
    """``dL/d hs (batch, time, u)``: the gradient as given, or zeros but at the last step."""
    if return_sequences:
        return grad_output
    dhs = np.zeros(shape, dtype=grad_output.dtype)
    dhs[:, -1] = grad_output
    return dhs


@dataclass(frozen=True)
class LSTM(AbstractLayer):
    """Long short-term memory over a sequence, Keras' ``LSTM`` (gates ``i, f, c, o``).

    For each step ``t``, with ``h`` and ``c`` zeros before the first::

        a = x_t @ kernel + h @ recurrent_kernel + bias       (batch, 4u)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), tanh(a_c), sigmoid(a_o)
        c = f * c + i * g
        h = o * tanh(c)

    Args:
        units: the width ``u`` of the hidden state, a positive integer.
        return_sequences: return every hidden state ``(time, u)`` instead of the last ``(u,)``.

    Weights: ``kernel (features, 4u)``, ``recurrent_kernel (u, 4u)``, ``bias (4u,)``; each
    split in four along the last axis is the ``i, f, c, o`` part (PyTorch: the transposes,
    same gate order, ``bias_ih + bias_hh == bias``).

    Raises:
        SpecError: ``units`` is not a positive integer, ``return_sequences`` not a bool, or
            the input is not ``(time, features)``.

    Example:
        >>> LSTM(5).weight_shapes((4, 3))
        {'kernel': (3, 20), 'recurrent_kernel': (5, 20), 'bias': (20,)}
    """

    kind = "lstm"

    units: int
    return_sequences: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", check_positive_int(self.units, "LSTM units"))
        object.__setattr__(
            self,
            "return_sequences",
            check_bool(self.return_sequences, "LSTM return_sequences"),
        )

    def param_names(self) -> tuple[str, ...]:
        return ("kernel", "recurrent_kernel", "bias")

    def output_shape(self, input_shape: Shape) -> Shape:
        _check_sequence_shape("LSTM", input_shape)
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        u = self.units
        return {
            "kernel": (input_shape[-1], 4 * u),
            "recurrent_kernel": (u, 4 * u),
            "bias": (4 * u,),
        }

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Glorot-uniform kernel, orthogonal recurrent kernel (Keras' initializers), bias
        uniform in ``[-bias_scale, bias_scale]`` (Keras starts it at zeros, the forget part
        at ones: a uniform bias exercises every gradient)."""
        u = self.units
        return {
            "kernel": _glorot(rng, input_shape[-1], 4 * u),
            "recurrent_kernel": _recurrent_init(rng, u, 4),
            "bias": rng.uniform(-bias_scale, bias_scale, size=(4 * u,)),
        }

    def describe(self) -> str:
        return f"lstm({self.units}{', return_sequences' if self.return_sequences else ''})"

    def forward(self, weights, x, *, path):
        w = self.local(weights, path)
        batch, time, _ = x.shape
        u = self.units
        ax = x @ w["kernel"] + w["bias"]  # the input side of every step at once
        h = np.zeros((batch, u), dtype=x.dtype)
        c = np.zeros((batch, u), dtype=x.dtype)
        gates = np.empty((batch, time, 4 * u), dtype=x.dtype)  # i, f, g, o after activation
        hs = np.empty((batch, time, u), dtype=x.dtype)
        cs = np.empty((batch, time + 1, u), dtype=x.dtype)  # cs[:, t] is c before step t
        cs[:, 0] = c
        for t in range(time):
            a = ax[:, t] + h @ w["recurrent_kernel"]
            i, f, o = sigmoid(a[:, :u]), sigmoid(a[:, u : 2 * u]), sigmoid(a[:, 3 * u :])
            g = np.tanh(a[:, 2 * u : 3 * u])
            c = f * c + i * g
            h = o * np.tanh(c)
            gates[:, t] = np.concatenate([i, f, g, o], axis=-1)
            hs[:, t], cs[:, t + 1] = h, c
        out = _sequence_output(hs, self.return_sequences)
        return Step(path, self, x, out, cache=(gates, hs, cs))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        """Backpropagation through time, last step first.

        ``dh`` is ``dL/dh_t`` (from the output at ``t`` plus from step ``t + 1``), ``dc`` is
        ``dL/dc_t`` (from ``h_t`` plus from ``c_{t+1} = f_{t+1} * c_t + ...``)::

            dc   = dc_next + dh * o * (1 - tanh(c_t)**2)
            da_i = dc * g * i * (1 - i)          da_f = dc * c_{t-1} * f * (1 - f)
            da_c = dc * i * (1 - g**2)           da_o = dh * tanh(c_t) * o * (1 - o)
            dc_next = dc * f                     dh_next = da @ recurrent_kernel.T

        Then, summed over batch and time: ``dkernel = x.T @ da``, ``drecurrent_kernel =
        h_{t-1}.T @ da``, ``dbias = sum(da)``; ``dL/dx_t = da @ kernel.T``.
        """
        w = self.local(weights, step.path)
        gates, hs, cs = step.cache
        u = self.units
        dhs = _sequence_grad(grad_output, hs.shape, self.return_sequences)
        da = np.empty_like(gates)
        dh_next = np.zeros_like(hs[:, 0])
        dc_next = np.zeros_like(hs[:, 0])
        for t in reversed(range(hs.shape[1])):
            i, f, g, o = (gates[:, t, k * u : (k + 1) * u] for k in range(4))
            tc = np.tanh(cs[:, t + 1])
            dh = dhs[:, t] + dh_next
            dc = dc_next + dh * o * (1 - tc * tc)
            da[:, t, :u] = dc * g * i * (1 - i)
            da[:, t, u : 2 * u] = dc * cs[:, t] * f * (1 - f)
            da[:, t, 2 * u : 3 * u] = dc * i * (1 - g * g)
            da[:, t, 3 * u :] = dh * tc * o * (1 - o)
            dc_next = dc * f
            dh_next = da[:, t] @ w["recurrent_kernel"].T
        h_prev = np.concatenate([np.zeros_like(hs[:, :1]), hs[:, :-1]], axis=1)
        x = step.input
        grads[f"{step.path}.kernel"] = np.einsum("btf,btg->fg", x, da)
        grads[f"{step.path}.recurrent_kernel"] = np.einsum("btu,btg->ug", h_prev, da)
        grads[f"{step.path}.bias"] = da.sum(axis=(0, 1))
        return da @ w["kernel"].T


@dataclass(frozen=True)
class GRU(AbstractLayer):
    """Gated recurrent unit over a sequence, Keras' ``GRU`` (gates ``z, r, h``).

    For each step, with ``h`` zeros before the first, ``[.]_z, [.]_r, [.]_h`` the three
    parts of the last axis, ``R = recurrent_kernel``::

        ax = x_t @ kernel + b_in                             (batch, 3u)
        z = sigmoid(ax_z + [h @ R + b_rec]_z)
        r = sigmoid(ax_r + [h @ R + b_rec]_r)
        n = tanh(ax_h + r * [h @ R + b_rec]_h)               reset_after=True
        n = tanh(ax_h + (r * h) @ R_h)                       reset_after=False
        h = z * h + (1 - z) * n

    With ``reset_after=True`` (Keras' default, PyTorch's and cuDNN's only form) ``bias`` is
    ``(2, 3u)``: ``b_in = bias[0]``, ``b_rec = bias[1]``. With ``reset_after=False`` (the
    original paper's form) ``bias`` is ``(3u,)``: ``b_in = bias``, ``b_rec = 0``.

    Args:
        units: the width ``u`` of the hidden state, a positive integer.
        return_sequences: return every hidden state ``(time, u)`` instead of the last ``(u,)``.
        reset_after: apply the reset gate after the recurrent matmul (see above).

    Weights: ``kernel (features, 3u)``, ``recurrent_kernel (u, 3u)``, ``bias (2, 3u)`` or
    ``(3u,)``. PyTorch's ``nn.GRU``: ``weight_ih_l0 (3u, in)`` and ``weight_hh_l0 (3u, u)``
    are the transposes with the gates reordered ``r, z, n``; ``bias_ih_l0`` is ``bias[0]``
    and ``bias_hh_l0`` ``bias[1]``, reordered the same way.

    Raises:
        SpecError: ``units`` is not a positive integer, a flag is not a bool, or the input
            is not ``(time, features)``.

    Example:
        >>> GRU(5).weight_shapes((4, 3))
        {'kernel': (3, 15), 'recurrent_kernel': (5, 15), 'bias': (2, 15)}
    """

    kind = "gru"

    units: int
    return_sequences: bool = False
    reset_after: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "units", check_positive_int(self.units, "GRU units"))
        for name in ("return_sequences", "reset_after"):
            object.__setattr__(self, name, check_bool(getattr(self, name), f"GRU {name}"))

    def param_names(self) -> tuple[str, ...]:
        return ("kernel", "recurrent_kernel", "bias")

    def output_shape(self, input_shape: Shape) -> Shape:
        _check_sequence_shape("GRU", input_shape)
        return (input_shape[0], self.units) if self.return_sequences else (self.units,)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        u = self.units
        bias = (2, 3 * u) if self.reset_after else (3 * u,)
        return {"kernel": (input_shape[-1], 3 * u), "recurrent_kernel": (u, 3 * u), "bias": bias}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Glorot-uniform kernel, orthogonal recurrent kernel (Keras' initializers), bias
        uniform in ``[-bias_scale, bias_scale]`` (Keras starts it at zeros)."""
        shapes = self.weight_shapes(input_shape)
        return {
            "kernel": _glorot(rng, *shapes["kernel"]),
            "recurrent_kernel": _recurrent_init(rng, self.units, 3),
            "bias": rng.uniform(-bias_scale, bias_scale, size=shapes["bias"]),
        }

    def describe(self) -> str:
        flags = ", return_sequences" if self.return_sequences else ""
        flags += "" if self.reset_after else ", reset_after=False"
        return f"gru({self.units}{flags})"

    def _biases(self, w):
        """``(b_in, b_rec)``: the input-side and recurrent-side bias (``b_rec`` 0 when
        ``reset_after=False``)."""
        return (w["bias"][0], w["bias"][1]) if self.reset_after else (w["bias"], 0.0)

    def forward(self, weights, x, *, path):
        w = self.local(weights, path)
        b_in, b_rec = self._biases(w)
        rk = w["recurrent_kernel"]
        batch, time, _ = x.shape
        u = self.units
        ax = x @ w["kernel"] + b_in
        h = np.zeros((batch, u), dtype=x.dtype)
        hs = np.empty((batch, time, u), dtype=x.dtype)
        gates = np.empty((batch, time, 3 * u), dtype=x.dtype)  # z, r, n after activation
        rec_h = np.empty((batch, time, u), dtype=x.dtype)  # [h @ R + b_rec]_h (reset_after)
        for t in range(time):
            if self.reset_after:
                ah = h @ rk + b_rec
                rec_h[:, t] = ah[:, 2 * u :]
            else:
                ah = h @ rk[:, : 2 * u]
            z = sigmoid(ax[:, t, :u] + ah[:, :u])
            r = sigmoid(ax[:, t, u : 2 * u] + ah[:, u : 2 * u])
            inner = r * rec_h[:, t] if self.reset_after else (r * h) @ rk[:, 2 * u :]
            n = np.tanh(ax[:, t, 2 * u :] + inner)
            h = z * h + (1 - z) * n
            gates[:, t] = np.concatenate([z, r, n], axis=-1)
            hs[:, t] = h
        out = _sequence_output(hs, self.return_sequences)
        return Step(path, self, x, out, cache=(gates, hs, rec_h))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        """Backpropagation through time, last step first.

        ``dh`` is ``dL/dh_t`` (from the output at ``t`` plus from step ``t + 1``); ``da`` the
        gradient of the input-side pre-activations ``ax_t``, ``dq`` that of the recurrent-side
        ones ``q = h_{t-1} @ R (+ b_rec)``::

            dn_pre = dh * (1 - z) * (1 - n**2)              (= da_h)
            da_z = dh * (h_{t-1} - n) * z * (1 - z)          (= dq_z)
            reset_after=True:   dr = dn_pre * q_h,   dq_h = dn_pre * r
            reset_after=False:  ds = dn_pre @ R_h.T  (s = r * h_{t-1}),  dr = ds * h_{t-1}
            da_r = dr * r * (1 - r)                           (= dq_r)
            dh_next = dh * z + dq @ R.T  (+ ds * r when reset_after=False)

        ``dq`` spans ``z, r, h`` with ``reset_after`` and ``z, r`` without (then ``R_h``
        gets ``s.T @ dn_pre``). Summed over batch and time: ``dkernel = x.T @ da``,
        ``drecurrent_kernel = h_{t-1}.T @ dq``, ``dbias = sum(da)`` (row 1: ``sum(dq)``);
        ``dL/dx_t = da @ kernel.T``.
        """
        w = self.local(weights, step.path)
        gates, hs, rec_h = step.cache
        rk = w["recurrent_kernel"]
        u = self.units
        dhs = _sequence_grad(grad_output, hs.shape, self.return_sequences)
        h_prev = np.concatenate([np.zeros_like(hs[:, :1]), hs[:, :-1]], axis=1)
        da = np.empty_like(gates)
        dq = np.empty_like(gates) if self.reset_after else np.empty_like(gates[..., : 2 * u])
        ds = np.zeros_like(hs)  # dL/d(r * h_{t-1}) (reset_after=False only)
        dh_next = np.zeros_like(hs[:, 0])
        for t in reversed(range(hs.shape[1])):
            z, r, n = (gates[:, t, k * u : (k + 1) * u] for k in range(3))
            hp = h_prev[:, t]
            dh = dhs[:, t] + dh_next
            dn_pre = dh * (1 - z) * (1 - n * n)
            da[:, t, :u] = dh * (hp - n) * z * (1 - z)
            da[:, t, 2 * u :] = dn_pre
            if self.reset_after:
                da[:, t, u : 2 * u] = dn_pre * rec_h[:, t] * r * (1 - r)
                dq[:, t] = da[:, t]
                dq[:, t, 2 * u :] = dn_pre * r
                dh_next = dh * z + dq[:, t] @ rk.T
            else:
                ds[:, t] = dn_pre @ rk[:, 2 * u :].T
                da[:, t, u : 2 * u] = ds[:, t] * hp * r * (1 - r)
                dq[:, t] = da[:, t, : 2 * u]
                dh_next = dh * z + dq[:, t] @ rk[:, : 2 * u].T + ds[:, t] * r
        self._weight_grads(step, grads, da, dq, h_prev, gates)
        return da @ w["kernel"].T

    def _weight_grads(self, step, grads, da, dq, h_prev, gates):
        """The weight gradients, summed over batch and time (see :meth:`vjp`)."""
        u = self.units
        grads[f"{step.path}.kernel"] = np.einsum("btf,btg->fg", step.input, da)
        if self.reset_after:
            grads[f"{step.path}.recurrent_kernel"] = np.einsum("btu,btg->ug", h_prev, dq)
            grads[f"{step.path}.bias"] = np.stack([da.sum(axis=(0, 1)), dq.sum(axis=(0, 1))])
            return
        s = gates[..., u : 2 * u] * h_prev  # r * h_{t-1}
        grads[f"{step.path}.recurrent_kernel"] = np.concatenate(
            [
                np.einsum("btu,btg->ug", h_prev, dq),
                np.einsum("btu,btg->ug", s, da[..., 2 * u :]),
            ],
            axis=1,
        )
        grads[f"{step.path}.bias"] = da.sum(axis=(0, 1))
