"""Read the layers of a JAX function from its jaxpr, and evaluate it capturing each layer.

A function ``f(params, state, x)`` is traced once per input shape and its jaxpr flattened
(nested ``jit`` calls inlined; ``custom_jvp``/``custom_vjp`` calls kept whole so that their
derivative rules stay in force). Then:

1. **The stream**: every value that depends on ``x``, with the position of its batch axis
   (``jax.vmap`` moves it: ``jnp.dot(W, x)`` per example gives ``(out, batch)`` values).
2. **Cut points**: stream values that every path from ``x`` to the output passes through.
   Between two cut points lies a *segment*: one matmul, a bias add, an activation, a whole
   normalisation, or a whole residual block ``x + f(x)`` (``x`` stays alive across it).
3. **Layers**: segments grouped by what they do with the parameters: a matmul of the stream
   with a 2-D leaf (a kernel, stored ``(in, out)`` or ``(out, in)`` as its contraction says)
   and the bias added after it; reductions over the features with per-feature scale and
   shift (a norm; over the batch axis: BatchNorm in training mode); elementwise functions
   (activations); random masks (dropout in training mode); a reshape of the input
   (flatten); a residual block, read recursively. What a layer computes exactly (which
   activation, which norm and epsilon) is identified numerically afterwards
   (:mod:`xgrad.identify`), from values captured by :func:`run`.

Anything else that touches a parameter is reported as unsupported rather than guessed at.

Arrays the function closes over (``mean``, ``var`` of a BatchNorm ported by hand) are code to
this reading, except where :func:`statistics` finds a normalisation taking them as its mean
and variance: the reader then passes them in as state (running statistics) and reads again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from xgrad.errors import AlignmentError
from xgrad.frameworks.jax import blocks, chains, windows

__all__ = ["Graph", "ReadLayer", "analyse", "run", "statistics"]

_CALLS = {"jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"}
_LAYOUT = {
    "reduce_precision",
    "convert_element_type",
    "reshape",
    "broadcast_in_dim",
    "squeeze",
    "expand_dims",
    "copy",
    "copy_p",
    "transpose",
}
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "argmax", "argmin"}
_RANDOM = {"random_bits", "random_wrap", "random_unwrap", "threefry2x32", "random_seed"}
_ROOTS = {"rsqrt", "sqrt", "pow", "div", "integer_pow"}


def _is_literal(v) -> bool:
    return isinstance(v, jcore.Literal)


@dataclass
class Node:
    """One primitive application of the flattened jaxpr (``ins``: value ids or literals)."""

    eqn: object
    ins: list
    outs: list[int]

    @property
    def name(self) -> str:
        return self.eqn.primitive.name


class Graph:
    """A jaxpr flattened into one list of nodes over integer value ids."""

    def __init__(self, closed) -> None:
        self.nodes: list[Node] = []
        self.consts: dict[int, object] = {}
        self.avals: dict[int, object] = {}
        self.inputs = [self._new(v.aval) for v in closed.jaxpr.invars]
        self.outputs = self._flatten(closed.jaxpr, closed.consts, self.inputs)

    def _new(self, aval) -> int:
        i = len(self.avals)
        self.avals[i] = aval
        return i

    def shape(self, i: int) -> tuple[int, ...]:
        return tuple(self.avals[i].shape)

    def _flatten(self, jaxpr, consts, in_ids) -> list[int]:
        env = {}
        for v, c in zip(jaxpr.constvars, consts, strict=True):
            i = self._new(v.aval)
            self.consts[i] = c
            env[v] = i
        for v, i in zip(jaxpr.invars, in_ids, strict=True):
            env[v] = i

        def ref(v):
            if _is_literal(v):
                i = self._new(v.aval)
                self.consts[i] = v.val
                return i
            return env[v]

        for eqn in jaxpr.eqns:
            sub = None
            if eqn.primitive.name in _CALLS:
                sub = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
            if sub is not None:
                if not isinstance(sub, jcore.ClosedJaxpr):
                    sub = jcore.ClosedJaxpr(sub, ())
                outs = self._flatten(sub.jaxpr, sub.consts, [ref(v) for v in eqn.invars])
            else:
                ins = [v if _is_literal(v) else env[v] for v in eqn.invars]
                outs = [self._new(v.aval) for v in eqn.outvars]
                self.nodes.append(Node(eqn, ins, outs))
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        return [ref(v) for v in jaxpr.outvars]


def run(graph: Graph, inputs, hook=None, consts=None):
    """Evaluate the graph on ``inputs`` (one per graph input), binding every primitive as
    it was traced (so custom derivative rules stay in force). ``hook(id, value)`` may
    replace any value as it is produced (used to add perturbations and record values);
    ``consts`` (id -> value) replaces closed-over constants. Returns the graph's outputs."""
    vals = {**graph.consts, **(consts or {})}
    for i, v in zip(graph.inputs, inputs, strict=True):
        vals[i] = hook(i, v) if hook else v
    for node in graph.nodes:
        eqn = node.eqn
        invals = [v.val if _is_literal(v) else vals[v] for v in node.ins]
        params = eqn.primitive.get_bind_params(eqn.params)
        with eqn.ctx.manager:
            outs = eqn.primitive.bind(*invals, **params)
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for o, val in zip(node.outs, outs, strict=True):
            vals[o] = hook(o, val) if hook else val
    return [vals[o] for o in graph.outputs]


# -- the stream and its batch axis -----------------------------------------------------------


def _batch_axis(node: Node, graph: Graph, axis: dict[int, int | None], stream) -> int | None:
    """Where the batch axis of ``node``'s (first) output is, from its stream input."""
    name = node.name
    src = next((v for v in node.ins if not _is_literal(v) and v in stream), None)
    a = axis.get(src)
    if a is None:
        return None
    p = node.eqn.params
    out_shape = graph.shape(node.outs[0])
    if name == "broadcast_in_dim":
        return p["broadcast_dimensions"][a]
    if name == "transpose":
        return list(p["permutation"]).index(a)
    if name in _REDUCE:
        axes = p.get("axes", ())
        return None if a in axes else a - sum(1 for ax in axes if ax < a)
    if name == "squeeze":
        dims = p["dimensions"]
        return None if a in dims else a - sum(1 for d in dims if d < a)
    if name == "expand_dims":
        for d in sorted(p["dimensions"]):
            if d <= a:
                a += 1
        return a
    if name == "reshape":
        in_shape = graph.shape(src)
        before = int(np.prod(in_shape[:a]))
        for k in range(len(out_shape)):
            if int(np.prod(out_shape[:k])) == before and out_shape[k] == in_shape[a]:
                return k
        return None
    if name == "dot_general":
        (lc, rc), (lb, rb) = p["dimension_numbers"]
        lhs, rhs = node.ins
        n_lhs = len(graph.shape(lhs)) if not _is_literal(lhs) else 0
        if not _is_literal(lhs) and lhs in stream and axis.get(lhs) is not None:
            al = axis[lhs]
            if al in lb:
                return list(lb).index(al)
            free = [d for d in range(n_lhs) if d not in lc and d not in lb]
            return len(lb) + free.index(al) if al in free else None
        ar = axis.get(rhs)
        if ar is None:
            return None
        if ar in rb:
            return list(rb).index(ar)
        free_l = [d for d in range(n_lhs) if d not in lc and d not in lb]
        free_r = [d for d in range(len(graph.shape(rhs))) if d not in rc and d not in rb]
        return len(lb) + len(free_l) + free_r.index(ar) if ar in free_r else None
    if len(out_shape) == len(graph.shape(src)):
        return a
    return None


# -- layers ------------------------------------------------------------------------------------


@dataclass
class ReadLayer:
    """One layer found in the jaxpr.

    Attributes:
        kind: ``dense``, ``norm``, ``activation``, ``dropout``, ``flatten``, ``residual``,
            ``embedding`` (a gather of rows of a table by the integer input), ``attention``
            (projections by kernels ``(dim, N, hd)``, the code between, and the output
            projection by one ``(H, hd, dim)``), ``gated_mlp`` (two kernels on the same
            input, multiplied, then a third).
        leaves: local role -> leaf index (``kernel``, ``bias``, ``scale``, ``mean``, ``var``;
            the canonical names of the transformer kinds: ``query_kernel``, ...).
        transposed: the kernel is stored ``(out, in)``.
        start, end: ids of the values entering and leaving the layer.
        pre: for a dense layer, the id of ``x @ W + b`` (before the activation).
        batch_stats: a norm normalising by batch statistics (training mode).
        constants: literal numbers in the layer (epsilon candidates).
        children: a residual block's layers.
    """

    kind: str
    start: int
    end: int
    leaves: dict[str, int] = field(default_factory=dict)
    transposed: bool = False
    pre: int | None = None
    batch_stats: bool = False
    constants: list[float] = field(default_factory=list)
    children: list[ReadLayer] = field(default_factory=list)
    scaling: bool = False  # only multiplies or divides by constants (a dropout's 1 / keep)
    reduced: bool = False  # computes statistics of its input (LayerNorm, RMSNorm, training BN)
    flipped: list[str] = field(default_factory=list)  # kernels of a block stored (out, in)
    op: tuple | None = None  # a conv's or pool's (op, primitive params, operand shape)
    layout: tuple[int, ...] | None = None  # the layout a conv's kernel is stored in


class _Analyser:
    """Reads the layers of one flattened jaxpr.

    With ``constants``, every closed-over float array used once is a *constant leaf* too
    (index ``n_leaves + k``), which may only take a norm's ``mean`` (subtracted from the
    stream) or ``var`` (under a root): elsewhere it stays code (:func:`statistics`).
    """

    def __init__(
        self, graph: Graph, names: list[str], n_leaves: int, *, constants: bool = False
    ) -> None:
        self.g = graph
        self.names = list(names)
        self.n = n_leaves
        self.x = graph.inputs[n_leaves]
        self.producer: dict[int, int] = {}
        for k, node in enumerate(graph.nodes):
            for o in node.outs:
                self.producer[o] = k
        self._live_nodes()
        self.constant_leaves: dict[int, int] = {}  # constant leaf index -> const id
        if constants:
            self._constant_leaves()
        self._mark()

    def _constant_leaves(self) -> None:
        uses = Counter(v for k in self.live for v in self.g.nodes[k].ins if not _is_literal(v))
        for cid, value in self.g.consts.items():
            dtype = getattr(value, "dtype", None)
            if (
                uses[cid] == 1
                and np.ndim(value) >= 1
                and dtype is not None
                and jnp.issubdtype(dtype, jnp.floating)
            ):
                leaf = self.n + len(self.constant_leaves)
                self.constant_leaves[leaf] = cid
                self.names.append(f"<closed-over array {len(self.constant_leaves)}>")

    def fail(self, text: str):
        raise AlignmentError(text)

    def new(self, *args, **kwargs) -> ReadLayer:
        """A :class:`ReadLayer` (for :mod:`~xgrad.frameworks.jax.blocks`)."""
        return ReadLayer(*args, **kwargs)

    def _live_nodes(self) -> None:
        needed = {self.g.outputs[0]}
        live = []
        for k in range(len(self.g.nodes) - 1, -1, -1):
            node = self.g.nodes[k]
            if any(o in needed for o in node.outs):
                live.append(k)
                needed.update(v for v in node.ins if not _is_literal(v))
        self.live = sorted(live)

    def _mark(self) -> None:
        """Stream flags, batch axes, parameter origins (through layout ops), static deps."""
        g = self.g
        self.stream = {self.x}
        self.axis: dict[int, int | None] = {self.x: 0}
        leaves = {i: k for k, i in enumerate(g.inputs[: self.n])}
        leaves.update({cid: leaf for leaf, cid in self.constant_leaves.items()})
        self.origin: dict[int, tuple[int, bool]] = {i: (k, False) for i, k in leaves.items()}
        self.static: dict[int, dict[int, bool]] = {i: {k: False} for i, k in leaves.items()}
        self.random: set[int] = set()
        self.added: dict[int, list[float]] = {}  # static value -> numbers added on its way
        for k in self.live:
            node = g.nodes[k]
            ins = [v for v in node.ins if not _is_literal(v)]
            if any(v in self.stream for v in ins):
                for o in node.outs:
                    self.stream.add(o)
                self.axis[node.outs[0]] = _batch_axis(node, g, self.axis, self.stream)
                continue
            deps: dict[int, bool] = {}
            for v in ins:
                for leaf, rooted in self.static.get(v, {}).items():
                    deps[leaf] = deps.get(leaf, False) or rooted or node.name in _ROOTS
            rnd = node.name in _RANDOM or any(v in self.random for v in ins)
            for o in node.outs:
                if deps:
                    self.static[o] = deps
                    self.added[o] = self._added(node, ins)
                if rnd:
                    self.random.add(o)
            if node.name in _LAYOUT and len(ins) == 1 and ins[0] in self.origin:
                leaf, t = self.origin[ins[0]]
                if node.name == "transpose" and tuple(node.eqn.params["permutation"]) == (1, 0):
                    t = not t
                self.origin[node.outs[0]] = (leaf, t)

    def _added(self, node: Node, ins: list[int]) -> list[float]:
        """The numbers added to a static value so far: ``var + 1e-5`` before its root (the
        epsilon of a norm whose variance is a parameter, state or closed-over array)."""
        out = [x for v in ins for x in self.added.get(v, ())]
        if node.name in ("add", "add_any"):
            for v in node.ins:
                value = v.val if _is_literal(v) else self.g.consts.get(v)
                if value is not None and np.ndim(value) == 0:
                    try:
                        out.append(float(value))
                    except (TypeError, ValueError):  # a key or another non-number
                        pass
        return out

    # -- cut points ------------------------------------------------------------------------

    def cuts(self, nodes: list[int], source: int, sink: int) -> list[int]:
        """Stream values every path from ``source`` to ``sink`` passes through, in order."""
        last: dict[int, int] = {}
        for pos, k in enumerate(nodes):
            for v in self.g.nodes[k].ins:
                if not _is_literal(v) and v in self.stream:
                    last[v] = pos
        last[sink] = len(nodes)
        out = [source]
        live = {source} if last.get(source, -1) >= 0 else set()
        for pos, k in enumerate(nodes):
            for o in self.g.nodes[k].outs:
                if o in self.stream and last.get(o, -1) > pos:
                    live.add(o)
            live = {v for v in live if last.get(v, -1) > pos}
            if len(live) == 1:
                (v,) = live
                if v != out[-1]:
                    out.append(v)
        if out[-1] != sink:
            out.append(sink)
        return out

    def _between(self, nodes: list[int], a: int, b: int) -> list[int]:
        lo = self.producer.get(a, -1)
        hi = self.producer[b]
        return [
            k for k in nodes if lo < k <= hi and any(o in self.stream for o in self.g.nodes[k].outs)
        ]

    # -- segments --------------------------------------------------------------------------

    def _leaf_of(self, v) -> tuple[int, bool] | None:
        return None if _is_literal(v) else self.origin.get(v)

    def describe(self, seg: list[int], a: int, b: int) -> dict:
        g = self.g
        info = {
            "dots": [],
            "scale": [],
            "shift": [],
            "sub": [],
            "static": {},
            "reduce_features": False,
            "reduce_batch": False,
            "random": False,
            "reshape": False,
            "layout": all(g.nodes[k].name in _LAYOUT for k in seg),
            "scaling": all(g.nodes[k].name in ("mul", "div", *_LAYOUT) for k in seg),
            "constants": [],
            "other": [],
            "gathers": [],
            "stream_mul": False,
            "entering": [],  # (value, primitive): parameters added or multiplied in
            "convs": [],
            "seg": seg,
        }
        for k in seg:
            node = g.nodes[k]
            name = node.name
            stream_in = [v for v in node.ins if not _is_literal(v) and v in self.stream]
            other = [v for v in node.ins if _is_literal(v) or v not in self.stream]
            if name == "mul" and len(stream_in) == 2:
                info["stream_mul"] = True
            if name == "gather" and stream_in == node.ins[1:2] and not _is_literal(node.ins[0]):
                table = self.table(node.ins[0])
                if table is not None:  # rows of a parameter, picked by integer ids
                    info["gathers"].append(table)
                    continue
            for v in other:
                if _is_literal(v):
                    try:
                        info["constants"].append(float(v.val))
                    except (TypeError, ValueError):
                        pass
                elif v in self.consts_scalar():
                    info["constants"].append(float(np.asarray(g.consts[v])))
            if name in _REDUCE:
                if self.axis.get(stream_in[0]) in node.eqn.params.get("axes", ()):
                    info["reduce_batch"] = True
                else:
                    info["reduce_features"] = True
            if name == "reshape" and len(g.shape(node.outs[0])) < len(g.shape(stream_in[0])):
                info["reshape"] = True
            for v in other:
                if _is_literal(v):
                    continue
                if v in self.random:
                    info["random"] = True
                origin = self._leaf_of(v)
                if name in chains.ENTERING and (origin is not None or v in self.static):
                    info["entering"].append((v, name))
                if origin is not None and origin[0] >= self.n:
                    # a closed-over array: a mean where it is subtracted from the stream
                    if name == "sub" and node.ins[0] in self.stream:
                        info["sub"].append(origin[0])
                elif origin is not None:
                    leaf, t = origin
                    if name == "dot_general":
                        info["dots"].append((k, leaf, t, v))
                    elif name == "conv_general_dilated":
                        info["convs"].append((k, leaf, t, v))
                    elif name == "mul":
                        info["scale"].append(leaf)
                    elif name == "add" or name == "add_any":
                        info["shift"].append(leaf)
                    elif name == "sub" and node.ins[0] in self.stream:
                        info["sub"].append(leaf)
                    else:
                        info["other"].append((name, leaf))
                elif v in self.static:
                    for leaf, rooted in self.static[v].items():
                        if leaf < self.n or rooted:  # a closed-over array: a variance
                            info["static"][leaf] = info["static"].get(leaf, False) or rooted
                        if rooted:
                            info["constants"] += self.added.get(v, [])
        return info

    def table(self, v: int) -> int | None:
        """The leaf a gather's operand is, through layout ops or code on it alone (a padding
        row's ``table.at[row].set(stop_gradient(table[row]))``), else ``None``."""
        origin = self._leaf_of(v)
        if origin is not None:
            return origin[0] if origin[0] < self.n and not origin[1] else None
        deps = self.static.get(v, {})
        return next(iter(deps)) if len(deps) == 1 and next(iter(deps)) < self.n else None

    def consts_scalar(self) -> set[int]:
        return {i for i, c in self.g.consts.items() if np.ndim(c) == 0}

    def _residual(self, seg: list[int], a: int, b: int):
        """``(inner output id, inner nodes)`` if the segment is ``a + f(a)``, else None."""
        last = self.g.nodes[self.producer[b]]
        if last.name not in ("add", "add_any") or len(last.ins) != 2:
            return None
        x_side = None
        for idx, v in enumerate(last.ins):
            w = v
            while (
                not _is_literal(w)
                and w != a
                and w in self.producer
                and self.g.nodes[self.producer[w]].name in _LAYOUT
            ):
                w = self.g.nodes[self.producer[w]].ins[0]
            if w == a:
                x_side = idx
        if x_side is None:
            return None
        inner = last.ins[1 - x_side]
        if _is_literal(inner) or inner not in self.stream or inner == a:
            return None
        inner_nodes = [
            k for k in seg if k != self.producer[b] and self.producer.get(inner, -1) >= k
        ]
        return inner, inner_nodes

    def chain(self, nodes: list[int], source: int, sink: int) -> list[ReadLayer]:
        """The layers between ``source`` and ``sink``."""
        points = self.cuts(nodes, source, sink)
        layers: list[ReadLayer] = []
        for a, b in zip(points[:-1], points[1:], strict=True):
            seg = self._between(nodes, a, b)
            res = self._residual(seg, a, b)
            if res is not None:
                inner, inner_nodes = res
                children = self.chain(inner_nodes, a, inner)
                if any(child.leaves for child in children):
                    layers.append(ReadLayer("residual", a, b, children=children))
                    continue
            self._add(layers, self.describe(seg, a, b), a, b)
        return layers

    def _param(self, leaf: int) -> str:
        return self.names[leaf]

    def _add(self, layers: list[ReadLayer], d: dict, a: int, b: int) -> None:
        last = layers[-1] if layers and layers[-1].end == a else None
        if blocks.read_embedding(self, layers, d, a, b, last) or blocks.extend(last, d, b):
            return
        if windows.read_window(self, layers, d, a, b, last):
            return
        for name, leaf in d["other"]:
            self.fail(
                f"parameter {self._param(leaf)!r} is used by '{name}' in a way xgrad does not "
                "read (a recurrent scan or custom layer?); xgrad reads dense layers, "
                "embeddings, convolutions (lax.conv_general_dilated), max/average pooling "
                "(lax.reduce_window), layer/RMS/batch/group norms, dropout, flatten, "
                "elementwise activations and residual blocks"
            )
        reduces = d["reduce_features"] or d["reduce_batch"]
        has_params = bool(d["scale"] or d["shift"] or d["sub"] or d["static"])
        if d["dots"] and blocks.read_block(self, layers, d, a, b, last):
            return
        if d["dots"]:
            self._dense(layers, d, a, b)
            return
        if d["random"]:
            if last is not None and last.kind == "activation" and last.scaling:
                last.kind = "dropout"  # x / keep_probability, then the random mask
                last.end = b
            else:
                layers.append(ReadLayer("dropout", a, b))
            return
        if not has_params:
            self._add_weight_free(layers, d, a, b, last, reduces)
            return
        chains.refuse_tables(self, d["entering"])
        only_shift = len(d["shift"]) == 1 and not (d["scale"] or d["sub"] or d["static"] or reduces)
        if only_shift and blocks.read_bias(last, d, b):
            return
        if (
            only_shift
            and last is not None
            and last.kind == "dense"
            and "bias" not in last.leaves
            and last.pre == last.end
        ):
            last.leaves["bias"] = d["shift"][0]
            last.end = last.pre = b
            return
        if last is not None and last.kind in ("reduce", "norm") and not reduces:
            new = ReadLayer("norm", a, b)
            self._roles(new, d)
            allowed = {"scale", "bias"} if last.reduced else {"scale", "bias", "mean", "var"}
            if set(new.leaves) <= allowed - set(last.leaves):
                last.kind = "norm"  # the per-feature terms after (or of) a normalisation
                self._roles(last, d)
                last.end = b
                last.constants += d["constants"]
                return
        layer = ReadLayer(
            "norm",
            a,
            b,
            batch_stats=d["reduce_batch"],
            constants=list(d["constants"]),
            reduced=bool(reduces),
        )
        self._roles(layer, d)
        layers.append(layer)

    def _add_weight_free(self, layers, d: dict, a: int, b: int, last, reduces) -> None:
        """A segment without parameters: a flatten, a layout change, the statistics of a
        norm, an activation (of the dense layer before it, or of its own)."""
        if d["reshape"] and last is None:
            layers.append(ReadLayer("flatten", a, b))
        elif d["reshape"] or d["layout"]:
            # a transpose, cast or rounding: part of no layer, except before a dense
            # layer's bias (vmap's transposes), where the bias add still follows
            if last is not None and last.kind == "dense" and last.pre == last.end:
                last.pre = last.end = b
            elif last is not None and last.kind == "reduce":
                windows.regroup(self, last, b)  # a GroupNorm's (..., G, C/G) statistics
        elif reduces and last is not None and last.kind in ("reduce", "norm") and not last.leaves:
            last.end = b
            last.batch_stats |= d["reduce_batch"]
            last.constants += d["constants"]
        elif reduces:
            layers.append(
                ReadLayer(
                    "reduce",
                    a,
                    b,
                    batch_stats=d["reduce_batch"],
                    constants=d["constants"],
                    reduced=True,
                )
            )
        elif last is not None and last.kind in ("dense", "activation"):
            last.end = b  # an elementwise function after a dense layer: its activation
        elif last is not None and last.kind == "embedding" and d["scaling"]:
            last.end = b  # rows times a constant: the embedding's scale
        else:
            layers.append(
                ReadLayer("activation", a, b, constants=d["constants"], scaling=d["scaling"])
            )

    def _dense(self, layers: list[ReadLayer], d: dict, a: int, b: int) -> None:
        if len(d["dots"]) > 1 or d["scale"] or d["shift"] or d["sub"]:
            names = [self._param(dot[1]) for dot in d["dots"]]
            self.fail(
                f"parameters {names} are combined in one step xgrad cannot read as a dense layer"
            )
        k, leaf, t, v = d["dots"][0]
        node = self.g.nodes[k]
        (lc, rc), (lb, rb) = node.eqn.params["dimension_numbers"]
        shape = self.g.shape(self.g.inputs[leaf])
        if len(shape) != 2 or lb or rb:
            self.fail(
                f"parameter {self._param(leaf)!r} of shape {shape} is used in a matmul xgrad "
                "cannot read as a dense kernel"
            )
        contracted = (lc if node.ins[0] == v else rc)[0]
        transposed = (contracted == 1) != t
        layers.append(ReadLayer("dense", a, b, {"kernel": leaf}, transposed=transposed, pre=b))

    def _roles(self, layer: ReadLayer, d: dict) -> None:
        roles = layer.leaves
        for leaf in d["sub"]:
            roles.setdefault("mean", leaf)
        for leaf, rooted in d["static"].items():
            if rooted:
                roles.setdefault("var", leaf)
            elif leaf not in roles.values():
                roles.setdefault("scale", leaf)
        for leaf in d["scale"]:
            if leaf not in roles.values():
                roles.setdefault("scale", leaf)
        for leaf in d["shift"]:
            if leaf not in roles.values():
                roles.setdefault("bias", leaf)


def analyse(closed, names: list[str], n_leaves: int) -> tuple[Graph, list[ReadLayer]]:
    """The layers of ``closed`` = ``jax.make_jaxpr(f)(*leaves, x)`` (``n_leaves`` weight
    leaves named ``names``, then the input).

    Raises:
        AlignmentError: something touches a parameter in a way xgrad does not read.
    """
    graph = Graph(closed)
    chains.regroup_biases(graph, graph.inputs[n_leaves])
    analyser = _Analyser(graph, names, n_leaves)
    out = graph.outputs[0]
    if out not in analyser.stream:
        raise AlignmentError("the model's output does not depend on its input")
    layers = analyser.chain(analyser.live, analyser.x, out)
    problem = blocks.check(layers) or chains.shape_problem(graph, analyser.axis, layers, names)
    if problem:
        raise AlignmentError(problem)
    used: dict[int, str] = {}

    def check(layer_list, where=""):
        for layer in layer_list:
            for role, leaf in layer.leaves.items():
                if leaf in used:
                    raise AlignmentError(
                        f"parameter {names[leaf]!r} is used twice ({used[leaf]} and {role}); "
                        "shared weights are not supported"
                    )
                used[leaf] = role
            check(layer.children)

    check(layers)
    graph.axis = analyser.axis
    graph.unused = [
        names[i] for i in range(n_leaves) if i not in used and not _unused_ok(analyser, i)
    ]
    return graph, layers


def _unused_ok(analyser: _Analyser, leaf: int) -> bool:
    """A leaf that does not reach the output (e.g. an RNG counter) is fine."""
    return analyser.g.inputs[leaf] not in {
        v for k in analyser.live for v in analyser.g.nodes[k].ins if not _is_literal(v)
    }


def statistics(graph: Graph, names: list[str], n_leaves: int) -> dict[int, str]:
    """The closed-over arrays of ``graph`` that a normalisation takes as its moving
    statistics: ``{const id: "mean" or "var"}``.

    A pure-JAX port of a BatchNorm in inference mode closes over the running statistics:
    ``(h - mean) / jnp.sqrt(var + eps) * params["gamma"] + params["beta"]``. Read as code,
    ``h - mean`` is weight-free and joins the Dense before it as its activation. Here a
    closed-over array counts as a statistic only in a norm that takes one as its mean (it is
    subtracted from the stream) *and* one as its variance (under a square root), each used
    once; any other closed-over array stays code. Empty when the layers cannot be read.
    """
    analyser = _Analyser(graph, names, n_leaves, constants=True)
    if not analyser.constant_leaves or graph.outputs[0] not in analyser.stream:
        return {}
    try:
        layers = analyser.chain(analyser.live, analyser.x, graph.outputs[0])
    except AlignmentError:
        return {}
    found: dict[int, str] = {}
    uses: Counter = Counter()

    def walk(layer_list):
        for layer in layer_list:
            walk(layer.children)
            own = {role: leaf for role, leaf in layer.leaves.items() if leaf >= n_leaves}
            uses.update(own.values())
            if layer.kind == "norm" and set(own) == {"mean", "var"}:
                found.update({leaf: role for role, leaf in own.items()})

    walk(layers)
    return {analyser.constant_leaves[leaf]: role for leaf, role in found.items() if uses[leaf] == 1}
