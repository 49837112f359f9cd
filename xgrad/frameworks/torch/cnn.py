"""The convolutional kinds in torch: ``conv``, ``maxpool``, ``avgpool``, ``global_avgpool``,
``groupnorm`` and ``batchnorm`` over a channel axis, computed channels-last.

torch computes these channels-first (``(B, C, L)``, ``(B, C, H, W)``); xgrad's layout is
channels-last (``(B, L, C)``, ``(B, H, W, C)``), so that a spec's ``Flatten`` flattens
``(h, w, c)`` in every framework. Each kind is built as a subclass of torch's own module
with :class:`ChannelsLast` in front: its ``forward`` moves the channels to axis 1, runs
torch's ``forward`` unchanged, and moves them back. Its state-dict names are torch's
(``weight``, ``bias``, ``running_mean``, ...), so a state dict written by xgrad loads into the
user's ``nn.Conv2d`` / ``nn.BatchNorm2d`` as it is.

=======================  ====================================  ===============================
kind                     built as                              weights (torch names, layout)
=======================  ====================================  ===============================
``conv``                 :class:`Conv1d` / :class:`Conv2d`     ``weight (F, C/G, *k)``: the
                         (``nn.Conv1d`` / ``nn.Conv2d``)       kernel ``(*k, C/G, F)``, layout
                                                               ``(2, 1, 0)`` / ``(3, 2, 0, 1)``;
                                                               ``bias (F,)``
``maxpool``              :class:`MaxPool1d` / ``2d``           -
``avgpool``              :class:`AvgPool1d` / ``2d``           -
``global_avgpool``       :class:`GlobalAvgPool` (a mean)       -
``groupnorm``            :class:`GroupNorm` (``nn.GroupNorm``)  ``weight``, ``bias``
``batchnorm``            ``nn.BatchNorm1d`` on ``(features,)``; ``weight``, ``bias``;
                         :class:`BatchNorm1d` on ``(l, c)``,   ``running_mean``,
                         :class:`BatchNorm2d` on ``(h, w, c)``  ``running_var``
=======================  ====================================  ===============================

Padding. torch's modules pad symmetrically: a convolution any ``padding=(p_h, p_w)``, a
pool at most half its window (``-inf`` for max, zeros for average). Where the layer's pads are
symmetric and within that limit they are the module's own ``padding``; otherwise (``"same"``
with an even kernel or a stride, explicit ``(lo, hi)`` pairs, wider pads) the module pads
first with ``F.pad`` (:attr:`ChannelsLast.pads`: zeros for a convolution and an average,
``-inf`` for a maximum) and runs with ``padding=0``. An average that does not count the
padding (``count_include_pad=False``) over pads torch's module cannot take divides the
padded window sum by the padded window's count of real cells, both computed by
``F.avg_pool`` (:class:`AvgPool1d`'s ``forward``): torch has no module for it.

Reading: these classes (xgrad's builds, channels-last by construction) are read back as their
kinds. A user's ``nn.Conv2d``, ``nn.MaxPool2d``, ... is not: it takes ``(B, C, H, W)``, and
a chain of them ends in a flatten of ``(C, H, W)`` that no channels-last spec computes, so
the reader refuses it by name and :func:`xgrad.compare_models` compares it module by module
(``read="modules"``, with ``layout="NCHW"`` against a channels-last port).

Importing this module imports torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xgrad.errors import FrameworkError
from xgrad.frameworks.kinds import Layout
from xgrad.frameworks.torch.found import Found
from xgrad.layers import AvgPool, BatchNorm, Conv, MaxPool, Shape
from xgrad.layers import GlobalAvgPool as GlobalAvgPoolLayer
from xgrad.layers import GroupNorm as GroupNormLayer

__all__ = [
    "CONV_LAYOUTS",
    "AvgPool1d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "ChannelsLast",
    "Conv1d",
    "Conv2d",
    "GlobalAvgPool",
    "GroupNorm",
    "MaxPool1d",
    "MaxPool2d",
    "build_avgpool",
    "build_batchnorm",
    "build_conv",
    "build_global_avgpool",
    "build_groupnorm",
    "build_maxpool",
    "conv_layouts",
    "read_avgpool",
    "read_conv",
    "read_global_avgpool",
    "read_groupnorm",
    "read_maxpool",
]

CONV_LAYOUTS: dict[int, Layout] = {1: (2, 1, 0), 2: (3, 2, 0, 1)}
"""Spatial rank -> the layout of torch's convolution ``weight (F, C/G, *k)`` against the
canonical kernel ``(*k, C/G, F)`` (the same as :mod:`.capture`'s ``FUSED_WEIGHTS``)."""


class ChannelsLast(nn.Module):
    """In front of a torch module class that computes channels-first: ``forward`` takes and
    returns channels-last values ``(B, *spatial, C)``.

    Attributes:
        pads: ``F.pad``'s flat ``(lo, hi)`` pairs, last spatial axis first, added before the
            module runs (``()``: none; the module's own ``padding`` then does it).
        pad_value: what ``F.pad`` fills with (``-inf`` for a maximum).
    """

    pads: tuple[int, ...] = ()
    pad_value: float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.movedim(-1, 1)
        if self.pads:
            x = F.pad(x, self.pads, value=self.pad_value)
        return super().forward(x).movedim(1, -1)

    def extra_repr(self) -> str:
        text = f"{super().extra_repr()}, channels last"
        if self.pads:
            text += f", F.pad first {self.pads} with {self.pad_value:g}"
        return text


class Conv1d(ChannelsLast, nn.Conv1d):
    """``nn.Conv1d`` on ``(B, L, C)``."""


class Conv2d(ChannelsLast, nn.Conv2d):
    """``nn.Conv2d`` on ``(B, H, W, C)``."""


class MaxPool1d(ChannelsLast, nn.MaxPool1d):
    """``nn.MaxPool1d`` on ``(B, L, C)``."""


class MaxPool2d(ChannelsLast, nn.MaxPool2d):
    """``nn.MaxPool2d`` on ``(B, H, W, C)``."""


class _AvgPool(ChannelsLast):
    """An average pool; with :attr:`ChannelsLast.pads` and ``count_include_pad=False``, the
    padded window's sum divided by its number of real cells (torch's module cannot: its own
    ``padding`` is symmetric and at most half the window)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pads or self.count_include_pad:
            return super().forward(x)
        x = x.movedim(-1, 1)
        ones = torch.ones_like(x[:1, :1])
        pool = super(ChannelsLast, self).forward  # torch's own average, count_include_pad
        sums = pool(F.pad(x, self.pads))
        counts = pool(F.pad(ones, self.pads))
        return (sums / counts).movedim(1, -1)


class AvgPool1d(_AvgPool, nn.AvgPool1d):
    """``nn.AvgPool1d`` on ``(B, L, C)``."""


class AvgPool2d(_AvgPool, nn.AvgPool2d):
    """``nn.AvgPool2d`` on ``(B, H, W, C)``."""


class GroupNorm(ChannelsLast, nn.GroupNorm):
    """``nn.GroupNorm`` on ``(B, *spatial, C)``."""


class BatchNorm1d(ChannelsLast, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` on ``(B, L, C)``."""


class BatchNorm2d(ChannelsLast, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` on ``(B, H, W, C)``."""


class GlobalAvgPool(nn.Module):
    """The mean over every spatial axis: ``(B, *spatial, C) -> (B, C)`` (torch has no module
    for it; ``nn.AdaptiveAvgPool2d(1)`` computes the same channels-first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=tuple(range(1, x.ndim - 1)))


def conv_layouts(layer: Conv, shape: Shape) -> dict[str, Layout]:
    """The conv kernel's layout on examples ``shape`` (it depends on the spatial rank)."""
    return {"kernel": CONV_LAYOUTS[len(shape) - 1]}


def _pads(pads) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(symmetric padding per axis, ())`` when every axis pads alike, else ``(zeros,
    F.pad's flat pairs, last axis first)``."""
    if all(lo == hi for lo, hi in pads):
        return tuple(lo for lo, _ in pads), ()
    return (0,) * len(pads), tuple(p for pair in reversed(pads) for p in pair)


def _pick(classes, shape: Shape, layer, path: str):
    rank = len(shape) - 1
    if rank not in classes:
        raise FrameworkError(
            f"layer {path} ({layer.describe()}): torch builds it on (length, channels) or "
            f"(height, width, channels) examples, got {shape}"
        )
    return classes[rank]


def build_conv(layer: Conv, path: str, shape: Shape, dtype, child) -> nn.Module:
    """``Conv1d`` / ``Conv2d`` (channels-last) computing ``layer`` on examples ``shape``."""
    cls = _pick({1: Conv1d, 2: Conv2d}, shape, layer, path)
    win = layer.window(shape)
    padding, pads = _pads(win.pads)
    module = cls(
        shape[-1],
        layer.features,
        win.kernel,
        stride=win.strides,
        padding=padding,
        dilation=win.dilation,
        groups=layer.groups,
        bias=layer.use_bias,
        dtype=dtype,
    )
    module.pads = pads
    return module


def _pool_pads(win) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """As :func:`_pads`, with F.pad also where a symmetric pad exceeds half the window
    (torch's pools refuse it)."""
    padding, pads = _pads(win.pads)
    if not pads and any(p > k // 2 for p, k in zip(padding, win.kernel, strict=True)):
        return (0,) * len(padding), tuple(p for pair in reversed(win.pads) for p in pair)
    return padding, pads


def build_maxpool(layer: MaxPool, path: str, shape: Shape, dtype, child) -> nn.Module:
    """``MaxPool1d`` / ``MaxPool2d`` (channels-last); F.pad fills with ``-inf``."""
    cls = _pick({1: MaxPool1d, 2: MaxPool2d}, shape, layer, path)
    win = layer.window(shape)
    padding, pads = _pool_pads(win)
    module = cls(win.kernel, stride=win.strides, padding=padding)
    module.pads, module.pad_value = pads, float("-inf")
    return module


def build_avgpool(layer: AvgPool, path: str, shape: Shape, dtype, child) -> nn.Module:
    """``AvgPool1d`` / ``AvgPool2d`` (channels-last), ``count_include_pad`` as the layer's."""
    cls = _pick({1: AvgPool1d, 2: AvgPool2d}, shape, layer, path)
    win = layer.window(shape)
    padding, pads = _pool_pads(win)
    module = cls(
        win.kernel, stride=win.strides, padding=padding, count_include_pad=layer.count_include_pad
    )
    module.pads = pads
    return module


def build_global_avgpool(layer: GlobalAvgPoolLayer, path, shape, dtype, child) -> nn.Module:
    return GlobalAvgPool()


def _slots(module: nn.Module, scale: bool, bias: bool, channels: int, dtype) -> nn.Module:
    """Give an ``affine=False`` module the one affine term torch cannot declare alone (its
    forward passes ``self.weight`` and ``self.bias`` to torch's function either way)."""
    for name, wanted in (("weight", scale), ("bias", bias)):
        if wanted and getattr(module, name, None) is None:
            setattr(module, name, nn.Parameter(torch.empty(channels, dtype=dtype)))
    return module


def build_groupnorm(layer: GroupNormLayer, path: str, shape: Shape, dtype, child) -> nn.Module:
    """``nn.GroupNorm`` (channels-last) with the layer's epsilon (torch's default 1e-5)."""
    both = layer.use_scale and layer.use_bias
    module = GroupNorm(layer.groups, shape[-1], eps=layer.epsilon, affine=both, dtype=dtype)
    return _slots(module, layer.use_scale, layer.use_bias, shape[-1], dtype)


def build_batchnorm(layer: BatchNorm, path: str, shape: Shape, dtype, child) -> nn.Module:
    """``nn.BatchNorm1d`` on ``(features,)``; channels-last :class:`BatchNorm1d` on
    ``(l, c)``, :class:`BatchNorm2d` on ``(h, w, c)``; torch's ``momentum`` is ``1 -`` the
    layer's (torch weights the new value)."""
    classes = {0: nn.BatchNorm1d, 1: BatchNorm1d, 2: BatchNorm2d}
    if len(shape) - 1 not in classes:
        raise FrameworkError(
            f"layer {path} ({layer.describe()}): torch builds a BatchNorm over (features,), "
            f"(length, channels) or (height, width, channels) examples, got {shape}"
        )
    module = classes[len(shape) - 1](
        shape[-1],
        eps=layer.epsilon,
        momentum=1 - layer.momentum,
        affine=layer.scale and layer.center,
        dtype=dtype,
    )
    return _slots(module, layer.scale, layer.center, shape[-1], dtype)


# -- reading xgrad's builds back ------------------------------------------------------------------


def _found(layer, params=None, layouts=None) -> Found:
    return Found(layer, params=params or {}, layouts=layouts or {})


def _pairs(module: ChannelsLast, rank: int) -> tuple[tuple[int, int], ...]:
    """The module's ``(lo, hi)`` pads per spatial axis: its ``F.pad`` or its ``padding``."""
    if module.pads:
        flat = module.pads
        return tuple((flat[2 * i], flat[2 * i + 1]) for i in reversed(range(rank)))
    padding = module.padding
    padding = (padding,) * rank if isinstance(padding, int) else tuple(padding)
    return tuple((int(p), int(p)) for p in padding)


def _sizes(value, rank: int) -> tuple[int, ...]:
    return (int(value),) * rank if isinstance(value, int) else tuple(int(v) for v in value)


def read_conv(module: Conv1d | Conv2d, name: str, dtype: str, ndim: int):
    """xgrad's :class:`Conv1d` / :class:`Conv2d` as ``conv`` (kernel in layout
    :data:`CONV_LAYOUTS`)."""
    rank = 1 if isinstance(module, nn.Conv1d) else 2
    layer = Conv(
        module.out_channels,
        _sizes(module.kernel_size, rank),
        strides=_sizes(module.stride, rank),
        padding=_pairs(module, rank),
        dilation=_sizes(module.dilation, rank),
        groups=module.groups,
        use_bias=module.bias is not None,
    )
    prefix = f"{name}." if name else ""
    params = {"kernel": f"{prefix}weight"}
    if module.bias is not None:
        params["bias"] = f"{prefix}bias"
    return _found(layer, params, {"kernel": CONV_LAYOUTS[rank]})


def read_maxpool(module: MaxPool1d | MaxPool2d, name: str, dtype: str, ndim: int):
    rank = 1 if isinstance(module, nn.MaxPool1d) else 2
    pool = _sizes(module.kernel_size, rank)
    return _found(MaxPool(pool, _sizes(module.stride, rank), padding=_pairs(module, rank)))


def read_avgpool(module: AvgPool1d | AvgPool2d, name: str, dtype: str, ndim: int):
    rank = 1 if isinstance(module, nn.AvgPool1d) else 2
    pool = _sizes(module.kernel_size, rank)
    layer = AvgPool(
        pool,
        _sizes(module.stride, rank),
        padding=_pairs(module, rank),
        count_include_pad=bool(module.count_include_pad),
    )
    return _found(layer)


def read_groupnorm(module: GroupNorm, name: str, dtype: str, ndim: int):
    scale, bias = module.weight is not None, module.bias is not None
    prefix = f"{name}." if name else ""
    params = {**({"scale": f"{prefix}weight"} if scale else {})}
    if bias:
        params["bias"] = f"{prefix}bias"
    layer = GroupNormLayer(module.num_groups, float(module.eps), use_scale=scale, use_bias=bias)
    return _found(layer, params)


def read_global_avgpool(module: GlobalAvgPool, name: str, dtype: str, ndim: int):
    return _found(GlobalAvgPoolLayer())


_CHANNELS_FIRST = (
    nn.Conv1d,
    nn.Conv2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.GroupNorm,
    nn.BatchNorm2d,
)


def not_read_why(module: nn.Module) -> str:
    """Why the reader refuses a user's torch module of a convolutional or recurrent class
    (``""`` for other classes): the words after "is not a layer xgrad reads"."""
    if isinstance(module, nn.LSTM | nn.GRU):
        return (
            " (it returns a tuple (output, state) and may be time-first; xgrad reads its own "
            "batch-first LSTM and GRU of xgrad.frameworks.torch.recurrent: compare yours module "
            "by module, xgrad.compare_models(..., read='modules'), layout='TNC' if time-first)"
        )
    if isinstance(module, _CHANNELS_FIRST):
        return (
            " (it computes channels-first, (batch, channels, *spatial), and xgrad's kinds are "
            "channels-last: compare it module by module, xgrad.compare_models(..., "
            "read='modules', layout='NCHW' or 'NCL') against a channels-last port)"
        )
    return ""
