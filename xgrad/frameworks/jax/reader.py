"""Users' JAX models as :class:`~xgrad.frameworks.base.AbstractModel` objects.

Every JAX model kind becomes one pure function ``fn(params, state, x) -> (output,
new_state)`` over two pytrees: the trainable leaves and the others (BatchNorm statistics, RNG
state). A pure-JAX ``(apply_fn, params)`` pair has no state pytree; an NNX module and a
Linen ``(module, variables)`` pair are split by the Flax package (:mod:`xgrad.frameworks.flax`).

Layers are read from the jaxpr (:mod:`xgrad.frameworks.jax.jaxpr`) and identified
numerically on a seeded probe batch. A function that does not run on floats of the given
input shape but does on integers takes token ids (an embedding first: ``jnp.take(table,
ids)``, ``nnx.Embed``): it is read on ids in ``[0, vocab)`` (``vocab`` the rows of the table
it gathers from; :mod:`xgrad.frameworks.jax.blocks` reads the embedding, attention and gated
MLP blocks) and evaluated without an input gradient.
Native names are pytree paths joined with ``/``:
``l1/kernel`` (an NNX attribute), ``params/Dense_0/kernel`` (Linen), ``0/0`` (a list of
``(W, b)`` tuples). Gradients come from ``jax.value_and_grad`` / ``jax.vjp`` of the user's
own function; per-layer values from an interpreter over its jaxpr.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from xgrad.errors import AlignmentError, InputError
from xgrad.frameworks.base import AbstractModel, Gradients, LayerInfo
from xgrad.frameworks.jax import blocks, closure, configs, jaxpr
from xgrad.frameworks.jax.ops import jax_loss, key_path_parts, x64
from xgrad.frameworks.kinds import Layout, to_canonical, to_native
from xgrad.layers import Residual
from xgrad.losses import Loss
from xgrad.params import Params

__all__ = ["JaxFunctionModel", "function_model", "tree_leaves"]

PROBE_BATCH = 16


def tree_leaves(tree) -> tuple[list[str], list, object]:
    """Flatten a pytree: ``(native names joined with '/', leaves, treedef)``."""
    with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names = ["/".join(key_path_parts(path)) for path, _ in with_path]
    return names, [leaf for _, leaf in with_path], treedef


def _float_dtype(leaves, description: str) -> str:
    dtypes = {jnp.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype)) for leaf in leaves}
    floats = {d for d in dtypes if jnp.issubdtype(d, jnp.floating)}
    if not leaves or len(floats) != 1 or floats != dtypes:
        raise InputError(
            f"{description}: trainable params must be float arrays of one dtype, got "
            f"{sorted(str(d) for d in dtypes)}"
        )
    return floats.pop().name


class JaxFunctionModel(AbstractModel):
    """A pure JAX function of (params, state, x), its layers read from its jaxpr.

    Args:
        fn: ``fn(params, state, x) -> (output, new_state)``.
        params: the trainable pytree.
        state: the non-trainable pytree (may be empty).
        framework: the label shown in reports (``jax``, ``flax.nnx``, ``flax.linen``).
        description: a short text naming the model.
        rebuild: ``(params, state) -> native object`` (the user's kind of model).
        input_shape: the shape of one example; found by trial when ``None``.
    """

    def __init__(
        self,
        fn: Callable,
        params,
        state,
        *,
        framework: str,
        description: str,
        rebuild: Callable,
        input_shape=None,
        hints: Callable[[str], dict] | None = None,
        _ids: bool = False,
        _read=None,
        _traces: dict | None = None,
        _grad_fns: dict | None = None,
    ) -> None:
        self._fn = fn
        self._hints = hints
        self._ids = _ids  # takes integer token ids (found while reading)
        self._params, self._state = params, state
        self._rebuild = rebuild
        self.framework = framework
        self.description = description
        self._p_names, self._p_leaves, self._p_tree = tree_leaves(params)
        self._s_names, self._s_leaves, self._s_tree = tree_leaves(state)
        self._param_dtype = _float_dtype(self._p_leaves, description)
        self.dtype = self._param_dtype  # until the output's dtype is known (below)
        # compiled gradient functions depend on the function and the loss only: copies made
        # by with_weights share them (a training loop would otherwise recompile every step)
        self._grad_fns: dict = {} if _grad_fns is None else _grad_fns
        self._traces: dict = {} if _traces is None else _traces
        self._captures: dict = {}
        if _read is None:
            _read = self._read(input_shape)
        (self.input_shape, self.output_shape, self.layers, self._roles, self.structure_error) = (
            _read
        )
        self.dtype = self._compute_dtype()

    # -- reading -----------------------------------------------------------------------------

    @property
    def _x_dtype(self) -> str:
        """The dtype the input goes in as: int32 token ids, else the params' dtype."""
        return "int32" if self._ids else self._param_dtype

    def _compute_dtype(self) -> str:
        """The dtype the output is computed in: lower than the params' for NNX/Linen layers
        built with ``dtype=jnp.bfloat16`` over float32 params."""
        x = jax.ShapeDtypeStruct((1, *self.input_shape), jnp.dtype(self._x_dtype))
        with x64(self._param_dtype):
            out = jax.eval_shape(self._flat_fn(), *self._p_leaves, *self._s_leaves, x)[0]
        name = jnp.dtype(out.dtype).name
        return name if jnp.issubdtype(out.dtype, jnp.floating) else self._param_dtype

    @property
    def _names(self) -> list[str]:
        return [*self._p_names, *self._s_names]

    def _flat_fn(self):
        p_tree, s_tree, n_p = self._p_tree, self._s_tree, len(self._p_leaves)
        fn = self._fn

        def flat(*args):
            """``(output, *new state leaves)`` of the leaves and ``x``."""
            params = jax.tree_util.tree_unflatten(p_tree, args[:n_p])
            state = jax.tree_util.tree_unflatten(s_tree, args[n_p:-1])
            out, new_state = fn(params, state, args[-1])
            return (out, *jax.tree_util.tree_leaves(new_state))

        return flat

    def _analysis(self, shape):
        """``(graph, read layers)`` for inputs of ``shape`` (batch included), cached."""
        key = (tuple(shape), self._x_dtype)
        if key not in self._traces:
            x = jax.ShapeDtypeStruct(key[0], jnp.dtype(self._x_dtype))
            with x64(self._param_dtype):
                closed = jax.make_jaxpr(self._flat_fn())(*self._p_leaves, *self._s_leaves, x)
            n = len(self._p_leaves) + len(self._s_leaves)
            self._traces[key] = jaxpr.analyse(closed, self._names, n)
        return self._traces[key]

    def _trace_given(self, shape):
        """:meth:`_analysis` of examples of the given ``shape``: on floats, else (they do not
        run) on integer token ids, which then stay the input's dtype."""
        try:
            return self._analysis((PROBE_BATCH, *shape))
        except AlignmentError:
            raise
        except Exception as exc:
            if self._ids:
                raise
            self._ids = True
            try:
                return self._analysis((PROBE_BATCH, *shape))
            except AlignmentError:
                raise
            except Exception:
                self._ids = False
                raise exc from None

    def _candidate_shapes(self, input_shape):
        if input_shape is not None:
            return [tuple(input_shape)]
        dims = sorted({d for leaf in self._p_leaves if np.ndim(leaf) == 2 for d in np.shape(leaf)})
        return [(d,) for d in dims]

    def _run_error(self, shape: tuple[int, ...], exc: Exception) -> str:
        """Why the model did not run on examples of ``shape``: random numbers it was given no
        key for (Flax's ``InvalidRngError``: an active Dropout), else a shape problem."""
        text = " ".join(str(exc).split())[:300]
        if type(exc).__name__ == "InvalidRngError":
            return (
                f"{self.description} draws random numbers (an active Dropout?), which xgrad's "
                f"layer reader runs without keys: {text}; compare_models reads such a model "
                "module by module instead (with a fixed key; apply_kwargs={'rngs': ...} for "
                "another)"
            )
        return (
            f"{self.description} does not run on inputs of shape {shape} (the shape of x's "
            f"examples): {type(exc).__name__}: {text}; check that x has the model's input "
            "width and that every kernel has the shape of its layer (a transposed kernel?)"
        )

    def _read(self, input_shape):
        errors, found = [], []
        for shape in self._candidate_shapes(input_shape):
            try:
                if input_shape is not None:
                    graph, layers = self._trace_given(shape)
                else:
                    graph, layers = self._analysis((PROBE_BATCH, *shape))
            except AlignmentError as exc:
                errors.append((shape, exc))
                continue
            except Exception as exc:  # the wrong width, or a broken function
                if input_shape is not None:
                    raise InputError(self._run_error(tuple(shape), exc)) from None
                continue
            found.append((shape, graph, layers))
        if len(found) != 1:
            if errors and not found:
                shape, exc = errors[0]
                return self._opaque(shape, str(exc))
            what = (
                "no input width works"
                if not found
                else (f"input shapes {[f[0] for f in found]} all work")
            )
            raise AlignmentError(
                f"{self.description}: cannot tell the input shape ({what}); pass an example "
                "input (x=...)"
            )
        shape, graph, layers = found[0]
        return self._identify(shape, graph, layers)

    def _opaque(self, shape, why: str):
        """A model whose layers cannot be read: parameters by native name only."""
        x = jax.ShapeDtypeStruct((2, *shape), jnp.dtype(self._x_dtype))
        with x64(self._param_dtype):
            out = jax.eval_shape(self._flat_fn(), *self._p_leaves, *self._s_leaves, x)[0]
        return tuple(shape), tuple(out.shape[1:]), (), {}, why

    def _record(self, graph, read, x) -> dict[int, np.ndarray]:
        """Every layer boundary's value (batch axis first, float64) for the batch ``x``, from
        one compiled run of the jaxpr."""
        ids = sorted(
            {
                i
                for layer in _walk(read)
                for i in (layer.start, layer.end, layer.pre)
                if i is not None
            }
        )

        def values(leaves, xs):
            recorded = {}

            def hook(i, value):
                if i in recorded or i not in ids_set:
                    return value
                recorded[i] = value
                return value

            jaxpr.run(graph, [*leaves, xs], hook)
            return [recorded[i] for i in ids]

        ids_set = set(ids)
        with x64(self._param_dtype):
            xs = jnp.asarray(x, dtype=self._x_dtype)
            got = jax.jit(values)([*self._p_leaves, *self._s_leaves], xs)
        return {
            i: np.moveaxis(np.asarray(v, dtype=np.float64), graph.axis.get(i) or 0, 0)
            for i, v in zip(ids, got, strict=True)
        }

    def _identify(self, shape, graph, read):
        """LayerInfo for each read layer, configs identified on a seeded probe batch."""
        rng = np.random.default_rng(0)
        if self._ids and read and read[0].kind == "embedding":
            vocab = int(np.shape(self._p_leaves[read[0].leaves["embedding"]])[0])
            probe = rng.integers(0, vocab, (PROBE_BATCH, *shape))
        else:
            probe = 4 * rng.standard_normal((PROBE_BATCH, *shape))
        values = self._record(graph, read, probe)
        arrays = [_to64(leaf) for leaf in (*self._p_leaves, *self._s_leaves)]
        dtype = self._param_dtype if self._param_dtype in ("float32", "float64") else "bfloat16"
        n_p = len(self._p_leaves)
        roles: dict[str, tuple[int, Layout | None]] = {}

        def info(layer, path, in_shape) -> LayerInfo:
            if layer.kind == "residual":
                children, s = [], in_shape
                for j, child in enumerate(layer.children):
                    children.append(info(child, f"{path}.layers.{j}", s))
                    s = children[-1].output_shape
                inner = [c.layer for c in children]
                return LayerInfo(
                    path=path,
                    kind="residual",
                    name=path,
                    layer=None if any(c is None for c in inner) else Residual(inner),
                    input_shape=in_shape,
                    output_shape=in_shape,
                    children=tuple(children),
                )
            if layer.kind in blocks.KINDS:
                config, kind, out_shape, note, layouts = blocks.configure(
                    layer, arrays, values, in_shape, dtype
                )
                stops = configs.stops_gradients(graph, before=layer.end)
                if kind == "embedding" and config is not None and stops:
                    config = self._padded(config, layer.leaves["embedding"], shape)
            else:
                config, kind, out_shape, note, layouts = configs.configure(
                    layer, arrays, values, in_shape, dtype
                )
            natives = [self._names[leaf] for leaf in layer.leaves.values() if leaf < n_p]
            name = configs.module_name(natives, path, whole=layer.kind in blocks.KINDS)
            if layer.batch_stats:
                # training mode: the moving statistics only feed the update, not the output
                layer.leaves.update(self._statistics(name))
            if self._hints is not None and natives:
                config = configs.hinted(config, self._hints(name), layer)
            params, state = {}, {}
            for role, leaf in layer.leaves.items():
                roles[f"{path}.{role}"] = (leaf, layouts.get(role))
                (params if leaf < n_p else state)[role] = self._names[leaf]
            return LayerInfo(
                path=path,
                kind=kind,
                name=name,
                layer=config,
                params=params,
                state=state,
                layouts=layouts,
                input_shape=in_shape,
                output_shape=out_shape,
                note=note,
            )

        infos, s = [], tuple(shape)
        for i, layer in enumerate(read):
            infos.append(info(layer, f"layers.{i}", s))
            s = infos[-1].output_shape
        return tuple(shape), s, tuple(infos), roles, None

    def closed_over_statistics(self) -> list[tuple[object, str]]:
        """``(array, "mean" or "var")`` for each array the function closes over that a
        normalisation takes as its moving statistics (:func:`~xgrad.frameworks.jax.jaxpr.
        statistics`), in the order of the jaxpr's constants."""
        if self.structure_error or not self.layers:
            return []
        graph = self._analysis((PROBE_BATCH, *self.input_shape))[0]
        found = jaxpr.statistics(graph, self._names, len(self._names))
        return [(graph.consts[cid], role) for cid, role in sorted(found.items())]

    def _padded(self, config, leaf: int, shape) -> object:
        """``config`` with the ``padding_idx`` the function gives its table, if any
        (:func:`~.configs.padding_row`)."""
        from dataclasses import replace

        with x64(self._param_dtype):
            row = configs.padding_row(
                self._flat_fn(), self._p_leaves, self._s_leaves, leaf, config.vocab, shape
            )
        return config if row is None else replace(config, padding_idx=row)

    def _statistics(self, name: str) -> dict[str, int]:
        """The state leaves ``.../mean`` and ``.../var`` of the module called ``name``
        (``bn`` in NNX, ``params/BatchNorm_0`` in Linen, whose statistics live in
        ``batch_stats/BatchNorm_0``)."""
        module = name.split("/", 1)[1] if name.startswith("params/") else name
        out = {}
        for k, state_name in enumerate(self._s_names):
            for role in ("mean", "var"):
                if state_name == f"{module}/{role}" or state_name.endswith(f"/{module}/{role}"):
                    out[role] = len(self._p_leaves) + k
        return out if len(out) == 2 else {}

    # -- weights -----------------------------------------------------------------------------

    @property
    def native(self):
        return self._rebuild(self._params, self._state)

    @property
    def param_names(self) -> tuple[str, ...]:
        if self.structure_error:
            return tuple(self._p_names)
        return super().param_names

    def native_names(self) -> dict[str, str]:
        if self.structure_error:
            return {n: n for n in self._names}
        return super().native_names()

    def _leaf_index(self) -> dict[str, tuple[int, Layout | None]]:
        """Canonical name -> (leaf index, the layout the leaf stores it in)."""
        if self.structure_error:
            return {n: (i, None) for i, n in enumerate(self._names)}
        return self._roles

    def _flat(self, name: str, arr) -> bool:
        """Whether a weight is flattened to a vector in canonical form: a norm's or a
        bias's stored with extra axes (``(1, d)``); kernels and the transformer kinds'
        weights keep their shapes."""
        if self.structure_error or np.ndim(arr) < 2 or name.endswith(".kernel"):
            return False
        return name.rsplit(".", 1)[0] not in self._shaped

    @property
    def _shaped(self) -> set[str]:
        return {info.path for info in self.walk() if info.kind in blocks.KINDS}

    def weights(self) -> Params:
        leaves = [*self._p_leaves, *self._s_leaves]
        out = {}
        for name, (leaf, layout) in self._leaf_index().items():
            arr = np.array(leaves[leaf])
            if self._flat(name, arr):
                arr = arr.reshape(-1)
            out[name] = np.ascontiguousarray(to_canonical(arr, layout))
        return out

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> JaxFunctionModel:
        leaves = [*self._p_leaves, *self._s_leaves]
        index = self._leaf_index()
        unknown = sorted(set(weights) - set(index))
        if unknown:
            raise InputError(
                f"{self.description} has no weight(s) {unknown}; it has {sorted(index)}"
            )
        with x64(self._param_dtype):
            for name, value in weights.items():
                leaf, layout = index[name]
                arr = to_native(np.asarray(value), layout)
                old = leaves[leaf]
                leaves[leaf] = jnp.asarray(arr.reshape(np.shape(old)), dtype=old.dtype)
        n_p = len(self._p_leaves)
        params = jax.tree_util.tree_unflatten(self._p_tree, leaves[:n_p])
        state = jax.tree_util.tree_unflatten(self._s_tree, leaves[n_p:])
        # the structure is the same; what each layer computes is identified again with the
        # new weights (an activation cannot be told from all-zero weights)
        return JaxFunctionModel(
            self._fn,
            params,
            state,
            framework=self.framework,
            description=self.description,
            rebuild=self._rebuild,
            input_shape=self.input_shape,
            hints=self._hints,
            _ids=self._ids,
            _read=None
            if not self.structure_error
            else (self.input_shape, self.output_shape, (), {}, self.structure_error),
            _traces=self._traces,
            _grad_fns=self._grad_fns,
        )

    # -- gradients ---------------------------------------------------------------------------

    def _grads(self, loss):
        # a user's loss function is its own key (held, so its id cannot be reused)
        key = loss.name if isinstance(loss, Loss) else loss
        if key not in self._grad_fns:
            fn, ids = self._fn, self._ids
            if loss is None:

                def run(params, state, x, cot):
                    if ids:  # token ids have no gradient
                        (out, new_state), vjp = jax.vjp(lambda p: fn(p, state, x), params)
                    else:
                        (out, new_state), vjp = jax.vjp(lambda p, xx: fn(p, state, xx), params, x)
                    zeros = jax.tree_util.tree_map(jnp.zeros_like, new_state)
                    gp, *gx = vjp((cot, zeros))
                    return None, out, new_state, gp, gx[0] if gx else None

                self._grad_fns[key] = jax.jit(run)
            else:
                loss_fn = jax_loss(loss) if isinstance(loss, Loss) else loss

                def objective(params, state, x, y):
                    out, new_state = fn(params, state, x)
                    return loss_fn(out, y), (out, new_state)

                grad = jax.value_and_grad(objective, argnums=(0,) if ids else (0, 2), has_aux=True)

                def run(params, state, x, y):
                    (value, (out, new_state)), (gp, *gx) = grad(params, state, x, y)
                    return value, out, new_state, gp, gx[0] if gx else None

                self._grad_fns[key] = run if not isinstance(loss, Loss) else jax.jit(run)
        return self._grad_fns[key]

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        with x64(self._param_dtype):
            xs = jnp.asarray(x, dtype=self._x_dtype)
            last = cotangent if loss is None else y
            if last is not None and isinstance(last, np.ndarray) and last.dtype.kind == "f":
                last = jnp.asarray(last, dtype=self._param_dtype)
            activations = grads = None
            if capture and self.layers:
                value, out, p_new, grad_leaves, gx, activations, grads = self._capture(
                    x, y, loss, cotangent
                )
            else:
                value, out, new_state, gp, gx = self._grads(loss)(
                    self._params, self._state, xs, last
                )
                grad_leaves = jax.tree_util.tree_leaves(gp)
                p_new = jax.tree_util.tree_leaves(new_state)
        params, state = {}, {}
        names = set(self.param_names)
        for name, (leaf, layout) in self._leaf_index().items():
            if leaf < len(grad_leaves) and name in names:
                g = to_canonical(np.asarray(grad_leaves[leaf]), layout)
                params[name] = g.reshape(-1) if self._flat(name, g) else g
        if p_new and not self.structure_error:
            n_p = len(self._p_leaves)
            changed = {
                name: np.asarray(p_new[leaf - n_p]).reshape(-1)
                for name, (leaf, _) in self._roles.items()
                if leaf >= n_p
                and leaf - n_p < len(p_new)
                and not np.array_equal(
                    np.asarray(p_new[leaf - n_p]), np.asarray(self._s_leaves[leaf - n_p])
                )
            }
            state = changed
        return Gradients(
            loss=None if value is None else float(value),
            params=params,
            input=None if gx is None else np.asarray(gx),
            output=np.asarray(out),
            state=state,
            activations=activations,
            activation_grads=grads,
        )

    def _captured(self, shape, loss):
        """A compiled ``(leaves, state leaves, x, eps, y or cotangent) -> (loss, output, new
        state leaves, dL/d leaves, dL/dx, layer outputs, dL/d layer outputs)``: gradients and
        every layer's values in one pass of the interpreter over the jaxpr."""
        key = (tuple(shape), loss.name if isinstance(loss, Loss) else id(loss))
        if key in self._captures:
            return self._captures[key]
        graph, read = self._analysis(shape)
        ends: dict[str, int] = {}

        def collect(layers, infos):
            for layer, info in zip(layers, infos, strict=True):
                collect(layer.children, info.children)
                ends[info.path] = layer.end

        collect(read, self.layers)
        targets = {v: k for k, v in ends.items()}
        loss_fn = None if loss is None else jax_loss(loss) if isinstance(loss, Loss) else loss

        def forward(leaves, state, xs, eps):
            record = {}

            def hook(i, value):
                path = targets.get(i)
                if path is None or path in record:
                    return value
                value = value + eps[path]
                record[path] = value
                return value

            outs = jaxpr.run(graph, [*leaves, *state, xs], hook)
            return outs[0], (outs[1:], record)

        ids = self._ids

        def run(leaves, state, xs, eps, last):
            if loss_fn is None:
                if ids:  # token ids have no gradient
                    out, vjp, (new_state, record) = jax.vjp(
                        lambda p, e: forward(p, state, xs, e), leaves, eps, has_aux=True
                    )
                    gp, ge = vjp(last.astype(out.dtype))
                    return None, out, new_state, gp, None, record, ge
                out, vjp, (new_state, record) = jax.vjp(
                    lambda p, xx, e: forward(p, state, xx, e), leaves, xs, eps, has_aux=True
                )
                gp, gx, ge = vjp(last.astype(out.dtype))
                return None, out, new_state, gp, gx, record, ge

            def objective(p, xx, e):
                out, (new_state, record) = forward(p, state, xx, e)
                return loss_fn(out, last), (out, new_state, record)

            argnums = (0, 2) if ids else (0, 1, 2)
            (value, (out, new_state, record)), grads = jax.value_and_grad(
                objective, argnums=argnums, has_aux=True
            )(leaves, xs, eps)
            gp, ge = grads[0], grads[-1]
            return value, out, new_state, gp, None if ids else grads[1], record, ge

        self._captures[key] = (jax.jit(run), ends, graph)
        return self._captures[key]

    def _capture(self, x, y, loss, cotangent):
        """Loss, output, new state, gradients and every layer's values, in one compiled pass."""
        fn, ends, graph = self._captured(np.shape(x), loss)
        with x64(self._param_dtype):
            xs = jnp.asarray(x, dtype=self._x_dtype)
            eps = {
                p: jnp.zeros(graph.shape(i), dtype=graph.avals[i].dtype) for p, i in ends.items()
            }
            last = cotangent if loss is None else y
            if isinstance(last, np.ndarray) and last.dtype.kind == "f":
                last = jnp.asarray(last, dtype=self._param_dtype)
            value, out, new_state, gp, gx, record, ge = fn(
                list(self._p_leaves), list(self._s_leaves), xs, eps, last
            )
        axis = graph.axis
        acts = {p: np.moveaxis(np.asarray(v), axis.get(ends[p]) or 0, 0) for p, v in record.items()}
        grads = {p: np.moveaxis(np.asarray(v), axis.get(ends[p]) or 0, 0) for p, v in ge.items()}
        return value, out, new_state, gp, gx, acts, grads


def _walk(layers):
    for layer in layers:
        yield layer
        yield from _walk(layer.children)


def _to64(leaf):
    try:
        return np.asarray(leaf, dtype=np.float64)
    except (TypeError, ValueError):
        return None


def function_model(apply_fn, params, *, input_shape=None) -> JaxFunctionModel:
    """A pure-JAX ``apply_fn(params, x)`` with its params pytree.

    Arrays ``apply_fn`` closes over that a normalisation takes as its mean and variance
    (a BatchNorm's running statistics kept out of ``params``) become its state, named as
    its code names them (:mod:`xgrad.frameworks.jax.closure`).
    """
    name = getattr(apply_fn, "__name__", type(apply_fn).__name__)

    def fn(p, state, x):
        return apply_fn(p, x), state

    model = JaxFunctionModel(
        fn,
        params,
        {},
        framework="jax",
        description=f"jax function {name}",
        rebuild=lambda p, state: (apply_fn, p),
        input_shape=input_shape,
    )
    constants = model.closed_over_statistics()
    if not constants:
        return model
    closed = closure.name_constants(apply_fn, constants)
    lifted = closure.lift(apply_fn, closed)
    with x64(model._param_dtype):
        state = closure.initial_state(closed)
    try:
        return JaxFunctionModel(
            lifted,
            params,
            state,
            framework="jax",
            description=model.description,
            rebuild=lambda p, s: (closure.bound(apply_fn, lifted, closed, s), p),
            input_shape=model.input_shape,
        )
    except (AlignmentError, InputError):  # read as code, as it was
        return model
