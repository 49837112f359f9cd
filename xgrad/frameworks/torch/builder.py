"""A spec as an ``nn.Sequential`` of torch's own layers.

Item ``i`` of the ``nn.Sequential`` is layer ``layers.{i}`` of the spec:

===============================  ====================================================
xgrad layer                      item
===============================  ====================================================
``Dense(units, act, use_bias)``  ``nn.Sequential(nn.Linear, activation)``; the
                                 activation item is left out for ``linear``
``LayerNorm(eps)``               ``nn.LayerNorm(d, eps)``
``RMSNorm(eps)``                 ``nn.RMSNorm(d, eps)``
``BatchNorm(eps, momentum)``     ``nn.BatchNorm1d(d, eps, momentum=1 - momentum)``,
                                 in training mode when ``training=True``
``Dropout(rate)``                ``nn.Dropout(rate)`` in eval mode (the identity);
                                 active: :class:`~.modules.MaskedDropout` (xgrad's mask)
``Activation(name)``             :func:`~.modules.activation_module`
``Flatten()``                    ``nn.Flatten()``
``Residual(layers)``             :class:`~.modules.Residual`, its layers as its items
===============================  ====================================================

Native names are the module's state-dict keys: the canonical path without its ``layers.``
parts, then the torch name of the weight. The kernel of a Dense is the ``weight`` of item 0
of its ``nn.Sequential``, stored ``(out, in)``::

    layers.0.kernel            -> 0.0.weight      (out, in): the kernel transposed
    layers.0.bias              -> 0.0.bias
    layers.1.scale / .bias     -> 1.weight / 1.bias          (LayerNorm, RMSNorm, BatchNorm)
    layers.2.mean / .var       -> 2.running_mean / 2.running_var          (BatchNorm state)
    layers.3.layers.0.kernel   -> 3.0.0.weight               (inside a residual block)

A BatchNorm also holds ``num_batches_tracked``, which is no canonical weight. torch updates
``running_var`` with the unbiased batch variance (divided by N - 1) while xgrad's definition
uses the biased one: a built BatchNorm in training mode reports torch's update as it is.

Importing this module imports torch.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from xgrad.frameworks.base import LayerInfo
from xgrad.frameworks.numpy import spec_layers
from xgrad.frameworks.pool import BuildPool
from xgrad.frameworks.torch.model import HookTap, TorchModel, torch_dtype, write_weights
from xgrad.frameworks.torch.modules import MaskedDropout, Residual, activation_module
from xgrad.layers import (
    AbstractLayer,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    RMSNorm,
    Shape,
)
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["POOL", "build_model", "build_module", "module_name", "native_name"]

_TORCH_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def module_name(path: str) -> str:
    """The submodule name of a layer: ``layers.3.layers.0`` -> ``3.0``."""
    return ".".join(path.split(".")[1::2])


def native_name(path: str, local: str, layer: AbstractLayer) -> str:
    """The state-dict key of a weight: ``("layers.0", "kernel", Dense)`` -> ``0.0.weight``."""
    if isinstance(layer, Dense):
        return f"{module_name(path)}.0.{'weight' if local == 'kernel' else 'bias'}"
    return f"{module_name(path)}.{_TORCH_NAMES[local]}"


def _param(array: np.ndarray, dtype: torch.dtype, *, transposed: bool = False) -> nn.Parameter:
    """A parameter holding ``array`` in ``dtype`` (its transpose: torch copies in blocks)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    tensor = tensor.T if transposed else tensor
    return nn.Parameter(tensor.to(dtype, copy=True, memory_format=torch.contiguous_format))


def _set(module: nn.Module, name: str, array: np.ndarray, dtype: torch.dtype) -> None:
    """Set parameter ``name`` of ``module`` (registering it if torch declared it ``None``)."""
    setattr(module, name, _param(array, dtype))


def _norm_affine(module, layer, weights, path, dtype) -> nn.Module:
    if layer.scale:
        _set(module, "weight", weights[f"{path}.scale"], dtype)
    if getattr(layer, "center", False):
        # torch cannot declare a shift without a scale (LayerNorm's bias needs
        # elementwise_affine, BatchNorm's affine covers both): such a module is declared
        # without either and given its bias here. Its forward passes self.weight and
        # self.bias to F.layer_norm / F.batch_norm, so the bias takes part as usual.
        _set(module, "bias", weights[f"{path}.bias"], dtype)
    return module


def _module(layer: AbstractLayer, path: str, shape: Shape, weights: Params, dtype) -> nn.Module:
    d = shape[-1] if shape else None
    if isinstance(layer, Dense):
        linear = nn.Linear(d, layer.units, bias=layer.use_bias, dtype=dtype)
        linear.weight = _param(weights[f"{path}.kernel"], dtype, transposed=True)
        if layer.use_bias:
            linear.bias = _param(weights[f"{path}.bias"], dtype)
        if layer.activation == "linear":
            return nn.Sequential(linear)
        return nn.Sequential(linear, activation_module(layer.activation))
    if isinstance(layer, LayerNorm):
        both = layer.scale and layer.center
        module = nn.LayerNorm(
            d, eps=layer.epsilon, elementwise_affine=layer.scale, bias=both, dtype=dtype
        )
        return _norm_affine(module, layer, weights, path, dtype)
    if isinstance(layer, RMSNorm):
        module = nn.RMSNorm(d, eps=layer.epsilon, elementwise_affine=layer.scale, dtype=dtype)
        return _norm_affine(module, layer, weights, path, dtype)
    if isinstance(layer, BatchNorm):
        module = nn.BatchNorm1d(
            d,
            eps=layer.epsilon,
            momentum=1 - layer.momentum,
            affine=layer.scale and layer.center,
            dtype=dtype,
        )
        module = _norm_affine(module, layer, weights, path, dtype)
        module.running_mean = torch.tensor(weights[f"{path}.mean"], dtype=dtype)
        module.running_var = torch.tensor(weights[f"{path}.var"], dtype=dtype)
        return module.train(layer.training)
    if isinstance(layer, Dropout):
        return MaskedDropout(layer, path) if layer.active else nn.Dropout(layer.rate).eval()
    if isinstance(layer, Activation):
        return activation_module(layer.name)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if layer.children:
        items, inner = [], shape
        for j, child in enumerate(layer.children):
            items.append(_module(child, f"{path}.layers.{j}", inner, weights, dtype))
            inner = child.output_shape(inner)
        return Residual(*items)
    raise TypeError(f"no torch form for layer kind {layer.kind!r}")  # a new kind: add it here


def build_module(spec: MLP, weights: Params, dtype: str) -> nn.Sequential:
    """The ``nn.Sequential`` of ``spec`` holding ``weights`` (canonical, float64) in ``dtype``.

    Every module is in eval mode except a BatchNorm with ``training=True``.
    """
    tdtype = torch_dtype(dtype)
    # Constructing torch layers draws their default initialisation from the global RNG;
    # every weight is then overwritten, and fork_rng puts the RNG back as it was.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        items, shape = [], spec.input_shape
        for i, layer in enumerate(spec.layers):
            items.append(_module(layer, f"layers.{i}", shape, weights, tdtype))
            shape = layer.output_shape(shape)
    module = nn.Sequential(*items)
    training = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d) and m.training]
    module.eval()
    for m in training:
        m.train()
    return module


def _transposed(info: LayerInfo) -> LayerInfo:
    return replace(
        info,
        transposed=frozenset({"kernel"}) if isinstance(info.layer, Dense) else frozenset(),
        children=tuple(_transposed(c) for c in info.children),
    )


POOL = BuildPool(max_idle=4)
"""``nn.Sequential`` modules built here and no longer used, for the next build of the same
(spec, dtype) (:mod:`xgrad.frameworks.pool`): the new weights are copied into their tensors
instead of constructing the layers again (which draws a random initialisation first)."""


def build_model(spec: MLP, weights: Params, dtype: str) -> TorchModel:
    """The :class:`TorchModel` of ``spec`` (weights checked, float64 canonical, or already in
    ``dtype``); its module comes from :data:`POOL` when one is idle."""
    layers_by_path = dict(spec.walk())
    infos = spec_layers(
        spec,
        lambda path, local: native_name(path, local, layers_by_path[path]),
        lambda path, layer: module_name(path),
    )
    layers = tuple(_transposed(info) for info in infos)
    key = (spec, dtype)
    module = POOL.take(key)
    if module is None:
        module = build_module(spec, weights, dtype)
    else:
        write_weights(module, layers, weights, check=False)  # checked by the caller
    model = TorchModel(
        module,
        layers,
        HookTap({module_name(path): path for path in layers_by_path}),
        dtype=dtype,
        input_shape=spec.input_shape,
        output_shape=spec.output_shape,
        description=f"torch nn.Sequential of xgrad.MLP {spec.describe()}",
        spec=spec,
        pooled=(POOL, key, spec.n_params() * torch_dtype(dtype).itemsize),
    )
    return model
