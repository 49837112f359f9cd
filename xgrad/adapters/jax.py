"""The model as pure ``jax.numpy`` functions, differentiated by ``jax.value_and_grad``/``jax.vjp``.

Native params are a pytree, a list with one dict per layer::

    [{"kernel": (in, out), "bias": (out,)}, ...]

and a parameter's native name is its pytree path as ``jax.tree_util.keystr`` writes it,
e.g. ``[0]['kernel']``. Compiled functions are cached per (spec, loss); ``jax.jit`` keeps
one executable per dtype and input shape beneath that. float64 runs inside
``jax.enable_x64(True)``, so the global x64 flag is never left changed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.adapters._jax_ops import jax_activation, jax_loss, x64
from xgrad.adapters.base import AbstractAdapter, AbstractModel, Gradients, LayerValues
from xgrad.losses import Loss
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["JaxAdapter", "JaxModel", "layer_fn"]

NativeParams = list[dict[str, jax.Array]]  # [{"kernel": (in, out), "bias": (out,)}, ...]


@functools.lru_cache(maxsize=256)
def layer_fn(spec: MLP):
    """A pure function ``(native_params, x) -> [(z, a), ...]`` for ``spec`` (not jitted)."""
    acts = [jax_activation(layer.act) for layer in spec.layers]

    def layers(params: NativeParams, x):
        values = []
        a = x
        for layer, act, p in zip(spec.layers, acts, params, strict=True):
            z = a @ p["kernel"]
            if layer.use_bias:
                z = z + p["bias"]
            a = act(z)
            values.append((z, a))
        return values

    return layers


def _output_fn(spec: MLP):
    layers = layer_fn(spec)
    return lambda params, x: layers(params, x)[-1][1]


@functools.lru_cache(maxsize=256)
def _grad_fn(spec: MLP, loss: Loss):
    forward = _output_fn(spec)
    loss_fn = jax_loss(loss)

    def objective(params, x, y):
        out = forward(params, x)
        return loss_fn(out, y), out

    return jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))


@functools.lru_cache(maxsize=256)
def _vjp_fn(spec: MLP):
    forward = _output_fn(spec)

    def run(params, x, cotangent):
        out, pullback = jax.vjp(forward, params, x)
        grad_params, grad_x = pullback(cotangent)
        return out, grad_params, grad_x

    return jax.jit(run)


@functools.lru_cache(maxsize=256)
def _values_fn(spec: MLP):
    return jax.jit(layer_fn(spec))


def _native_name(i: int, kind: str) -> str:
    return f"[{i}]['{kind}']"


class JaxModel(AbstractModel):
    """The spec as a pure function of a pytree of ``jax.Array`` params."""

    def __init__(self, spec: MLP, params: Params, dtype: str) -> None:
        super().__init__(spec, dtype)
        self._fns: dict[str, object] = {}
        with x64(dtype):
            self._params: NativeParams = []
            for i, layer in enumerate(spec.layers):
                entry = {"kernel": jnp.asarray(params[f"layers.{i}.kernel"], dtype=dtype)}
                if layer.use_bias:
                    entry["bias"] = jnp.asarray(params[f"layers.{i}.bias"], dtype=dtype)
                self._params.append(entry)

    @property
    def native(self) -> NativeParams:
        return self._params

    @property
    def native_names(self) -> dict[str, str]:
        names = {}
        for i, entry in enumerate(self._params):
            for kind in entry:
                names[f"layers.{i}.{kind}"] = _native_name(i, kind)
        return {k: names[k] for k in self.spec.param_shapes()}

    def _canonical(self, native: NativeParams) -> dict[str, np.ndarray]:
        flat = {}
        for i, entry in enumerate(native):
            for kind, value in entry.items():
                flat[f"layers.{i}.{kind}"] = np.asarray(value)
        return {k: flat[k] for k in self.spec.param_names}

    def export_params(self) -> Params:
        return {k: v.copy() for k, v in self._canonical(self._params).items()}

    def _value_and_grad(self, x, y, loss: Loss) -> Gradients:
        fn = self._fns.get(loss.name)
        if fn is None:  # a dict lookup per call, not a hash of the spec
            fn = self._fns[loss.name] = _grad_fn(self.spec, loss)
        with x64(self.dtype):
            (value, out), (grad_params, grad_x) = fn(self._params, x, y)
            return Gradients(
                loss=float(value),
                params=self._canonical(grad_params),
                input=np.asarray(grad_x),
                output=np.asarray(out),
            )

    def _vjp(self, x, cotangent) -> Gradients:
        with x64(self.dtype):
            out, grad_params, grad_x = _vjp_fn(self.spec)(self._params, x, cotangent)
            return Gradients(
                loss=None,
                params=self._canonical(grad_params),
                input=np.asarray(grad_x),
                output=np.asarray(out),
            )

    def _layer_values(self, x) -> list[LayerValues]:
        with x64(self.dtype):
            values = _values_fn(self.spec)(self._params, x)
            return [LayerValues(z=np.asarray(z), a=np.asarray(a)) for z, a in values]


class JaxAdapter(AbstractAdapter):
    """Pure ``jax.numpy`` model; ``jax.value_and_grad`` for losses, ``jax.vjp`` for cotangents."""

    name = "jax"
    requires = ("jax",)
    extra = "jax"

    def _build(self, spec: MLP, params: Params, dtype: str) -> JaxModel:
        return JaxModel(spec, params, dtype)
