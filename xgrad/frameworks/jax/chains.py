"""A JAX function read as a chain of xgrad's layer kinds: what the reading of
:mod:`~xgrad.frameworks.jax.jaxpr` regroups, and what no chain holds, refused by name.

Three ways of writing a transformer in JAX put something into the stream where no layer of
that reading expects it:

* **A residual's bias added after the skip**: ``x + h @ w2 + b2`` is ``(x + h @ w2) + b2``
  to Python, so the bias lands outside the residual block and read alone it looked like a
  norm of its own. :func:`regroup_biases` rewrites the graph to ``x + (h @ w2 + b2)``, the
  same sum in another order (values differ by rounding only), so that the bias joins the
  dense layer of its matmul.
* **A table added per position**: GPT-2's learned positions ``wte[ids] + wpe[arange(T)]``
  add one value per token and feature, where xgrad's token-wise layers (a norm's scale and
  shift, a dense bias) take one value per feature, and xgrad has no kind for such a table.
  :func:`refuse_tables` names the parameter and the operation instead of reading it as a
  norm (whose ``(T, dim)`` scale then failed to broadcast).
* **Code that changes the shape without a parameter** (an attention whose q/k/v come from
  one ``(dim, 3 dim)`` matrix, split and reshaped into heads): no activation, dropout or
  norm statistic changes the shape of an example, and a flatten makes it one axis.
  :func:`shape_problem` names where, instead of fitting an activation to values of two
  shapes.

Importing this module imports JAX.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
from jax.extend import core as jcore

__all__ = ["ENTERING", "TABLE_FIX", "refuse_tables", "regroup_biases", "shape_problem"]

_ADDS = ("add", "add_any")
_PASS = {"convert_element_type", "reduce_precision", "copy", "copy_p", "transpose", "reshape"}
_WIDEN = {"broadcast_in_dim", "expand_dims"}
ENTERING = ("add", "add_any", "sub", "mul")
"""The primitives by which a parameter's value enters the stream elementwise."""

TABLE_FIX = (
    "to compare such a model, write it as an nnx.Module whose tables are nnx.Embed modules "
    "(self.wpe(jnp.arange(T))): it is then compared module by module, against a torch model "
    "with nn.Embedding tables too"
)
"""What a user does about a position table (:func:`refuse_tables`)."""


def _literal(v) -> bool:
    return isinstance(v, jcore.Literal)


def _source(graph, producer: dict[int, int], v: int, through: set[str]) -> int:
    """The value ``v`` comes from through the primitives ``through``."""
    while v in producer:
        node = graph.nodes[producer[v]]
        if node.name not in through or not node.ins or _literal(node.ins[0]):
            break
        v = node.ins[0]
    return v


def _streams(graph, x: int) -> set[int]:
    """The values that depend on the input ``x``."""
    stream = {x}
    for node in graph.nodes:
        if any(not _literal(v) and v in stream for v in node.ins):
            stream.update(node.outs)
    return stream


def _matmul(graph, producer, stream, params, v: int) -> bool:
    """Whether ``v`` is (a layout change of) a matmul of the stream by a parameter."""
    v = _source(graph, producer, v, _PASS)
    node = graph.nodes[producer[v]] if v in producer else None
    if node is None or node.name != "dot_general":
        return False
    sides = [w for w in node.ins if not _literal(w)]
    weights = [w for w in sides if w not in stream]
    return len(weights) == 1 and _source(graph, producer, weights[0], _PASS | _WIDEN) in params


def regroup_biases(graph, x: int) -> int:
    """Rewrite each ``(s + m) + c`` of the graph into ``s + (m + c)`` in place, where ``m``
    is a matmul of the stream by a parameter, ``s`` another stream value (the skip), ``c`` a
    parameter (through broadcasts and casts) and ``s + m`` used nowhere else: a residual
    block's last dense layer gets its bias. Returns how many sums were regrouped."""
    producer = {o: k for k, node in enumerate(graph.nodes) for o in node.outs}
    uses = Counter(v for node in graph.nodes for v in node.ins if not _literal(v))
    uses.update(graph.outputs)
    stream = _streams(graph, x)
    params = {i for i in graph.inputs if i != x}
    replaced: dict[int, list] = {}
    dropped: set[int] = set()
    for k, outer in enumerate(graph.nodes):
        if outer.name not in _ADDS or len(outer.ins) != 2 or any(map(_literal, outer.ins)):
            continue
        streamed = [v for v in outer.ins if v in stream]
        if len(streamed) != 1:
            continue
        total = streamed[0]
        bias = outer.ins[1] if outer.ins[0] == total else outer.ins[0]
        if uses[total] != 1 or total not in producer or producer[total] in replaced:
            continue
        if _source(graph, producer, bias, _PASS | _WIDEN) not in params:
            continue
        inner = graph.nodes[producer[total]]
        if inner.name not in _ADDS or len(inner.ins) != 2 or producer[total] in dropped:
            continue
        if any(_literal(v) or v not in stream for v in inner.ins):
            continue
        found = [v for v in inner.ins if _matmul(graph, producer, stream, params, v)]
        if len(found) != 1 or graph.shape(found[0]) != graph.shape(total):
            continue
        (m,) = found
        skip = inner.ins[1] if inner.ins[0] == m else inner.ins[0]
        grouped = graph._new(graph.avals[total])
        dropped.add(producer[total])
        replaced[k] = [
            type(inner)(inner.eqn, [m, bias], [grouped]),
            type(outer)(outer.eqn, [skip, grouped], list(outer.outs)),
        ]
    if replaced:
        nodes = []
        for k, node in enumerate(graph.nodes):
            if k not in dropped:
                nodes += replaced.get(k, [node])
        graph.nodes[:] = nodes
    return len(replaced)


def refuse_tables(analyser, entering: list[tuple[int, str]]) -> None:
    """Refuse, naming the parameter, a value entering the stream elementwise that holds
    more than one value per feature (its source, before broadcasts, has two or more axes
    longer than 1: a ``(T, dim)`` position table), which no token-wise layer takes.

    Args:
        analyser: the jaxpr reader (its graph, parameter names, origins and static
            dependencies; its ``fail`` raises the :class:`~xgrad.errors.AlignmentError`).
        entering: ``(value, primitive)`` for each operand of an :data:`ENTERING` primitive
            of a segment that is not on the stream and comes from parameters.
    """
    g = analyser.g
    producer = analyser.producer
    for v, operation in entering:
        shape = g.shape(_source(g, producer, v, _WIDEN | {"convert_element_type", "copy"}))
        if sum(1 for n in shape if n > 1) < 2:
            continue
        origin = analyser.origin.get(v)
        leaves = [origin[0]] if origin is not None else sorted(analyser.static.get(v, {}))
        names = [analyser.names[leaf] for leaf in leaves]
        what = repr(names[0]) if len(names) == 1 else str(names)
        analyser.fail(
            f"parameter {what} enters the stream by '{operation}' as a value of shape "
            f"{shape}, one per token and feature (a learned position table, such as GPT-2's "
            "wte[ids] + wpe[jnp.arange(T)]?), and xgrad has no layer kind for it (its "
            "token-wise layers take one value per feature), so this function is no chain of "
            f"xgrad's kinds; {TABLE_FIX}"
        )


_SAME_SHAPE = ("activation", "dropout", "reduce")
"""Weight-free kinds of read layer that keep the shape of an example."""


def _example(graph, axis: dict, v: int) -> tuple[int, ...]:
    """The shape of one example of the value ``v`` (its batch axis, where known, removed)."""
    shape = graph.shape(v)
    a = axis.get(v)
    a = 0 if a is None else a
    return shape[:a] + shape[a + 1 :]


def shape_problem(graph, axis: dict, layers: list, names: list[str]) -> str | None:
    """Why the read ``layers`` are no chain of xgrad's kinds because a weight-free layer
    changes the shape of an example (other than a flatten to one axis), or ``None``."""
    after = "the input"
    for layer in layers:
        inner = shape_problem(graph, axis, layer.children, names)
        if inner:
            return inner
        shape_in = _example(graph, axis, layer.start)
        shape_out = _example(graph, axis, layer.end)
        flat = (int(np.prod(shape_in)),)
        if (layer.kind in _SAME_SHAPE and shape_in != shape_out) or (
            layer.kind == "flatten" and shape_out != flat
        ):
            return (
                f"the code after {after} maps examples of shape {shape_in} to {shape_out} "
                "without a parameter, which no layer xgrad reads does (an attention whose "
                "q/k/v are one (dim, 3 dim) matrix or (dim, dim) matrices split or reshaped "
                "into heads?); xgrad reads an attention whose q/k/v kernels are (dim, heads, "
                "head_dim) and whose output kernel is (heads, head_dim, dim), in einsum or "
                "nnx.LinearGeneral code"
            )
        if layer.leaves:
            after = f"parameter {names[list(layer.leaves.values())[-1]]!r}"
    return None
