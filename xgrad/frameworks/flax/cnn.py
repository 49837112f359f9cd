"""The convolutional kinds in Flax NNX: what each is built from, and what an ``nnx.Conv`` or
``nnx.GroupNorm`` in a user's model states of the kind it is.

================  ===========================================================  =============
kind              built as                                                     weights
================  ===========================================================  =============
``conv``          ``nnx.Conv(C, F, kernel, strides, padding=..., kernel_       ``kernel (*k,
                  dilation, feature_group_count, use_bias)``; padding          C/G, F)``,
                  ``"VALID"`` / ``"SAME"`` (lax's: the odd zero last, as       ``bias (F,)``
                  the kind's ``"same"``) or explicit ``(lo, hi)`` pairs
``maxpool``       :class:`PoolLayer`: ``nnx.max_pool`` (Linen's                 -
                  ``max_pool``: ``lax.reduce_window`` from ``-inf``)
``avgpool``       :class:`PoolLayer`: ``nnx.avg_pool(count_include_pad=...)``  -
``global_avgpool``  :class:`GlobalAvgPoolLayer` (Flax has no such module):     -
                  ``jnp.mean`` over the spatial axes
``groupnorm``     ``nnx.GroupNorm(C, num_groups=G, epsilon=layer's)`` (its     ``scale``,
                  groups are contiguous channels: ``x.reshape(..., G, C/G)``;  ``bias (C,)``
                  Flax's default epsilon 1e-6 is never relied on)
================  ===========================================================  =============

Flax is channels-last like the canonical layout and stores the kernel ``(*k, C // G, F)``
(``HWIO``), so no entry states a layout. Pool strides are always passed: Flax's pooling
functions default to stride 1, not to the pool size. A user's ``nnx.Conv`` is read as a
``conv`` only with zero padding (``"VALID"``, ``"SAME"``, an int or pairs), no input
dilation and no mask; ``"CIRCULAR"``, ``"REFLECT"`` and ``"CAUSAL"`` padding are refused
by name (:func:`conv_hints`).

Importing this module imports Flax.
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from xgrad.errors import SpecError
from xgrad.layers import AvgPool, Conv, GroupNorm, MaxPool

__all__ = [
    "GlobalAvgPoolLayer",
    "PoolLayer",
    "build_conv",
    "build_groupnorm",
    "conv_hints",
    "groupnorm_hints",
]


def _flax_padding(padding):
    """The kind's normalised padding as ``nnx.Conv`` / the pooling functions take it."""
    if isinstance(padding, str):
        return padding.upper()
    return padding  # an int (p, p on every axis) or (lo, hi) pairs: the same in Flax


def build_conv(layer: Conv, path, shape, dtype, rngs, block) -> nnx.Module:
    """``nnx.Conv`` computing ``layer`` on examples ``shape`` ``(*spatial, C)``."""
    win = layer.window(shape)
    return nnx.Conv(
        shape[-1],
        layer.features,
        win.kernel,
        strides=win.strides,
        padding=_flax_padding(layer.padding),
        kernel_dilation=win.dilation,
        feature_group_count=layer.groups,
        use_bias=layer.use_bias,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


class PoolLayer(nnx.Module):
    """A max or average pool as a layer (no weights): Flax's own ``max_pool`` / ``avg_pool``
    (``flax.linen.pooling``, re-exported as ``nnx.max_pool`` / ``nnx.avg_pool``) with the
    layer's window, strides and padding on ``x (B, *spatial, C)``."""

    def __init__(self, layer: MaxPool | AvgPool, shape) -> None:
        win = layer.window(shape)
        self.kind = layer.kind
        self.window = win.kernel
        self.strides = win.strides
        self.padding = win.pads  # resolved pairs: "same" as lax pads it
        self.count_include_pad = getattr(layer, "count_include_pad", False)

    def __call__(self, x):
        if self.kind == "maxpool":
            return nnx.max_pool(x, self.window, self.strides, self.padding)
        return nnx.avg_pool(
            x, self.window, self.strides, self.padding, count_include_pad=self.count_include_pad
        )


class GlobalAvgPoolLayer(nnx.Module):
    """``(B, *spatial, C) -> (B, C)``: the mean over every spatial axis."""

    def __call__(self, x):
        return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def build_groupnorm(layer: GroupNorm, path, shape, dtype, rngs, block) -> nnx.Module:
    """``nnx.GroupNorm`` with the layer's groups and epsilon (Flax's default is 1e-6)."""
    return nnx.GroupNorm(
        shape[-1],
        num_groups=layer.groups,
        epsilon=layer.epsilon,
        use_scale=layer.use_scale,
        use_bias=layer.use_bias,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


_ZERO_PADDINGS = ("VALID", "SAME")


def conv_hints(module: nnx.Conv) -> dict:
    """The ``conv`` an ``nnx.Conv`` computes: ``features``, ``kernel``, ``strides``,
    ``padding``, ``dilation``, ``groups``, ``use_bias``.

    Raises:
        SpecError: a configuration the kind does not compute (padding other than zeros,
            input dilation, a kernel mask), naming the setting and the fix.
    """
    rank = len(module.kernel_size)
    padding = module.padding
    if isinstance(padding, str) and padding.upper() not in _ZERO_PADDINGS:
        raise SpecError(
            f"nnx.Conv padding={padding!r} is not a convolution xgrad reads (its Conv pads "
            "with zeros); use 'SAME', 'VALID', an int or (lo, hi) pairs, or jnp.pad the input "
            "yourself before a 'VALID' convolution"
        )
    if isinstance(padding, str):
        padding = padding.lower()
    elif not isinstance(padding, int):
        padding = tuple(
            (int(p), int(p)) if isinstance(p, int) else tuple(int(v) for v in p) for p in padding
        )
        padding = padding * rank if len(padding) == 1 and rank > 1 else padding
    dilation = module.input_dilation
    if dilation not in (None, 1) and tuple(dilation) != (1,) * rank:
        raise SpecError(
            f"nnx.Conv input_dilation={dilation!r} (a transposed convolution) is not a "
            "convolution xgrad reads; xgrad's Conv dilates the kernel only (kernel_dilation)"
        )
    if module.mask is not None:
        raise SpecError("nnx.Conv with a kernel mask is not a convolution xgrad reads")
    return {
        "features": module.out_features,
        "kernel": tuple(module.kernel_size),
        "strides": module.strides if module.strides is not None else 1,
        "padding": padding,
        "dilation": module.kernel_dilation if module.kernel_dilation is not None else 1,
        "groups": module.feature_group_count,
        "use_bias": module.use_bias,
    }


def groupnorm_hints(module: nnx.GroupNorm) -> dict:
    """The ``groupnorm`` an ``nnx.GroupNorm`` computes (groups, epsilon, scale and bias).

    Raises:
        SpecError: statistics over other axes than the spatial ones and the group's channels
            (``reduction_axes``), which the kind does not compute.
    """
    if module.reduction_axes is not None:
        raise SpecError(
            f"nnx.GroupNorm reduction_axes={module.reduction_axes!r} is not a group norm "
            "xgrad reads (statistics over every spatial axis and the group's channels); "
            "leave reduction_axes None"
        )
    return {
        "groups": module.num_groups,
        "epsilon": module.epsilon,
        "use_scale": module.use_scale,
        "use_bias": module.use_bias,
    }
