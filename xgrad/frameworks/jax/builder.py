"""A spec as a pure ``jax.numpy`` function, differentiated by ``jax.value_and_grad`` / ``jax.vjp``.

Each layer is the pure function its kind's entry in :data:`~xgrad.frameworks.jax.kinds.KINDS`
gives; this module runs them in order and adds per-layer capture.

Native weights are a pytree with one dict per layer, in the layout a user writes by hand::

    [{"kernel": (in, out), "bias": (out,)},          # Dense
     {"scale": (d,), "bias": (d,)},                   # LayerNorm
     {"layers": [...]},                               # Residual
     {"scale": ..., "bias": ..., "mean": ..., "var": ...},   # BatchNorm (state beside)
     {}]                                              # weight-free layers

A weight's native name is its pytree path as ``jax.tree_util.keystr`` writes it
(``[0]['kernel']``, ``[2]['layers'][0]['kernel']``). The model's native object is the pair
``(apply_fn, params)``, with ``apply_fn(params, x) -> output``: what :func:`xgrad.compare_models`
reads as a pure-JAX model. Compiled functions are cached per (spec, loss); float64 runs
inside ``jax.enable_x64(True)``, so the global x64 flag is never left changed.

A spec starting with an ``Embedding`` takes integer ids ``(batch, tokens)``: they go in as
``int32`` and are not differentiated (ids have no gradient; ``Gradients.input`` is ``None``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.frameworks.base import AbstractModel, Gradients, as_numpy_dtype, spec_layers
from xgrad.frameworks.jax.kinds import KINDS
from xgrad.frameworks.jax.ops import jax_loss, x64
from xgrad.losses import Loss
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = ["JaxSpecModel", "apply_fn", "as_ids", "native_name", "takes_ids", "to_native"]


def takes_ids(spec: MLP) -> bool:
    """Whether ``spec`` takes integer token ids (its first layer is an ``Embedding``)."""
    return spec.layers[0].kind == "embedding"


def as_ids(x) -> np.ndarray:
    """Token ids as ``int32`` (checked in range by the caller; they may arrive as whole
    floats, cast on the way like any input)."""
    return np.asarray(x).astype(np.int32)


def native_name(path: str, local: str) -> str:
    """``layers.2.layers.0.kernel`` -> ``[2]['layers'][0]['kernel']``."""
    parts = path.split(".")[1:]
    out = f"[{parts[0]}]"
    for k in range(1, len(parts), 2):
        out += f"['layers'][{parts[k + 1]}]"
    return out + f"['{local}']"


def to_native(
    layers, weights: Mapping[str, np.ndarray], dtype: str, prefix: str = "layers"
) -> list:
    """Canonical weights -> the nested list-of-dicts pytree (``jnp`` arrays of ``dtype``).

    Each array is cast on the host (a no-op for weights already in ``dtype``) and then copied
    to the device: ``jnp.asarray(float64_array, dtype=float32)`` would compile a conversion for
    every new shape."""
    out = []
    for i, layer in enumerate(layers):
        path = f"{prefix}.{i}"
        entry = {
            name: jnp.asarray(as_numpy_dtype(weights[f"{path}.{name}"], dtype))
            for name in (*layer.param_names(), *layer.state_names())
        }
        if layer.children:
            entry["layers"] = to_native(layer.children, weights, dtype, f"{path}.layers")
        out.append(entry)
    return out


def _flatten(layers, native, prefix: str = "layers") -> dict[str, object]:
    """The pytree back to canonical names (arrays as they are)."""
    out = {}
    for i, (layer, entry) in enumerate(zip(layers, native, strict=True)):
        path = f"{prefix}.{i}"
        for name in (*layer.param_names(), *layer.state_names()):
            out[f"{path}.{name}"] = entry[name]
        if layer.children:
            out.update(_flatten(layer.children, entry["layers"], f"{path}.layers"))
    return out


def _run(layers, native, x, eps, values, state, prefix="layers"):
    """Run ``layers`` (their weights ``native``) on ``x``, each as its kind's entry in
    :data:`~xgrad.frameworks.jax.kinds.KINDS` computes it; with ``eps`` (path -> array),
    ``eps[path]`` is added to each layer's output and the result recorded in ``values``. New
    state goes into ``state`` by canonical name."""

    def block(path, children):
        return lambda w, xx: _run(children, w, xx, eps, values, state, f"{path}.layers")

    a = x
    for i, (layer, entry) in enumerate(zip(layers, native, strict=True)):
        path = f"{prefix}.{i}"
        with KINDS.building(layer.kind, path):
            forward = KINDS[layer.kind].forward(layer, path, block(path, layer.children))
            result = forward(entry, a)
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(
                    f"its forward must return (output, new_state), got {type(result).__name__}"
                )
            a, new = result[0], dict(result[1])
        state.update({f"{path}.{k}": v for k, v in new.items()})
        if eps is not None:
            a = a + eps[path]
            values[path] = a
    return a


@functools.lru_cache(maxsize=256)
def apply_fn(spec: MLP):
    """``apply_fn(params, x) -> output`` for ``spec``: plain JAX, the native model's function."""

    def apply(params, x):
        return _run(spec.layers, params, x, None, {}, {})

    apply.__name__ = apply.__qualname__ = "xgrad_mlp"
    return apply


def _forward(spec: MLP):
    def forward(params, x, eps):
        values: dict = {}
        state: dict = {}
        out = _run(spec.layers, params, x, eps, values, state)
        return out, (values, state)

    return forward


@functools.lru_cache(maxsize=256)
def _grad_fn(spec: MLP, loss: Loss | None):
    forward = _forward(spec)
    if loss is None:

        def run(params, x, eps, cotangent):
            out, vjp, aux = jax.vjp(forward, params, x, eps, has_aux=True)
            grad_params, grad_x, grad_eps = vjp(cotangent)
            return None, out, aux, grad_params, grad_x, grad_eps

        return jax.jit(run)
    loss_fn = jax_loss(loss)

    def objective(params, x, eps, y):
        out, aux = forward(params, x, eps)
        return loss_fn(out, y), (out, aux)

    # allow_int: integer ids get a float0 "gradient", dropped in _pack
    grad = jax.value_and_grad(objective, argnums=(0, 1, 2), has_aux=True, allow_int=True)

    def run(params, x, eps, y):
        (value, (out, aux)), (grad_params, grad_x, grad_eps) = grad(params, x, eps, y)
        return value, out, aux, grad_params, grad_x, grad_eps

    return jax.jit(run)


class JaxSpecModel(AbstractModel):
    """A spec as a pure JAX function of a pytree of ``jax.Array`` weights."""

    framework = "jax"

    def __init__(self, spec: MLP, weights: Params, dtype: str) -> None:
        KINDS.check(spec)
        self._spec = spec
        self.dtype = dtype
        self.description = f"jax function of xgrad.MLP {spec.describe()}"
        self.input_shape = spec.input_shape
        self.output_shape = spec.output_shape
        self.layers = spec_layers(spec, native_name)
        with x64(dtype):
            self._native = to_native(spec.layers, weights, dtype)

    @property
    def native(self):
        """``(apply_fn, params)``: ``apply_fn(params, x)`` gives the output."""
        return apply_fn(self._spec), self._native

    def spec(self) -> MLP:
        return self._spec

    def weights(self) -> Params:
        flat = _flatten(self._spec.layers, self._native)
        return {k: np.array(v) for k, v in flat.items()}

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> JaxSpecModel:
        merged = {**self.weights(), **{k: np.asarray(v) for k, v in weights.items()}}
        return JaxSpecModel(self._spec, check_params(self._spec, merged), self.dtype)

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        if takes_ids(self._spec):
            x = as_ids(x)
        if loss is not None and not isinstance(loss, Loss):
            return self._evaluate_custom(x, y, loss, capture)
        fn = _grad_fn(self._spec, loss)
        with x64(self.dtype):
            eps = None
            if capture:
                shapes = {info.path: info.output_shape for info in self.walk()}
                eps = {p: jnp.zeros((x.shape[0], *s), dtype=self.dtype) for p, s in shapes.items()}
            last = y if cotangent is None else cotangent
            value, out, (values, state), grad_params, grad_x, grad_eps = fn(
                self._native, x, eps, last
            )
            return self._pack(value, out, values, state, grad_params, grad_x, grad_eps, capture)

    def _evaluate_custom(self, x, y, loss_fn, capture) -> Gradients:
        forward = _forward(self._spec)
        with x64(self.dtype):
            eps = None
            if capture:
                shapes = {info.path: info.output_shape for info in self.walk()}
                eps = {p: jnp.zeros((x.shape[0], *s), dtype=self.dtype) for p, s in shapes.items()}

            def objective(params, xx, e):
                out, aux = forward(params, xx, e)
                return loss_fn(out, y), (out, aux)

            (value, (out, (values, state))), (gp, gx, ge) = jax.value_and_grad(
                objective, argnums=(0, 1, 2), has_aux=True, allow_int=True
            )(self._native, x, eps)
            return self._pack(value, out, values, state, gp, gx, ge, capture)

    def _pack(self, value, out, values, state, grad_params, grad_x, grad_eps, capture) -> Gradients:
        grads = _flatten(self._spec.layers, grad_params)
        return Gradients(
            loss=None if value is None else float(value),
            params={k: np.asarray(grads[k]) for k in self._spec.param_names},
            input=None if takes_ids(self._spec) else np.asarray(grad_x),
            output=np.asarray(out),
            state={k: np.asarray(v) for k, v in state.items()},
            activations={k: np.asarray(v) for k, v in values.items()} if capture else None,
            activation_grads={k: np.asarray(v) for k, v in grad_eps.items()} if capture else None,
        )
