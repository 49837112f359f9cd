"""Model sources for JAX: Flax NNX modules, Flax Linen ``(module, variables)`` pairs and
pure-JAX ``(apply_fn, params)`` pairs.

Each becomes a pure function ``f(params, x)`` over a pytree of parameters, whose dense
layers are found by reading its jaxpr (:mod:`xgrad.porting.jaxpr`). Native names are
pytree paths joined with ``/``: ``l1/kernel`` (NNX attribute ``l1``),
``params/Dense_0/kernel`` (Linen), ``dense1/w`` (a dict of arrays). Gradients come from
``jax.value_and_grad`` / ``jax.vjp`` of the user's own function; per-layer values from
the capturing interpreter over its jaxpr.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.adapters._jax_ops import jax_loss, x64
from xgrad.adapters.base import Gradients
from xgrad.errors import AlignmentError, InputError
from xgrad.params import Params
from xgrad.porting.jaxpr import Trace, analyse, capture, tree_paths
from xgrad.porting.source import DenseLayer, LayerCapture, ModelSource

__all__ = ["JaxFunctionSource", "function_source", "linen_source", "nnx_source"]


def _layer_name(kernel: str) -> str:
    return kernel.rsplit("/", 1)[0] if "/" in kernel else kernel


class JaxFunctionSource(ModelSource):
    """``f(params, x)`` with a pytree of params, read through its jaxpr.

    Args:
        fn: the pure function ``(params, x) -> output``.
        tree: the params pytree (only trainable arrays).
        framework: the label shown in reports.
        description: a short text naming the model.
        rebuild: ``tree -> native object`` (a module or pair holding those params).
        input_dim: the input width; found by trial when ``None``.
    """

    def __init__(
        self,
        fn: Callable,
        tree,
        *,
        framework: str,
        description: str,
        rebuild: Callable,
        input_dim: int | None = None,
        _layers: tuple[DenseLayer, ...] | None = None,
    ) -> None:
        self._fn = fn
        self._tree = tree
        self._rebuild = rebuild
        self.framework = framework
        self.description = description
        names, leaves, self._treedef = tree_paths(tree)
        self._names = names
        self._leaves = leaves
        arrays = [np.asarray(leaf) for leaf in leaves]
        floats = {a.dtype for a in arrays if np.issubdtype(a.dtype, np.floating)}
        if (
            not arrays
            or len(floats) != 1
            or any(not np.issubdtype(a.dtype, np.floating) for a in arrays)
        ):
            raise InputError(
                f"{description}: params must be float arrays of one dtype, got "
                f"{sorted(str(a.dtype) for a in arrays)}"
            )
        self.dtype = floats.pop().name
        self._index = {name: i for i, name in enumerate(names)}
        self.layers = _layers if _layers is not None else self._discover(input_dim)
        self._grad_fns: dict = {}

    # -- structure -------------------------------------------------------------------------

    def _trace(self, batch: int, input_dim: int) -> tuple[object, Trace]:
        x = jax.ShapeDtypeStruct((batch, input_dim), jnp.dtype(self.dtype))
        with x64(self.dtype):
            closed = jax.make_jaxpr(self._fn)(self._tree, x)
        shapes = [tuple(np.shape(leaf)) for leaf in self._leaves]
        return closed, analyse(closed, self._names, shapes)

    def _discover(self, input_dim: int | None) -> tuple[DenseLayer, ...]:
        if input_dim is not None:
            candidates = [input_dim]
        else:
            candidates = sorted(
                {d for leaf in self._leaves if np.ndim(leaf) == 2 for d in np.shape(leaf)}
            )
        found, errors = [], []
        for dim in candidates:
            try:
                _, trace = self._trace(2, dim)
            except AlignmentError as exc:
                errors.append(exc)
                continue
            except Exception as exc:  # a shape error: the wrong width, or a broken function
                if input_dim is not None:
                    text = " ".join(str(exc).split())[:300]
                    raise InputError(
                        f"{self.description} does not run on inputs of width {input_dim} "
                        f"(the width of x): {type(exc).__name__}: {text}; check that x has "
                        "the model's input width and that every kernel has the shape of "
                        "its layer (a transposed kernel?)"
                    ) from None
                continue
            if trace.layers[0].in_dim == dim:
                found.append(trace)
        if len(found) != 1:
            if errors and not found:
                raise errors[0]
            what = (
                "no input width works"
                if not found
                else f"input widths {[t.layers[0].in_dim for t in found]} all work"
            )
            raise AlignmentError(
                f"{self.description}: cannot tell the input width ({what}); "
                "pass an example input (x=...)"
            )
        trace = found[0]
        return tuple(
            DenseLayer(
                name=_layer_name(self._names[d.kernel_leaf]),
                kernel=self._names[d.kernel_leaf],
                bias=None if d.bias_leaf is None else self._names[d.bias_leaf],
                in_dim=d.in_dim,
                out_dim=d.out_dim,
                transposed=d.transposed,
            )
            for d in trace.layers
        )

    # -- weights ---------------------------------------------------------------------------

    def native_params(self) -> Params:
        out: Params = {}
        for i, layer in enumerate(self.layers):
            kernel = np.asarray(self._leaves[self._index[layer.kernel]], dtype=np.float64)
            out[f"layers.{i}.kernel"] = kernel.T.copy() if layer.transposed else kernel.copy()
            if layer.bias is not None:
                bias = np.asarray(self._leaves[self._index[layer.bias]], dtype=np.float64)
                out[f"layers.{i}.bias"] = bias.reshape(layer.out_dim).copy()
        return out

    def with_params(self, params: Params) -> JaxFunctionSource:
        leaves = list(self._leaves)
        with x64(self.dtype):
            for i, layer in enumerate(self.layers):
                kernel = np.asarray(params[f"layers.{i}.kernel"])
                if layer.transposed:
                    kernel = kernel.T
                k = self._index[layer.kernel]
                leaves[k] = jnp.asarray(kernel, dtype=self.dtype)
                if layer.bias is not None:
                    b = self._index[layer.bias]
                    bias = np.asarray(params[f"layers.{i}.bias"]).reshape(np.shape(leaves[b]))
                    leaves[b] = jnp.asarray(bias, dtype=self.dtype)
        tree = jax.tree_util.tree_unflatten(self._treedef, leaves)
        return JaxFunctionSource(
            self._fn,
            tree,
            framework=self.framework,
            description=self.description,
            rebuild=self._rebuild,
            _layers=self.layers,
        )

    def native_model(self):
        return self._rebuild(self._tree)

    # -- gradients -------------------------------------------------------------------------

    def _canonical(self, grad_leaves) -> dict[str, np.ndarray]:
        out = {}
        for i, layer in enumerate(self.layers):
            g = np.asarray(grad_leaves[self._index[layer.kernel]])
            out[f"layers.{i}.kernel"] = g.T if layer.transposed else g
            if layer.bias is not None:
                out[f"layers.{i}.bias"] = np.asarray(grad_leaves[self._index[layer.bias]]).reshape(
                    layer.out_dim
                )
        return out

    def gradients(self, x, y, loss, cotangent) -> Gradients:
        fn, tree = self._fn, self._tree
        with x64(self.dtype):
            xs = jnp.asarray(x, dtype=self.dtype)
            if cotangent is not None:
                out, pullback = jax.vjp(fn, tree, xs)
                grad_tree, grad_x = pullback(jnp.asarray(cotangent, dtype=out.dtype))
                value = None
            else:
                key = loss.name
                if key not in self._grad_fns:
                    loss_fn = jax_loss(loss)

                    def objective(t, xx, yy):
                        out = fn(t, xx)
                        return loss_fn(out, yy), out

                    self._grad_fns[key] = jax.jit(
                        jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)
                    )
                ys = None if y is None else jnp.asarray(y, dtype=self.dtype)
                (value, out), (grad_tree, grad_x) = self._grad_fns[key](tree, xs, ys)
                value = float(value)
            grad_leaves = jax.tree_util.tree_leaves(grad_tree)
            return Gradients(
                loss=value,
                params=self._canonical(grad_leaves),
                input=np.asarray(grad_x),
                output=np.asarray(out),
            )

    def capture(self, x, y, loss, cotangent) -> LayerCapture:
        closed, trace = self._trace(x.shape[0], x.shape[1])
        leaves = self._leaves
        with x64(self.dtype):
            xs = jnp.asarray(x, dtype=self.dtype)
            eps = [
                jnp.zeros((x.shape[0], layer.out_dim), dtype=self.dtype) for layer in self.layers
            ]

            def forward(e):
                return capture(closed, leaves, xs, trace, e)

            if cotangent is not None:
                (out, acts), pullback = jax.vjp(forward, eps)
                cot_acts = [jnp.zeros_like(a) for a in acts]
                (grads,) = pullback((jnp.asarray(cotangent, dtype=out.dtype), cot_acts))
            else:
                loss_fn = jax_loss(loss)
                ys = None if y is None else jnp.asarray(y, dtype=self.dtype)

                def objective(e):
                    out, acts = forward(e)
                    return loss_fn(out, ys), acts

                grads, acts = jax.grad(objective, has_aux=True)(eps)
            return LayerCapture([np.asarray(a) for a in acts], [np.asarray(g) for g in grads])


def nnx_source(module, *, input_dim: int | None = None) -> JaxFunctionSource:
    """A Flax NNX module; its ``nnx.Param`` state is the params pytree."""
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def fn(p, x):
        return nnx.merge(graphdef, p, rest)(x)

    return JaxFunctionSource(
        fn,
        params,
        framework="flax.nnx",
        description=f"flax.nnx {type(module).__name__}",
        rebuild=lambda p: nnx.merge(graphdef, p, rest),
        input_dim=input_dim,
    )


def linen_source(module, variables, *, input_dim: int | None = None) -> JaxFunctionSource:
    """A Flax Linen module with its variables; ``variables['params']`` are differentiated."""
    if not hasattr(variables, "get") or "params" not in variables:
        raise InputError(
            "a Linen model is a (module, variables) pair whose variables hold a "
            "'params' collection, e.g. module.init(key, x)"
        )
    rest = {k: v for k, v in variables.items() if k != "params"}

    def fn(tree, x):
        return module.apply({**rest, **tree}, x)

    return JaxFunctionSource(
        fn,
        {"params": variables["params"]},
        framework="flax.linen",
        description=f"flax.linen {type(module).__name__}",
        rebuild=lambda tree: (module, {**rest, **tree}),
        input_dim=input_dim,
    )


def function_source(apply_fn, params, *, input_dim: int | None = None) -> JaxFunctionSource:
    """A pure-JAX ``apply_fn(params, x)`` with its params pytree."""
    name = getattr(apply_fn, "__name__", type(apply_fn).__name__)
    return JaxFunctionSource(
        apply_fn,
        params,
        framework="jax",
        description=f"jax function {name}",
        rebuild=lambda tree: (apply_fn, tree),
        input_dim=input_dim,
    )
