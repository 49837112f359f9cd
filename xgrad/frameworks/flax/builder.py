"""A spec as a Flax NNX module built from Flax's own layers, differentiated with ``jax.grad``.

The module keeps its layers in ``self.layers`` (an ``nnx.List``), each the module its kind's
entry in :data:`~xgrad.frameworks.flax.kinds.KINDS` builds (``nnx.Linear``, ``nnx.LayerNorm``,
``nnx.RMSNorm``, ``nnx.BatchNorm``, ``nnx.Dropout``, xgrad's small modules; a residual block
is a nested module with its own ``layers``). A weight's native name is its state path:
``layers/0/kernel``, ``layers/2/layers/0/kernel``, ``layers/3/mean`` (BatchNorm's
``BatchStat``), ``layers/1/query/kernel`` (an attention's submodule). ``nnx.Linear`` stores the
kernel ``(in, out)`` like the canonical layout.

A spec starting with an ``Embedding`` takes integer ids ``(batch, tokens)``: they go in as
``int32`` and are not differentiated (``Gradients.input`` is ``None``).

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

from xgrad.errors import FrameworkError
from xgrad.frameworks.base import AbstractModel, Gradients, as_numpy_dtype, spec_layers
from xgrad.frameworks.flax.kinds import KINDS
from xgrad.frameworks.jax.builder import as_ids, takes_ids
from xgrad.frameworks.jax.ops import jax_loss, key_path_parts, x64
from xgrad.frameworks.kinds import KindNotSupportedError
from xgrad.layers import AbstractLayer
from xgrad.losses import Loss
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = ["FlaxSpecModel", "XgradModule", "linen_variables", "native_name"]


class XgradModule(nnx.Module):
    """A spec's layers in ``self.layers`` (an ``nnx.List``), each the module its kind's entry
    in :data:`~xgrad.frameworks.flax.kinds.KINDS` builds; ``__call__(x)`` gives the output.

    A residual block is an ``XgradModule`` of its own layers (``prefix``: their paths')."""

    def __init__(self, layers, input_shape, *, dtype, rngs: nnx.Rngs, prefix: str = "layers"):
        self.specs = tuple(layers)
        self.prefix = prefix

        def block(children, child_prefix, shape):
            return XgradModule(children, shape, dtype=dtype, rngs=rngs, prefix=child_prefix)

        modules = []
        shape = tuple(input_shape)
        for i, layer in enumerate(self.specs):
            path = f"{prefix}.{i}"
            with KINDS.building(layer.kind, path):
                modules.append(KINDS[layer.kind].build(layer, path, shape, dtype, rngs, block))
            shape = layer.output_shape(shape)
        self.layers = nnx.List(modules)

    def __call__(self, x):
        return self.run(x, None, {})

    def run(self, x, eps, values):
        """The output; with ``eps`` (path -> array), ``eps[path]`` is added to each layer's
        output and the result recorded in ``values`` (for per-layer gradients)."""

        def run(module, xx):
            return module.run(xx, eps, values)

        for i, (layer, module) in enumerate(zip(self.specs, self.layers, strict=True)):
            path = f"{self.prefix}.{i}"
            call = KINDS[layer.kind].call
            x = module(x) if call is None else call(layer, module, x, run)
            if eps is not None:
                x = x + eps[path]
                values[path] = x
        return x


def native_name(path: str, local: str, layer: AbstractLayer) -> str:
    """A weight's NNX state path: ``("layers.2.layers.0", "kernel", Dense)`` ->
    ``layers/2/layers/0/kernel``."""
    return f"{path}/{KINDS[layer.kind].weights[local]}".replace(".", "/")


def _layers(spec: MLP):
    by_path = dict(spec.walk())
    return spec_layers(spec, lambda path, local: native_name(path, local, by_path[path]))


@functools.lru_cache(maxsize=128)
def _structure(spec: MLP, dtype: str):
    """(graphdef, treedef of params, their canonical names, treedef of rest, its canonical
    names), built abstractly (no initialisation).

    Raises:
        FrameworkError: the module holds a weight that no kind entry names (a
            :attr:`FlaxKind.weights <xgrad.frameworks.flax.kinds.FlaxKind.weights>` slip).
    """
    with x64(dtype):
        abstract = nnx.eval_shape(
            lambda: XgradModule(
                spec.layers, spec.input_shape, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(0)
            )
        )
        graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
        p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(params)
        r_leaves, r_tree = jax.tree_util.tree_flatten_with_path(rest)
    canonical = {
        native: f"{info.path}.{local}"
        for top in _layers(spec)
        for info in top.walk()
        for local, native in info.weights.items()
    }

    def names(leaves) -> tuple[str, ...]:
        native = ["/".join(key_path_parts(path)) for path, _ in leaves]
        unnamed = [n for n in native if n not in canonical]
        if unnamed:
            raise FrameworkError(
                f"flax's module of {spec.describe()} holds {unnamed}, which no layer kind's "
                f"entry names (FlaxKind.weights in xgrad/frameworks/flax/kinds.py); it names "
                f"{sorted(canonical)}"
            )
        return tuple(canonical[n] for n in native)

    return graphdef, p_tree, names(p_leaves), r_tree, names(r_leaves)


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

    # allow_int: integer ids get a float0 "gradient", dropped in _evaluate
    grad = jax.value_and_grad(objective, argnums=(0, 2, 3), has_aux=True, allow_int=True)

    def run(params, rest, x, eps, y):
        (value, (out, aux)), grads = grad(params, rest, x, eps, y)
        return (value, out, aux, *grads)

    return jax.jit(run)


class FlaxSpecModel(AbstractModel):
    """A spec as an NNX :class:`XgradModule` holding the canonical weights."""

    framework = "flax"

    def __init__(self, spec: MLP, weights: Params, dtype: str) -> None:
        KINDS.check(spec)
        self._spec = spec
        self.dtype = dtype
        self.description = f"flax.nnx module of xgrad.MLP {spec.describe()}"
        self.input_shape = spec.input_shape
        self.output_shape = spec.output_shape
        self.layers = _layers(spec)
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
        ids = takes_ids(self._spec)
        if ids:
            x = as_ids(x)
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
                    objective, argnums=(0, 1, 2), has_aux=True, allow_int=True
                )(self._params, x, eps)
            else:
                fn = _grad_fn(self._spec, self.dtype, loss)
                last = y if cotangent is None else cotangent
                value, out, aux, gp, gx, ge = fn(self._params, self._rest, x, eps, last)
            values, stats = aux
            grads = dict(zip(self._names[0], jax.tree_util.tree_leaves(gp), strict=True))
            state = {}
            updated = {
                f"{path}.{k}"
                for path, layer in self._spec.walk()
                if layer.updates_state
                for k in layer.state_names()
            }
            if updated:
                state = dict(zip(self._names[1], jax.tree_util.tree_leaves(stats), strict=True))
                state = {k: v for k, v in state.items() if k in updated}
            return Gradients(
                loss=None if value is None else float(value),
                params={k: np.asarray(grads[k]) for k in self._spec.param_names},
                input=None if ids else np.asarray(gx),
                output=np.asarray(out),
                state={k: np.asarray(v) for k, v in state.items()},
                activations={k: np.asarray(v) for k, v in values.items()} if capture else None,
                activation_grads={k: np.asarray(v) for k, v in ge.items()} if capture else None,
            )


def linen_variables(spec: MLP, weights, dtype: str) -> dict:
    """Canonical weights as the variables of a compact Linen module calling, in the spec's
    order, the Linen module of each layer's kind (``nn.Dense``, ``nn.LayerNorm``,
    ``nn.RMSNorm``, ``nn.BatchNorm``: :attr:`FlaxKind.linen
    <xgrad.frameworks.flax.kinds.FlaxKind.linen>`), named as Linen names them (``Dense_0``,
    ``Dense_1``, ``LayerNorm_0``); parameters under ``params``, state under ``batch_stats``.

    Raises:
        KindNotSupportedError: a kind flax does not build, or a layer with weights whose kind
            has no Linen module.
    """
    KINDS.check(spec)
    counters: dict[str, int] = {}
    params: dict = {}
    stats: dict = {}
    with x64(dtype):
        for path, layer in spec.walk():
            entry = KINDS[layer.kind]
            local = (*layer.param_names(), *layer.state_names())
            if entry.linen is None:
                if local:
                    raise KindNotSupportedError(
                        f"layer {path}: flax names no Linen module for a {layer.kind} layer "
                        f"(its entry in xgrad/frameworks/flax/kinds.py has linen=None), so its "
                        f"weights {list(local)} have no Linen variables; convert to flax (NNX) "
                        "instead"
                    )
                continue
            module = f"{entry.linen}_{counters.get(entry.linen, 0)}"
            counters[entry.linen] = counters.get(entry.linen, 0) + 1
            for collection, names in ((params, layer.param_names()), (stats, layer.state_names())):
                if names:
                    collection[module] = {
                        entry.weights[n]: jnp.asarray(weights[f"{path}.{n}"], dtype=dtype)
                        for n in names
                    }
    out = {"params": params}
    if stats:
        out["batch_stats"] = stats
    return out
