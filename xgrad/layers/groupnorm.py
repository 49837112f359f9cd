"""``GroupNorm``: normalise each example over groups of its channels, then scale and shift.

Channels are on the last axis of an example of any rank >= 1: ``(channels,)``,
``(length, channels)``, ``(height, width, channels)``. The channels split into ``groups``
contiguous blocks of ``channels // groups`` (group ``g`` holds channels
``g * cg .. (g + 1) * cg - 1``, as in torch's ``nn.GroupNorm``, Keras'
``GroupNormalization`` and Flax's ``GroupNorm``). Per example and group, the mean and the
biased variance are taken over every spatial position and the group's channels::

    y = (x - mean) / sqrt(var + epsilon) * scale + bias        scale, bias: (channels,)

``groups == channels`` is an instance norm, ``groups == 1`` a layer norm over the whole
example. Defaults differ by framework: torch 1e-5 (xgrad's), Keras ``GroupNormalization``
1e-3, Flax 1e-6; each framework entry passes the layer's epsilon explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.errors import SpecError
from xgrad.layers.base import (
    AbstractLayer,
    Shape,
    Step,
    check_bool,
    check_float,
    check_positive_int,
    sum_leading_axes,
)
from xgrad.layers.layernorm import normalise_backward

__all__ = ["GroupNorm"]


@dataclass(frozen=True)
class GroupNorm(AbstractLayer):
    """Group normalisation over the channels (last axis) of each example.

    Args:
        groups: how many contiguous groups the channels split into; it must divide the
            channels (torch ``num_groups``, Keras and Flax ``groups`` / ``num_groups``).
        epsilon: added to the variance, >= 0 (torch 1e-5, Keras 1e-3, Flax 1e-6).
        use_scale: whether there is a ``scale`` of shape ``(channels,)`` (torch ``weight``,
            Keras ``gamma``).
        use_bias: whether there is a ``bias`` of shape ``(channels,)`` (Keras ``beta``).

    Example:
        >>> GroupNorm(2).weight_shapes((5, 4))
        {'scale': (4,), 'bias': (4,)}
    """

    kind = "groupnorm"

    groups: int
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", check_positive_int(self.groups, "GroupNorm groups"))
        object.__setattr__(self, "epsilon", check_float(self.epsilon, "GroupNorm epsilon", low=0))
        object.__setattr__(self, "use_scale", check_bool(self.use_scale, "GroupNorm use_scale"))
        object.__setattr__(self, "use_bias", check_bool(self.use_bias, "GroupNorm use_bias"))

    def param_names(self) -> tuple[str, ...]:
        return (("scale",) if self.use_scale else ()) + (("bias",) if self.use_bias else ())

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise SpecError(f"GroupNorm takes examples of shape (..., channels), got {input_shape}")
        channels = input_shape[-1]
        if channels % self.groups:
            fits = [g for g in range(1, channels + 1) if channels % g == 0]
            raise SpecError(
                f"GroupNorm(groups={self.groups}) needs a number of channels (the last axis) "
                f"divisible by groups, got {channels} channels in examples of shape "
                f"{input_shape}; use groups in {fits}"
            )
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {name: (input_shape[-1],) for name in self.param_names()}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """``scale`` uniform in [0.5, 1.5] and ``bias`` in [-bias_scale, bias_scale]."""
        out = {}
        if self.use_scale:
            out["scale"] = rng.uniform(0.5, 1.5, size=(input_shape[-1],))
        if self.use_bias:
            out["bias"] = rng.uniform(-bias_scale, bias_scale, size=(input_shape[-1],))
        return out

    def describe(self) -> str:
        flags = "" if self.use_scale else ", use_scale=False"
        flags += "" if self.use_bias else ", use_bias=False"
        return f"groupnorm({self.groups}, eps={self.epsilon:g}{flags})"

    def forward(self, weights, x, *, path):
        eps = x.dtype.type(self.epsilon)
        grouped, axes = self._grouped(x)
        centred = grouped - grouped.mean(axis=axes, keepdims=True)
        inv = 1 / np.sqrt((centred * centred).mean(axis=axes, keepdims=True) + eps)
        xhat = (centred * inv).reshape(x.shape)
        y = xhat * weights[f"{path}.scale"] if self.use_scale else xhat
        if self.use_bias:
            y = y + weights[f"{path}.bias"]
        return Step(path, self, x, y, cache=(xhat, inv))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        """``xhat = (x - mean) * inv`` within each (example, group), ``y = xhat * scale + bias``.

        ``dL/dscale`` and ``dL/dbias`` sum ``dL/dy * xhat`` and ``dL/dy`` over the batch and
        every spatial position. With ``d = dL/dy * scale`` and ``M`` the group's element count
        (spatial positions times ``channels // groups``), ``mean`` and ``var`` depend on every
        element of the group: ``dmean/dx_j = 1/M``, ``dvar/dx_j = 2 (x_j - mean) / M``, so

            dL/dx = inv * (d - mean(d) - xhat * mean(d * xhat))

        the means over the group, exactly LayerNorm's backward taken over the group's axes.
        """
        xhat, inv = step.cache
        if self.use_scale:
            grads[f"{step.path}.scale"] = sum_leading_axes(grad_output * xhat)
        if self.use_bias:
            grads[f"{step.path}.bias"] = sum_leading_axes(grad_output)
        d = grad_output * weights[f"{step.path}.scale"] if self.use_scale else grad_output
        d_grouped, axes = self._grouped(d)
        xhat_grouped, _ = self._grouped(xhat)
        return normalise_backward(d_grouped, xhat_grouped, inv, axis=axes).reshape(d.shape)

    def _grouped(self, a):
        """``a (batch, *spatial, channels)`` as ``(batch, *spatial, groups, channels //
        groups)`` and the axes of one group's statistics (spatial and within-group)."""
        grouped = a.reshape(*a.shape[:-1], self.groups, a.shape[-1] // self.groups)
        return grouped, (*range(1, a.ndim - 1), a.ndim)
