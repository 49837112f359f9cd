"""Find the dense layers of a JAX function by reading its jaxpr, and evaluate it while
capturing each layer's activation.

A function ``f(params, x)`` is traced to a jaxpr once per input shape. :func:`analyse`
follows every value back to where it came from: a parameter leaf (through layout-only
operations such as ``reshape``, ``transpose`` or ``convert_element_type``), the input
stream, or a layer's output. A dense layer is a ``dot_general`` of the stream with a 2-D
parameter leaf (the kernel), optionally followed by an ``add`` of a 1-D leaf (the bias).
Anything else that touches a parameter, or a value that mixes two layers (a residual
connection), is reported as unsupported rather than guessed at.

:func:`capture` evaluates the jaxpr with an interpreter in the manner of JAX's "writing
custom interpreters" guide: nested ``jit`` calls are evaluated inline, every other primitive
is bound as it was traced (so custom JVP rules such as ``jax.nn.relu``'s stay in force),
and the value entering each dense layer is recorded. A perturbation added there, and
differentiated, gives ``dL/d a_i`` for every layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
from jax.extend import core as jcore

from xgrad.adapters._jax_ops import key_path_parts
from xgrad.errors import AlignmentError

__all__ = ["TracedDense", "Trace", "analyse", "capture"]

_LAYOUT = {
    "reduce_precision",  # keeps the kernel's identity: its rounding is diagnosed, not refused
    "convert_element_type",
    "reshape",
    "broadcast_in_dim",
    "squeeze",
    "expand_dims",
    "copy",
    "copy_p",
    "transpose",
}
_CALLS = {"jit", "pjit", "closed_call", "core_call"}


@dataclass(frozen=True)
class _Param:
    leaf: int
    transposed: bool = False


@dataclass(frozen=True)
class _Stream:
    layer: int  # -1: the input x; k: derived from dense layer k's output


@dataclass(frozen=True)
class _DenseOut:
    layer: int
    biased: bool


@dataclass
class TracedDense:
    """One dense layer found in the jaxpr.

    Attributes:
        kernel_leaf: index of the kernel among the flattened params.
        bias_leaf: index of the bias, or ``None``.
        transposed: the kernel is stored ``(out, in)`` and used as ``x @ W.T``.
        in_dim, out_dim: the layer's widths.
        input_key: ``(call path, var)`` of the value entering the layer's matmul.
    """

    kernel_leaf: int
    bias_leaf: int | None
    transposed: bool
    in_dim: int
    out_dim: int
    input_key: tuple


@dataclass
class Trace:
    """The dense layers of a traced function, in call order, and its output's key."""

    layers: list[TracedDense] = field(default_factory=list)
    output_key: tuple | None = None


def _sub_jaxpr(eqn):
    """The closed jaxpr of a plain call (evaluated inline), or None."""
    if eqn.primitive.name not in _CALLS:
        return None
    sub = eqn.params.get("jaxpr") or eqn.params.get("call_jaxpr")
    if sub is None:
        return None
    if isinstance(sub, jcore.ClosedJaxpr):
        return sub
    return jcore.ClosedJaxpr(sub, ())


def _is_literal(v) -> bool:
    return isinstance(v, jcore.Literal)


class _Analyser:
    def __init__(self, leaf_names: list[str], leaf_shapes: list[tuple]):
        self.names = leaf_names
        self.shapes = leaf_shapes
        self.trace = Trace()
        self.used: dict[int, str] = {}

    def fail(self, message: str):
        raise AlignmentError(message)

    def _param_name(self, origin: _Param) -> str:
        return self.names[origin.leaf]

    def walk(self, jaxpr, in_origins, path):
        env = {}
        producers = {}  # var -> the var a unary layout op made it from, at this level
        saved, self._producers = getattr(self, "_producers", None), producers

        def read(v):
            return None if _is_literal(v) else env.get(v)

        for v, o in zip(jaxpr.invars, in_origins, strict=True):
            env[v] = o
        for v in jaxpr.constvars:
            env[v] = None
        for i, eqn in enumerate(jaxpr.eqns):
            ins = [read(v) for v in eqn.invars]
            name = eqn.primitive.name
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                outs = self.walk(sub.jaxpr, ins, (*path, i))
            elif name in _LAYOUT and len(ins) == 1:
                outs = [self._layout(eqn, ins[0])]
                if not _is_literal(eqn.invars[0]):
                    producers[eqn.outvars[0]] = eqn.invars[0]
            elif name == "dot_general":
                outs = [self._dot(eqn, ins, path)]
            elif name in ("add", "add_any") and any(isinstance(o, _DenseOut) for o in ins):
                outs = [self._bias(eqn, ins)]
            else:
                outs = [self._other(eqn, ins)] * len(eqn.outvars)
            for v, o in zip(eqn.outvars, outs, strict=True):
                env[v] = o
        self._producers = saved
        return [read(v) for v in jaxpr.outvars]

    def _layout(self, eqn, origin):
        if isinstance(origin, _Param) and eqn.primitive.name == "transpose":
            if tuple(eqn.params.get("permutation", ())) == (1, 0):
                return _Param(origin.leaf, not origin.transposed)
        return origin

    def _dot(self, eqn, ins, path):
        lhs, rhs = ins
        if not (isinstance(rhs, _Param) and isinstance(lhs, _Stream | _DenseOut)):
            if isinstance(lhs, _Param) or isinstance(rhs, _Param):
                which = lhs if isinstance(lhs, _Param) else rhs
                self.fail(
                    f"parameter {self._param_name(which)!r} is used in a matmul that is "
                    "not x @ kernel (x must be the left operand); xgrad ports dense "
                    "layers of the form x @ W + b"
                )
            return self._other(eqn, ins)
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        shape = self.shapes[rhs.leaf]
        if len(shape) != 2 or lb or rb or len(rc) != 1:
            self.fail(
                f"parameter {self._param_name(rhs)!r} of shape {shape} is used in a "
                "matmul xgrad cannot read as a dense kernel"
            )
        contracted = rc[0]
        transposed = (contracted == 1) != rhs.transposed
        n_in, n_out = (shape[1], shape[0]) if transposed else (shape[0], shape[1])
        k = len(self.trace.layers)
        prev = lhs.layer
        if prev != k - 1:
            source = "the input x" if prev == -1 else f"dense layer {prev}"
            self.fail(
                f"dense layer {k} (kernel {self._param_name(rhs)!r}) takes its input "
                f"from {source}, not from dense layer {k - 1}: xgrad ports chains of "
                "dense layers, without skip connections"
            )
        self._use(rhs.leaf, f"kernel of dense layer {k}")
        # Capture the activation itself, before any cast or rounding that feeds the matmul.
        source = eqn.invars[0]
        while source in self._producers:
            source = self._producers[source]
        self.trace.layers.append(
            TracedDense(
                kernel_leaf=rhs.leaf,
                bias_leaf=None,
                transposed=transposed,
                in_dim=n_in,
                out_dim=n_out,
                input_key=(path, source),
            )
        )
        return _DenseOut(k, False)

    def _bias(self, eqn, ins):
        out = next(o for o in ins if isinstance(o, _DenseOut))
        other = next((o for o in ins if o is not out), None)
        if isinstance(other, _Param) and not out.biased:
            shape = self.shapes[other.leaf]
            layer = self.trace.layers[out.layer]
            if tuple(s for s in shape if s != 1) != (layer.out_dim,):
                self.fail(
                    f"parameter {self._param_name(other)!r} of shape {shape} is added to "
                    f"dense layer {out.layer}, whose output has {layer.out_dim} units"
                )
            self._use(other.leaf, f"bias of dense layer {out.layer}")
            layer.bias_leaf = other.leaf
            return _DenseOut(out.layer, True)
        return self._other(eqn, ins)

    def _use(self, leaf: int, role: str) -> None:
        if leaf in self.used:
            self.fail(
                f"parameter {self.names[leaf]!r} is used twice ({self.used[leaf]} and "
                f"{role}); shared weights are not supported"
            )
        self.used[leaf] = role

    def _other(self, eqn, ins):
        params = [o for o in ins if isinstance(o, _Param)]
        if params:
            self.fail(
                f"parameter {self._param_name(params[0])!r} is used by "
                f"'{eqn.primitive.name}' outside a dense layer (a normalisation, "
                "embedding or custom layer?); xgrad ports Dense layers and "
                "elementwise activations only"
            )
        layers = {o.layer for o in ins if isinstance(o, _Stream | _DenseOut)}
        if len(layers) > 1:
            self.fail(
                f"'{eqn.primitive.name}' combines the outputs of layers "
                f"{sorted(layers)} (a residual connection?); xgrad ports chains of "
                "dense layers"
            )
        return _Stream(layers.pop()) if layers else None


def analyse(closed, leaf_names: list[str], leaf_shapes: list[tuple]) -> Trace:
    """Find the dense layers of ``closed`` (the jaxpr of ``f(params, x)``).

    Args:
        closed: ``jax.make_jaxpr(f)(params, x)``.
        leaf_names: native names of the flattened param leaves, in flattening order.
        leaf_shapes: their shapes.

    Raises:
        AlignmentError: the function is not a chain of dense layers and elementwise ops.
    """
    analyser = _Analyser(leaf_names, leaf_shapes)
    n = len(leaf_names)
    origins = [_Param(i) for i in range(n)] + [_Stream(-1)]
    outs = analyser.walk(closed.jaxpr, origins, ())
    if len(outs) != 1:
        raise AlignmentError(
            f"the function returns {len(outs)} arrays; xgrad compares models with a single output"
        )
    trace = analyser.trace
    if not trace.layers:
        raise AlignmentError("no dense layer found: no matmul of the input with a 2-D parameter")
    last = len(trace.layers) - 1
    if not (isinstance(outs[0], _Stream | _DenseOut) and outs[0].layer == last):
        raise AlignmentError("the output does not come from the last dense layer")
    unused = [leaf_names[i] for i in range(n) if i not in analyser.used]
    if unused:
        raise AlignmentError(
            f"parameter(s) {unused} are not used by any dense layer; xgrad ports Dense layers only"
        )
    trace.output_key = ((), closed.jaxpr.outvars[0])
    return trace


def capture(closed, leaves, x, trace: Trace, eps=None):
    """Evaluate ``closed`` on ``(leaves, x)``; return ``(output, [a_0, ..., a_last])``.

    ``a_i`` is the value leaving dense layer ``i`` (its activation), read where layer
    ``i + 1`` takes it in, and the model output for the last layer. With ``eps`` (one array
    per layer), ``eps[i]`` is added to ``a_i`` where it is read, so that differentiating
    with respect to ``eps`` gives ``dL/d a_i``.
    """
    targets = {layer.input_key: i - 1 for i, layer in enumerate(trace.layers) if i > 0}
    targets[trace.output_key] = len(trace.layers) - 1
    record: dict[int, object] = {}

    def mark(path, var, value):
        k = targets.get((path, var))
        if k is None:
            return value
        if eps is not None:
            value = value + eps[k]
        record[k] = value
        return value

    def run(jaxpr, consts, args, path):
        env = {}

        def read(v):
            return v.val if _is_literal(v) else env[v]

        for v, c in zip(jaxpr.constvars, consts, strict=True):
            env[v] = c
        for v, a in zip(jaxpr.invars, args, strict=True):
            env[v] = mark(path, v, a)
        for i, eqn in enumerate(jaxpr.eqns):
            invals = [read(v) for v in eqn.invars]
            sub = _sub_jaxpr(eqn)
            if sub is not None:
                outs = run(sub.jaxpr, sub.consts, invals, (*path, i))
            else:
                params = eqn.primitive.get_bind_params(eqn.params)
                with eqn.ctx.manager:
                    outs = eqn.primitive.bind(*invals, **params)
                if not eqn.primitive.multiple_results:
                    outs = [outs]
            for v, val in zip(eqn.outvars, outs, strict=True):
                env[v] = mark(path, v, val)
        # The output of the top level is read at the end: mark it there (no-op if marked).
        return [read(v) for v in jaxpr.outvars]

    outs = run(closed.jaxpr, closed.consts, [*leaves, x], ())
    out = outs[0]
    if len(trace.layers) - 1 not in record:
        out = mark(*trace.output_key, out)
    return out, [record[k] for k in range(len(trace.layers))]


def tree_paths(tree) -> tuple[list[str], list, object]:
    """Flatten a pytree: ``(native names joined with '/', leaves, treedef)``."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    names, leaves = [], []
    for path, leaf in leaves_with_path:
        names.append("/".join(key_path_parts(path)))
        leaves.append(leaf)
    return names, leaves, treedef
