"""A user's Keras model captured at its layers' boundaries (tier (a); see
:mod:`xgrad.frameworks.capture`).

Every layer the model holds, at any depth, is a module: the model itself (path ``""``), the
layers of a Functional or ``Sequential`` model, the attributes of a subclassed model or layer
(``self.block.attn``), Keras' own sublayers (the ``EinsumDense`` projections a
``MultiHeadAttention`` calls). The model is called once on the batch with each layer's
``call`` wrapped on the instance (the wrappers are removed in ``finally``, even when the call
fails), which records each call: its path, its floating inputs, its first floating output,
the ``training`` flag Keras passed it, the order calls finish in.

Paths:

* inside a subclassed model or layer, a layer is named by the attribute holding it
  (``block.attn``; in a list ``blocks.0``, in a dict ``heads.a``; Keras' private attributes
  too: ``attn._query_dense``), as torch and Flax name submodules, so that the two sides of a
  port read alike;
* inside a Functional or ``Sequential`` model, where layers are no attributes, by the layer's
  ``name`` (``dense_1``, or the name you gave it): names are unique in such a model, they are
  what Keras' own ``model.get_layer(name)`` and ``model.summary()`` use, and a path of names
  finds the layer again;
* a layer reached twice keeps the first path found.

Each called layer owns its own variables and those of its sublayers that are never called
themselves, named by the attribute holding them (``w`` for ``self.w = self.add_weight(...)``)
or, where only a private attribute holds one (``Dense._kernel``), by the variable's own name
(``kernel``); native names are the variables' Keras paths (``ff/dense/kernel``). A variable
held by two layers (a tied weight) is owned by the first and shared by the other.

A called layer without called sublayers whose exact class the Keras kind table reads
(:data:`~xgrad.frameworks.tensorflow.kinds.KINDS`: ``Dense``, ``LayerNormalization``,
``Dropout``, ...) gets its layer kind, configuration and xgrad's weight names (a
``LayerNormalization``'s ``gamma`` is ``scale``). Those layers act on the last axis, so a
layer applied to ``(batch, tokens, d)`` is read on its values as vectors
(``x.reshape(-1, d)``): its configuration is what it computes on every token. A ``Dropout``
or ``BatchNormalization`` that Keras called with ``training=True`` is read as such, with a
note. A weight-free layer of another class is named from its values when one of xgrad's
activations reproduces them, a layer of your own holding one weight vector when one of
xgrad's norms does; any other layer is opaque: compared and localised, never refused.
A Keras layer that ends its call with its own activation (``Dense(16, activation="relu")``)
is captured before it, and the activation runs after it as code
(:func:`~.calls.call_apart`): the output an ``nn.Linear`` or ``nnx.Linear`` followed by
``relu`` has, so that a port pairs layer with layer and places an activation that parts
between two modules.

The model evaluated is your model itself: the batch is passed as you would pass it (one
array: ``model(x)``; several: ``model([a, b])`` for a model whose ``call`` takes one
``inputs``, ``model(a, b)`` for one taking several; a dict: ``model(d)``, or keyword
arguments for a subclassed ``call(self, ids, mask=None)``), with ``training=`` only when
you ask for a mode, so that a ``training=True`` written inside ``call`` holds. Its
non-trainable variables (moving statistics, random seeds) are restored after every call, so
evaluating changes nothing. Gradients come from ``tf.GradientTape``, with respect to the
backend's variables (``v.value``), the floating inputs, and a zero tensor added to each
module's first floating output, whose gradient is ``dL/d`` that output through every use of
it (a skip connection included). :meth:`KerasCapturedModel.with_weights` works on a copy
(:func:`~xgrad.frameworks.tensorflow.reader._clone`), checked to compute what your model
computes before it is used.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.errors import InputError, ParamsError, XgradError
from xgrad.frameworks.base import ALL_DTYPES, Gradients
from xgrad.frameworks.capture import Batch, CapturedModel, ModuleInfo, leaf_paths, pick_output
from xgrad.frameworks.kinds import to_canonical, to_native
from xgrad.frameworks.tensorflow.calls import (
    Arguments,
    LayerNode,
    call_apart,
    call_failed,
    calls_wrapped,
    first_floating,
    floating_leaves,
    input_tensors,
    layer_tree,
    replace_leaf,
    state_kept,
    training_flag,
)
from xgrad.frameworks.tensorflow.kinds import (
    BATCHNORM_NOTE,
    DROPOUT_NOTE,
    KINDS,
    keras_activation_name,
    keras_weight,
    read_layer,
    reading_kind,
)
from xgrad.frameworks.tensorflow.model import _checked
from xgrad.frameworks.tensorflow.ops import check_backend, keras, tf, tf_loss
from xgrad.identify import fit_activation, fit_norm, rel
from xgrad.layers import Activation
from xgrad.losses import Loss
from xgrad.params import Params

__all__ = ["KerasCapturedModel", "capture_keras"]

ZERO = tf.UnconnectedGradients.ZERO

# -- reading ----------------------------------------------------------------------------------


@dataclass
class _Call:
    """A layer's first call: its node, floating inputs, first floating output (or ``None``),
    the ``training`` flag Keras passed it, its position among finished calls, how many
    times it was called."""

    node: LayerNode
    inputs: list
    output: object
    training: object
    order: int
    calls: int = 1
    activation: Callable | None = None  # applied after the output recorded (calls.call_apart)


def _record(model, nodes: list[LayerNode], batch: Batch, arguments: Arguments):
    """Call ``model`` once, recording every layer's calls: ``(calls in the order they
    finish, the model's output)``."""
    by_path = {node.path: node for node in nodes}
    seen: dict[str, _Call] = {}

    def wrap(path: str, call: Callable) -> Callable:
        def recorded(*args, **kwargs):
            out, activation = call_apart(by_path[path].layer, call, args, kwargs)
            if path in seen:
                seen[path].calls += 1
            else:
                _, leaf = first_floating(out)
                inputs = floating_leaves(args, kwargs)
                seen[path] = _Call(
                    by_path[path], inputs, leaf, training_flag(call, args, kwargs), len(seen)
                )
                seen[path].activation = activation
            return out if activation is None else activation(out)

        return recorded

    args, kwargs, _ = input_tensors(model, batch)
    try:
        with state_kept(model), calls_wrapped(nodes, wrap):
            out = arguments.call(model, args, kwargs)
    except XgradError:
        raise
    except Exception as exc:  # the user's call: any error, quoted with its own text
        raise call_failed(model, arguments, batch, exc) from None
    return sorted(seen.values(), key=lambda c: c.order), out


def _owner(node: LayerNode, called: set[str]) -> tuple[LayerNode, str]:
    """The nearest called layer at or above ``node``, and ``node``'s path below it."""
    parts = []
    while node.path not in called and node.parent is not None:
        parts.insert(0, node.segment)
        node = node.parent
    return node, ".".join(parts)


def _canonical_locals(node: LayerNode) -> dict[str, object]:
    """A layer's variables by local name: xgrad's names (``scale`` for ``gamma``) for a layer
    of a class the kind table reads, else :func:`own_variables`' names."""
    kind = reading_kind(node.layer)
    if kind is None:
        return node.variables
    entry = KINDS[kind]
    attrs = {id(keras_weight(entry, node.layer, local)): local for local in entry.weights}
    return {attrs.get(id(var), local): var for local, var in node.variables.items()}


def _owners(nodes: list[LayerNode], called: set[str]):
    """``(owner path -> {local: variable}, owner path -> {alias local: variable})``: each
    variable owned by the nearest called layer at or above the layer holding it; one held
    twice (a tied weight) owned at its first place only, an alias at the others."""
    owned: dict[str, dict[str, object]] = {}
    aliases: dict[str, dict[str, object]] = {}
    first: set[int] = set()
    for node in nodes:
        owner, below = _owner(node, called)
        named = node.variables if node.path in called else _canonical_locals(node)
        for local, var in named.items():
            name = f"{below}.{local}" if below else local
            into = aliases if id(var) in first else owned
            into.setdefault(owner.path, {})[name] = var
            first.add(id(var))
    return owned, aliases


def _fit_dtype(layer) -> str:
    dtype = layer.compute_dtype
    return dtype if dtype in ("float32", "float64") else "float32"


def _vectors(a) -> np.ndarray:
    """A value as vectors of its last axis, ``(n, d)`` (a token-wise layer's view)."""
    arr = np.asarray(a)
    return arr.reshape(-1, arr.shape[-1]) if arr.ndim > 2 else arr


def _as_kind(call: _Call, own: dict[str, object]):
    """``(layer, kind, params, state, note)`` of a leaf call of a class the kind table reads
    (:func:`~.kinds.read_layer`), in the mode Keras called it in; ``None`` when the reader
    refuses it or the layer holds other variables than the kind's."""
    layer, kind = call.node.layer, reading_kind(call.node.layer)
    if kind is None or len(call.inputs) != 1:
        return None
    x, out = call.inputs[0], call.output
    if kind != "flatten":
        x, out = _vectors(x), _vectors(out)
    try:
        # a layer's own activation was applied after the output recorded: read it without
        read = call_apart(layer, read_layer, (layer, x, out, layer.compute_dtype), {})[0]
    except XgradError:
        return None
    if read.config is None or read.layouts:
        # a weight in another layout than its kind's (a DepthwiseConv2D kernel): captured
        # modules keep Keras' layout, so such a layer is compared as a module
        return None
    entry = KINDS[read.kind]
    mine = {local: keras_weight(entry, layer, local) for local in (*read.params, *read.state)}
    if {id(v) for v in mine.values()} != {id(v) for v in own.values()}:
        return None  # holds more (or other) variables than the kind's
    config, note = read.config, read.note
    if call.activation is not None:
        after = keras_activation_name(call.activation) or getattr(
            call.activation, "__name__", "its activation"
        )
        apart = f"compared before its activation {after}, which runs after it as code does"
        note = apart if note is None else f"{apart}; {note}"
    active = bool(call.training) and layer.trainable
    if read.kind == "batchnorm" and active:
        config = dataclasses.replace(config, training=True)
        note = BATCHNORM_NOTE if note is None else f"{BATCHNORM_NOTE}; {note}"
    elif read.kind == "dropout" and bool(call.training) and config.rate > 0:
        config = dataclasses.replace(config, active=True)
        note = DROPOUT_NOTE
    params = {local: mine[local] for local in read.params}
    state = {local: mine[local] for local in read.state}
    return config, read.kind, params, state, note


def _from_values(call: _Call):
    """An activation of xgrad's reproducing a weight-free layer's values, or ``None``."""
    if len(call.inputs) != 1 or tuple(call.inputs[0].shape) != tuple(call.output.shape):
        return None
    name, err = fit_activation(
        np.asarray(call.inputs[0]), np.asarray(call.output), _fit_dtype(call.node.layer)
    )
    if name is None:
        return None
    note = f"identified numerically as {name} ({err:.1e})"
    return Activation(name), "activation", {}, {}, note


def _as_norm(call: _Call, own: dict[str, object]):
    """A layer of your own holding one weight vector (LLaMA's RMSNorm) named as the norm of
    xgrad's reproducing its values, or ``None``."""
    if len(own) != 1 or len(call.inputs) != 1:
        return None
    x, out = np.asarray(call.inputs[0]), np.asarray(call.output)
    (var,) = own.values()
    w = np.asarray(var.numpy(), dtype=np.float64)
    if x.shape != out.shape or w.ndim != 1 or w.shape[0] != out.shape[-1]:
        return None
    found, _ = fit_norm(x, out, {"scale": w}, dtype=_fit_dtype(call.node.layer))
    if found is None or found.kind not in ("rmsnorm", "layernorm"):
        return None
    if found.param_names() != ("scale",):
        return None
    return found, found.kind, {"scale": var}, {}, f"identified numerically as {found.describe()}"


def _known(call: _Call, own: dict[str, object], leaf: bool):
    """``(layer, kind, params, state, note)`` of a called layer; opaque (``kind="module"``,
    trainable variables as parameters, the others as state) unless it is a leaf call read
    by the kind table, from its values as an activation or a norm."""
    opaque = (
        None,
        "module",
        {k: v for k, v in own.items() if v.trainable},
        {k: v for k, v in own.items() if not v.trainable},
        None,
    )
    if not leaf or call.output is None:
        return opaque
    found = _as_kind(call, own)
    if found is None and not own:
        found = _from_values(call)
    if found is None and reading_kind(call.node.layer) is None:
        found = _as_norm(call, own)
    return found or opaque


def _infos(calls: list[_Call], nodes: list[LayerNode]):
    """``(modules, canonical name -> variable, canonical names of the state updated)``."""
    called = {c.node.path for c in calls}
    owned, aliases = _owners(nodes, called)
    scopes = {c.node.path: _scope(c.node, called) for c in calls}
    parents = set(scopes.values())
    known = {
        c.node.path: _known(c, owned.get(c.node.path, {}), c.node.path not in parents)
        for c in calls
    }
    variables, updated = {}, []
    for path, (layer, _, params, state, _) in known.items():
        for local, var in {**params, **state}.items():
            variables[f"{path}.{local}" if path else local] = var
        if layer is not None and layer.updates_state:
            updated += [f"{path}.{local}" if path else local for local in state]
    canonical = {id(var): name for name, var in variables.items()}
    infos = []
    for c in calls:
        layer, kind, params, state, note = known[c.node.path]
        shapes = tuple(tuple(t.shape[1:]) for t in c.inputs)
        shared = aliases.get(c.node.path, {})
        infos.append(
            ModuleInfo(
                path=c.node.path,
                kind=kind,
                name=c.node.path or c.node.layer.name,  # attribute paths, as torch and Flax
                layer=layer,
                params={k: v.path for k, v in params.items()},
                state={k: v.path for k, v in state.items()},
                input_shape=shapes[0] if shapes else (),
                output_shape=tuple(c.output.shape[1:]) if c.output is not None else (),
                note=note,
                scope=scopes[c.node.path],
                type=type(c.node.layer).__name__,
                input_shapes=shapes,
                calls=c.calls,
                shared={k: canonical.get(id(v), v.path) for k, v in shared.items()},
            )
        )
    return tuple(infos), variables, tuple(updated)


def _scope(node: LayerNode, called: set[str]) -> str | None:
    """The nearest called layer enclosing ``node`` (``""``: the model; ``None``: the model
    itself)."""
    if node.parent is None:
        return None
    parent = node.parent
    while parent.path not in called and parent.parent is not None:
        parent = parent.parent
    return parent.path


def _model_dtype(calls: list[_Call], output) -> str:
    """The dtype the model computes in: the compute dtype of the last layer holding
    variables of its own to finish (``bfloat16`` under a ``mixed_bfloat16`` policy, whose
    variables are float32), else its output's."""
    with_vars = [c for c in calls if c.node.variables and c.output is not None]
    if with_vars:
        return with_vars[-1].node.layer.compute_dtype
    return output.dtype.name


def capture_keras(
    model, batch: Batch, *, output=None, training: bool | None = None
) -> KerasCapturedModel:
    """A user's built Keras model read at its layers' boundaries (see the module docstring;
    the model is never changed).

    Args:
        model: a built ``keras.Sequential``, Functional or subclassed ``keras.Model``.
        batch: the inputs (:func:`~xgrad.frameworks.capture.as_batch`).
        output: which of the model's outputs the loss sees (``None``: the first floating
            tensor; a key, index or path: :func:`~xgrad.frameworks.capture.pick_output`).
        training: ``None`` calls the model without ``training=`` (Keras' default is
            inference; modes written inside ``call`` hold); ``True`` / ``False`` passes it.

    Raises:
        FrameworkError: Keras runs on another backend than TensorFlow.
        InputError: not a built ``keras.Model``, a dtype xgrad does not compare, or the
            model fails on the batch (Keras' error quoted).
    """
    check_backend()
    if not isinstance(model, keras.Model):
        hint = ""
        if isinstance(model, keras.layers.Layer):
            hint = "; wrap the layer: keras.Sequential([keras.Input(shape), layer])"
        raise InputError(f"xgrad reads keras.Model objects, got {type(model).__name__}{hint}")
    if not model.built:
        raise InputError(
            f"Keras model {model.name!r} is not built (it has no weights yet); call it once on "
            "a batch, or start it with keras.Input(shape)"
        )
    arguments = Arguments.of(model, batch, training)
    nodes = layer_tree(model)
    calls, tree = _record(model, nodes, batch, arguments)
    what = f"Keras model {model.name!r}"
    leaf, path = pick_output(tree, output, what=what)
    dtype = _model_dtype(calls, leaf)
    if dtype not in ALL_DTYPES:
        raise InputError(
            f"{what} computes in {dtype}; xgrad compares models computing in "
            f"{', '.join(ALL_DTYPES)}"
        )
    infos, variables, updated = _infos(calls, nodes)
    captured = KerasCapturedModel(
        model,
        infos,
        nodes,
        variables,
        batch=batch,
        arguments=arguments,
        dtype=dtype,
        output_path=path,
        output_shape=tuple(leaf.shape[1:]),
        updated=updated,
        seen={c.node.path: np.asarray(c.output) for c in calls if c.output is not None},
    )
    others = [p for p, v in leaf_paths(tree) if p != path and tf.is_tensor(v)]
    if others:
        captured.output_note = (
            f"the model returns {len(others) + 1} tensors; the loss sees {path or 'the output'} "
            f"{tuple(leaf.shape)} (output= picks another: {', '.join(others[:4])})"
        )
    return captured


# -- the model --------------------------------------------------------------------------------


def _dense(grad) -> np.ndarray:
    """A gradient as a NumPy array (an ``Embedding``'s comes as ``tf.IndexedSlices``)."""
    return np.asarray(tf.convert_to_tensor(grad))


def _zero_for(leaf):
    """The zero tensor a tap adds to ``leaf``: float32 for a float8 value (a Keras layer's
    ``ops.cast(x, "float8_e4m3fn")``), which TensorFlow can neither add nor make zeros of
    under XLA on the CPU."""
    if leaf.dtype.is_floating and leaf.dtype.size == 1:
        return tf.zeros(tf.shape(leaf), tf.float32)
    return tf.zeros_like(leaf)


def _plus(leaf, eps):
    """``leaf + eps``, in float32 and cast back (exactly) when ``leaf`` is float8."""
    if eps.dtype == leaf.dtype:
        return leaf + eps
    return tf.cast(tf.cast(leaf, eps.dtype) + eps, leaf.dtype)


@dataclass
class _Taps:
    """The zero tensors added to module outputs in one evaluation, and what they saw."""

    paths: list[str] = field(default_factory=list)
    eps: list = field(default_factory=list)
    values: dict[str, object] = field(default_factory=dict)
    inputs: dict[str, list] = field(default_factory=dict)


class KerasCapturedModel(CapturedModel):
    """A Keras model read layer by layer (see :func:`capture_keras`)."""

    framework = "tensorflow"

    def __init__(
        self,
        model: keras.Model,
        modules: tuple[ModuleInfo, ...],
        nodes: list[LayerNode],
        variables: dict[str, object],
        *,
        batch: Batch,
        arguments: Arguments,
        dtype: str,
        output_path: str,
        output_shape,
        updated: tuple[str, ...] = (),
        seen: dict[str, np.ndarray] | None = None,
    ) -> None:
        self._model = model
        self.layers = modules
        self._nodes = [n for n in nodes if n.path in {m.path for m in modules}]
        self._variables = variables
        self._arguments = arguments
        self._updated = updated
        self._seen = seen or {}  # each module's first output when captured
        self.batch = batch
        self.dtype = dtype
        self.output_path = output_path
        self.output_shape = tuple(output_shape)
        self.input_shape = tuple(batch.first.shape[1:])
        self.description = f"keras {type(model).__name__} {model.name!r} (layer by layer)"
        self._layouts = {
            f"{info.path}.{local}" if info.path else local: layout
            for info in modules
            for local, layout in info.layouts.items()
        }

    @property
    def native(self) -> keras.Model:
        """The Keras model evaluated (yours, or a checked copy after :meth:`with_weights`)."""
        return self._model

    def weights(self) -> Params:
        """Parameters and state by canonical name (Keras stores every weight of a known kind
        in xgrad's layout; an opaque layer's as Keras stores it)."""
        return {
            name: np.ascontiguousarray(to_canonical(var.numpy(), self._layouts.get(name)))
            for name, var in self._variables.items()
        }

    def _check_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        for name, value in weights.items():
            if name not in self._variables:
                raise ParamsError(
                    f"{name!r} is not a weight of {self.description}; its weights are "
                    f"{list(self._variables)}"
                )
            arr = np.asarray(value)
            want = tuple(self.weights_shapes()[name])
            if arr.shape != want:
                raise ParamsError(
                    f"weight {name!r} has shape {arr.shape} but the model's is {want}"
                )
            if arr.dtype.kind != "f" and arr.dtype.name != "bfloat16":
                raise ParamsError(f"weight {name!r} has dtype {arr.dtype}; weights are floats")
            if not np.isfinite(arr.astype(np.float64)).all():
                raise ParamsError(
                    f"weight {name!r} contains NaN/Inf values; weights must be finite"
                )

    def weights_shapes(self) -> dict[str, tuple[int, ...]]:
        """Canonical name -> the shape of that weight in canonical layout."""
        out = {}
        for name, var in self._variables.items():
            shape, layout = tuple(var.shape), self._layouts.get(name)
            out[name] = shape if not layout else tuple(np.empty(shape).transpose(layout).shape)
        return out

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> KerasCapturedModel:
        """A copy of the Keras model holding ``weights`` (names not given keep their value).

        The copy is Keras' own (``keras.models.clone_model`` of a Functional or Sequential
        model; a subclassed one rebuilt from its ``get_config()`` or its constructor, see
        :func:`~xgrad.frameworks.tensorflow.reader._clone`), given your model's weights,
        captured on the batch, and checked to hold the same modules and compute the same
        values as your model before the new weights are written into it.

        Raises:
            ParamsError: an unknown name, a wrong shape, a non-float or non-finite array.
            InputError: the model cannot be copied, or the copy computes something else
                (a constructor argument its ``get_config()`` does not return).
        """
        self._check_weights(weights)
        copy = self._copy()
        for name, value in weights.items():
            var = copy._variables[name]
            native = to_native(np.asarray(value, dtype=np.float64), self._layouts.get(name))
            var.assign(tf.cast(np.ascontiguousarray(native), var.dtype))
        return copy

    def _copy(self) -> KerasCapturedModel:
        """The model's checked copy (see :meth:`with_weights`)."""
        from xgrad.frameworks.tensorflow.reader import _clone

        def build(clone) -> None:  # a subclassed model is built by a call, as yours was
            args, kwargs, _ = input_tensors(clone, self.batch)
            with state_kept(clone):
                self._arguments.call(clone, args, kwargs)

        try:
            clone = _clone(self._model, build=build)
        except Exception as exc:  # Keras raises NotImplementedError, TypeError, ValueError...
            raise InputError(
                f"cannot copy {self.description} to give it other weights "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); a subclassed "
                "keras.Model whose constructor takes arguments needs **kwargs passed on to "
                "super().__init__(**kwargs) and a get_config() returning those arguments"
            ) from None
        training = self._arguments.training
        copy = capture_keras(clone, self.batch, output=self.output_path or None, training=training)
        self._check_copy(copy)
        return copy

    def _check_copy(self, copy: KerasCapturedModel) -> None:
        """Refuse a copy whose modules or values differ from this model's."""

        def outline(model):
            return [(i.path, i.kind, tuple(i.params), tuple(i.state)) for i in model.layers]

        why = None
        if outline(copy) != outline(self):
            why = "holds other layers or weights"
        elif not any(info.note == DROPOUT_NOTE for info in self.layers):  # else random values
            for path, value in self._seen.items():
                other = copy._seen.get(path)
                if other is None or other.shape != value.shape:
                    why = f"computes another output at {path or 'the model'}"
                elif rel(other, value) > 4 * float(np.finfo(np.float32).eps):
                    why = (
                        f"computes other values at {path or 'the model'} (relative difference "
                        f"{rel(other, value):.1e})"
                    )
                if why:
                    break
        if why is not None:
            raise InputError(
                f"the copy of {self.description} that xgrad made to give it other weights "
                f"{why}: Keras rebuilt it from get_config(), which does not return every "
                "constructor argument; pass **kwargs on to super().__init__(**kwargs) and "
                "return the constructor's arguments from get_config()"
            )

    # -- evaluation ----------------------------------------------------------------------------

    def _tap(self, taps: _Taps, tape) -> Callable:
        """A wrapper adding a watched zero tensor to each module's first floating output."""

        layers = {node.path: node.layer for node in self._nodes}

        def wrap(path: str, call: Callable) -> Callable:
            def tapped(*args, **kwargs):
                out, activation = call_apart(layers[path], call, args, kwargs)
                after = activation or (lambda value: value)
                if path in taps.inputs:
                    return after(out)
                taps.inputs[path] = floating_leaves(args, kwargs)
                key, leaf = first_floating(out)
                if leaf is None:
                    return after(out)
                eps = _zero_for(leaf)
                tape.watch(eps)
                new = _plus(leaf, eps)
                taps.paths.append(path)
                taps.eps.append(eps)
                taps.values[path] = new
                return after(replace_leaf(out, key, new))

            return tapped

        return wrap

    @staticmethod
    def _loss(loss, out, y):
        """The loss of ``out`` (xgrad's, or your function of tensors): targets as floats in
        the output's dtype, or as given (class ids)."""
        yt = None
        if y is not None:
            arr = np.asarray(y)
            floating = arr.dtype.kind == "f" or arr.dtype.name == "bfloat16"
            yt = tf.cast(arr.astype(np.float64), out.dtype) if floating else tf.constant(arr)
        if isinstance(loss, Loss):
            return tf_loss(loss)(out, tf.zeros((0,), out.dtype) if yt is None else yt)
        return _checked(loss)(out, yt)

    def _run(self, batch: Batch, y, loss, cotangent, capture: bool):
        """One call under the tape: ``(loss, output, gradients, taps, updated state)``."""
        model, arguments = self._model, self._arguments
        names = self.param_names
        taps = _Taps()
        with tf.GradientTape() as tape:
            sources = [getattr(self._variables[n], "value", self._variables[n]) for n in names]
            for source in sources:
                tape.watch(source)
            args, kwargs, floating = input_tensors(model, batch)
            for t in floating:
                tape.watch(t)
            wrap = self._tap(taps, tape) if capture else None
            with calls_wrapped(self._nodes if capture else [], wrap):
                tree = arguments.call(model, args, kwargs)
            out, _ = pick_output(tree, self.output_path or None, what=self.description)
            value = None if cotangent is not None else self._loss(loss, out, y)
        state = {name: self._variables[name].numpy() for name in self._updated}
        if cotangent is None:
            grads = tape.gradient(value, [sources, floating, taps.eps], unconnected_gradients=ZERO)
        else:
            seed = tf.cast(tf.constant(np.asarray(cotangent, np.float64)), out.dtype)
            grads = tape.gradient(
                out,
                [sources, floating, taps.eps],
                output_gradients=seed,
                unconnected_gradients=ZERO,
            )
        return value, out, grads, taps, state

    def _evaluate_batch(self, batch: Batch, y, loss, cotangent, capture: bool) -> Gradients:
        try:
            with state_kept(self._model):
                value, out, grads, taps, state = self._run(batch, y, loss, cotangent, capture)
        except XgradError:
            raise
        except Exception as exc:  # the user's call: any error, quoted with its own text
            raise call_failed(self._model, self._arguments, batch, exc) from None
        dparams, dinputs, deps = grads
        params = {
            name: np.ascontiguousarray(to_canonical(_dense(g), self._layouts.get(name)))
            for name, g in zip(self.param_names, dparams, strict=True)
        }
        inputs = dict(zip(batch.floating, (np.asarray(g) for g in dinputs), strict=True))
        return Gradients(
            loss=None if value is None else float(value),
            params=params,
            input=next(iter(inputs.values()), np.zeros((0,))),
            output=np.asarray(out),
            state=state,
            activations={p: np.asarray(v) for p, v in taps.values.items()} if capture else None,
            activation_grads=(
                {p: np.asarray(g) for p, g in zip(taps.paths, deps, strict=True)}
                if capture
                else None
            ),
            inputs=inputs,
            module_inputs=(
                {p: tuple(np.asarray(t) for t in ts) for p, ts in taps.inputs.items()}
                if capture
                else None
            ),
        )
