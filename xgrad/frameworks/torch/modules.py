"""xgrad's own small ``torch.nn`` modules, for where torch has none or torch's differs from
xgrad's definition (:mod:`xgrad.activations`), and :func:`activation_module`.

torch's own modules are used wherever their value *and* their derivative (kinks included)
are xgrad's: ``nn.ReLU``, ``nn.LeakyReLU`` (derivative at 0 = slope), ``nn.ReLU6``
(0 at 0 and 6), ``nn.ELU``, ``nn.GELU`` (``approximate="none"`` / ``"tanh"``),
``nn.Sigmoid``, ``nn.Tanh``, ``nn.SiLU``, ``nn.Softmax(dim=-1)``,
``nn.LogSoftmax(dim=-1)``. Three are not:

* :class:`Selu`: ``torch.selu``'s derivative at 0 is ``scale * alpha = 1.7581``; xgrad's
  (and TensorFlow's) is ``scale = 1.0507``.
* :class:`Softplus`: ``nn.Softplus`` returns ``x`` itself above ``threshold=20``: its value
  there is off by up to 2e-9 (absolute) from ``log(1 + exp(x))`` and its derivative, 1, by up
  to 2e-9 from ``sigmoid(x)``.
* :class:`HardSigmoid`: ``nn.Hardsigmoid``'s backward multiplies by ``1/6`` rounded to
  float32 even in float64 (a relative error of 3e-8 there).

Importing this module imports torch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from xgrad.activations import SELU_ALPHA, SELU_SCALE, get_activation
from xgrad.errors import SpecError
from xgrad.layers import Dropout

__all__ = [
    "HardSigmoid",
    "MaskedDropout",
    "Residual",
    "Selu",
    "Softplus",
    "activation_module",
    "numpy_dtype",
]

_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


def numpy_dtype(dtype: torch.dtype) -> type:
    """The NumPy dtype of a torch float dtype (float32, float64)."""
    return _NUMPY_DTYPES[dtype]


class Selu(nn.Module):
    """``scale * (x if x > 0 else alpha * (exp(x) - 1))`` with ``selu'(0) = scale``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        negative = SELU_ALPHA * torch.expm1(torch.clamp(x, max=0))
        return SELU_SCALE * torch.where(x >= 0, x, negative)


class Softplus(nn.Module):
    """``log(1 + exp(x))`` everywhere (no threshold), as ``max(x, 0) + log1p(exp(-|x|))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logaddexp(x, torch.zeros_like(x))


class HardSigmoid(nn.Module):
    """``relu6(x + 3) / 6``; derivative ``1/6`` in the dtype of ``x``, 0 at -3 and 3."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardtanh(x + 3, 0.0, 6.0) / 6


class MaskedDropout(nn.Module):
    """An active :class:`~xgrad.layers.Dropout`: multiplies by the mask xgrad draws for
    ``(layer.seed, path, x.shape)`` divided by ``1 - rate``, never by torch's random one.

    Args:
        layer: the xgrad dropout layer (``active=True``).
        path: its canonical path in the model, e.g. ``layers.2``.
    """

    def __init__(self, layer: Dropout, path: str) -> None:
        super().__init__()
        self.layer = layer
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        factor = self.layer.scaled_mask(self.path, tuple(x.shape), numpy_dtype(x.dtype))
        return x * torch.from_numpy(factor).to(x.device)

    def extra_repr(self) -> str:
        return f"rate={self.layer.rate:g}, seed={self.layer.seed}, path={self.path!r}"


class Residual(nn.Sequential):
    """``x + block(x)``, the block's modules as the items of this ``nn.Sequential``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def activation_module(name: str) -> nn.Module:
    """The module computing the xgrad activation ``name`` (``"relu"``, ``"leaky_relu:0.01"``).

    Example:
        >>> activation_module("gelu_tanh")
        GELU(approximate='tanh')
    """
    act = get_activation(name)
    if act.kind == "leaky_relu":
        return nn.LeakyReLU(act.slope)
    factories = {
        "linear": nn.Identity,
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "softmax": lambda: nn.Softmax(dim=-1),
        "log_softmax": lambda: nn.LogSoftmax(dim=-1),
        "gelu": lambda: nn.GELU(approximate="none"),
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "elu": nn.ELU,
        "selu": Selu,
        "softplus": Softplus,
        "silu": nn.SiLU,
        "relu6": nn.ReLU6,
        "hard_sigmoid": HardSigmoid,
    }
    if act.name not in factories:  # an activation added to xgrad without a torch form yet
        raise SpecError(f"activation {act.name!r} has no torch module in xgrad yet")
    return factories[act.name]()
