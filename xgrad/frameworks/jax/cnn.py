"""The convolutional kinds in JAX: pure functions on ``jax.lax`` windows, channels last.

================  ==========================================================  ==============
kind              computed as                                                 weights
================  ==========================================================  ==============
``conv``          ``lax.conv_general_dilated`` with dimension numbers         ``kernel
                  ``("NWC", "WIO", "NWC")`` / ``("NHWC", "HWIO", "NHWC")``,   (*k, C/G, F)``,
                  the layer's ``(lo, hi)`` pads as explicit pairs,            ``bias (F,)``
                  ``rhs_dilation``, ``feature_group_count``; then the bias
``maxpool``       ``lax.reduce_window(x, -inf, lax.max, ...)`` over the       -
                  padded input (a padded cell never wins)
``avgpool``       ``lax.reduce_window(x, 0, lax.add, ...)`` divided by the    -
                  window size (``count_include_pad``) or by the same
                  ``reduce_window`` of ones over the input (its real cells)
``global_avgpool``  ``jnp.mean`` over every spatial axis                      -
``groupnorm``     ``x`` reshaped ``(..., G, C/G)`` (contiguous groups),       ``scale``,
                  mean and biased variance over the spatial axes and the      ``bias (C,)``
                  group's channels, ``(x - mean) * rsqrt(var + eps)``, then
                  scale and shift
================  ==========================================================  ==============

The geometry (pads, strides, output sizes) is the NumPy kind's own
(:meth:`xgrad.layers.Conv.window`, :func:`xgrad.layers.conv.conv_padding`), resolved on the
traced input shape, so ``"same"`` pads the odd zero last exactly as lax ``"SAME"`` does.
Weights are stored canonically (the kernel ``(*k, C // groups, F)`` is lax's ``HWIO``).

Importing this module imports JAX.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from xgrad.layers import AvgPool, Conv, GlobalAvgPool, GroupNorm, MaxPool

__all__ = ["DIMENSION_NUMBERS", "avgpool", "conv", "global_avgpool", "groupnorm", "maxpool"]

DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}
"""Spatial rank -> the channels-last ``dimension_numbers`` xgrad's convolutions use."""


def conv(layer: Conv, path: str, block):
    """``(w, x) -> (y, {})``: ``x (B, *spatial, C)`` -> ``y (B, *out, F)``."""

    def run(w, x):
        win = layer.window(x.shape[1:])
        y = lax.conv_general_dilated(
            x,
            w["kernel"],
            window_strides=win.strides,
            padding=win.pads,
            rhs_dilation=win.dilation,
            dimension_numbers=DIMENSION_NUMBERS[len(win.kernel)],
            feature_group_count=layer.groups,
        )
        return (y + w["bias"] if layer.use_bias else y), {}

    return run


def _window_sum(x, win, init=0.0, op=lax.add):
    """``lax.reduce_window`` of ``x (B, *spatial, C)`` over the layer's windows, the batch
    and channel axes left alone. ``init`` is a Python number: lax then binds its own
    differentiable ``reduce_window_sum`` / ``reduce_window_max``, not a generic reduction."""
    return lax.reduce_window(
        x,
        init,
        op,
        window_dimensions=(1, *win.kernel, 1),
        window_strides=(1, *win.strides, 1),
        padding=((0, 0), *win.pads, (0, 0)),
    )


def maxpool(layer: MaxPool, path: str, block):
    """``(w, x) -> (y, {})``: the maximum of each window, padded with ``-inf``."""

    def run(w, x):
        return _window_sum(x, layer.window(x.shape[1:]), -jnp.inf, lax.max), {}

    return run


def avgpool(layer: AvgPool, path: str, block):
    """``(w, x) -> (y, {})``: each window's sum over its size or its count of real cells."""

    def run(w, x):
        win = layer.window(x.shape[1:])
        sums = _window_sum(x, win)
        if layer.count_include_pad:
            return sums / jnp.asarray(math.prod(win.kernel), x.dtype), {}
        ones = jnp.ones((1, *x.shape[1:-1], 1), x.dtype)
        return sums / _window_sum(ones, win), {}

    return run


def global_avgpool(layer: GlobalAvgPool, path: str, block):
    """``(w, x) -> (y, {})``: ``(B, *spatial, C)`` -> ``(B, C)``."""
    return lambda w, x: (jnp.mean(x, axis=tuple(range(1, x.ndim - 1))), {})


def groupnorm(layer: GroupNorm, path: str, block):
    """``(w, x) -> (y, {})``: statistics per example and group of contiguous channels."""

    def run(w, x):
        channels = x.shape[-1]
        g = x.reshape(*x.shape[:-1], layer.groups, channels // layer.groups)
        axes = (*range(1, x.ndim - 1), x.ndim)  # spatial axes and the group's channels
        mean = jnp.mean(g, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=axes, keepdims=True)
        eps = jnp.asarray(layer.epsilon, x.dtype)
        y = ((g - mean) * jax.lax.rsqrt(var + eps)).reshape(x.shape)
        y = y * w["scale"] if layer.use_scale else y
        return (y + w["bias"] if layer.use_bias else y), {}

    return run
