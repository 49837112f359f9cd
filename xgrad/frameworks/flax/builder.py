"""A spec as a Flax NNX module built from Flax's own layers, differentiated with ``jax.grad``.

The module keeps its layers in ``self.layers`` (an ``nnx.List``): ``nnx.Linear``,
``nnx.LayerNorm``, ``nnx.RMSNorm``, ``nnx.BatchNorm``, ``nnx.Dropout``, and small modules of
xgrad's for an activation, a flatten, a residual block (its own ``layers``) and an active
dropout (xgrad's mask). A weight's native name is its state path: ``layers/0/kernel``,
``layers/2/layers/0/kernel``, ``layers/3/mean`` (BatchNorm's ``BatchStat``). ``nnx.Linear``
stores the kernel ``(in, out)`` like the canonical layout.

Gradients: the module is split once into (graphdef, params, rest); a jitted function merges
them and differentiates with respect to the params and the input. NNX rather than Linen:
it is the API Flax recommends for new code, and its state paths read like attribute access.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from xgrad.frameworks.base import AbstractModel, Gradients, as_numpy_dtype
from xgrad.frameworks.jax.ops import jax_activation, jax_loss, key_path_parts, x64
from xgrad.frameworks.numpy import spec_layers
from xgrad.layers import Activation, BatchNorm, Dense, Dropout, Flatten, LayerNorm, RMSNorm
from xgrad.losses import Loss
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = ["FlaxSpecModel", "XgradModule", "linen_variables", "native_name"]


class ActivationLayer(nnx.Module):
    """An activation function as a layer (no weights)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, x):
        from xgrad.activations import get_activation

        return jax_activation(get_activation(self.name))(x)


class FlattenLayer(nnx.Module):
    """``(batch, ...) -> (batch, features)``."""

    def __call__(self, x):
        return x.reshape(x.shape[0], -1)


class MaskedDropout(nnx.Module):
    """An active dropout applying xgrad's mask (the same in every framework)."""

    def __init__(self, layer: Dropout, path: str) -> None:
        self.layer = layer
        self.path = path

    def __call__(self, x):
        return x * jnp.asarray(self.layer.scaled_mask(self.path, x.shape, np.dtype(x.dtype)))


def _make(layer, path: str, shape, dtype, rngs):
    d = shape[-1] if shape else None
    if isinstance(layer, Dense):
        return nnx.Linear(
            d, layer.units, use_bias=layer.use_bias, dtype=dtype, param_dtype=dtype, rngs=rngs
        )
    if isinstance(layer, LayerNorm):
        return nnx.LayerNorm(
            d,
            epsilon=layer.epsilon,
            use_bias=layer.center,
            use_scale=layer.scale,
            dtype=dtype,
            param_dtype=dtype,
            rngs=rngs,
        )
    if isinstance(layer, RMSNorm):
        return nnx.RMSNorm(
            d,
            epsilon=layer.epsilon,
            use_scale=layer.scale,
            dtype=dtype,
            param_dtype=dtype,
            rngs=rngs,
        )
    if isinstance(layer, BatchNorm):
        return nnx.BatchNorm(
            d,
            use_running_average=not layer.training,
            momentum=layer.momentum,
            epsilon=layer.epsilon,
            use_bias=layer.center,
            use_scale=layer.scale,
            dtype=dtype,
            param_dtype=dtype,
            rngs=rngs,
        )
    if isinstance(layer, Dropout):
        if layer.active:
            return MaskedDropout(layer, path)
        return nnx.Dropout(layer.rate, deterministic=True)
    if isinstance(layer, Activation):
        return ActivationLayer(layer.name)
    if isinstance(layer, Flatten):
        return FlattenLayer()
    if layer.children:
        return ResidualBlock(layer.children, path, shape, dtype, rngs)
    raise TypeError(f"no Flax form for layer kind {layer.kind!r}")


class XgradModule(nnx.Module):
    """A spec's layers in ``self.layers``; ``__call__(x)`` gives the output."""

    def __init__(self, layers, input_shape, *, dtype, rngs: nnx.Rngs, prefix: str = "layers"):
        self.specs = tuple(layers)
        modules = []
        shape = tuple(input_shape)
        for i, layer in enumerate(self.specs):
            modules.append(_make(layer, f"{prefix}.{i}", shape, dtype, rngs))
            shape = layer.output_shape(shape)
        self.layers = nnx.List(modules)
        self.prefix = prefix

    def __call__(self, x):
        return self.run(x, None, {})

    def run(self, x, eps, values):
        """The output; with ``eps`` (path -> array), ``eps[path]`` is added to each layer's
        output and the result recorded in ``values`` (for per-layer gradients)."""
        for i, (layer, module) in enumerate(zip(self.specs, self.layers, strict=True)):
            path = f"{self.prefix}.{i}"
            if isinstance(module, ResidualBlock):
                x = x + module.run(x, eps, values)
            else:
                x = module(x)
                if isinstance(layer, Dense) and layer.activation != "linear":
                    x = jax_activation(layer.act)(x)
            if eps is not None:
                x = x + eps[path]
                values[path] = x
        return x


class ResidualBlock(XgradModule):
    """``x + block(x)``; the block's layers in ``self.layers``."""

    def __init__(self, layers, path, shape, dtype, rngs):
        super().__init__(layers, shape, dtype=dtype, rngs=rngs, prefix=f"{path}.layers")


def native_name(path: str, local: str) -> str:
    """``layers.2.layers.0.kernel`` -> ``layers/2/layers/0/kernel``."""
    return f"{path}.{local}".replace(".", "/")


@functools.lru_cache(maxsize=128)
def _structure(spec: MLP, dtype: str):
    """(graphdef, treedef of params, params names, treedef of rest, rest names), built
    abstractly (no initialisation)."""
    with x64(dtype):
        abstract = nnx.eval_shape(
            lambda: XgradModule(
                spec.layers, spec.input_shape, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)
            )
        )
        graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
        p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(params)
        r_leaves, r_tree = jax.tree_util.tree_flatten_with_path(rest)
    p_names = tuple(".".join(key_path_parts(path)) for path, _ in p_leaves)
    r_names = tuple(".".join(key_path_parts(path)) for path, _ in r_leaves)
    return graphdef, p_tree, p_names, r_tree, r_names


def _forward(spec: MLP, dtype: str):
    graphdef = _structure(spec, dtype)[0]

    def forward(params, rest, x, eps):
        # fresh Variables at this trace level: BatchNorm's update may assign to them
        rest = jax.tree_util.tree_map(lambda a: a, rest)
        module = nnx.merge(graphdef, params, rest)
        values: dict = {}
        out = module.run(x, eps, values)
        return out, (values, nnx.state(module, nnx.BatchStat))

    return forward


@functools.lru_cache(maxsize=256)
def _grad_fn(spec: MLP, dtype: str, loss: Loss | None):
    forward = _forward(spec, dtype)
    if loss is None:

        def run(params, rest, x, eps, cotangent):
            out, vjp, aux = jax.vjp(
                lambda p, xx, e: forward(p, rest, xx, e), params, x, eps, has_aux=True
            )
            return (None, out, aux, *vjp(cotangent))

        return jax.jit(run)
    loss_fn = jax_loss(loss)

    def objective(params, rest, x, eps, y):
        out, aux = forward(params, rest, x, eps)
        return loss_fn(out, y), (out, aux)

    grad = jax.value_and_grad(objective, argnums=(0, 2, 3), has_aux=True)

    def run(params, rest, x, eps, y):
        (value, (out, aux)), grads = grad(params, rest, x, eps, y)
        return (value, out, aux, *grads)

    return jax.jit(run)


class FlaxSpecModel(AbstractModel):
    """A spec as an NNX :class:`XgradModule` holding the canonical weights."""

    framework = "flax"

    def __init__(self, spec: MLP, weights: Params, dtype: str) -> None:
        self._spec = spec
        self.dtype = dtype
        self.description = f"flax.nnx module of xgrad.MLP {spec.describe()}"
        self.input_shape = spec.input_shape
        self.output_shape = spec.output_shape
        self.layers = spec_layers(spec, native_name)
        graphdef, p_tree, p_names, r_tree, r_names = _structure(spec, dtype)
        self._graphdef = graphdef
        self._names = (p_names, r_names)
        with x64(dtype):  # cast on the host, then copied (see jax.builder.to_native)
            self._params = jax.tree_util.tree_unflatten(
                p_tree, [jnp.asarray(as_numpy_dtype(weights[n], dtype)) for n in p_names]
            )
            self._rest = jax.tree_util.tree_unflatten(
                r_tree, [jnp.asarray(as_numpy_dtype(weights[n], dtype)) for n in r_names]
            )

    @property
    def native(self) -> XgradModule:
        """A live ``nnx.Module`` holding this model's weights."""
        with x64(self.dtype):
            return nnx.merge(self._graphdef, self._params, self._rest)

    def spec(self) -> MLP:
        return self._spec

    def weights(self) -> Params:
        out = {}
        for names, tree in zip(self._names, (self._params, self._rest), strict=True):
            for name, leaf in zip(names, jax.tree_util.tree_leaves(tree), strict=True):
                out[name] = np.array(leaf)
        return {k: out[k] for k in self._spec.weight_shapes()}

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> FlaxSpecModel:
        merged = {**self.weights(), **{k: np.asarray(v) for k, v in weights.items()}}
        return FlaxSpecModel(self._spec, check_params(self._spec, merged), self.dtype)

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        with x64(self.dtype):
            eps = None
            if capture:
                eps = {
                    info.path: jnp.zeros((x.shape[0], *info.output_shape), dtype=self.dtype)
                    for info in self.walk()
                }
            if loss is not None and not isinstance(loss, Loss):
                forward = _forward(self._spec, self.dtype)
                rest = self._rest

                def objective(p, xx, e):
                    out, aux = forward(p, rest, xx, e)
                    return loss(out, y), (out, aux)

                (value, (out, aux)), (gp, gx, ge) = jax.value_and_grad(
                    objective, argnums=(0, 1, 2), has_aux=True
                )(self._params, x, eps)
            else:
                fn = _grad_fn(self._spec, self.dtype, loss)
                last = y if cotangent is None else cotangent
                value, out, aux, gp, gx, ge = fn(self._params, self._rest, x, eps, last)
            values, stats = aux
            grads = dict(zip(self._names[0], jax.tree_util.tree_leaves(gp), strict=True))
            state = {}
            if any(
                isinstance(layer, BatchNorm) and layer.training for _, layer in self._spec.walk()
            ):
                state = dict(zip(self._names[1], jax.tree_util.tree_leaves(stats), strict=True))
                trained = {
                    f"{path}.{k}"
                    for path, layer in self._spec.walk()
                    if isinstance(layer, BatchNorm) and layer.training
                    for k in ("mean", "var")
                }
                state = {k: v for k, v in state.items() if k in trained}
            return Gradients(
                loss=None if value is None else float(value),
                params={k: np.asarray(grads[k]) for k in self._spec.param_names},
                input=np.asarray(gx),
                output=np.asarray(out),
                state={k: np.asarray(v) for k, v in state.items()},
                activations={k: np.asarray(v) for k, v in values.items()} if capture else None,
                activation_grads={k: np.asarray(v) for k, v in ge.items()} if capture else None,
            )


def linen_variables(spec: MLP, weights, dtype: str) -> dict:
    """Canonical weights as the variables of a compact Linen module calling ``nn.Dense``,
    ``nn.LayerNorm``, ``nn.RMSNorm`` and ``nn.BatchNorm`` in the spec's order."""
    names = {
        "dense": "Dense",
        "layernorm": "LayerNorm",
        "rmsnorm": "RMSNorm",
        "batchnorm": "BatchNorm",
    }
    counters: dict[str, int] = {}
    params: dict = {}
    stats: dict = {}
    with x64(dtype):
        for path, layer in spec.walk():
            if layer.kind not in names:
                continue
            base = names[layer.kind]
            module = f"{base}_{counters.get(base, 0)}"
            counters[base] = counters.get(base, 0) + 1
            local = {"kernel": "kernel", "bias": "bias", "scale": "scale"}
            params[module] = {
                local[n]: jnp.asarray(weights[f"{path}.{n}"], dtype=dtype)
                for n in layer.param_names()
            }
            if layer.state_names():
                stats[module] = {
                    n: jnp.asarray(weights[f"{path}.{n}"], dtype=dtype) for n in layer.state_names()
                }
    out = {"params": params}
    if stats:
        out["batch_stats"] = stats
    return out
