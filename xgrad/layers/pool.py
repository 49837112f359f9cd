"""Pooling over the spatial axes of channels-last examples: ``MaxPool``, ``AvgPool`` and
``GlobalAvgPool``. None has weights; each channel is pooled on its own.

Windows are those of :mod:`xgrad.layers.conv` with dilation 1: output position ``o`` reads
the padded input at ``o * s + t`` for taps ``t = 0 .. pool - 1`` on each axis (``strides``
default to ``pool``), and the padding ``(lo, hi)`` per axis comes from
:func:`~xgrad.layers.conv.conv_padding` (``"valid"``, ``"same"``, an int, explicit pairs).

MaxPool pads with ``-inf``, so a padded cell never wins::

    y[o] = max_t p[o * s + t]        dx[i] = sum over windows whose first maximum is at i of dy

(ties go to the first maximum in row-major window order, as ``argmax`` picks it; other
frameworks may pick another of the tied cells).

AvgPool pads with zeros and divides each window sum by a count ``c[o]``: the window size
``prod(pool)`` with ``count_include_pad=True`` (torch's default), the number of real cells
in the window with ``False`` (Keras / TF ``"same"``, ``flax.linen.avg_pool``'s option)::

    y[o] = sum_t p[o * s + t] / c[o]       dx[i] = sum over windows o holding i of dy[o] / c[o]

GlobalAvgPool averages every spatial position: ``(*spatial, C) -> (C,)``,
``dx = dy / prod(spatial)`` broadcast back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xgrad.errors import SpecError
from xgrad.layers.base import AbstractLayer, Shape, Step, check_bool
from xgrad.layers.conv import (
    Window,
    check_padding,
    check_sizes,
    gather_windows,
    pad_spatial,
    scatter_windows,
    window_geometry,
)

__all__ = ["AvgPool", "GlobalAvgPool", "MaxPool"]


def _pool_window(layer, input_shape: Shape) -> Window:
    """The layer's window on ``input_shape``; refuses a padding as wide as the pool (a
    window could then hold padding only: no maximum, nothing to average)."""
    name = type(layer).__name__
    win = window_geometry(
        name, input_shape, layer.pool, layer.strides, 1, layer.padding, kernel_name="pool"
    )
    for axis, (k, (lo, hi)) in enumerate(zip(win.kernel, win.pads, strict=True)):
        if lo >= k or hi >= k:
            raise SpecError(
                f"{name} padding ({lo}, {hi}) on spatial axis {axis} is not smaller than the "
                f"pool size {k}, so a window could hold padding only; pad less than {k} on "
                "each side (torch allows at most half the pool)"
            )
    return win


def _check_pool_fields(layer) -> None:
    name = type(layer).__name__
    put = object.__setattr__
    put(layer, "pool", check_sizes(layer.pool, f"{name} pool"))
    strides = check_sizes(layer.strides, f"{name} strides", optional=True)
    put(layer, "strides", layer.pool if strides is None else strides)
    put(layer, "padding", check_padding(layer.padding, f"{name} padding"))


def _describe(layer, extra: str = "") -> str:
    parts = [f"{layer.pool}"]
    parts += [] if layer.strides == layer.pool else [f"s={layer.strides}"]
    parts += [] if layer.padding == "valid" else [f"pad={layer.padding}"]
    return f"{layer.kind}({', '.join(parts)}{extra})"


@dataclass(frozen=True)
class MaxPool(AbstractLayer):
    """The maximum of each window, per channel, on ``(length, C)`` or ``(height, width, C)``.

    Args:
        pool: window size per spatial axis: an int for every axis or one per axis.
        strides: an int or one per axis; ``None`` means ``pool`` (stored resolved).
        padding: as :class:`~xgrad.layers.conv.Conv`'s, filled with ``-inf``; each side
            must be smaller than the pool.

    The gradient of a window goes to its first maximum in row-major order.

    Example:
        >>> MaxPool(2).output_shape((28, 28, 8))
        (14, 14, 8)
    """

    kind = "maxpool"

    pool: int | tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str | int | tuple = "valid"

    def __post_init__(self) -> None:
        _check_pool_fields(self)

    def window(self, input_shape: Shape) -> Window:
        """The resolved geometry on examples ``input_shape``."""
        return _pool_window(self, input_shape)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*self.window(input_shape).out_sizes, input_shape[-1])

    def describe(self) -> str:
        return _describe(self)

    def forward(self, weights, x, *, path):
        win = self.window(x.shape[1:])
        xp = pad_spatial(x, win.pads, -np.inf)
        windows = gather_windows(xp, win)  # (B, *out, C, *pool)
        flat = windows.reshape(*windows.shape[: -len(win.kernel)], -1)
        first = flat.argmax(axis=-1)  # the first maximum in row-major window order
        y = np.take_along_axis(flat, first[..., None], axis=-1)[..., 0]
        return Step(path, self, x, y, cache=(win, xp.shape, first))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        win, padded, first = step.cache
        dflat = np.zeros((*first.shape, math.prod(win.kernel)), dtype=grad_output.dtype)
        np.put_along_axis(dflat, first[..., None], grad_output[..., None], axis=-1)
        return scatter_windows(dflat.reshape(*first.shape, *win.kernel), padded, win)


@dataclass(frozen=True)
class AvgPool(AbstractLayer):
    """The mean of each window, per channel, on ``(length, C)`` or ``(height, width, C)``.

    Args:
        pool: window size per spatial axis: an int for every axis or one per axis.
        strides: an int or one per axis; ``None`` means ``pool`` (stored resolved).
        padding: as :class:`~xgrad.layers.conv.Conv`'s, filled with zeros; each side must be
            smaller than the pool.
        count_include_pad: divide by the window size (``True``, torch's default) or by the
            number of real cells in the window (``False``: Keras / TF ``"same"``, Flax's
            ``count_include_pad=False``).

    Example:
        >>> AvgPool(3, strides=2, padding="same").output_shape((7, 4))
        (4, 4)
    """

    kind = "avgpool"

    pool: int | tuple[int, ...]
    strides: int | tuple[int, ...] | None = None
    padding: str | int | tuple = "valid"
    count_include_pad: bool = False

    def __post_init__(self) -> None:
        _check_pool_fields(self)
        object.__setattr__(
            self,
            "count_include_pad",
            check_bool(self.count_include_pad, "AvgPool count_include_pad"),
        )

    def window(self, input_shape: Shape) -> Window:
        """The resolved geometry on examples ``input_shape``."""
        return _pool_window(self, input_shape)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*self.window(input_shape).out_sizes, input_shape[-1])

    def describe(self) -> str:
        return _describe(self, ", count_include_pad" if self.count_include_pad else "")

    def counts(self, win: Window, spatial: Shape, dtype) -> np.ndarray:
        """The divisor of each output position, ``(1, *out, 1)``."""
        if self.count_include_pad:
            return np.full((1, *win.out_sizes, 1), math.prod(win.kernel), dtype=dtype)
        ones = pad_spatial(np.ones((1, *spatial, 1), dtype=dtype), win.pads)
        windows = gather_windows(ones, win)
        return windows.sum(axis=tuple(range(-len(win.kernel), 0)))

    def forward(self, weights, x, *, path):
        win = self.window(x.shape[1:])
        xp = pad_spatial(x, win.pads)
        sums = gather_windows(xp, win).sum(axis=tuple(range(-len(win.kernel), 0)))
        counts = self.counts(win, x.shape[1:-1], x.dtype)
        return Step(path, self, x, sums / counts, cache=(win, xp.shape, counts))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        win, padded, counts = step.cache
        share = grad_output / counts  # each tap of a window gets dy / c
        taps = (Ellipsis, *([None] * len(win.kernel)))
        dwin = np.broadcast_to(share[taps], (*share.shape, *win.kernel))
        return scatter_windows(dwin, padded, win)


@dataclass(frozen=True)
class GlobalAvgPool(AbstractLayer):
    """The mean over every spatial position: ``(length, C)`` or ``(height, width, C)`` to
    ``(C,)`` (Keras ``GlobalAveragePooling1D/2D``, torch ``mean`` over the spatial axes)."""

    kind = "global_avgpool"

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) not in (2, 3):
            raise SpecError(
                "GlobalAvgPool takes channels-last examples (length, channels) or (height, "
                f"width, channels), got {tuple(input_shape)}; put a channel axis last"
            )
        return (input_shape[-1],)

    def forward(self, weights, x, *, path):
        self.output_shape(x.shape[1:])
        return Step(path, self, x, x.mean(axis=tuple(range(1, x.ndim - 1))))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        shape = step.input.shape
        count = math.prod(shape[1:-1])
        middle = (slice(None), *([None] * (len(shape) - 2)), slice(None))
        return np.broadcast_to(grad_output[middle] / count, shape).copy()
