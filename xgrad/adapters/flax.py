"""The model as a Flax NNX module (``nnx.Linear`` layers), differentiated with ``jax.grad``.

NNX rather than Linen: it is the API Flax recommends for new code since 0.8, and its state
paths read like attribute access. The module keeps its layers in ``self.layers``
(an ``nnx.List``), so a parameter's native name is its state path, e.g. ``layers/0/kernel``.
``nnx.Linear`` stores the kernel ``(in, out)`` like the canonical layout.

Gradients: the module is split once into (graphdef, state); the jitted function merges
them and ``jax.value_and_grad`` differentiates with respect to the state and the input.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xgrad.adapters._jax_ops import jax_activation, jax_loss, key_path_parts, x64
from xgrad.adapters.base import AbstractAdapter, AbstractModel, Gradients, LayerValues
from xgrad.losses import Loss
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["FlaxAdapter", "FlaxMLP", "FlaxModel"]


class FlaxMLP(nnx.Module):
    """``spec`` as NNX: ``layers[i]`` is an ``nnx.Linear``, then the layer's activation.

    ``intermediates=True`` returns every layer's ``(z, a)`` instead of the output.
    """

    def __init__(self, spec: MLP, *, dtype, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List(
            [
                nnx.Linear(
                    n_in, n_out, use_bias=layer.use_bias, dtype=dtype, param_dtype=dtype, rngs=rngs
                )
                for layer, (n_in, n_out) in zip(spec.layers, spec.layer_dims(), strict=True)
            ]
        )
        self.activations = tuple(layer.activation for layer in spec.layers)
        self._acts = tuple(jax_activation(layer.act) for layer in spec.layers)

    def __call__(self, x, *, intermediates: bool = False):
        values = []
        for linear, act in zip(self.layers, self._acts, strict=True):
            z = linear(x)
            x = act(z)
            values.append((z, x))
        return values if intermediates else x


def _canonical_name(parts: list[str]) -> str:
    # ("layers", "0", "kernel") -> "layers.0.kernel"
    return ".".join(parts)


@functools.lru_cache(maxsize=128)
def _graphdef(spec: MLP, dtype: str):
    """The module's graph definition and state structure, built abstractly (no init)."""
    with x64(dtype):
        abstract = nnx.eval_shape(lambda: FlaxMLP(spec, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(abstract)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    names = tuple(_canonical_name(key_path_parts(path)) for path, _ in leaves)
    return graphdef, treedef, names


@functools.lru_cache(maxsize=256)
def _grad_fn(spec: MLP, dtype: str, loss: Loss):
    graphdef = _graphdef(spec, dtype)[0]
    loss_fn = jax_loss(loss)

    def objective(state, x, y):
        out = nnx.merge(graphdef, state)(x)
        return loss_fn(out, y), out

    return jax.jit(jax.value_and_grad(objective, argnums=(0, 1), has_aux=True))


@functools.lru_cache(maxsize=256)
def _vjp_fn(spec: MLP, dtype: str):
    graphdef = _graphdef(spec, dtype)[0]

    def run(state, x, cotangent):
        out, pullback = jax.vjp(lambda s, xx: nnx.merge(graphdef, s)(xx), state, x)
        grad_state, grad_x = pullback(cotangent)
        return out, grad_state, grad_x

    return jax.jit(run)


@functools.lru_cache(maxsize=256)
def _values_fn(spec: MLP, dtype: str):
    graphdef = _graphdef(spec, dtype)[0]
    return jax.jit(lambda state, x: nnx.merge(graphdef, state)(x, intermediates=True))


class FlaxModel(AbstractModel):
    """An NNX :class:`FlaxMLP` holding the canonical params."""

    def __init__(self, spec: MLP, params: Params, dtype: str) -> None:
        super().__init__(spec, dtype)
        graphdef, treedef, names = _graphdef(spec, dtype)
        with x64(dtype):
            leaves = [jnp.asarray(params[name], dtype=dtype) for name in names]
            self._state = jax.tree_util.tree_unflatten(treedef, leaves)
        self._graphdef = graphdef
        self._names = names
        self._fns: dict[str, object] = {}

    @property
    def native(self) -> FlaxMLP:
        """A live ``nnx.Module`` holding (copies of the references to) this model's state."""
        with x64(self.dtype):
            return nnx.merge(self._graphdef, self._state)

    @property
    def state(self):
        """The module's ``nnx.State`` (``nnx.Param`` leaves, paths ``layers/{i}/kernel``)."""
        return self._state

    @property
    def native_names(self) -> dict[str, str]:
        native = {name: name.replace(".", "/") for name in self._names}
        return {k: native[k] for k in self.spec.param_shapes()}

    def _canonical(self, state) -> dict[str, np.ndarray]:
        leaves = jax.tree_util.tree_leaves(state)
        flat = {name: np.asarray(leaf) for name, leaf in zip(self._names, leaves, strict=True)}
        return {k: flat[k] for k in self.spec.param_names}

    def export_params(self) -> Params:
        return {k: v.copy() for k, v in self._canonical(self._state).items()}

    def _value_and_grad(self, x, y, loss: Loss) -> Gradients:
        fn = self._fns.get(loss.name)
        if fn is None:
            fn = self._fns[loss.name] = _grad_fn(self.spec, self.dtype, loss)
        with x64(self.dtype):
            (value, out), (grad_state, grad_x) = fn(self._state, x, y)
            return Gradients(
                loss=float(value),
                params=self._canonical(grad_state),
                input=np.asarray(grad_x),
                output=np.asarray(out),
            )

    def _vjp(self, x, cotangent) -> Gradients:
        with x64(self.dtype):
            out, grad_state, grad_x = _vjp_fn(self.spec, self.dtype)(self._state, x, cotangent)
            return Gradients(
                loss=None,
                params=self._canonical(grad_state),
                input=np.asarray(grad_x),
                output=np.asarray(out),
            )

    def _layer_values(self, x) -> list[LayerValues]:
        with x64(self.dtype):
            values = _values_fn(self.spec, self.dtype)(self._state, x)
            return [LayerValues(z=np.asarray(z), a=np.asarray(a)) for z, a in values]


class FlaxAdapter(AbstractAdapter):
    """Flax NNX ``nnx.Linear`` layers; ``jax.value_and_grad`` over the split state."""

    name = "flax"
    requires = ("jax", "flax")
    extra = "jax"

    def _build(self, spec: MLP, params: Params, dtype: str) -> FlaxModel:
        return FlaxModel(spec, params, dtype)
