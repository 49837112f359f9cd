"""Model source for Keras 3 models (Sequential or Functional) on the TensorFlow backend.

Supported layers: ``Dense``, ``Activation``, ``Dropout`` (identity: inference mode) and
``InputLayer``, connected as a chain. A Dense layer and the Activation/Dropout layers after
it form one dense layer in xgrad's sense. Native names are Keras variable paths
(``sequential/dense_1/kernel``). Gradients come from ``tf.GradientTape`` on the model
itself; per-layer values from calling its layers one after another under the tape.
"""

from __future__ import annotations

import numpy as np

from xgrad.adapters.base import Gradients
from xgrad.adapters.tensorflow import keras, tf, tf_loss
from xgrad.errors import AlignmentError
from xgrad.params import Params
from xgrad.porting.source import DenseLayer, LayerCapture, ModelSource

__all__ = ["KerasSource", "keras_activation_name", "load_keras_file"]

SUPPORTED_LAYERS = ("Dense", "Activation", "Dropout", "InputLayer")

# Keras activation names whose definition is xgrad's (value and kinks), in every dtype the
# name is used with. Keras' own float64 leaky_relu/gelu round a constant to float32 (see
# xgrad.adapters.tensorflow): the names still say which function the model computes.
_KERAS_TO_XGRAD = {
    "linear": "linear",
    "relu": "relu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "softmax": "softmax",
    "gelu": "gelu",
    "elu": "elu",
    "selu": "selu",
    "softplus": "softplus",
    "silu": "silu",
    "swish": "silu",
    "leaky_relu": "leaky_relu:0.2",
    "relu6": "relu6",
    "hard_sigmoid": "hard_sigmoid",
}


def keras_activation_name(fn) -> str | None:
    """xgrad's name for a Keras activation function, or ``None`` if it has none."""
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return None
    if isinstance(name, dict):
        name = name.get("config", {}).get("name") if name.get("module") else None
    return _KERAS_TO_XGRAD.get(name) if isinstance(name, str) else None


def _chain(model) -> list:
    """The model's layers (without InputLayer) in call order; rejects anything else."""
    layers = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]
    for layer in layers:
        kind = type(layer).__name__
        if kind not in SUPPORTED_LAYERS:
            raise AlignmentError(
                f"layer {layer.name!r} of {model.name!r} is a {kind}; xgrad ports models made "
                f"of {', '.join(SUPPORTED_LAYERS)} layers"
            )
    if not isinstance(model, keras.Sequential):
        previous = None
        for layer in layers:
            nodes = layer._inbound_nodes
            parents = [p.operation.name for n in nodes for p in n.parent_nodes]
            expected = [previous.name] if previous is not None else None
            if (
                len(nodes) != 1
                or (expected is not None and parents != expected)
                or (expected is None and len(parents) > 1)
            ):
                raise AlignmentError(
                    f"layer {layer.name!r} of {model.name!r} takes its input from {parents}; "
                    "xgrad ports models whose layers form a single chain"
                )
            previous = layer
    return layers


class KerasSource(ModelSource):
    """A Keras model; the user's model is read, never changed (transfers go to a clone)."""

    framework = "keras"

    def __init__(self, model) -> None:
        if keras.backend.backend() != "tensorflow":
            raise AlignmentError(
                f"Keras runs on the {keras.backend.backend()!r} backend; "
                "xgrad reads Keras models on KERAS_BACKEND=tensorflow"
            )
        if not model.built:
            raise AlignmentError(
                f"Keras model {model.name!r} is not built; call it once or give it a keras.Input"
            )
        self._model = model
        self.description = f"keras {type(model).__name__} {model.name!r}"
        self._groups: list[list] = []
        for layer in _chain(model):
            if type(layer).__name__ == "Dense":
                self._groups.append([layer])
            elif not self._groups:
                raise AlignmentError(
                    f"layer {layer.name!r} of {model.name!r} comes before the first Dense "
                    "layer; xgrad ports models that start with a Dense layer"
                )
            else:
                self._groups[-1].append(layer)
        if not self._groups:
            raise AlignmentError(f"Keras model {model.name!r} has no Dense layer")
        dtypes = {group[0].compute_dtype for group in self._groups}
        if len(dtypes) != 1:
            raise AlignmentError(
                f"the Dense layers of {model.name!r} compute in several dtypes "
                f"{sorted(dtypes)}; xgrad compares models of one dtype"
            )
        self.dtype = dtypes.pop()
        self.layers = tuple(self._describe(group) for group in self._groups)

    def _describe(self, group) -> DenseLayer:
        dense = group[0]
        names = [keras_activation_name(dense.activation)]
        for layer in group[1:]:
            if type(layer).__name__ == "Activation":
                names.append(keras_activation_name(layer.activation))
        active = [n for n in names if n != "linear"]
        activation = "linear" if not active else (active[0] if len(active) == 1 else None)
        kernel_path = dense.kernel.path
        return DenseLayer(
            name=kernel_path.rsplit("/", 1)[0],
            kernel=kernel_path,
            bias=dense.bias.path if dense.use_bias else None,
            in_dim=int(dense.kernel.shape[0]),
            out_dim=int(dense.kernel.shape[1]),
            activation=activation,
        )

    def native_params(self) -> Params:
        out: Params = {}
        for i, group in enumerate(self._groups):
            dense = group[0]
            out[f"layers.{i}.kernel"] = np.array(dense.kernel.numpy(), dtype=np.float64)
            if dense.use_bias:
                out[f"layers.{i}.bias"] = np.array(dense.bias.numpy(), dtype=np.float64)
        return out

    def with_params(self, params: Params) -> KerasSource:
        clone = keras.models.clone_model(self._model)
        clone.set_weights(self._model.get_weights())
        source = KerasSource(clone)
        for i, group in enumerate(source._groups):
            dense = group[0]
            dense.kernel.assign(np.asarray(params[f"layers.{i}.kernel"], dtype=self.dtype))
            if dense.use_bias:
                dense.bias.assign(np.asarray(params[f"layers.{i}.bias"], dtype=self.dtype))
        return source

    def native_model(self):
        return self._model

    def _variables(self) -> list:
        out = []
        for group in self._groups:
            out.append(group[0].kernel)
            if group[0].use_bias:
                out.append(group[0].bias)
        return out

    def _names(self) -> list[str]:
        return list(self.native_names())

    def _run(self, x, y, loss, cotangent, *, layerwise: bool):
        xs = tf.constant(np.asarray(x, dtype=self.dtype))
        variables = self._variables()
        with tf.GradientTape() as tape:
            tape.watch(xs)
            acts = []
            if layerwise:
                a = xs
                for group in self._groups:
                    for layer in group:
                        a = layer(a, training=False)
                    acts.append(a)
                out = a
            else:
                out = self._model(xs, training=False)
            value = None
            if cotangent is None:
                ys = None if y is None else tf.constant(np.asarray(y, dtype=self.dtype))
                value = tf_loss(loss)(out, ys)
        target = out if cotangent is not None else value
        cot = None if cotangent is None else tf.constant(np.asarray(cotangent, dtype=self.dtype))
        grads = tape.gradient(target, (variables, xs, acts), output_gradients=cot)
        return value, out, grads, acts

    def gradients(self, x, y, loss, cotangent) -> Gradients:
        value, out, (grad_vars, grad_x, _), _ = self._run(x, y, loss, cotangent, layerwise=False)
        params = {name: g.numpy() for name, g in zip(self._names(), grad_vars, strict=True)}
        return Gradients(
            loss=None if value is None else float(value),
            params=params,
            input=grad_x.numpy(),
            output=out.numpy(),
        )

    def capture(self, x, y, loss, cotangent) -> LayerCapture:
        _, _, (_, _, grad_acts), acts = self._run(x, y, loss, cotangent, layerwise=True)
        return LayerCapture([a.numpy() for a in acts], [g.numpy() for g in grad_acts])


def load_keras_file(path) -> object:
    """Load a ``.keras`` file in Keras safe mode: code stored in the file is never run.

    Raises:
        ModelFileError: the file is missing, not a ``.keras`` archive, truncated or
            corrupted, or holds code (a ``Lambda`` layer or another custom object) that safe
            mode refuses to run.
    """
    import zipfile
    from pathlib import Path

    from xgrad.errors import ModelFileError

    p = Path(path)
    if p.suffix.lower() != ".keras":
        raise ModelFileError(f"model file {str(p)!r}: expected a .keras file (Keras 3 format)")
    if not p.is_file():
        raise ModelFileError(f"model file {str(p)!r} does not exist")
    if not zipfile.is_zipfile(p):
        raise ModelFileError(
            f"model file {str(p)!r} is not a .keras archive (truncated or corrupted?)"
        )
    try:
        return keras.saving.load_model(p, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError, OSError...
        text = " ".join(str(exc).split())
        if "lambda" in text.lower() or "safe_mode" in text.lower():
            raise ModelFileError(
                f"model file {str(p)!r} was refused: it holds code (a Lambda layer or custom "
                "object) that would have to run to load it; xgrad loads models in Keras safe "
                "mode and never runs code from a file"
            ) from None
        raise ModelFileError(
            f"cannot load model file {str(p)!r}: {type(exc).__name__}: {text[:300]}"
        ) from None
