"""xgrad's losses (:mod:`xgrad.losses`) written in torch ops, by name.

Each function takes the model output ``out`` of shape ``(batch, units)`` and targets ``y`` of
the same shape (or ``None``) and returns a scalar tensor, evaluating xgrad's formula
literally (never ``nn.MSELoss`` or ``nn.BCELoss``, whose clamping differs). ``torch.maximum``
is used where xgrad writes ``max(out, 0)``: at a tie it passes half the gradient to each side,
so ``bce_logits``' gradient at ``out = 0`` is ``0.5 - y`` as in xgrad's NumPy formula.

Importing this module imports torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from xgrad.errors import SpecError
from xgrad.losses import EPSILON, Loss

__all__ = ["torch_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _clip(p: torch.Tensor) -> torch.Tensor:
    """``p`` limited to ``[EPSILON, 1 - EPSILON]`` (both rounded to ``p``'s dtype); the
    gradient passes where ``EPSILON <= p <= 1 - EPSILON``."""
    lo = torch.tensor(EPSILON, dtype=p.dtype, device=p.device)
    hi = torch.tensor(1 - EPSILON, dtype=p.dtype, device=p.device)
    return torch.where(p < lo, lo, torch.where(p > hi, hi, p))


def _bce(out, y):
    p = _clip(out)
    return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).sum() / out.numel()


def _bce_logits(out, y):
    relu = torch.maximum(out, torch.zeros_like(out))
    return (relu - out * y + torch.log1p(torch.exp(-torch.abs(out)))).sum() / out.numel()


_LOSSES: dict[str, LossFn] = {
    "sum": lambda out, y: out.sum(),
    "projection": lambda out, y: (out * y).sum(),
    "mean": lambda out, y: out.mean(),
    "mse": lambda out, y: ((out - y) ** 2).sum() / out.numel(),
    "bce_logits": _bce_logits,
    "bce": _bce,
    "cce_logits": lambda out, y: -(y * torch.log_softmax(out, dim=-1)).sum() / out.shape[0],
    "cce": lambda out, y: -(y * torch.log(_clip(out))).sum() / out.shape[0],
}


def torch_loss(loss: Loss) -> LossFn:
    """The torch function ``(out, y) -> scalar`` of a :class:`~xgrad.losses.Loss`."""
    if loss.name not in _LOSSES:  # a loss added to xgrad without a torch form yet
        raise SpecError(f"loss {loss.name!r} has no torch form in xgrad yet")
    return _LOSSES[loss.name]
