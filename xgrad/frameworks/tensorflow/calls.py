"""A Keras model as a tree of layers with paths, and one call of it made as a user makes it,
with its layers' calls intercepted (for :mod:`.capture`).

* :func:`layer_tree`: every layer a model holds, at any depth, with its path (an attribute
  path inside a subclassed model or layer, the layer's name inside a Functional or
  ``Sequential`` model; see :mod:`.capture`) and its own variables;
* :func:`calls_wrapped`: each layer's ``call`` replaced on the instance while a block runs,
  restored in ``finally``; :func:`state_kept`: non-trainable variables restored likewise;
* :class:`Arguments`: how a :class:`~xgrad.frameworks.capture.Batch` is passed to the model
  (``model(x)``, ``model([a, b])``, ``model(a, b)``, ``model(d)``, ``model(ids=...)``), with
  or without ``training=``; :func:`input_tensors`: the batch as TensorFlow tensors.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.errors import InputError
from xgrad.frameworks.capture import Batch, leaf_paths, replace_leaf
from xgrad.frameworks.tensorflow.ops import keras, tf

__all__ = [
    "Arguments",
    "LayerNode",
    "activation_apart",
    "call_apart",
    "attribute_paths",
    "call_failed",
    "calls_wrapped",
    "first_floating",
    "floating_leaves",
    "input_tensors",
    "is_graph",
    "layer_tree",
    "own_variables",
    "replace_leaf",
    "state_kept",
    "training_flag",
]

# -- the layers and their paths ---------------------------------------------------------------

_INTERNAL = frozenset(
    {
        "_layers",
        "_tracked",
        "_tracker",
        "_operations",
        "_functional",
        "_trainable_variables",
        "_non_trainable_variables",
        "_metrics",
        "_seed_generators",
        "_inbound_nodes",
        "_outbound_nodes",
        "_losses",
        "_losses_override",
        "_input_layers",
        "_output_layers",
    }
)
"""Keras' own bookkeeping attributes, which hold layers and variables under no user's name."""


@dataclass
class LayerNode:
    """One layer of the model: its path, the layer, the node it was found in, its name
    there, and its own variables (local name -> variable)."""

    path: str
    layer: keras.layers.Layer
    parent: LayerNode | None
    segment: str
    variables: dict[str, object] = field(default_factory=dict)


def attribute_paths(obj, kind: type) -> dict[int, str]:
    """``id(value) -> attribute path`` of the values of type ``kind`` held by ``obj``'s
    attributes (in lists and dicts too: ``blocks.0``, ``heads.a``); public names first, then
    private ones, Keras' bookkeeping left out."""
    found: dict[int, str] = {}

    def visit(value, name: str, depth: int) -> None:
        if isinstance(value, kind):
            found.setdefault(id(value), name)
        elif depth < 3 and isinstance(value, list | tuple):
            for i, item in enumerate(value):
                visit(item, f"{name}.{i}", depth + 1)
        elif depth < 3 and isinstance(value, Mapping):
            for key, item in value.items():
                visit(item, f"{name}.{key}", depth + 1)

    items = [(k, v) for k, v in vars(obj).items() if k not in _INTERNAL and "_self_" not in k]
    for public in (True, False):
        for name, value in items:
            if name.startswith("_") != public:
                visit(value, name, 0)
    return found


def is_graph(layer) -> bool:
    """A Functional or ``Sequential`` model (layers named by their names, not attributes)."""
    return (
        isinstance(layer, keras.Sequential)
        or type(layer).__name__ == "Functional"
        or (getattr(layer, "_is_graph_network", False) is True)
    )


def own_variables(layer) -> dict[str, object]:
    """The variables ``layer`` holds itself (not its sublayers'), by local name: the public
    attribute holding it, else the variable's name (``Dense._kernel`` is ``kernel``)."""
    direct = [
        *getattr(layer, "_trainable_variables", []),
        *getattr(layer, "_non_trainable_variables", []),
    ]
    names = attribute_paths(layer, keras.Variable)
    out: dict[str, object] = {}
    for var in direct:
        local = names.get(id(var), "")
        if local.startswith("_") or not local:
            local = var.name
        while local in out:
            local = f"{local}_"
        out[local] = var
    return out


def layer_tree(model: keras.Model) -> list[LayerNode]:
    """Every layer of ``model`` (itself first), depth first, each once (its first path)."""
    root = LayerNode("", model, None, "", own_variables(model))
    nodes, seen = [root], {id(model)}

    def visit(node: LayerNode) -> None:
        layer = node.layer
        children = layer._flatten_layers(include_self=False, recursive=False)
        names = {} if is_graph(layer) else attribute_paths(layer, keras.layers.Layer)
        for child in children:
            if id(child) in seen or isinstance(child, keras.layers.InputLayer):
                continue
            seen.add(id(child))
            segment = names.get(id(child), child.name)
            path = f"{node.path}.{segment}" if node.path else segment
            nodes.append(LayerNode(path, child, node, segment, own_variables(child)))
            visit(nodes[-1])

    visit(root)
    return nodes


def _applies_activation_last() -> tuple[type, ...]:
    """Keras' own layers whose ``call`` ends with ``self.activation(...)``."""
    names = (
        "Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose",
        "Conv2DTranspose", "Conv3DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
        "SeparableConv1D", "SeparableConv2D",
    )  # fmt: skip
    return tuple(getattr(keras.layers, n) for n in names if hasattr(keras.layers, n))


def activation_apart(layer) -> Callable | None:
    """The activation a Keras layer applies at the end of its own call (``Dense(16,
    activation="relu")``), or ``None`` (no activation, a linear one, another class).

    Read module by module, such a layer's output is taken before its activation, and the
    activation is code after it: what a PyTorch ``nn.Linear`` followed by ``F.relu`` or an
    ``nnx.Linear`` followed by ``jax.nn.relu`` computes, so that a port pairs layer with
    layer and activation with activation."""
    fn = getattr(layer, "activation", None)
    if (
        fn is None
        or fn is keras.activations.linear
        or not isinstance(layer, _applies_activation_last())
    ):
        return None
    return fn


def call_apart(layer, call: Callable, args, kwargs):
    """``(output before the activation, the activation or None)`` of one call of ``layer``
    (its activation set to linear while ``call`` runs, restored in ``finally``)."""
    fn = activation_apart(layer)
    if fn is None:
        return call(*args, **kwargs), None
    object.__setattr__(layer, "activation", keras.activations.linear)
    try:
        return call(*args, **kwargs), fn
    finally:
        object.__setattr__(layer, "activation", fn)


def training_flag(call: Callable, args, kwargs):
    """The ``training`` argument a layer's ``call`` got (by keyword, as Keras passes it, or
    by position), or ``None``."""
    if "training" in kwargs:
        return kwargs["training"]
    try:
        return inspect.signature(call).bind_partial(*args, **kwargs).arguments.get("training")
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def calls_wrapped(nodes: list[LayerNode], wrap: Callable) -> Iterator[None]:
    """Each layer's ``call`` replaced, on the instance, by ``wrap(path, call)``; restored in
    ``finally`` (whatever the call raised)."""
    patched = []
    try:
        for node in nodes:
            own = vars(node.layer).get("call")
            object.__setattr__(node.layer, "call", wrap(node.path, node.layer.call))
            patched.append((node.layer, own))
        yield
    finally:
        for layer, own in patched:
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)


@contextlib.contextmanager
def state_kept(model: keras.Model) -> Iterator[None]:
    """Restore every non-trainable variable (moving statistics, random seed states) in
    ``finally``: a call in training mode leaves the model as it was."""
    saved = [(v, v.numpy()) for v in model.non_trainable_variables]
    try:
        yield
    finally:
        for var, value in saved:
            var.assign(value)


# -- inputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arguments:
    """How a batch is passed to the model.

    Attributes:
        pack_args: several positional inputs as one list (``model([a, b])``: a Functional
            model, or a ``call`` taking one ``inputs``), else one argument each.
        pack_kwargs: keyword inputs as one dict (``model({"x1": a})``), else as keyword
            arguments (``model(ids=..., mask=...)``).
        training: ``None``: no ``training=`` passed; else the mode passed.
    """

    pack_args: bool
    pack_kwargs: bool
    training: bool | None

    @classmethod
    def of(cls, model: keras.Model, batch: Batch, training: bool | None) -> Arguments:
        graph = is_graph(model)
        params = inspect.signature(type(model).call).parameters
        named = [
            p.name
            for p in list(params.values())[1:]
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        positional = [
            n
            for n in named
            if n not in ("training", "mask") and params[n].kind != params[n].KEYWORD_ONLY
        ]
        many = any(p.kind == p.VAR_POSITIONAL for p in params.values())
        n = len(batch.args)
        pack_args = n > 1 and (graph or not (many or len(positional) >= n))
        pack_kwargs = bool(batch.kwargs) and (graph or not set(batch.kwargs) <= set(named))
        return cls(pack_args, pack_kwargs, None if training is None else bool(training))

    def call(self, model, args: tuple, kwargs: dict):
        """``model`` called on the inputs, as this convention passes them."""
        pos = (list(args),) if self.pack_args else tuple(args)
        if self.pack_kwargs:
            pos, kwargs = (*pos, dict(kwargs)), {}
        extra = {} if self.training is None else {"training": self.training}
        return model(*pos, **kwargs, **extra)

    def describe(self, batch: Batch) -> str:
        """``model([input.0, input.1])``: how the model is called, for messages."""
        names = [n.removeprefix("input.") if n != "input" else "x" for n in batch.names]
        k = len(batch.args)
        pos = [f"[{', '.join(names[:k])}]"] if self.pack_args else names[:k]
        kw = [f"{{{', '.join(repr(n) for n in names[k:])}: ...}}"] if self.pack_kwargs else []
        kw = kw or [f"{n}=..." for n in names[k:]]
        mode = [] if self.training is None else [f"training={self.training}"]
        return f"model({', '.join([*pos, *kw, *mode])})"


def _declared(model: keras.Model, batch: Batch) -> dict[str, str]:
    """Input name -> the dtype of the ``keras.Input`` it feeds (Functional models)."""
    try:
        inputs = list(model.inputs or [])
    except AttributeError:  # a subclassed model
        return {}
    if batch.kwargs:
        by_name = {getattr(t, "name", None): t.dtype for t in inputs}
        keys = [n.removeprefix("input.") for n in batch.names[len(batch.args) :]]
        return {f"input.{k}": by_name[k] for k in keys if k in by_name}
    if len(inputs) == len(batch.args):
        return {name: t.dtype for name, t in zip(batch.names, inputs, strict=True)}
    return {}


def input_tensors(model: keras.Model, batch: Batch):
    """``(args, kwargs, floating inputs)`` of the batch as TensorFlow tensors for ``model``:
    floats in the dtype their ``keras.Input`` declares, else in the model's compute dtype
    (which Keras casts them to), integer ids as integers (of the declared dtype), booleans
    as booleans."""
    dtypes = _declared(model, batch)
    default = model.input_dtype
    default = default if tf.as_dtype(default).is_floating else "float32"
    floating = []

    def one(name: str, arr: np.ndarray):
        want = dtypes.get(name)
        if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
            dtype = want if want and tf.as_dtype(want).is_floating else default
            t = tf.cast(tf.constant(np.asarray(arr, dtype=np.float64)), dtype)
            floating.append(t)
            return t
        if arr.dtype.kind in "iu" and want and tf.as_dtype(want).is_integer:
            return tf.constant(arr, dtype=want)
        return tf.constant(arr)

    leaves = [one(name, arr) for name, arr in batch.leaves.items()]
    k = len(batch.args)
    return tuple(leaves[:k]), dict(zip(batch.kwargs, leaves[k:], strict=True)), floating


def floating_leaves(args, kwargs) -> list:
    leaves = [leaf for _, leaf in leaf_paths(list(args))]
    leaves += [leaf for _, leaf in leaf_paths(dict(kwargs))]
    return [t for t in leaves if tf.is_tensor(t) and t.dtype.is_floating]


def first_floating(out) -> tuple[str, object]:
    for key, leaf in leaf_paths(out):
        if tf.is_tensor(leaf) and leaf.dtype.is_floating:
            return key, leaf
    return "", None


def call_failed(model, arguments: Arguments, batch: Batch, exc: Exception) -> InputError:
    """The model's own error on the batch, quoted on one line (TensorFlow's terminal colour
    codes taken out)."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())[:500]
    return InputError(
        f"calling Keras model {model.name!r} as {arguments.describe(batch)} on inputs "
        f"{batch.describe()} failed: {type(exc).__name__}: {text}"
    )
