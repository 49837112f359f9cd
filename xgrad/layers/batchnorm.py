"""``BatchNorm``: normalise each feature (channel) by batch or moving statistics.

Examples have any rank >= 1 with the features (channels) on the last axis: ``(features,)``,
``(length, channels)``, ``(height, width, channels)`` (channels-last, as Keras' and Flax's
default ``axis=-1``; torch's ``nn.BatchNorm1d/2d`` normalise axis 1 of channels-first
values). Scale, bias and the moving statistics have shape ``(channels,)``; batch statistics
are taken over the batch and every spatial position (``N`` values per channel: the batch
size times the spatial positions).

Inference (``training=False``): ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` with
the moving statistics ``mean`` and ``var`` (state: no gradient).

Training (``training=True``): the batch's own mean and biased variance take their place,
gradients flow through them, and the moving statistics are updated as Keras and Flax do::

    mean <- momentum * mean + (1 - momentum) * batch_mean
    var  <- momentum * var  + (1 - momentum) * batch_var        (biased, divides by N)

PyTorch's ``momentum=0.1`` means the opposite weighting (0.1 on the new value: Keras'
0.9), and it updates ``running_var`` with the unbiased variance (divides by N - 1) while
normalising with the biased one.

Training-mode backward: with ``d = dL/dy * scale`` and the means over the ``N`` values of a
channel, ``dL/dx = inv * (d - mean(d) - xhat * mean(d * xhat))`` (LayerNorm's backward over
the batch and spatial axes instead of the features); in inference mode the statistics are
constants and ``dL/dx = d * inv``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.errors import SpecError
from xgrad.layers.base import AbstractLayer, Shape, Step, check_bool, check_float
from xgrad.layers.layernorm import normalise_backward

__all__ = ["BatchNorm"]


@dataclass(frozen=True)
class BatchNorm(AbstractLayer):
    """Batch normalisation of each feature, the last axis (Keras' ``BatchNormalization``
    conventions). Weights and state have shape ``(channels,)``.

    Args:
        epsilon: added to the variance, > 0 (Keras 1e-3; Flax and PyTorch 1e-5).
        momentum: weight of the old moving value in the update, in [0, 1] (Keras and Flax
            0.99; PyTorch's ``momentum=0.1`` is 0.9 here).
        training: normalise by batch statistics and update the moving ones.
        center: whether there is a ``bias`` (Keras ``beta``).
        scale: whether there is a ``scale`` (Keras ``gamma``).

    Example:
        >>> BatchNorm().param_names(), BatchNorm().state_names()
        (('scale', 'bias'), ('mean', 'var'))
    """

    kind = "batchnorm"

    epsilon: float = 1e-3
    momentum: float = 0.99
    training: bool = False
    center: bool = True
    scale: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilon", check_float(self.epsilon, "BatchNorm epsilon", low=0))
        object.__setattr__(
            self, "momentum", check_float(self.momentum, "BatchNorm momentum", low=0, high=1)
        )
        object.__setattr__(self, "training", check_bool(self.training, "BatchNorm training"))
        object.__setattr__(self, "center", check_bool(self.center, "BatchNorm center"))
        object.__setattr__(self, "scale", check_bool(self.scale, "BatchNorm scale"))

    def param_names(self) -> tuple[str, ...]:
        return (("scale",) if self.scale else ()) + (("bias",) if self.center else ())

    def state_names(self) -> tuple[str, ...]:
        return ("mean", "var")

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) < 1:
            raise SpecError(
                f"BatchNorm takes examples of shape (..., channels), got {input_shape}; "
                "it normalises the last axis"
            )
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        names = (*self.param_names(), *self.state_names())
        return {name: (input_shape[-1],) for name in names}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Scale in [0.5, 1.5], bias in [-bias_scale, bias_scale], moving mean in
        [-0.1, 0.1], moving var in [0.5, 1.5]."""
        size = (input_shape[-1],)
        out = {}
        if self.scale:
            out["scale"] = rng.uniform(0.5, 1.5, size=size)
        if self.center:
            out["bias"] = rng.uniform(-bias_scale, bias_scale, size=size)
        out["mean"] = rng.uniform(-0.1, 0.1, size=size)
        out["var"] = rng.uniform(0.5, 1.5, size=size)
        return out

    @property
    def updates_state(self) -> bool:
        return self.training

    def describe(self) -> str:
        mode = "training" if self.training else "inference"
        return f"batchnorm(eps={self.epsilon:g}, momentum={self.momentum:g}, {mode})"

    def forward(self, weights, x, *, path):
        eps = x.dtype.type(self.epsilon)
        state = {}
        if self.training:
            axes = _statistics_axes(x)
            mean = x.mean(axis=axes)
            centred = x - mean
            var = (centred * centred).mean(axis=axes)
            m = x.dtype.type(self.momentum)
            state = {
                f"{path}.mean": m * weights[f"{path}.mean"] + (1 - m) * mean,
                f"{path}.var": m * weights[f"{path}.var"] + (1 - m) * var,
            }
        else:
            centred = x - weights[f"{path}.mean"]
            var = weights[f"{path}.var"]
        inv = 1 / np.sqrt(var + eps)
        xhat = centred * inv
        y = xhat * weights[f"{path}.scale"] if self.scale else xhat
        if self.center:
            y = y + weights[f"{path}.bias"]
        return Step(path, self, x, y, cache=(xhat, inv), state=state)

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        xhat, inv = step.cache
        axes = _statistics_axes(grad_output)
        if self.scale:
            grads[f"{step.path}.scale"] = (grad_output * xhat).sum(axis=axes)
        if self.center:
            grads[f"{step.path}.bias"] = grad_output.sum(axis=axes)
        dxhat = grad_output * weights[f"{step.path}.scale"] if self.scale else grad_output
        if not self.training:
            return dxhat * inv
        return normalise_backward(dxhat, xhat, inv, axis=axes)


def _statistics_axes(x: np.ndarray) -> tuple[int, ...]:
    """The axes of ``x (batch, *spatial, channels)`` a channel's batch statistics span."""
    return tuple(range(x.ndim - 1))
