"""Users' torch modules, read as xgrad layers in call order.

:func:`read_module` works on a deep copy of the module (the user's object is never changed,
nor its ``.training`` flags) and reads it in one of two ways:

1. **torch.fx** (:func:`torch.fx.Tracer.trace`): the graph of ``forward`` gives every call
   in order: ``call_module`` nodes (``nn.Linear``, ``nn.GELU``, ...), functional calls
   (``F.gelu(x, approximate="tanh")``, ``torch.tanh``, ``F.layer_norm(x, ..., self.w)``),
   methods (``x.relu()``, ``x.flatten(1)``) and additions. An addition of the newest value
   ``h`` and an earlier one ``x`` is a residual block around the layers between them. An
   unknown elementwise call is named numerically (:func:`xgrad.identify.fit_activation`).
2. **forward hooks**, when ``forward`` cannot be traced (Python control flow on tensor
   values): the leaf modules in the order they are called, a module holding parameters of
   its own counting as one (``nn.MultiheadAttention``, as torch's ``TransformerEncoderLayer``
   calls it: never code between two modules); the code between two of them is named
   numerically, as an activation or as a residual addition.

Both run the module once on a sample batch (standard normal, seeded, in the module's dtype;
token ids in ``[0, vocab)`` when the first layer is an ``nn.Embedding`` or ``F.embedding``,
``vocab`` the rows of its table) for the shapes and for numeric identification. A module whose
calls do not form a chain (a hand-written attention: ``q_proj``, ``k_proj`` and ``v_proj`` all
take the same input, their outputs meet later) is refused with an
:class:`~xgrad.errors.AlignmentError`, so that :func:`xgrad.compare_models` compares it module
by module. So is ``nn.MultiheadAttention``: its fused ``in_proj_weight (3E, E)`` is no axis
permutation of the canonical ``(dim, heads, head_dim)`` kernels of
:class:`~xgrad.layers.Attention` (a :class:`~xgrad.frameworks.kinds.Layout` permutes axes
only), so it stays a module compared as computed. xgrad's own ``SelfAttention``, ``GatedMLP``
and ``ScaledEmbedding`` (:mod:`.modules`) are leaves the tracer does not enter, read from their
attributes. A ``Linear`` followed only by an activation
becomes one ``Dense(units, activation)`` (as :class:`xgrad.layers.Activation` describes).
Layer names are module names (``"0"``, ``"block.fc1"``) or, for functional calls, fx node
names (``"gelu"``, ``"add"``).

Importing this module imports torch.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from xgrad.errors import AlignmentError, InputError, SpecError, XgradError
from xgrad.frameworks.base import LayerInfo
from xgrad.frameworks.torch import cnn, recurrent
from xgrad.frameworks.torch.kinds import (
    ALIAS,
    ELEMENTWISE,
    Found,
    function_layer,
    is_add,
    module_layer,
)
from xgrad.frameworks.torch.model import (
    GraphTap,
    HookTap,
    TorchModel,
    call_with,
    fresh_tensors,
    module_device,
    rng_devices,
    tensor_numpy,
    torch_dtype,
)
from xgrad.frameworks.torch.modules import (
    GatedMLP,
    HardSigmoid,
    MaskedDropout,
    ScaledEmbedding,
    SelfAttention,
    Selu,
    Softplus,
)
from xgrad.identify import fit_activation
from xgrad.layers import Activation, Dense, Embedding, Residual, Shape

__all__ = ["module_dtype", "read_module"]

SAMPLE_BATCH = 5
"""Rows of the sample batch a module is run on when it is read (> 1 for BatchNorm)."""

_XGRAD_LEAVES = (
    MaskedDropout,
    Selu,
    Softplus,
    HardSigmoid,
    SelfAttention,
    GatedMLP,
    ScaledEmbedding,
    cnn.ChannelsLast,
    cnn.GlobalAvgPool,
    recurrent.LSTM,
    recurrent.GRU,
    recurrent.GRUResetBefore,
)


@dataclass
class Entry:
    """A layer while reading: its configuration, where its output is tapped, its shapes."""

    found: Found | None  # None for a residual block
    name: str
    tap: object  # an fx node name, or a HookTap key ("output" / "input" / "result", name)
    input_shape: Shape
    output_shape: Shape
    children: list[Entry] = field(default_factory=list)


def module_dtype(module: nn.Module) -> str:
    dtypes = {t.dtype for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()}
    if not dtypes:
        return str(torch.get_default_dtype()).removeprefix("torch.")
    names = sorted(str(d).removeprefix("torch.") for d in dtypes)
    if len(names) > 1:
        raise InputError(
            f"{type(module).__name__} holds weights of several dtypes ({', '.join(names)}); "
            "convert it to one first, e.g. module.double()"
        )
    if names[0] not in ("float32", "float64", "bfloat16", "float16"):
        raise InputError(
            f"{type(module).__name__} holds {names[0]} weights; xgrad reads float16, bfloat16, "
            "float32 and float64 torch modules: pass a copy converted, e.g. with .float()"
        )
    return names[0]


def _module_input_shape(module: nn.Module) -> Shape | None:
    if isinstance(module, nn.Linear):
        return (module.in_features,)
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        return tuple(module.normalized_shape)
    if isinstance(module, nn.BatchNorm1d):
        return (module.num_features,)
    return None


def _graph_input_shape(module: nn.Module, graph: torch.fx.Graph) -> Shape | None:
    """The example shape the first layer with weights takes, unless a reshape or an
    embedding (of ``(tokens,)`` ids, as many as the user passes) comes first."""
    for node in graph.nodes:
        if node.op == "call_function" and node.target is F.embedding:
            return None
        if node.op == "call_module":
            sub = module.get_submodule(node.target)
            if isinstance(sub, nn.Flatten | nn.Embedding):
                return None
            shape = _module_input_shape(sub)
            if shape is not None:
                return shape
        elif node.op == "call_function" and node.target is F.linear:
            weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            if getattr(weight, "op", None) == "get_attr":
                return (int(module.get_parameter(weight.target).shape[1]),)
            return None
        elif node.op == "call_function" and node.target in (F.layer_norm, F.rms_norm):
            shape = node.args[1] if len(node.args) > 1 else node.kwargs.get("normalized_shape")
            return (shape,) if isinstance(shape, int) else tuple(shape)
        elif node.op in ("call_function", "call_method") and getattr(
            node.target, "__name__", node.target
        ) in ("flatten", "reshape", "view"):
            return None
    return None


def _hooks_input_shape(module: nn.Module) -> Shape | None:
    for sub in module.modules():
        if isinstance(sub, nn.Flatten | nn.Embedding):
            return None
        shape = _module_input_shape(sub)
        if shape is not None:
            return shape
    return None


class _Tracer(torch.fx.Tracer):
    """torch.fx's tracer, with xgrad's own activation and dropout modules as leaves."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _XGRAD_LEAVES) or super().is_leaf_module(m, module_qualified_name)


class _Recorder(torch.fx.Interpreter):
    """Runs a graph keeping every node's value (``self.env``)."""

    def __init__(self, module, graph):
        super().__init__(module, garbage_collect_values=False, graph=graph)


def _run_sample(module: nn.Module, fn, x: torch.Tensor, what: str):
    """``fn(module, x)`` on copies of the weights, without grad, the RNG put back after."""
    params, buffers = fresh_tensors(module, grad=False)
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices(module)):
            return call_with(module, {**params, **buffers}, fn, x)
    except XgradError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InputError(
            f"running {what} on a sample batch of shape {tuple(x.shape)} failed: {exc}; if the "
            "shape is wrong, pass input_shape (the shape of one example)"
        ) from None


def _first_vocab(module: nn.Module, graph: torch.fx.Graph | None) -> int | None:
    """The vocabulary of the embedding that takes the module's input (the first call on it in
    the graph; without a graph, the first of its leaf modules with weights), else ``None``."""
    if graph is None:
        for sub in module.modules():
            if isinstance(sub, nn.Embedding):
                return int(sub.num_embeddings)
            if not any(True for _ in sub.children()) and any(True for _ in sub.parameters()):
                return None
        return None
    placeholder = next((n for n in graph.nodes if n.op == "placeholder"), None)
    for node in graph.nodes:
        if placeholder is None or placeholder not in node.all_input_nodes:
            continue
        if _metadata_only(node):  # b, t = idx.size(), before the embedding (nanoGPT)
            continue
        if node.op == "call_module":
            sub = module.get_submodule(node.target)
            return int(sub.num_embeddings) if isinstance(sub, nn.Embedding) else None
        if node.op == "call_function" and node.target is F.embedding:
            weight = node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")
            if getattr(weight, "op", None) == "get_attr":
                return int(module.get_parameter(weight.target).shape[0])
        return None
    return None


_METADATA_METHODS = frozenset({"size", "dim", "numel", "get_device", "type"})
_METADATA_ATTRIBUTES = frozenset({"shape", "device", "dtype", "ndim", "is_cuda"})


def _metadata_only(node: torch.fx.Node) -> bool:
    """Whether ``node`` reads only the shape, device or dtype of a tensor, not its values."""
    if node.op == "call_method":
        return node.target in _METADATA_METHODS and not (node.target == "type" and node.args[1:])
    if node.op == "call_function" and node.target is getattr:
        return len(node.args) > 1 and node.args[1] in _METADATA_ATTRIBUTES
    return False


def _sample(shape: Shape, dtype: str, device, vocab: int | None = None) -> torch.Tensor:
    """Standard normal values in ``dtype``, or token ids in ``[0, vocab)`` (int64)."""
    rng = np.random.default_rng(0)
    if vocab is not None:
        ids = rng.integers(0, vocab, (SAMPLE_BATCH, *shape))
        return torch.tensor(ids, dtype=torch.int64, device=device)
    values = rng.standard_normal((SAMPLE_BATCH, *shape))
    return torch.tensor(values, dtype=torch_dtype(dtype), device=device)


def _check_shape(found: Found, shape: Shape, name: str) -> None:
    if found.layer is None:  # identified from its values, which had the input's shape
        return
    try:
        found.layer.output_shape(shape)
    except SpecError as exc:
        raise AlignmentError(f"layer {name!r} ({found.layer.describe()}): {exc}") from None


def _can_fold(entries: list[Entry], found: Found) -> bool:
    if found.kind != "activation" or found.layer is None or not entries:
        return False
    last = entries[-1].found
    return last is not None and isinstance(last.layer, Dense) and last.layer.activation == "linear"


def _fold(entry: Entry, found: Found, tap, output_shape: Shape) -> None:
    """Make a linear Dense ``entry`` end with the activation ``found``."""
    dense = entry.found.layer
    layer = Dense(dense.units, found.layer.name, use_bias=dense.use_bias)
    notes = [n for n in (entry.found.note, found.note) if n]
    entry.found = replace(entry.found, layer=layer, note="; ".join(notes) or None)
    entry.tap = tap
    entry.output_shape = output_shape


def _numeric(z: torch.Tensor, a: torch.Tensor, dtype: str, where: str) -> Found:
    if z.shape != a.shape:
        raise AlignmentError(
            f"{where} maps shape {tuple(z.shape)} to {tuple(a.shape)}: it is not a layer "
            "xgrad reads"
        )
    name, err = fit_activation(tensor_numpy(z), tensor_numpy(a), dtype)
    if name is None:  # like Keras' Dense(activation=my_function): compared as computed
        return Found(
            None,
            note=f"{where} is none of xgrad's activations (closest relative error "
            f"{err:.2g}); compared as computed",
        )
    return Found(
        Activation(name), note=f"identified numerically as {name} (relative error {err:.1e})"
    )


# -- torch.fx ---------------------------------------------------------------------------------


def _describe(node) -> str:
    target = getattr(node.target, "__name__", node.target)
    return f"{node.op} {target} (fx node {node.name!r})"


def _read_graph(module: nn.Module, graph: torch.fx.Graph, values: dict, dtype: str):
    """The entries of a traced module, from its graph and the sample values of its nodes."""
    entries: list[Entry] = []
    pos: dict = {}  # stream node -> index of the entry whose output it is (-1: the input)
    for node in graph.nodes:
        if node.op == "placeholder":
            if not pos:
                pos[node] = -1
            continue
        if node.op == "output":
            result = node.args[0]
            if not isinstance(result, torch.fx.Node) or pos.get(result) != len(entries) - 1:
                raise AlignmentError(
                    f"{type(module).__name__}.forward must return the output of its last layer "
                    f"(one tensor), got {result!r}"
                )
            break
        streams = [a for a in node.all_input_nodes if a in pos]
        value = values.get(node)
        if node.op == "get_attr" or not streams or not isinstance(value, torch.Tensor):
            continue  # weights, constants, and sizes or shapes of stream values
        if any(pos[a] is None for a in streams):
            raise AlignmentError(
                f"{_describe(node)} uses a value from inside a residual block after the block; "
                "xgrad reads sequential models with residual additions"
            )
        last = len(entries) - 1
        if is_add(node) and len(streams) == 2:
            _residual(node, streams, entries, pos, values)
            continue
        src = streams[0]
        if len(streams) > 1 or pos[src] != last:
            raise AlignmentError(
                f"{_describe(node)} takes the output of an earlier layer, not of the one before "
                "it: branches are not read, only residual additions x + f(x)"
            )
        in_shape, out_shape = tuple(values[src].shape), tuple(value.shape)
        if node.op == "call_module":
            sub = module.get_submodule(node.target)
            found = module_layer(sub, node.target, dtype, len(in_shape), captured=False)
            name = node.target
            if found is ELEMENTWISE:
                where = f"module {node.target!r} ({type(sub).__name__})"
                found = _numeric(values[src], value, dtype, where)
        elif _scales_embedding(node, entries, src):
            _fold_scale(entries[-1], node)
            pos[node] = len(entries) - 1
            continue
        else:
            found = function_layer(node, in_shape, out_shape, dtype, module)
            name = node.name
            if found is None:
                if len(node.all_input_nodes) > 1:
                    raise AlignmentError(f"{_describe(node)} is not a layer xgrad reads")
                found = _numeric(values[src], value, dtype, _describe(node))
        if found is ALIAS:
            pos[node] = pos[src]
            continue
        _check_shape(found, in_shape[1:], name)
        if _can_fold(entries, found) and entries[-1].tap == src.name and len(src.users) == 1:
            _fold(entries[-1], found, node.name, out_shape[1:])
        else:
            entries.append(Entry(found, name, node.name, in_shape[1:], out_shape[1:]))
        pos[node] = len(entries) - 1
    return entries


_MULS = (operator.mul, torch.mul)


def _factor(node) -> float | None:
    """``c`` of ``h * c`` / ``c * h`` (``torch.mul``, ``h.mul(c)``) for a number ``c``."""
    if not (node.op == "call_function" and node.target in _MULS) and not (
        node.op == "call_method" and node.target == "mul"
    ):
        return None
    numbers = [a for a in node.args if isinstance(a, int | float) and not isinstance(a, bool)]
    return float(numbers[0]) if len(node.args) == 2 and len(numbers) == 1 else None


def _scales_embedding(node, entries: list[Entry], src) -> bool:
    """Whether ``node`` multiplies an unscaled embedding's output, and nothing else reads
    that output, by a number (the Annotated Transformer's ``lut(x) * math.sqrt(d_model)``)."""
    last = entries[-1].found if entries else None
    return (
        last is not None
        and isinstance(last.layer, Embedding)
        and last.layer.scale is None
        and entries[-1].tap == src.name
        and len(src.users) == 1
        and _factor(node) is not None
    )


def _fold_scale(entry: Entry, node) -> None:
    entry.found = replace(entry.found, layer=replace(entry.found.layer, scale=_factor(node)))
    entry.tap = node.name


def _residual(node, streams, entries: list[Entry], pos: dict, values: dict) -> None:
    """Turn the layers between the two added values into a residual block."""
    (skip, skip_node), (tip, _) = sorted((pos[a], a) for a in streams)
    if tip != len(entries) - 1 or skip == tip:
        raise AlignmentError(
            f"{_describe(node)} adds two values that are not x and f(x) (the output of the "
            "layers run on x): xgrad reads residual additions only"
        )
    block = entries[skip + 1 :]
    del entries[skip + 1 :]
    shape = tuple(values[skip_node].shape[1:])
    entries.append(Entry(None, node.name, node.name, shape, tuple(values[node].shape[1:]), block))
    for n, p in pos.items():
        if p is not None and p > skip:
            pos[n] = None
    pos[node] = len(entries) - 1


# -- forward hooks ------------------------------------------------------------------------------


def _read_calls(module: nn.Module, sample: torch.Tensor, dtype: str, why: str):
    """The entries of a module that fx cannot trace, from the calls of its leaf modules."""
    leaves = _hooked(module)
    calls: list = []
    handles = [
        m.register_forward_hook(lambda mod, args, out, n=n: calls.append((n, mod, args, out)))
        for n, m in leaves
    ]
    try:
        result = _run_sample(module, lambda net, x: net(x), sample, type(module).__name__)
    finally:
        for handle in handles:
            handle.remove()
    entries: list[Entry] = []
    history: list = [(-1, sample)]  # (entry index, value) of each value on the stream
    seen: set[str] = set()

    def gap(value: torch.Tensor, tap, where: str) -> None:
        prev = history[-1][1]
        for at in range(len(history) - 2, -1, -1):  # x + f(x): x an earlier stream value
            index, earlier = history[at]
            if index < len(entries) - 1 and earlier.shape == value.shape == prev.shape:
                if torch.equal(prev + earlier, value):
                    block = entries[index + 1 :]
                    del entries[index + 1 :]
                    shape = tuple(earlier.shape[1:])
                    entries.append(Entry(None, f"add before {where}", tap, shape, shape, block))
                    del history[at + 1 :]
                    history.append((len(entries) - 1, value))
                    return
        try:
            found = _numeric(prev, value, dtype, f"the code before {where}")
        except AlignmentError as exc:
            raise AlignmentError(
                f"{exc}. torch.fx could not trace {type(module).__name__} ({why}), so only its "
                "modules' calls were seen; code between them must be an activation or x + f(x)"
            ) from None
        shape = tuple(value.shape[1:])
        if _can_fold(entries, found) and history[-1][0] == len(entries) - 1:
            _fold(entries[-1], found, tap, shape)
        else:
            entries.append(Entry(found, f"code before {where}", tap, shape, shape))
        history.append((len(entries) - 1, value))

    for name, mod, args, out in calls:
        where = f"module {name!r} ({type(mod).__name__})"
        if name in seen:
            raise AlignmentError(f"{where} is called twice; xgrad reads each layer once")
        seen.add(name)
        if not args or not isinstance(args[0], torch.Tensor) or not isinstance(out, torch.Tensor):
            raise AlignmentError(f"{where} does not map one tensor to one tensor")
        found = module_layer(mod, name, dtype, args[0].ndim, captured=False)
        if args[0] is not history[-1][1] and not torch.equal(args[0], history[-1][1]):
            _check_chain(history, args[0], entries, where)
            gap(args[0], ("input", name), where)
        if found is ELEMENTWISE:
            found = _numeric(args[0], out, dtype, where)
        if found is ALIAS:
            history.append((history[-1][0], out))
            continue
        in_shape, out_shape = tuple(args[0].shape[1:]), tuple(out.shape[1:])
        _check_shape(found, in_shape, name)
        if _can_fold(entries, found) and history[-1][0] == len(entries) - 1:
            _fold(entries[-1], found, ("output", name), out_shape)
        else:
            entries.append(Entry(found, name, ("output", name), in_shape, out_shape))
        history.append((len(entries) - 1, out))
    if not isinstance(result, torch.Tensor):
        raise AlignmentError(f"{type(module).__name__}.forward must return one tensor")
    if result is not history[-1][1] and not torch.equal(result, history[-1][1]):
        gap(result, ("result", None), "the output")
    return entries, result


def _hooked(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose calls the hooks record: those without submodules, and those holding
    parameters of their own, as one unit with nothing inside hooked (``nn.MultiheadAttention``
    computes with its ``in_proj_weight`` and its ``out_proj``'s weights, never calling
    ``out_proj``: unhooked, its work was seen only as code between two modules and read as an
    activation of no known kind, its weights in no layer)."""
    out: list[tuple[str, nn.Module]] = []
    units: list[str] = []
    for name, sub in module.named_modules():
        if any(name.startswith(f"{unit}.") for unit in units):
            continue
        parent = any(True for _ in sub.children())
        if parent and name and any(True for _ in sub.parameters(recurse=False)):
            units.append(name)
            out.append((name, sub))
        elif not parent:
            out.append((name, sub))
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))


def _check_chain(history: list, value: torch.Tensor, entries: list[Entry], where: str) -> None:
    """Refuse a module whose input is an earlier value on the stream, not the latest one: its
    calls are no chain (a hand-written attention: ``k_proj`` takes the input ``q_proj`` took,
    and the outputs of both meet later), which the hooks alone would misread as
    ``q_proj -> code -> k_proj -> ...``."""
    for index, earlier in history[:-1]:
        if _same(earlier, value):
            what = "the module's input" if index < 0 else f"the output of {entries[index].name!r}"
            raise AlignmentError(
                f"{where} takes {what}, an earlier value than the output of the module called "
                "before it: the calls are no chain of layers (a hand-written attention's q/k/v "
                "projections?); xgrad reads sequential models with residual additions, and "
                "compare_models compares such a model module by module"
            )


# -- from entries to layers -------------------------------------------------------------------


def _infos(entries: list[Entry], taps: dict, prefix: str = "layers") -> tuple[LayerInfo, ...]:
    """LayerInfo for each entry (paths in call order); ``taps`` gets tap key -> path."""
    out = []
    for i, e in enumerate(entries):
        path = f"{prefix}.{i}"
        taps[e.tap] = path
        children = _infos(e.children, taps, f"{path}.layers")
        if e.found is None:
            known = all(c.layer is not None for c in children)
            info = LayerInfo(
                path=path,
                kind="residual",
                name=e.name,
                layer=Residual([c.layer for c in children]) if known else None,
                input_shape=e.input_shape,
                output_shape=e.output_shape,
                children=children,
            )
        else:
            info = LayerInfo(
                path=path,
                kind=e.found.kind,
                name=e.name,
                layer=e.found.layer,
                params=dict(e.found.params),
                state=dict(e.found.state),
                layouts=dict(e.found.layouts),
                input_shape=e.input_shape,
                output_shape=e.output_shape,
                note=e.found.note,
            )
        out.append(info)
    return tuple(out)


def _check_unshared(module: nn.Module, layers: tuple[LayerInfo, ...]) -> None:
    tensors = module.state_dict(keep_vars=True)
    owner: dict[int, str] = {}
    for info in (i for top in layers for i in top.walk()):
        for native in info.weights.values():
            if native not in tensors:
                raise AlignmentError(
                    f"the weight {native!r} of layer {info.name!r} is not in the module's "
                    "state dict (a parametrization such as weight_norm?); xgrad reads plain "
                    "parameters"
                )
            key = id(tensors[native])
            if key in owner and owner[key] != info.name:
                raise AlignmentError(
                    f"layers {owner[key]!r} and {info.name!r} share the weight {native!r}; "
                    "xgrad reads models whose layers each have their own weights"
                )
            if key in owner:
                raise AlignmentError(
                    f"layer {info.name!r} is called more than once; xgrad reads each layer once"
                )
            owner[key] = info.name


def _check_input_shape(input_shape) -> Shape:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int | np.integer) and d > 0 for d in shape):
        raise InputError(f"input_shape must be a tuple of positive integers, got {input_shape!r}")
    return tuple(int(d) for d in shape)


def read_module(module, *, input_shape: Shape | None = None) -> TorchModel:
    """A user's ``nn.Module`` as a :class:`~xgrad.frameworks.torch.model.TorchModel`.

    The model holds a deep copy of ``module``; ``module`` itself is never changed.

    Args:
        module: the module, taking one tensor ``(batch, *input_shape)`` and returning one.
        input_shape: the shape of one example, when the first layer does not tell it.

    Raises:
        InputError: not a module; weights neither float32 nor float64; no input shape.
        AlignmentError: a layer or an operation xgrad does not read (named).

    Example:
        >>> import torch
        >>> model = read_module(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh()))
        >>> [(info.path, info.describe(), info.params) for info in model.layers]
        [('layers.0', '2:tanh', {'kernel': '0.weight', 'bias': '0.bias'})]
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"read_module needs a torch.nn.Module, got {type(module).__name__}")
    try:
        own = copy.deepcopy(module)
    except Exception as exc:  # whatever the module holds that cannot be copied
        raise InputError(
            f"cannot copy {type(module).__name__} ({type(exc).__name__}: {exc}); xgrad works on "
            "a deep copy so that your module is never changed"
        ) from None
    dtype = module_dtype(own)
    cls = type(module).__name__
    try:
        graph = _Tracer().trace(own)
        why = None
    except Exception as exc:  # torch.fx raises many kinds; any means "use hooks"
        graph, why = None, f"{type(exc).__name__}: {exc}"
    vocab = _first_vocab(own, graph)
    if input_shape is None:
        shape = _graph_input_shape(own, graph) if graph is not None else _hooks_input_shape(own)
        if shape is None:
            example = "(tokens,): the number of token ids" if vocab else "(28, 28)"
            raise InputError(
                f"cannot tell the shape of one input example of {cls}; pass input_shape, "
                f"e.g. input_shape={example} (or x to compare_models or convert)"
            )
    else:
        shape = _check_input_shape(input_shape)
    sample = _sample(shape, dtype, module_device(own), vocab)
    taps: dict = {}
    if graph is not None:
        recorder: list = []

        def run(net, x):
            recorder.append(_Recorder(net, graph))
            return recorder[-1].run(x)

        result = _run_sample(own, run, sample, cls)
        entries = _read_graph(own, graph, recorder[-1].env, dtype)
    else:
        entries, result = _read_calls(own, sample, dtype, why)
    if not entries:
        raise AlignmentError(f"{cls} has no layer xgrad reads (its forward returns its input)")
    layers = _infos(entries, taps)
    _check_unshared(own, layers)
    if graph is not None:
        tap = GraphTap(graph, taps)
    else:
        tap = HookTap(
            outputs={k[1]: p for k, p in taps.items() if k[0] == "output"},
            inputs={k[1]: p for k, p in taps.items() if k[0] == "input"},
            result=next((p for k, p in taps.items() if k[0] == "result"), None),
        )
    return TorchModel(
        own,
        layers,
        tap,
        dtype=dtype,
        input_shape=shape,
        output_shape=tuple(result.shape[1:]),
        description=f"torch {cls}" + ("" if graph is not None else " (read through hooks)"),
    )
