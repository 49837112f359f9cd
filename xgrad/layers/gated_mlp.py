"""``GatedMLP``: the gated feed-forward block of LLaMA-style transformers (SwiGLU, GeGLU).

``y = (act(x @ gate_kernel + gate_bias) * (x @ up_kernel + up_bias)) @ down_kernel + down_bias``
on the last axis of ``x`` (token-wise). Weights: ``gate_kernel (dim, hidden)``,
``up_kernel (dim, hidden)``, ``down_kernel (hidden, dim)`` (LLaMA's ``w1``, ``w3``, ``w2``;
PyTorch stores each ``nn.Linear`` weight transposed), biases ``(hidden,)``, ``(hidden,)``,
``(dim,)`` with ``use_bias``. ``activation="silu"`` is SwiGLU, ``"gelu"`` / ``"gelu_tanh"``
GeGLU.

The VJP, with ``z = x @ gate_kernel + gate_bias``, ``a = act(z)``, ``u = x @ up_kernel +
up_bias``, ``h = a * u``, every weight gradient summed over all leading axes::

    dh = dy @ down_kernel.T             d down_kernel = h.T @ dy,  d down_bias = sum dy
    du = dh * a                         d up_kernel   = x.T @ du,  d up_bias   = sum du
    dz = act'(z) * (dh * u)             d gate_kernel = x.T @ dz,  d gate_bias = sum dz
    dx = dz @ gate_kernel.T + du @ up_kernel.T
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xgrad.activations import Activation as ActivationFunction
from xgrad.activations import get_activation
from xgrad.errors import SpecError
from xgrad.layers.base import (
    AbstractLayer,
    Shape,
    Step,
    check_bool,
    check_positive_int,
    sum_leading_axes,
)

__all__ = ["GatedMLP", "sum_leading"]


def sum_leading(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a.T @ b`` with every leading axis of ``a (..., m)`` and ``b (..., n)`` summed:
    a kernel's gradient ``(m, n)`` from a layer applied to each vector of the last axis."""
    return a.reshape(-1, a.shape[-1]).T @ b.reshape(-1, b.shape[-1])


@dataclass(frozen=True)
class GatedMLP(AbstractLayer):
    """A gated MLP on each vector of the last axis: ``dim -> hidden -> dim``.

    Args:
        dim: the width of the input and output.
        hidden: the width of the gate and up projections.
        activation: the gate's activation (an :mod:`xgrad.activations` name, ``silu`` by
            default; stored canonically, so ``"swish"`` becomes ``"silu"``).
        use_bias: whether the three projections have biases.

    Example:
        >>> GatedMLP(8, 16).param_names()
        ('gate_kernel', 'up_kernel', 'down_kernel')
    """

    kind = "gated_mlp"
    token_wise = True

    dim: int
    hidden: int
    activation: str = "silu"
    use_bias: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dim", check_positive_int(self.dim, "GatedMLP dim"))
        object.__setattr__(self, "hidden", check_positive_int(self.hidden, "GatedMLP hidden"))
        object.__setattr__(self, "activation", get_activation(self.activation).name)
        object.__setattr__(self, "use_bias", check_bool(self.use_bias, "GatedMLP use_bias"))

    @property
    def act(self) -> ActivationFunction:
        return get_activation(self.activation)

    def param_names(self) -> tuple[str, ...]:
        suffixes = ("kernel", "bias") if self.use_bias else ("kernel",)
        return tuple(f"{proj}_{s}" for proj in ("gate", "up", "down") for s in suffixes)

    def output_shape(self, input_shape: Shape) -> Shape:
        if not input_shape or input_shape[-1] != self.dim:
            raise SpecError(
                f"GatedMLP(dim={self.dim}) takes examples whose last axis is {self.dim} wide, "
                f"got {tuple(input_shape)}; set dim to the width before it"
            )
        return tuple(input_shape)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        d, h = self.dim, self.hidden
        shapes = {
            "gate_kernel": (d, h),
            "gate_bias": (h,),
            "up_kernel": (d, h),
            "up_bias": (h,),
            "down_kernel": (h, d),
            "down_bias": (d,),
        }
        return {name: shapes[name] for name in self.param_names()}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Glorot-uniform kernels; biases uniform in ``[-bias_scale, bias_scale]``."""
        limit = math.sqrt(6.0 / (self.dim + self.hidden))
        out = {}
        for name, shape in self.weight_shapes(input_shape).items():
            bound = limit if name.endswith("_kernel") else bias_scale
            out[name] = rng.uniform(-bound, bound, size=shape)
        return out

    def describe(self) -> str:
        return f"gated_mlp({self.dim}, {self.hidden}, {self.activation}" + (
            ", bias)" if self.use_bias else ")"
        )

    def forward(self, weights, x, *, path):
        w = self.local(weights, path)
        z = x @ w["gate_kernel"]
        u = x @ w["up_kernel"]
        if self.use_bias:
            z, u = z + w["gate_bias"], u + w["up_bias"]
        a = self.act(z)
        h = a * u
        y = h @ w["down_kernel"]
        if self.use_bias:
            y = y + w["down_bias"]
        return Step(path, self, x, y, cache=(z, a, u, h))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        w = self.local(weights, step.path)
        z, a, u, h = step.cache
        x, dy = step.input, grad_output
        dh = dy @ w["down_kernel"].T
        du = dh * a
        dz = self.act.vjp(z, a, dh * u)
        p = step.path
        grads[f"{p}.gate_kernel"] = sum_leading(x, dz)
        grads[f"{p}.up_kernel"] = sum_leading(x, du)
        grads[f"{p}.down_kernel"] = sum_leading(h, dy)
        if self.use_bias:
            for name, d in (("gate_bias", dz), ("up_bias", du), ("down_bias", dy)):
                grads[f"{p}.{name}"] = sum_leading_axes(d)
        return dz @ w["gate_kernel"].T + du @ w["up_kernel"].T
