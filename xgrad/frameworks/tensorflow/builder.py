"""A spec as a real Keras model made of Keras' own layers.

Each layer is the Keras layer its kind's entry in
:data:`~xgrad.frameworks.tensorflow.kinds.KINDS` builds (``Dense(units, activation,
use_bias)``, ``LayerNormalization``, ...; a residual block: its layers, then
``Add()([x, block(x)])``), and its weights are the attributes the entry names (a Dense's
``kernel`` ``(in, out)``, a BatchNorm's ``moving_variance``).

A spec without residual blocks or attention layers is a ``keras.Sequential`` named
``sequential``; one with them (a kind whose entry wires its layer otherwise than
``layer(h)``: ``MultiHeadAttention(h, h, use_causal_mask=...)``) a Functional
``keras.Model`` named ``functional``. A spec taking token ids (an ``Embedding`` first) has an
``int32`` input. Layers are named from their canonical path
(``layers.2`` -> ``dense_2``, ``layers.2.layers.0`` -> ``dense_2_0``), so native names are
Keras variable paths such as ``sequential/dense_0/kernel`` (a Functional model's have no model
prefix: ``dense_2_0/kernel``, as Keras names them). Activations are those of
:func:`~xgrad.frameworks.tensorflow.ops.tf_activation`. float64 is set per layer
(``dtype="float64"``), never through the global ``keras.config.floatx``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

from xgrad.frameworks.base import spec_layers
from xgrad.frameworks.kinds import to_native
from xgrad.frameworks.pool import BuildPool
from xgrad.frameworks.tensorflow.kinds import KINDS, KerasCall, keras_weight
from xgrad.frameworks.tensorflow.model import KerasModel, KerasRunner
from xgrad.frameworks.tensorflow.ops import keras
from xgrad.layers import AbstractLayer
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = ["POOL", "SpecModel", "build_keras_model", "input_dtype", "layer_name"]


def layer_name(path: str, layer: AbstractLayer) -> str:
    """The Keras name of the layer at ``path``: ``layers.2`` -> ``dense_2``,
    ``layers.2.layers.0`` -> ``dense_2_0``, a residual block's ``Add`` -> ``residual_2``."""
    return f"{layer.kind}_" + "_".join(path.split(".")[1::2])


def _keras_layer(
    layer: AbstractLayer, path: str, dtype: str, shapes: Mapping[str, tuple]
) -> keras.layers.Layer:
    """Keras' layer for the xgrad layer at ``path`` (weights are assigned once the model is
    built), given the examples' shape at each path's input (``shapes``) for an entry that
    builds from it."""
    entry = KINDS[layer.kind]
    with KINDS.building(layer.kind, path):
        if entry.shaped:
            return entry.build(layer, layer_name(path, layer), dtype, tuple(shapes[path]))
        return entry.build(layer, layer_name(path, layer), dtype)


def build_keras_model(spec: MLP, dtype: str) -> tuple[keras.Model, dict[str, keras.layers.Layer]]:
    """The Keras model of ``spec`` in ``dtype`` (weights zero, Keras' defaults for norms), and
    the Keras layer computing each canonical path's output (a residual block: its ``Add``).

    A layer with children (a residual block) is wired by its kind's
    :attr:`~.kinds.KerasKind.call`, given its layers chained on a value; every other layer
    is called on the previous output.

    Raises:
        KindNotSupportedError: a layer kind tensorflow has no entry for.
        FrameworkError: a layer Keras cannot express (``RMSNorm(scale=False)``).
    """
    KINDS.check(spec)
    by_path: dict[str, keras.layers.Layer] = {}
    shapes = spec.layer_input_shapes()

    def chain(layers, prefix: str, h):
        for i, layer in enumerate(layers):
            path = f"{prefix}.{i}"
            entry = KINDS[layer.kind]
            by_path[path] = _keras_layer(layer, path, dtype, shapes)
            if layer.children:
                inner = functools.partial(chain, layer.children, f"{path}.layers")
                h = entry.call(KerasCall(by_path[path], layer, run=inner), h)
            elif entry.wire is not None:
                h = entry.wire(by_path[path], layer, h)
            else:
                h = by_path[path](h)
        return h

    inputs = keras.Input(spec.input_shape, dtype=input_dtype(spec, dtype), name="input")
    if any(layer.children or KINDS[layer.kind].wire for _, layer in spec.walk()):
        return keras.Model(inputs, chain(spec.layers, "layers", inputs), name="functional"), by_path
    for path, layer in spec.walk():
        by_path[path] = _keras_layer(layer, path, dtype, shapes)
    return keras.Sequential([inputs, *by_path.values()], name="sequential"), by_path


def input_dtype(spec: MLP, dtype: str) -> str:
    """The dtype of the Keras model's input: ``int32`` for a spec taking token ids (its first
    layer an :class:`~xgrad.Embedding`), else ``dtype``."""
    return "int32" if spec.layers[0].kind == "embedding" else dtype


POOL = BuildPool(max_idle=4)
"""Keras models built here and no longer used, with their traced steps, for the next build of
the same (spec, dtype) (:mod:`xgrad.frameworks.pool`): the new weights are assigned to their
variables instead of building and tracing again."""


_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


class _Kit:
    """One built Keras model and what evaluating it needs (reused as a whole)."""

    def __init__(self, spec: MLP, dtype: str) -> None:
        self.model, self.by_path = build_keras_model(spec, dtype)
        self.variables = {}
        for path, layer in spec.walk():
            with KINDS.building(layer.kind, path):
                for local in (*layer.param_names(), *layer.state_names()):
                    variable = keras_weight(KINDS[layer.kind], self.by_path[path], local)
                    self.variables[f"{path}.{local}"] = variable
        self.layers = spec_layers(
            spec,
            lambda path, local: self.variables[f"{path}.{local}"].path,
            layer_name,
            lambda layer: KINDS[layer.kind].layouts,
        )
        self.layouts = {
            f"{info.path}.{local}": layout
            for top in self.layers
            for info in top.walk()
            for local, layout in info.layouts.items()
        }
        names = [f"{path}.{local}" for path, layer in spec.walk() for local in layer.param_names()]
        self.runner = KerasRunner(self.layers, self.by_path, [self.variables[n] for n in names])


class SpecModel(KerasModel):
    """A spec as a Keras model (see the module docstring) holding canonical weights.

    The Keras model comes from :data:`POOL` when one of the same spec and dtype is idle (every
    variable is then assigned), else it is built.
    """

    def __init__(self, spec: MLP, weights: Params, dtype: str) -> None:
        key = (spec, dtype)
        kit = POOL.take(key) or _Kit(spec, dtype)
        for name, var in kit.variables.items():
            var.assign(to_native(np.asarray(weights[name], dtype=dtype), kit.layouts.get(name)))
        super().__init__(
            kit.model,
            kit.layers,
            kit.by_path,
            kit.variables,
            dtype=dtype,
            description=f"keras {type(kit.model).__name__} of xgrad.MLP {spec.describe()}",
            input_shape=spec.input_shape,
            runner=kit.runner,
            pooled=(POOL, key, kit, spec.n_params() * _BYTES.get(dtype, 8)),
        )
        self._spec = spec

    def spec(self) -> MLP:
        return self._spec

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> SpecModel:
        """A new Keras model of the spec holding ``weights`` (the others keep their value)."""
        merged = {**self.weights(), **{k: np.asarray(v) for k, v in weights.items()}}
        return SpecModel(self._spec, check_params(self._spec, merged), self.dtype)
