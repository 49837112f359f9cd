"""A spec as an ``nn.Sequential`` of torch's own layers.

Item ``i`` of the ``nn.Sequential`` is layer ``layers.{i}`` of the spec, the module its
kind's entry in :data:`~xgrad.frameworks.torch.kinds.KINDS` builds (``nn.Linear`` in an
``nn.Sequential`` with its activation, ``nn.LayerNorm``, ...). Every module is in eval mode
except those of layers that update their state (a BatchNorm with ``training=True``).

Native names are the module's state-dict keys: the canonical path without its ``layers.``
parts, then the torch name of the weight. The kernel of a Dense is the ``weight`` of item 0
of its ``nn.Sequential``, stored ``(out, in)``::

    layers.0.kernel            -> 0.0.weight      (out, in): the kernel transposed
    layers.0.bias              -> 0.0.bias
    layers.1.scale / .bias     -> 1.weight / 1.bias          (LayerNorm, RMSNorm, BatchNorm)
    layers.2.mean / .var       -> 2.running_mean / 2.running_var          (BatchNorm state)
    layers.3.layers.0.kernel   -> 3.0.0.weight               (inside a residual block)
    layers.0.embedding         -> 0.weight                   (nn.Embedding, (vocab, dim))
    layers.4.query_kernel      -> 4.query_kernel             (SelfAttention: canonical names,
                                                              shapes and layouts)
    layers.5.gate_kernel       -> 5.gate_proj.weight         (GatedMLP: (hidden, dim), the
                                                              kernel transposed; up_proj,
                                                              down_proj)
    layers.6.kernel            -> 6.weight                   (Conv: (F, C/G, *k), channels-
                                                              last module, :mod:`.cnn`)
    layers.7.bias              -> 7.bias_ih_l0 + 7.bias_hh_l0  (LSTM: written (bias, 0);
                                                              GRU: gates reordered,
                                                              :mod:`.recurrent`)

A spec whose first layer is an ``Embedding`` takes token ids: they enter torch as ``int64``
and have no gradient (``Gradients.input`` is ``None``).

A BatchNorm also holds ``num_batches_tracked``, which is no canonical weight. torch updates
``running_var`` with the unbiased batch variance (divided by N - 1) while xgrad's definition
uses the biased one: a built BatchNorm in training mode reports torch's update as it is.

Importing this module imports torch.
"""

from __future__ import annotations

import torch
from torch import nn

from xgrad.errors import FrameworkError
from xgrad.frameworks.base import spec_layers
from xgrad.frameworks.pool import BuildPool
from xgrad.frameworks.torch.kinds import KINDS
from xgrad.frameworks.torch.model import HookTap, TorchModel, torch_dtype, write_weights
from xgrad.layers import AbstractLayer, Shape
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["POOL", "build_model", "build_module", "module_name", "native_name"]


def module_name(path: str) -> str:
    """The submodule name of a layer: ``layers.3.layers.0`` -> ``3.0``."""
    return ".".join(path.split(".")[1::2])


def native_name(path: str, local: str, layer: AbstractLayer) -> str:
    """The state-dict key of a weight: ``("layers.0", "kernel", Dense)`` -> ``0.0.weight``."""
    return f"{module_name(path)}.{KINDS[layer.kind].weights[local]}"


def _module(layer: AbstractLayer, path: str, shape: Shape, dtype: torch.dtype) -> nn.Module:
    with KINDS.building(layer.kind, path):
        return KINDS[layer.kind].build(layer, path, shape, dtype, lambda *a: _module(*a, dtype))


def _layers(spec: MLP):
    by_path = dict(spec.walk())
    inputs = spec.layer_input_shapes()
    # an entry's layouts may depend on the layer's input (a convolution's rank); one layer
    # object used twice in a spec sees inputs of one rank
    shapes = {id(layer): inputs[path] for path, layer in by_path.items()}

    def layouts(layer: AbstractLayer):
        entry = KINDS[layer.kind].layouts
        return entry(layer, shapes[id(layer)]) if callable(entry) else entry

    return spec_layers(
        spec,
        lambda path, local: native_name(path, local, by_path[path]),
        lambda path, layer: module_name(path),
        layouts,
    )


def build_module(spec: MLP, weights: Params, dtype: str) -> nn.Sequential:
    """The ``nn.Sequential`` of ``spec`` holding ``weights`` (canonical, float64) in ``dtype``.

    Every module is in eval mode except those of layers that update their state (a
    BatchNorm with ``training=True``).

    Raises:
        KindNotSupportedError: a layer kind torch has no entry for.
    """
    KINDS.check(spec)
    tdtype = torch_dtype(dtype)
    # Constructing torch layers draws their default initialisation from the global RNG;
    # every weight is then overwritten, and fork_rng puts the RNG back as it was.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        items, shape = [], spec.input_shape
        for i, layer in enumerate(spec.layers):
            items.append(_module(layer, f"layers.{i}", shape, tdtype))
            shape = layer.output_shape(shape)
        module = nn.Sequential(*items)
        _check_names(module, spec)
        write_weights(module, _layers(spec), weights, check=False)
    module.eval()
    for path, layer in spec.walk():
        if layer.updates_state:
            module.get_submodule(module_name(path)).train()
    return module


def _check_names(module: nn.Module, spec: MLP) -> None:
    """Refuse an entry whose ``weights`` name a tensor its module does not hold."""
    tensors = module.state_dict(keep_vars=True)
    for path, layer in spec.walk():
        for local in (*layer.param_names(), *layer.state_names()):
            native = native_name(path, local, layer)
            if native not in tensors:
                held = [k for k in tensors if k.startswith(f"{module_name(path)}.")]
                raise FrameworkError(
                    f"layer {path}: the torch entry of {layer.kind!r} names {local!r} "
                    f"{native!r}, which the module it built does not hold (it holds "
                    f"{', '.join(held) or 'no tensor'}); fix the entry's weights mapping"
                )


POOL = BuildPool(max_idle=4)
"""``nn.Sequential`` modules built here and no longer used, for the next build of the same
(spec, dtype) (:mod:`xgrad.frameworks.pool`): the new weights are copied into their tensors
instead of constructing the layers again (which draws a random initialisation first)."""


def build_model(spec: MLP, weights: Params, dtype: str) -> TorchModel:
    """The :class:`TorchModel` of ``spec`` (weights checked, float64 canonical, or already in
    ``dtype``); its module comes from :data:`POOL` when one is idle.

    Raises:
        KindNotSupportedError: a layer kind torch has no entry for.
    """
    KINDS.check(spec)
    layers = _layers(spec)
    key = (spec, dtype)
    module = POOL.take(key)
    if module is None:
        module = build_module(spec, weights, dtype)
    else:
        write_weights(module, layers, weights, check=False)  # checked by the caller
    return TorchModel(
        module,
        layers,
        HookTap({module_name(path): path for path, _ in spec.walk()}),
        dtype=dtype,
        input_shape=spec.input_shape,
        output_shape=spec.output_shape,
        description=f"torch nn.Sequential of xgrad.MLP {spec.describe()}",
        spec=spec,
        pooled=(POOL, key, spec.n_params() * torch_dtype(dtype).itemsize),
    )
