"""The model shared by built and read Keras models: a Keras model, its layers in call order,
and one evaluation under ``tf.GradientTape``.

A model is evaluated by calling its Keras layers one after another, as ``Sequential`` and
``Functional`` models do, following :attr:`AbstractModel.layers`, each as its kind's entry in
:data:`~xgrad.frameworks.tensorflow.kinds.KINDS` calls it (residual blocks add their input
back, with their ``keras.layers.Add`` when they have one). The readers check, on a probe
batch, that this sequence computes what the user's own ``call`` computes. Walking the layers
makes xgrad's semantics explicit:

* an :class:`~xgrad.Activation` without a Keras layer (an activation function called in the
  user's ``call`` between layers) applies :func:`~xgrad.frameworks.tensorflow.ops.tf_activation`;
* an active :class:`~xgrad.Dropout` multiplies by xgrad's mask (``layer.scaled_mask``), never
  by a Keras random mask; an inactive one is the identity;
* a layer that updates its state (a :class:`~xgrad.BatchNorm` in training mode) is called
  with ``training=True``: Keras normalises by the batch statistics and assigns the new moving
  statistics, which are read and then restored, so evaluating never changes the model;
* every other layer is called with ``training=False``;
* a model taking token ids (an ``Embedding`` first) is fed them as ``int32`` (checked
  against the vocabulary by ``evaluate``); ids have no gradient (``Gradients.input`` is
  ``None``), and an embedding table's gradient (``IndexedSlices`` from ``tf.gather``) is
  made dense;
* with ``capture=True`` every layer's output is watched, so ``dL/d output`` is its total
  derivative (through a residual's skip connection too).

The step runs in a ``tf.function`` cached per model, loss and capture flag (a user's loss
function runs eagerly). Weights and their gradients cross in canonical layout: a weight whose
kind's entry states another layout (``LayerInfo.layouts``) is permuted on the way.
"""

from __future__ import annotations

import functools

import numpy as np

from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractModel, Gradients, LayerInfo
from xgrad.frameworks.kinds import to_canonical
from xgrad.frameworks.tensorflow.kinds import KINDS, KerasCall
from xgrad.frameworks.tensorflow.ops import keras, own_traces, tf, tf_loss
from xgrad.losses import Loss
from xgrad.params import Params

__all__ = ["KerasModel", "KerasRunner"]

ZERO = tf.UnconnectedGradients.ZERO


class KerasRunner:
    """A Keras model's layers called in order under ``tf.GradientTape``, and the
    ``tf.function`` traced for each loss and capture flag.

    It refers to the Keras layers and variables only, never to a :class:`KerasModel`, so that
    a built model's runner (with its traces) can serve the next model of the same spec
    (:mod:`xgrad.frameworks.pool`).

    Args:
        layers: the layers in call order.
        keras_layers: layer path -> the Keras layer computing that path's output (``None``
            for an activation written as code in ``call``).
        params: the Keras variables of the trainable parameters, in ``param_names`` order.
    """

    def __init__(self, layers, keras_layers, params) -> None:
        self.layers = layers
        self.keras_layers = keras_layers
        self.params = params
        self.steps: dict[tuple, object] = {}

    def run(self, infos, a, masks, values, tape):
        """Call the layers of ``infos`` on ``a``, each as its kind's entry calls it
        (:attr:`~.kinds.KerasKind.call`, with what its ``draw`` drew in ``masks``); record
        each output in ``values``."""
        for info in infos:
            call = KerasCall(
                self.keras_layers.get(info.path),
                info.layer,
                masks.get(info.path),
                functools.partial(self.run, info.children, masks=masks, values=values, tape=tape),
            )
            a = KINDS[info.kind].call(call, a)
            if values is not None:
                tape.watch(a)
                values[info.path] = a
        return a

    def step(self, loss_fn, capture: bool):
        """``(x, target, masks) -> (loss, output, dL/dparams, dL/dx, dL/dvalues, values)``,
        where ``values`` are the layers' outputs by path (empty unless ``capture``) and
        ``target`` is ``y`` for a loss, or the cotangent when ``loss_fn`` is ``None``."""

        def step(x, target, masks):
            values = {} if capture else None
            ids = not x.dtype.is_floating  # token ids: no gradient
            with tf.GradientTape() as tape:
                if not ids:
                    tape.watch(x)
                out = self.run(self.layers, x, masks, values, tape)
                value = None if loss_fn is None else loss_fn(out, target)
            # the backend's own variables: TensorFlow cannot give a zero gradient for a Keras
            # variable that the output does not use (a weight a layer ignores)
            params = [getattr(v, "value", v) for v in self.params]
            sources = (params, tf.zeros((0,)) if ids else x, values or {})
            if loss_fn is None:
                grads = tape.gradient(
                    out, sources, output_gradients=target, unconnected_gradients=ZERO
                )
            else:
                grads = tape.gradient(value, sources, unconnected_gradients=ZERO)
            # a gathered table's gradient (an embedding's) comes as IndexedSlices
            dparams = [tf.convert_to_tensor(g) for g in grads[0]]
            return (value, out, dparams, None if ids else grads[1], grads[2], values or {})

        return step

    def compiled(self, loss: Loss | None, capture: bool):
        """The traced step for ``loss`` (``None``: a cotangent), made once."""
        key = (None if loss is None else loss.name, capture)
        if key not in self.steps:
            self.steps[key] = tf.function(
                self.step(None if loss is None else tf_loss(loss), capture)
            )
        return self.steps[key]


class KerasModel(AbstractModel):
    """A Keras model evaluated layer by layer (see the module docstring).

    Subclasses say how to copy the model with other weights (:meth:`with_weights`).

    Args:
        native: the Keras model holding the weights.
        layers: its layers in call order; ``LayerInfo.layouts`` names the weights Keras
            stores in another layout than the canonical one (none of Keras' own layers do).
        keras_layers: layer path -> the Keras layer computing that path's output (a
            residual block: its ``Add`` layer, or ``None`` for ``x + block(x)`` in code; an
            activation called as a function in ``call``: ``None``).
        variables: canonical weight name -> Keras variable (params and state).
        dtype: the dtype the layers compute in.
        description: a short text naming the model.
        input_shape: the shape of one input example.
        runner: the :class:`KerasRunner` of this Keras model, when one exists already (a
            pooled build); else a new one.
        pooled: ``(pool, key, kit, nbytes)`` when the Keras model belongs to a
            :class:`~xgrad.frameworks.pool.BuildPool`: ``kit`` (``nbytes`` of weights)
            returns there when this model is collected, unless the Keras model or a layer or
            variable of it was given away.
    """

    framework = "tensorflow"

    def __init__(
        self,
        native: keras.Model,
        layers: tuple[LayerInfo, ...],
        keras_layers: dict[str, keras.layers.Layer | None],
        variables: dict[str, keras.Variable],
        *,
        dtype: str,
        description: str,
        input_shape: tuple[int, ...],
        runner: KerasRunner | None = None,
        pooled: tuple | None = None,
    ) -> None:
        self._model = native
        self.layers = layers
        self._keras_layers = keras_layers
        self._variables = variables
        self.dtype = dtype
        self.description = description
        self.input_shape = tuple(input_shape)
        self.output_shape = layers[-1].output_shape
        if runner is None:
            runner = KerasRunner(layers, keras_layers, [variables[n] for n in self.param_names])
        self._runner = runner
        self._training_state = {
            f"{info.path}.{local}": variables[f"{info.path}.{local}"]
            for info in self.walk()
            if info.layer is not None and info.layer.updates_state
            for local in info.state
        }
        self._layouts = {
            f"{info.path}.{local}": layout
            for info in self.walk()
            for local, layout in info.layouts.items()
        }
        self._lease = None if pooled is None else pooled[0].lend(self, *pooled[1:])

    def _escape(self) -> None:
        if self._lease is not None:
            self._lease.escape()

    @property
    def native(self) -> keras.Model:
        """The Keras model holding this model's weights."""
        self._escape()
        return self._model

    def keras_layer(self, path: str) -> keras.layers.Layer | None:
        """The Keras layer computing the output of the layer at ``path`` (a residual block:
        its ``Add`` layer, or ``None`` for ``x + block(x)`` written in code)."""
        self._escape()
        return self._keras_layers.get(path)

    def variable(self, name: str) -> keras.Variable:
        """The Keras variable holding the canonical weight ``name``."""
        self._escape()
        return self._variables[name]

    def weights(self) -> Params:
        """Parameters and state by canonical name and layout (Keras stores a kernel
        ``(in, out)`` canonically; a weight stored in another layout is permuted back)."""
        return {name: self._canonical(name, var.numpy()) for name, var in self._variables.items()}

    def _canonical(self, name: str, value) -> np.ndarray:
        """A weight (or its gradient) ``name`` as a NumPy array in canonical layout."""
        layout = self._layouts.get(name)
        if layout is None:
            return np.array(value)
        return np.ascontiguousarray(to_canonical(np.asarray(value), layout))

    # -- one step -------------------------------------------------------------------------

    def _masks(self, batch: int) -> dict[str, tf.Tensor]:
        """What each layer's kind draws for one evaluation of a batch of ``batch``
        (:attr:`~.kinds.KerasKind.draw`: xgrad's scaled mask of an active Dropout), by path."""
        masks = {}
        for info in self.walk():
            draw = KINDS[info.kind].draw
            if draw is not None and info.layer is not None:
                drawn = draw(info.layer, info.path, (batch, *info.input_shape), self.dtype)
                if drawn is not None:
                    masks[info.path] = tf.constant(drawn)
        return masks

    @staticmethod
    def _input(x):
        """The batch as a tensor: token ids (integers, checked against the vocabulary by
        :meth:`evaluate`) as int32, floats as given."""
        x = np.asarray(x)
        return tf.constant(x.astype(np.int32) if x.dtype.kind in "iu" else x)

    def _tensor(self, y):
        y = np.asarray(y)
        return tf.constant(y, dtype=self.dtype) if y.dtype.kind == "f" else tf.constant(y)

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        runner = self._runner
        if cotangent is not None:
            step, target = runner.compiled(None, capture), tf.constant(cotangent)
        elif isinstance(loss, Loss):
            # losses without targets get an empty tensor in their place: one trace each
            target = tf.zeros((0,), self.dtype) if y is None else self._tensor(y)
            step = runner.compiled(loss, capture)
        else:  # a user's function of tensors: run eagerly, as written
            step = runner.step(_checked(loss), capture)
            target = None if y is None else self._tensor(y)
        saved = {name: var.numpy() for name, var in self._training_state.items()}
        try:
            with own_traces():
                value, out, grad_params, grad_x, grad_values, values = step(
                    self._input(x), target, self._masks(x.shape[0])
                )
            state = {
                name: self._canonical(name, var.numpy())
                for name, var in self._training_state.items()
            }
        finally:
            for name, var in self._training_state.items():
                var.assign(saved[name])
        return Gradients(
            loss=None if value is None else float(value),
            params={
                n: self._canonical(n, g) if n in self._layouts else np.asarray(g)
                for n, g in zip(self.param_names, grad_params, strict=True)
            },
            input=None if grad_x is None else np.asarray(grad_x),
            output=np.asarray(out),
            state=state,
            activations=_numpy(values) if capture else None,
            activation_grads=_numpy(grad_values) if capture else None,
        )


def _numpy(tensors: dict) -> dict[str, np.ndarray]:
    return {name: np.asarray(t) for name, t in tensors.items()}


def _checked(loss_fn):
    """A user's loss function, checked to return a scalar tensor."""

    def loss(out, y):
        value = loss_fn(out, y)
        if not tf.is_tensor(value) or value.shape.rank != 0:
            shape = getattr(value, "shape", None)
            raise InputError(
                "a loss function for a tensorflow model must return a scalar TensorFlow "
                f"tensor computed from the output, got {type(value).__name__}"
                + (f" of shape {tuple(shape)}" if shape is not None else "")
            )
        return value

    return loss
