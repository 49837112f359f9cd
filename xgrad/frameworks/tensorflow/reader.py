"""Reading a user's Keras model (``Sequential``, Functional or subclassed) into layers.

The model is called once, eagerly, on a probe batch, with each of its layers' ``call``
wrapped on the instance to record ``(layer, input, output)`` in call order (the wrappers are
removed again in ``finally``; the model is never changed). The calls are then read as a chain:

* each layer must take the output of the layer called before it;
* ``keras.layers.Add()([x, f(x)])`` and ``x + f(x)`` written in ``call`` (recognised by its
  value) close a residual block whose layers are those called since ``x``;
* an activation function called in ``call`` between layers (``keras.activations.gelu(h)``,
  ``keras.ops.relu(h)``, ``relu(x + f(x))``, ``x + gelu(f(x))``) is named from its values
  (:func:`xgrad.identify.fit_activation`) and becomes an :class:`~xgrad.Activation` of its
  own, which :class:`~xgrad.frameworks.tensorflow.model.KerasModel` applies with
  :func:`~xgrad.frameworks.tensorflow.ops.tf_activation` (in float64, Keras' own ``gelu`` and
  ``leaky_relu``, which round a constant to float32, by a ``keras.layers.Activation`` of
  Keras' function, so that the values stay those of ``call``);
* the model's output must be the last value of the chain (or an activation of it).

Anything else (branches, concatenations, code between layers that is none of xgrad's
activations, a layer called twice) raises :class:`~xgrad.errors.AlignmentError` naming the
layer. Each layer is read by the reader of its exact class in
:data:`~xgrad.frameworks.tensorflow.kinds.KINDS`: Keras' own ``Dense``, ``Activation``,
``ReLU``, ``LeakyReLU``, ``Softmax``, ``ELU``, ``LayerNormalization``, ``RMSNormalization``,
``BatchNormalization`` (inference, as when the model is called normally), ``Dropout``
(inference: the identity), ``Flatten``, ``Embedding``, the attention layers, the
convolutions, poolings, ``GroupNormalization``, ``LSTM`` and ``GRU``
(:mod:`.spatial`, :mod:`.recurrent`). Two calls may read as one layer and one call as two:

* a ``ZeroPadding1D/2D`` directly before a convolution or an average pooling with
  ``padding="valid"`` is read into it (an explicit padding; ``count_include_pad=True``);
* a convolution's own ``activation`` is read as an Activation layer after it (the
  convolution's output is taken without it, as a port's ``conv`` then ``relu`` computes).

Native names are Keras variable paths (``sequential/dense_1/kernel``); layers keep their
Keras names. The model returned evaluates the Keras layers themselves
(:class:`~xgrad.frameworks.tensorflow.model.KerasModel`).
"""

from __future__ import annotations

import contextlib
import functools
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.errors import AlignmentError, InputError, ParamsError
from xgrad.frameworks.base import LayerInfo
from xgrad.frameworks.kinds import Layout, inverse, to_native
from xgrad.frameworks.tensorflow.backend_worker import keras_leaves
from xgrad.frameworks.tensorflow.calls import call_apart
from xgrad.frameworks.tensorflow.entry import LayerRead
from xgrad.frameworks.tensorflow.kinds import (
    KINDS,
    keras_weight,
    name_activation,
    read_layer,
    where,
)
from xgrad.frameworks.tensorflow.model import KerasModel
from xgrad.frameworks.tensorflow.ops import check_backend, keras, tf
from xgrad.frameworks.tensorflow.spatial import absorb, padding_of
from xgrad.identify import FIT, fit_activation, leaky_slope, rel
from xgrad.layers import AbstractLayer, Activation, Residual, Shape

__all__ = ["ReadModel", "read_keras_model"]

CHAIN = (
    "xgrad reads models whose layers form a chain, each taking the previous layer's output, "
    "with residual blocks x + f(x) (keras.layers.Add or + in call)"
)

CODE = (
    "if it is code of your own, apply it as a layer, keras.layers.Activation(fn), which xgrad "
    "calls as it is"
)

PROBE_BATCH = 4

MODAL = (keras.layers.BatchNormalization, keras.layers.Dropout)
"""The layers read whose computation depends on ``training``: read in inference mode."""

# -- recording one call -----------------------------------------------------------------------


@dataclass
class _Call:
    """One layer call: the layer, its input (a list for ``Add``), its output, and the
    ``training`` it was called with (``True`` where ``call()`` passes ``training=True``
    whatever the model is called with)."""

    layer: keras.layers.Layer
    input: object
    output: object
    training: object = None
    padded: object = None  # the input after a ZeroPadding read into this layer


def _recorder(layer, call, calls: list[_Call]):
    def record(*args, **kwargs):
        out = call(*args, **kwargs)
        inputs = args[0] if args else kwargs.get("inputs")
        calls.append(_Call(layer, inputs, out, kwargs.get("training")))
        return out

    return record


@contextlib.contextmanager
def _recording(layers, calls: list[_Call]) -> Iterator[None]:
    """Wrap each layer's ``call`` on the instance to record it; restored in ``finally``."""
    patched = []
    try:
        for layer in layers:
            own = vars(layer).get("call")
            object.__setattr__(layer, "call", _recorder(layer, layer.call, calls))
            patched.append((layer, own))
        yield
    finally:
        for layer, own in patched:
            if own is None:
                object.__delattr__(layer, "call")
            else:
                object.__setattr__(layer, "call", own)


# -- one layer ----------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A layer (or residual block) read, before paths are given."""

    layer: keras.layers.Layer | None
    kind: str
    config: AbstractLayer | None
    weights: dict[str, object]  # local name -> Keras variable (parameters, then state)
    input_shape: Shape
    output_shape: Shape
    name: str | None
    note: str | None = None
    children: list[_Draft] = field(default_factory=list)
    state: tuple[str, ...] = ()  # the local names of weights that are state
    layouts: dict[str, Layout] = field(default_factory=dict)  # those not canonical


def _describe(layer, x, out, dtype: str, read: LayerRead | None = None) -> _Draft:
    """Read one called layer (see :func:`.kinds.read_layer`, unless ``read`` is given); its
    weights are the Keras attributes its kind's entry names."""
    read = read_layer(layer, x, out, dtype) if read is None else read
    entry = KINDS[read.kind]
    local = (*read.params, *read.state)
    layouts = {**entry.layouts, **(read.layouts or {})}
    return _Draft(
        layer=layer,
        kind=read.kind,
        config=read.config,
        weights={name: keras_weight(entry, layer, name) for name in local},
        input_shape=tuple(x.shape[1:]),
        output_shape=tuple(out.shape[1:]),
        name=layer.name,
        note=read.note,
        state=read.state,
        layouts={name: layouts[name] for name in local if name in layouts},
    )


# -- the chain ----------------------------------------------------------------------------------


class _Chain:
    """The drafts read so far, and the values between them (to find residual blocks)."""

    def __init__(self, x, dtype: str) -> None:
        self.items: list[_Draft] = []
        self.points: list[tuple[object, int]] = [(x, 0)]  # (value, number of items before it)
        self.dtype = dtype
        self.tol = FIT.get(dtype, 1e-5)

    def same(self, a, b) -> bool:
        if a is b:
            return True
        a, b = np.asarray(a), np.asarray(b)
        return a.shape == b.shape and rel(a, b) <= self.tol

    @property
    def current(self):
        return self.points[-1][0]

    def skip_from(self, value) -> int | None:
        """The latest earlier point whose value is ``value`` (a skip connection's start)."""
        for j in range(len(self.points) - 2, -1, -1):
            if self.same(self.points[j][0], value):
                return j
        return None

    def sum_from(self, value) -> int | None:
        """The latest earlier point ``j`` with ``value == points[j] + current``."""
        current, value = np.asarray(self.current), np.asarray(value)
        for j in range(len(self.points) - 2, -1, -1):
            x = np.asarray(self.points[j][0])
            if x.shape == current.shape == value.shape and self.same(x + current, value):
                return j
        return None

    def close_block(self, j: int, add, output) -> None:
        """Make the items since point ``j`` a residual block whose output is ``output``."""
        first, start = self.points[j]
        block = self.items[start:]
        del self.items[start:]
        shape = tuple(np.asarray(first).shape[1:])
        name = add.name if add is not None else None  # x + f(x) in code: named by its path
        self.items.append(_Draft(add, "residual", None, {}, shape, shape, name, children=block))
        del self.points[j + 1 :]
        self.points.append((output, len(self.items)))

    def fit(self, z, value, before: str) -> tuple[_Draft | None, float]:
        """``(an Activation draft for value = act(z), or None; the closest relative error)``:
        an activation function called in ``call`` between layers, named from its values."""
        z, a = np.asarray(z), np.asarray(value)
        if z.shape != a.shape:
            return None, np.inf
        name, err = fit_activation(z, a, self.dtype)
        layer = None
        note = f"code {before} identified from its values as {name} (relative error {err:.1e})"
        if name is None and self.dtype == "float64":
            name, layer = _keras_float64(z, a)
            note = (
                f"code {before} computes {name} as Keras' own float64 function does, with a "
                f"constant rounded to float32 (relative error {err:.1e} from xgrad's "
                "definition); evaluated with Keras' function"
            )
        if name is None or name == "linear":
            return None, err
        shape = tuple(z.shape[1:])
        return _Draft(layer, "activation", Activation(name), {}, shape, shape, None, note), err

    def push(self, draft: _Draft, output) -> None:
        self.items.append(draft)
        self.points.append((output, len(self.items)))

    def reach(self, value, before: str) -> float | None:
        """Bring the chain to ``value``, the input of the next layer (or the model's output):
        the current value; ``x + current`` (a residual block); ``act(current)``;
        ``act(x + current)`` or ``x + act(current)``. ``None`` when it got there, else the
        closest relative error of an activation of the current value."""
        if self.same(value, self.current):
            return None
        j = self.sum_from(value)
        if j is not None:
            self.close_block(j, None, value)
            return None
        draft, err = self.fit(self.current, value, before)
        if draft is not None:
            self.push(draft, value)
            return None
        current = np.asarray(self.current, np.float64)
        for j in range(len(self.points) - 2, -1, -1):
            x = np.asarray(self.points[j][0], np.float64)
            if x.shape != current.shape:
                continue
            after, _ = self.fit(x + current, value, before)  # act(x + f(x))
            if after is not None:
                self.close_block(j, None, x + current)
                self.push(after, value)
                return None
            inside, _ = self.fit(current, np.asarray(value, np.float64) - x, before)
            if inside is not None:  # x + act(f(x))
                self.push(inside, np.asarray(value, np.float64) - x)
                self.close_block(j, None, value)
                return None
        return err

    def add(self, call: _Call) -> None:
        """Read one call of an ``Add`` layer (a residual block)."""
        inputs = list(call.input) if isinstance(call.input, list | tuple) else [call.input]
        before = f"before {call.layer.name!r}"
        if len(inputs) == 2:
            for k in (1, 0):
                inside = None
                if not self.same(inputs[k], self.current):
                    inside, _ = self.fit(self.current, inputs[k], before)  # x + act(f(x))
                    if inside is None:
                        continue
                j = self.skip_from(inputs[1 - k])
                if j is not None:
                    if inside is not None:
                        self.push(inside, inputs[k])
                    return self.close_block(j, call.layer, call.output)
        raise AlignmentError(
            f"{where(call.layer)} adds {len(inputs)} values that are not x and f(x) for a "
            f"block f of the layers called since x; {CHAIN}"
        )

    def append(self, call: _Call, draft: _Draft) -> None:
        """Read one call of any other layer."""
        err = self.reach(call.input, f"before {call.layer.name!r}")
        if err is not None:
            raise AlignmentError(
                f"{where(call.layer)} takes an input that is not the output of the layer "
                f"called before it (a branch, or code between layers){_closest(err)}; {CHAIN}"
            )
        self.push(draft, call.output)

    def end(self, output, model) -> None:
        """Check that the model's output is the chain's last value (or an activation of it)."""
        name = self.items[-1].name if self.items else None
        err = self.reach(output, f"after {name!r}" if name else "after the last layer")
        if err is not None:
            raise AlignmentError(
                f"the output of Keras model {model.name!r} is not the output of its last layer "
                f"(code after it?){_closest(err)}; {CHAIN}"
            )


PADDED = (
    "xgrad reads a ZeroPadding1D/2D only directly before the Conv, DepthwiseConv or "
    "AveragePooling (padding='valid') that takes its output, as its explicit padding"
)


def _read_call(chain: _Chain, call: _Call, dtype: str, read: LayerRead | None = None) -> None:
    """Read one call of a layer into the chain: its kind, then, for a layer applying an
    activation outside its kind (a ``Conv2D(activation="relu")``), that activation as a
    layer of its own, on the layer's output without it."""
    read = read_layer(call.layer, call.input, call.output, dtype) if read is None else read
    if read.activation is None:
        chain.append(call, _describe(call.layer, call.input, call.output, dtype, read))
        return
    layer = call.layer
    inner = call.input if call.padded is None else call.padded
    z = call_apart(layer, layer, (tf.convert_to_tensor(inner),), {"training": False})[0]
    chain.append(_Call(layer, call.input, z), _describe(layer, call.input, z, dtype, read))
    name, note = name_activation(read.activation, np.asarray(z), np.asarray(call.output), dtype)
    if name is None:
        raise AlignmentError(f"{where(layer)}: {note}; {CODE}")
    shape = tuple(z.shape[1:])
    draft = _Draft(None, "activation", Activation(name), {}, shape, shape, None, note)
    chain.push(draft, call.output)


def _read_padded(chain: _Chain, pad: _Call, call: _Call, dtype: str) -> None:
    """Read ``call``, the call after the ZeroPadding call ``pad``, with the padding read
    into it (:func:`~.spatial.absorb`)."""
    if type(call.layer) is keras.layers.Add or not chain.same(call.input, pad.output):
        raise AlignmentError(
            f"{where(pad.layer)} is followed by {where(call.layer)}, which does not take its "
            f"output alone; {PADDED}"
        )
    read = absorb(pad.layer, read_layer(call.layer, call.input, call.output, dtype), call.layer)
    padded = _Call(call.layer, pad.input, call.output, call.training, padded=call.input)
    _read_call(chain, padded, dtype, read)


def _keras_float64(z: np.ndarray, a: np.ndarray) -> tuple[str | None, keras.layers.Layer | None]:
    """``(xgrad name, a Keras Activation layer of it)`` when ``a`` is Keras' own float64
    ``gelu`` (either form) or ``leaky_relu`` of ``z``, which round a constant to float32
    (:mod:`.ops`), else ``(None, None)``."""
    slope = leaky_slope(z.astype(np.float64), a.astype(np.float64))
    candidates = {
        "gelu": functools.partial(keras.activations.gelu, approximate=False),
        "gelu_tanh": functools.partial(keras.activations.gelu, approximate=True),
    }
    if slope is not None:
        leaky = functools.partial(keras.activations.leaky_relu, negative_slope=slope)
        candidates[f"leaky_relu:{slope!r}"] = leaky
    for name, fn in candidates.items():
        if rel(np.asarray(fn(tf.constant(z))), a) <= FIT["float64"]:
            return name, keras.layers.Activation(fn, dtype="float64")
    return None, None


def _closest(err: float) -> str:
    """What the error message says about code between layers that kept the values' shape."""
    if not np.isfinite(err):
        return ""
    return f", nor one of xgrad's activations of it (closest relative error {err:.1e}); {CODE}"


def _infos(drafts, prefix, by_path, variables) -> tuple[LayerInfo, ...]:
    """Give the drafts their paths: :class:`LayerInfo`, Keras layers and variables by path."""
    out = []
    for i, d in enumerate(drafts):
        path = f"{prefix}.{i}"
        children = _infos(d.children, f"{path}.layers", by_path, variables)
        config = d.config
        if d.kind == "residual" and all(c.layer is not None for c in children):
            config = Residual([c.layer for c in children])
        by_path[path] = d.layer
        variables.update({f"{path}.{local}": var for local, var in d.weights.items()})
        out.append(
            LayerInfo(
                path=path,
                kind=d.kind,
                name=d.name or path,
                layer=config,
                params={k: v.path for k, v in d.weights.items() if k not in d.state},
                state={k: v.path for k, v in d.weights.items() if k in d.state},
                layouts=dict(d.layouts),
                input_shape=d.input_shape,
                output_shape=d.output_shape,
                children=children,
                note=d.note,
            )
        )
    return tuple(out)


# -- the model ----------------------------------------------------------------------------------


def _input_shape(model: keras.Model, given: Shape | None) -> Shape:
    try:
        inputs = model.inputs
    except AttributeError:  # a subclassed model
        inputs = None
    if inputs:
        if len(inputs) != 1:
            raise AlignmentError(
                f"Keras model {model.name!r} takes {len(inputs)} inputs; xgrad reads models of one"
            )
        shape = tuple(inputs[0].shape[1:])
        if None not in shape:
            return shape
    config = model.get_build_config() or {}
    shape = config.get("input_shape")
    if shape is not None and len(shape) > 1 and None not in tuple(shape)[1:]:
        return tuple(shape)[1:]
    if given is None:
        raise InputError(
            f"cannot tell the input shape of Keras model {model.name!r}; pass input_shape "
            "(the shape of one example), or give the model a keras.Input"
        )
    return tuple(given)


def _probe(model: keras.Model, shape: Shape) -> np.ndarray:
    """The batch a model is read on: standard normal values of its input's dtype, or token
    ids in ``[0, vocab)`` for an integer input (``vocab`` the smallest ``input_dim`` /
    ``vocab`` of its layers, 2 when none says)."""
    rng = np.random.default_rng(0)
    dtype = model.inputs[0].dtype if getattr(model, "inputs", None) else model.compute_dtype
    if np.dtype(dtype).kind in "iu":
        sizes = [
            getattr(leaf, a, None) for leaf in keras_leaves(model) for a in ("input_dim", "vocab")
        ]
        vocab = min((v for v in sizes if isinstance(v, int)), default=2)
        return rng.integers(0, vocab, (PROBE_BATCH, *shape)).astype(dtype)
    return rng.standard_normal((PROBE_BATCH, *shape)).astype(dtype)


def _dtype(model: keras.Model, calls: list[_Call]) -> str:
    """The dtype the model's output is computed in: its last layer with weights' compute
    dtype (``bfloat16`` under a ``mixed_bfloat16`` policy). Layers of other dtypes inside
    are allowed: Keras casts between them, and xgrad compares what comes out (a float32 layer
    inside a float64 model is then diagnosed ``dtype`` at that layer)."""
    with_weights = [c.layer.compute_dtype for c in calls if c.layer.weights]
    dtypes = with_weights or [c.layer.compute_dtype for c in calls]
    return dtypes[-1]


def read_keras_model(model, *, input_shape: Shape | None = None) -> ReadModel:
    """A user's built ``keras.Model`` as an xgrad model (the Keras object is never changed).

    Args:
        model: a built ``keras.Sequential``, Functional ``keras.Model`` or subclassed model.
        input_shape: the shape of one example, when the model has no ``keras.Input`` and has
            not recorded one.

    Raises:
        FrameworkError: Keras runs on another backend than TensorFlow.
        InputError: not a ``keras.Model``, not built, or an unknown input shape.
        AlignmentError: a layer or a connection xgrad does not read (the message names it).
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
    shape = _input_shape(model, input_shape)
    probe = _probe(model, shape)
    calls: list[_Call] = []
    # a layer that call() runs with training=True updates its state (BatchNormalization's
    # moving statistics) even in this probe call: kept and restored, the model is not changed
    saved = [(v, np.array(v.numpy())) for v in model.non_trainable_variables]
    try:
        with _recording(keras_leaves(model), calls):
            output = model(probe, training=False)
    except Exception as exc:  # the user's call: any error, shown with its own text
        raise InputError(
            f"calling Keras model {model.name!r} on examples of shape {tuple(shape)} failed: "
            f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        ) from exc
    finally:
        for var, value in saved:
            var.assign(value)
    if not calls:
        raise AlignmentError(f"Keras model {model.name!r} calls no layer")
    dtype = _dtype(model, calls)
    counts = Counter(id(call.layer) for call in calls)
    for call in calls:
        if counts[id(call.layer)] > 1:
            raise AlignmentError(
                f"{where(call.layer)} is called {counts[id(call.layer)]} times in one pass "
                "(shared weights); xgrad reads models that call each layer once"
            )
    for call in calls:
        if call.training is True and isinstance(call.layer, MODAL):
            raise AlignmentError(
                f"{where(call.layer)} is called with training=True in call(), so it computes "
                "in training mode whatever the model is called with; xgrad reads layers in "
                "inference mode (compare_models reads such a model module by module, in the "
                "modes call() sets)"
            )
    chain = _Chain(probe, dtype)
    pad = None  # a ZeroPadding call, read into the layer called next
    for call in calls:
        if pad is not None:
            _read_padded(chain, pad, call, dtype)
            pad = None
        elif padding_of(call.layer) is not None:
            pad = call
        elif type(call.layer) is keras.layers.Add:
            chain.add(call)
        else:
            _read_call(chain, call, dtype)
    if pad is not None:
        raise AlignmentError(f"{where(pad.layer)} ends the model; {PADDED}")
    chain.end(output, model)
    by_path: dict[str, keras.layers.Layer | None] = {}
    variables: dict[str, object] = {}
    layers = _infos(chain.items, "layers", by_path, variables)
    return ReadModel(model, layers, by_path, variables, dtype=dtype, input_shape=shape)


def _clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """Keras' own clone of a layer (from its config), but with its activation passed as the
    function itself: a user's function cannot be found again from its name in a config."""
    config = layer.get_config()
    if "activation" in config:
        config["activation"] = layer.activation
    return type(layer).from_config(config)


def _clone(
    model: keras.Model, input_shape: Shape | None = None, build: Callable | None = None
) -> keras.Model:
    """A new Keras model computing as ``model`` does, holding a copy of its weights
    (``input_shape``, one example's: to build a copy that its build config cannot build;
    ``build``: a function calling the copy once, as yours was called, tried first)."""
    if isinstance(model, keras.Sequential) or type(model).__name__ == "Functional":
        clone = keras.models.clone_model(model, clone_function=_clone_layer, recursive=True)
    else:  # subclassed: rebuilt from get_config() by its own constructor
        try:
            clone = keras.models.clone_model(model)
        except Exception:
            # Keras passes name= and trainable= to the constructor, which a model written as
            # the Keras guides write one (no **kwargs) refuses: its constructor without
            # arguments builds the same layers (a TypeError when it needs arguments)
            clone = type(model)()
    if not clone.built and build is not None:
        build(clone)
    if not clone.built:
        config = model.get_build_config()
        if config is not None:
            clone.build_from_config(config)
    if not clone.built and input_shape is not None:
        # a subclassed model without a build() of its own is built by a call, as the user's
        # was: once on zeros
        clone(np.zeros((1, *input_shape), dtype=model.dtype or "float32"))
    clone.set_weights(model.get_weights())
    return clone


class ReadModel(KerasModel):
    """A user's Keras model read by :func:`read_keras_model`."""

    def __init__(
        self, model, layers, by_path, variables, *, dtype: str, input_shape: Shape
    ) -> None:
        super().__init__(
            model,
            layers,
            by_path,
            variables,
            dtype=dtype,
            description=f"keras {type(model).__name__} {model.name!r}",
            input_shape=input_shape,
        )

    def _check_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        for name, value in weights.items():
            if name not in self._variables:
                raise ParamsError(
                    f"{name!r} is not a weight of {self.description}; its weights are "
                    f"{list(self._variables)}"
                )
            arr = np.asarray(value)
            want = tuple(self._variables[name].shape)
            layout = self._layouts.get(name)
            if layout is not None:  # the canonical shape of a weight Keras stores permuted
                want = tuple(want[i] for i in inverse(layout))
            if arr.shape != want:
                raise ParamsError(
                    f"weight {name!r} has shape {arr.shape} but the model's is {want}"
                )
            if arr.dtype.kind != "f" and arr.dtype.name != "bfloat16":  # ml_dtypes' is kind V
                raise ParamsError(f"weight {name!r} has dtype {arr.dtype}; weights are floats")
            if not np.isfinite(arr.astype(np.float64)).all():
                raise ParamsError(
                    f"weight {name!r} contains NaN/Inf values; weights must be finite"
                )

    def _check_copy(self, copy: ReadModel) -> None:
        """Refuse a copy that does not compute what the model does: Keras rebuilds a
        subclassed model from ``get_config()``, which may leave out a constructor argument
        (a LayerNorm epsilon given to the model's ``__init__``), and the copy would then
        compare another model than yours.

        Raises:
            InputError: a layer of the copy is configured otherwise, or its output differs.
        """
        for mine, theirs in zip(self.walk(), copy.walk(), strict=False):
            if mine.kind != theirs.kind or mine.layer != theirs.layer:
                raise InputError(
                    f"the copy of {self.description} that Keras builds from get_config() "
                    f"differs at {mine.name!r}: {mine.describe()} in your model, "
                    f"{theirs.describe()} in the copy; return every constructor argument "
                    "from get_config() (and pass **kwargs to super().__init__), or give the "
                    "candidate the reference's weights yourself and pass transfer=False"
                )
        if len(list(self.walk())) != len(list(copy.walk())):
            raise InputError(f"the copy of {self.description} reads differently from the model")
        probe = _probe(self._model, self.input_shape)
        mine = np.asarray(self.evaluate(probe, loss="sum").output, np.float64)
        theirs = np.asarray(copy.evaluate(probe, loss="sum").output, np.float64)
        den = float(np.linalg.norm(mine)) or 1.0
        if not float(np.linalg.norm(theirs - mine)) <= 1e-6 * den:
            raise InputError(
                f"the copy of {self.description} that Keras builds from get_config() computes "
                f"otherwise than your model on a probe batch (relative difference "
                f"{float(np.linalg.norm(theirs - mine)) / den:.2g}): a constructor argument "
                "get_config() does not return? Return every one of them, or give the "
                "candidate the reference's weights yourself and pass transfer=False"
            )

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> ReadModel:
        """A copy of the Keras model (``keras.models.clone_model``) holding ``weights``; the
        layers keep the names of the model read.

        Raises:
            ParamsError: an unknown name, a wrong shape, a non-float or non-finite array.
            InputError: the Keras model cannot be copied (a subclassed model without a
                usable ``get_config``).
        """
        self._check_weights(weights)
        try:
            clone = _clone(self._model, self.input_shape)
        except Exception as exc:  # Keras raises NotImplementedError, TypeError, ValueError...
            raise InputError(
                f"cannot copy {self.description} to give it other weights "
                f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); a subclassed "
                "keras.Model whose constructor takes arguments needs **kwargs passed on to "
                "super().__init__(**kwargs) and a get_config() returning those arguments"
            ) from None
        copy = read_keras_model(clone, input_shape=self.input_shape)
        self._check_copy(copy)
        for name, value in weights.items():
            var = copy._variables[name]
            var.assign(to_native(np.asarray(value, dtype=var.dtype), self._layouts.get(name)))
        return ReadModel(
            clone,
            self.layers,
            copy._keras_layers,
            copy._variables,
            dtype=self.dtype,
            input_shape=self.input_shape,
        )
