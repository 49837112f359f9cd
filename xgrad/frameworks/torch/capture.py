"""A user's ``nn.Module`` captured at its modules' boundaries (tier (a); see
:mod:`xgrad.frameworks.capture`).

The module (a deep copy: yours never changes) is run once on the batch with a forward hook
on every submodule, which records each call: the module's path, its floating inputs, its
output, the order calls finish in. Each called module owns its direct parameters and those of
its submodules that are never called themselves (``nn.MultiheadAttention`` uses its
``out_proj`` weights through ``F.multi_head_attention_forward``); a parameter reached from
two modules (a tied LM head) is owned by the first and shared by the other, and so is one
that a module's own code uses although another module owns it (a tied autoencoder's
``F.linear(h, self.enc.weight.t())``: :mod:`.uses`).

A called module without called submodules whose class the torch kind table reads
(:data:`~xgrad.frameworks.torch.kinds.KINDS`: ``nn.Linear``, ``nn.LayerNorm``, activation
modules, ...) gets its layer kind and configuration, its weights their canonical names and
layouts (``weight`` of an ``nn.Linear`` is ``kernel``, stored ``(1, 0)``), and the buffers
the kind reads their canonical names as its state (an ``nn.BatchNorm1d``'s
``running_mean`` and ``running_var`` are ``mean`` and ``var``: in ``weights()``, written by
``with_weights``, returned updated by an evaluation in training mode); a weight-free
module of another class is named from its values when one of xgrad's activations reproduces
them (minGPT's ``NewGELU``), and a module of your own holding one weight vector is named
from its values when one of xgrad's norms reproduces it (LLaMA's ``RMSNorm``). Any other
module is opaque: compared and localised, never refused.

An evaluation runs the copy under ``torch.func.functional_call`` with fresh parameters,
adding a zero tensor to each module's first floating output (its first call), whose
gradient is ``dL/d`` that output.

Importing this module imports torch.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from xgrad.errors import InputError, ParamsError, XgradError
from xgrad.frameworks.base import Gradients
from xgrad.frameworks.capture import (
    Batch,
    CapturedModel,
    ModuleInfo,
    leaf_paths,
    pick_output,
    replace_leaf,
)
from xgrad.frameworks.kinds import to_canonical
from xgrad.frameworks.torch.kinds import ALIAS, ELEMENTWISE, module_layer
from xgrad.frameworks.torch.losses import torch_loss
from xgrad.frameworks.torch.model import (
    fresh_tensors,
    is_floating,
    module_device,
    numpy_tensor,
    rng_devices,
    tapped,
    tensor_numpy,
    torch_dtype,
    write_tensor,
)
from xgrad.frameworks.torch.uses import ParamUses, used_elsewhere
from xgrad.identify import FIT, fit_activation, fit_norm, rel
from xgrad.layers import Activation, Dense
from xgrad.losses import Loss
from xgrad.params import Params

__all__ = ["TorchCapturedModel", "capture_module"]


# -- one call ---------------------------------------------------------------------------------


@dataclass
class _Call:
    """One module call seen while reading: its path, the module, its floating inputs and
    its output's first floating leaf (or ``None``), its position among finished calls."""

    path: str
    module: nn.Module
    inputs: list[torch.Tensor]
    output: torch.Tensor | None
    output_key: str
    order: int
    calls: int = 1


def _floating_leaves(args, kwargs) -> list[torch.Tensor]:
    leaves = [leaf for _, leaf in leaf_paths(list(args))]
    leaves += [leaf for _, leaf in leaf_paths(dict(kwargs))]
    return [t for t in leaves if isinstance(t, torch.Tensor) and t.is_floating_point()]


def _first_floating(out) -> tuple[str, torch.Tensor | None]:
    for key, leaf in leaf_paths(out):
        if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
            return key, leaf
    return "", None


# -- inputs -----------------------------------------------------------------------------------


def _tensors(batch: Batch, dtype: torch.dtype, device, *, grad: bool):
    """``(args, kwargs, floating leaves requiring grad)`` of the batch as torch tensors: floats
    in the model's dtype, integer ids as ``int64``, booleans as ``bool``."""
    floating = []

    def one(arr: np.ndarray) -> torch.Tensor:
        if is_floating(arr.dtype):
            t = torch.from_numpy(np.asarray(arr, dtype=np.float64)).to(device=device, dtype=dtype)
            if grad:
                t.requires_grad_(True)
            floating.append(t)
            return t
        if arr.dtype.kind == "b":
            return torch.from_numpy(np.ascontiguousarray(arr)).to(device)
        return torch.from_numpy(np.asarray(arr, dtype=np.int64)).to(device)

    args = tuple(one(a) for a in batch.args)
    kwargs = {k: one(a) for k, a in batch.kwargs.items()}
    return args, kwargs, floating


# -- reading ----------------------------------------------------------------------------------


def _record(module: nn.Module, batch: Batch, dtype: str) -> tuple[list[_Call], object, set]:
    """Run ``module`` once, without grad, recording every module call (hooks on every module,
    the root included); ``(calls in the order they finish, the model's output, the
    parameters each module's own code uses)`` (:class:`~.uses.ParamUses`)."""
    paths = {id(m): name for name, m in module.named_modules()}
    seen: dict[str, _Call] = {}
    running: list[str] = []  # the modules whose calls have started and not finished

    def start(mod, args):
        running.append(paths.get(id(mod), ""))

    def hook(mod, args, kwargs, out):
        path = paths.get(id(mod))
        if running:
            running.pop()
        if path is None:
            return
        if path in seen:
            seen[path].calls += 1
            return
        key, leaf = _first_floating(out)
        inputs = [t.detach().clone() for t in _floating_leaves(args, kwargs)]
        value = None if leaf is None else leaf.detach().clone()
        seen[path] = _Call(path, mod, inputs, value, key, len(seen))

    handles = [m.register_forward_hook(hook, with_kwargs=True) for _, m in module.named_modules()]
    handles += [m.register_forward_pre_hook(start) for _, m in module.named_modules()]
    params, buffers = fresh_tensors(module, grad=False)
    try:
        args, kwargs, _ = _tensors(batch, torch_dtype(dtype), module_device(module), grad=False)
        uses = ParamUses(params, running)
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices(module)), uses:
            out = torch.func.functional_call(module, {**params, **buffers}, args, kwargs)
    except XgradError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise _failed(module, batch, exc, running[-1] if running else "") from None
    finally:
        for handle in handles:
            handle.remove()
    return sorted(seen.values(), key=lambda c: c.order), out, uses.found


def _failed(module: nn.Module, batch: Batch, exc: Exception, where: str) -> InputError:
    """The model's own error on the batch, quoted, with the module it was raised in
    (``where``: its path, ``""`` for the model itself) and, where xgrad can tell, what to
    change."""
    name = type(module).__name__
    sub = module.get_submodule(where) if where else module
    inside = f" in module {where!r} ({type(sub).__name__})" if where else ""
    hint = ""
    if isinstance(exc, TypeError) and not where and "argument" in str(exc):
        hint = (
            f"; xgrad calls {name}(x) for one array x, {name}(*x) for a tuple or list and "
            f"{name}(**x) for a dict: give x the way {name}.forward takes its inputs"
        )
    elif isinstance(sub, nn.Embedding):
        ids = [a for a in batch.leaves.values() if a.dtype.kind in "iu"]
        if not ids:
            hint = "; token ids must be integers: pass them as an integer array (int64)"
        else:
            low, high = min(int(a.min()) for a in ids), max(int(a.max()) for a in ids)
            hint = (
                f"; its ids must lie in [0, {sub.num_embeddings}) (num_embeddings="
                f"{sub.num_embeddings}); the inputs hold ids from {low} to {high}"
            )
    text = " ".join(str(exc).split())[:500]
    return InputError(
        f"running {name} on inputs {batch.describe()} failed{inside}: "
        f"{type(exc).__name__}: {text}{hint}"
    )


def _scope(path: str, called: set[str]) -> str | None:
    """The nearest called module enclosing ``path`` (``""``: the root; ``None``: the root
    itself)."""
    if path == "":
        return None
    parts = path.split(".")
    for k in range(len(parts) - 1, 0, -1):
        parent = ".".join(parts[:k])
        if parent in called:
            return parent
    return ""


def _owner(native: str, called: set[str]) -> tuple[str, str]:
    """``(owner path, local name)`` of a parameter: the nearest called module at or above it
    (the root at the latest), and its name below that module."""
    parts = native.split(".")
    for k in range(len(parts) - 1, 0, -1):
        owner = ".".join(parts[:k])
        if owner in called:
            return owner, ".".join(parts[k:])
    return "", native


def _owners(module: nn.Module, called: set[str]) -> tuple[dict, dict, dict]:
    """``(owner path -> {local: native} of its parameters, owner path -> {local: native} of
    its floating buffers, native alias -> the native name it shares a tensor with)``: each
    parameter and buffer owned by the nearest called module at or above it; a parameter
    reached under two names (a tied weight) is owned at its first name only."""
    owned: dict[str, dict[str, str]] = {}
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for native, p in module.named_parameters(remove_duplicate=False):
        if id(p) in first:
            aliases[native] = first[id(p)]
            continue
        first[id(p)] = native
        owner, local = _owner(native, called)
        owned.setdefault(owner, {})[local] = native
    buffers: dict[str, dict[str, str]] = {}
    for native, b in module.named_buffers():
        if b is not None and b.is_floating_point():
            owner, local = _owner(native, called)
            buffers.setdefault(owner, {})[local] = native
    return owned, buffers, aliases


def _known(call: _Call, own: dict[str, str], buffers: dict[str, str], dtype: str, leaf: bool):
    """``(layer or None, kind, params {local: native}, state {local: native}, layouts,
    note)`` of a called module: its kind from the torch kind table (its parameters and
    floating buffers exactly those the kind reads: an ``nn.BatchNorm1d``'s running
    statistics are its state ``mean`` and ``var``) or from its values, else opaque
    (``module``, its parameters under torch's names, no state)."""
    opaque = (None, "module", dict(own), _running_stats(call.module, buffers), {}, None)
    if not leaf or call.output is None:
        return opaque
    ndim = call.inputs[0].ndim if call.inputs else 2
    try:
        found = module_layer(call.module, call.path, dtype, ndim)
    except XgradError:
        found = None
    if found is ALIAS or found is None:
        found = ELEMENTWISE if not own else None
    if found is ELEMENTWISE:
        return _from_values(call, dtype) or opaque
    if found is None or found.layer is None:
        return opaque
    if set(found.params.values()) != set(own.values()) or set(found.state.values()) != set(
        buffers.values()
    ):
        return opaque  # a subclass holding more than the kind's weights
    return (
        found.layer,
        found.kind,
        dict(found.params),
        dict(found.state),
        dict(found.layouts),
        found.note,
    )


def _running_stats(module: nn.Module, buffers: dict[str, str]) -> dict[str, str]:
    """The state ``{mean, var}`` of a BatchNorm that stays opaque (a user's channels-first
    ``nn.BatchNorm2d``, an ``nn.BatchNorm1d`` on ``(B, C, L)``): its ``running_mean`` and
    ``running_var`` ``(C,)``, the shape a channels-last port's moving statistics have, so
    that they count as state, never as parameters; ``{}`` for any other module."""
    stats = ("running_mean", "running_var")
    if not isinstance(module, nn.modules.batchnorm._BatchNorm) or set(buffers) != set(stats):
        return {}  # a subclass holding another floating buffer stays as it is
    return {"mean": buffers["running_mean"], "var": buffers["running_var"]}


def _float64(t: torch.Tensor) -> np.ndarray:
    return np.asarray(tensor_numpy(t), dtype=np.float64)


def _from_values(call: _Call, dtype: str):
    """An activation of xgrad's that reproduces a weight-free module's values, or ``None``."""
    if len(call.inputs) != 1 or call.inputs[0].shape != call.output.shape:
        return None
    z = _float64(call.inputs[0])
    a = _float64(call.output)
    name, err = fit_activation(z, a, dtype if dtype in ("float32", "float64") else "float32")
    if name is None:
        return None
    note = f"identified numerically as {name} ({err:.1e})"
    return Activation(name), "activation", {}, {}, {}, note


def _as_norm(call: _Call, own: dict[str, str], params: dict, dtype: str):
    """A module of the user's own holding one weight vector (LLaMA's RMSNorm) named as the
    norm of xgrad's that reproduces its values, or ``None``."""
    if len(own) != 1 or len(call.inputs) != 1 or call.inputs[0].shape != call.output.shape:
        return None
    ((local, native),) = own.items()
    w = _float64(params[native])
    if w.ndim != 1 or w.shape[0] != call.output.shape[-1]:
        return None
    x = _float64(call.inputs[0])
    out = _float64(call.output)
    found, _ = fit_norm(x, out, {"scale": w}, dtype=dtype if dtype != "float64" else "float64")
    if (
        found is None
        or found.kind not in ("rmsnorm", "layernorm")
        or found.param_names() != ("scale",)
    ):
        return None
    note = f"identified numerically as {found.describe()}"
    return found, found.kind, {"scale": native}, {}, {}, note


def _as_dense(call: _Call, own: dict[str, str], params: dict, dtype: str):
    """A module of no known class holding one matrix and maybe one bias vector, named a
    dense layer when ``x @ W + b`` (or ``x @ W.T + b``) reproduces its values: Hugging Face's
    GPT-2 ``Conv1D`` stores ``W`` as ``(in, out)``, ``nn.Linear`` as ``(out, in)``; which
    one a module holds is read from what it computed, so that its matrix pairs with an NNX
    or Keras kernel in the right axis order. ``None`` when neither reproduces it."""
    if len(call.inputs) != 1 or not 1 <= len(own) <= 2:
        return None
    arrays = {local: _float64(params[native]) for local, native in own.items()}
    matrices = [k for k, a in arrays.items() if a.ndim == 2]
    vectors = [k for k, a in arrays.items() if a.ndim == 1]
    if len(matrices) != 1 or len(vectors) != len(own) - 1:
        return None
    w = arrays[matrices[0]]
    b = arrays[vectors[0]] if vectors else 0.0
    x, out = _float64(call.inputs[0]), _float64(call.output)
    tol = FIT.get(dtype, FIT["float32"])
    fits = [
        layout
        for layout, kernel in ((None, w), ((1, 0), w.T))
        if x.shape[-1] == kernel.shape[0]
        and out.shape == (*x.shape[:-1], kernel.shape[1])
        and (not vectors or b.shape == (kernel.shape[1],))
        and rel(x @ kernel + b, out) <= tol
    ]
    if len(fits) != 1:
        return None
    natives = {"kernel": own[matrices[0]], **({"bias": own[vectors[0]]} if vectors else {})}
    layer = Dense(out.shape[-1], "linear", use_bias=bool(vectors))
    note = "identified numerically as dense, its weight stored " + (
        "(in, out)" if fits[0] is None else "(out, in)"
    )
    return layer, "dense", natives, {}, ({} if fits[0] is None else {"kernel": (1, 0)}), note


FUSED_WEIGHTS: dict[type, dict[str, tuple[str, tuple[int, ...] | None]]] = {
    nn.MultiheadAttention: {
        "in_proj_weight": ("in_proj.kernel", (1, 0)),
        "in_proj_bias": ("in_proj.bias", None),
    },
    # convolutions: weight (out, in // groups, *kernel) is the kernel (*kernel, in // groups,
    # out) that Keras and Flax store (their HWIO order), so that the two pair by name
    nn.Conv1d: {"weight": ("kernel", (2, 1, 0))},
    nn.Conv2d: {"weight": ("kernel", (3, 2, 0, 1))},
    nn.Conv3d: {"weight": ("kernel", (4, 3, 0, 1, 2))},
}
"""torch modules of no xgrad kind whose own weights' layout torch documents: class -> native
local name -> (xgrad's local name, layout). ``nn.MultiheadAttention``'s ``in_proj_weight``
``(3E, E)`` holds the q, k and v projections' ``(out, in)`` weights one above the other: as
``in_proj.kernel (E, 3E)`` it is their ``(in, out)`` kernels side by side, as separate q/k/v
projections store them. A convolution's ``weight (out, in // groups, *kernel)`` is
``kernel (*kernel, in // groups, out)``, the order Keras and Flax store (a transposed
convolution's weight is ``(in, out // groups, *kernel)``: not listed)."""


def _documented(module: nn.Module, owner: str, own: dict[str, str]):
    """``(own, layouts)`` with the weights :data:`FUSED_WEIGHTS` documents renamed."""
    table = next((t for cls, t in FUSED_WEIGHTS.items() if isinstance(module, cls)), {})
    renamed, layouts = {}, {}
    for local, native in own.items():
        if local in table:
            name, layout = table[local]
            renamed[name] = native
            if layout:
                layouts[name] = layout
        else:
            renamed[local] = native
    return renamed, layouts


def _uncalled_kinds(module: nn.Module, owner: str, own: dict[str, str], dtype: str):
    """``(own, layouts)`` with the weights of an owner's submodules that are never called but
    whose class the kind table reads (``nn.MultiheadAttention``'s ``out_proj`` Linear) under
    xgrad's names and layouts (``out_proj.kernel``, ``(1, 0)``)."""
    renamed, layouts = dict(own), {}
    subs = {native.rsplit(".", 1)[0] for native in own.values() if "." in native}
    for sub_path in sorted(subs):
        if owner and not sub_path.startswith(owner + "."):
            continue
        try:
            found = module_layer(module.get_submodule(sub_path), sub_path, dtype)
        except (XgradError, AttributeError):
            continue
        if found in (ALIAS, ELEMENTWISE) or found is None or found.layer is None:
            continue
        prefix = sub_path[len(owner) + 1 :] if owner else sub_path
        natives = {**found.params, **found.state}
        if not set(natives.values()) <= set(renamed.values()):
            continue
        for local, native in natives.items():
            old = next(k for k, v in renamed.items() if v == native)
            del renamed[old]
            renamed[f"{prefix}.{local}"] = native
            if local in found.layouts:
                layouts[f"{prefix}.{local}"] = found.layouts[local]
    return renamed, layouts


def _infos(
    calls: list[_Call], module: nn.Module, dtype: str, uses: set = frozenset()
) -> tuple[ModuleInfo, ...]:
    called = {c.path for c in calls}
    owned, buffers, aliases = _owners(module, called)
    owner_of = {native: path for path, own in owned.items() for native in own.values()}
    scopes = {c.path: _scope(c.path, called) for c in calls}
    parents = set(scopes.values())
    tensors = dict(module.named_parameters())
    out = []
    for c in calls:
        own, leaf = owned.get(c.path, {}), c.path not in parents
        layer, kind, natives, state, layouts, note = _known(
            c, own, buffers.get(c.path, {}), dtype, leaf
        )
        if layer is None:
            natives, layouts = _uncalled_kinds(module, c.path, natives, dtype)
            natives, documented = _documented(c.module, c.path, natives)
            layouts = {**layouts, **documented}
        if layer is None and leaf and c.output is not None:
            found = _as_norm(c, own, tensors, dtype) or _as_dense(c, own, tensors, dtype)
            if found is not None:
                layer, kind, natives, state, layouts, note = found
        if isinstance(c.module, nn.RNNBase) and c.output_key == "0":
            note = _rnn_note(c.module) if note is None else f"{note}; {_rnn_note(c.module)}"
        out.append(
            ModuleInfo(
                path=c.path,
                kind=kind,
                name=c.path or type(c.module).__name__,
                layer=layer,
                params=natives,
                state=state,
                layouts=layouts,
                input_shape=tuple(c.inputs[0].shape[1:]) if c.inputs else (),
                output_shape=tuple(c.output.shape[1:]) if c.output is not None else (),
                note=note,
                scope=scopes[c.path],
                type=type(c.module).__name__,
                input_shapes=tuple(tuple(t.shape[1:]) for t in c.inputs),
                calls=c.calls,
            )
        )
    return _with_shared(tuple(out), aliases, called, used_elsewhere(uses, owner_of, called))


def _with_shared(infos: tuple[ModuleInfo, ...], aliases: dict, called: set[str], used: dict):
    """Each module's tied weights: the local name of an alias below it (or of another
    module's parameter its own code uses, ``used``) -> the canonical name of the parameter
    it is."""
    canonical = {
        native: f"{info.path}.{local}" if info.path else local
        for info in infos
        for local, native in info.params.items()
    }
    shared: dict[str, dict[str, str]] = {}
    for alias, native in aliases.items():
        owner, local = _owner(alias, called)
        shared.setdefault(owner, {})[local] = canonical.get(native, native)
    for path, natives in used.items():
        for local, native in natives.items():
            if native in canonical and canonical[native] not in shared.get(path, {}).values():
                shared.setdefault(path, {})[local] = canonical[native]
    return tuple(
        dataclasses.replace(info, shared=shared[info.path]) if info.path in shared else info
        for info in infos
    )


def capture_module(
    module: nn.Module, batch: Batch, *, output=None, training: bool | None = None
) -> TorchCapturedModel:
    """A user's module read at its modules' boundaries (a deep copy; yours never changes).

    Args:
        module: the ``nn.Module``.
        batch: the inputs (:func:`~xgrad.frameworks.capture.as_batch`), passed as positional
            (``module(*args)``) and keyword (``module(**kwargs)``) arguments.
        output: which of the module's outputs the loss sees (``None``: the first floating
            tensor; a key, index or path: :func:`~xgrad.frameworks.capture.pick_output`).
        training: ``None`` keeps every submodule's mode as you set it; ``True`` / ``False``
            calls ``.train()`` / ``.eval()`` on the copy.

    Raises:
        InputError: the module cannot be copied, its weights are of several dtypes, or it
            fails on the batch (its error quoted).
    """
    from xgrad.frameworks.torch.reader import module_dtype

    if not isinstance(module, nn.Module):
        raise InputError(f"capture needs a torch.nn.Module, got {type(module).__name__}")
    try:
        own = copy.deepcopy(module)
    except Exception as exc:  # whatever the module holds that cannot be copied
        raise InputError(
            f"cannot copy {type(module).__name__} ({type(exc).__name__}: {exc}); xgrad works on "
            "a deep copy so that your module is never changed"
        ) from None
    if training is not None:
        own.train(bool(training))
    dtype = module_dtype(own)
    calls, out, uses = _record(own, batch, dtype)
    what = f"{type(module).__name__}.forward"
    leaf, path = pick_output(out, output, what=what)
    note = None
    others = [p for p, v in leaf_paths(out) if p != path and isinstance(v, torch.Tensor)]
    if others:
        note = (
            f"the model returns {len(others) + 1} tensors; the loss sees {path or 'the output'} "
            f"{tuple(leaf.shape)} (output= picks another: {', '.join(others[:4])})"
        )
    if not isinstance(leaf, torch.Tensor):
        raise InputError(f"{what} returned {type(leaf).__name__} at {path!r}, not a tensor")
    model = TorchCapturedModel(
        own,
        _infos(calls, own, dtype, uses),
        batch=batch,
        dtype=dtype,
        output_path=path,
        output_shape=tuple(leaf.shape[1:]),
        description=f"torch {type(module).__name__} (module by module)",
    )
    model.output_note = note
    return model


# -- the model --------------------------------------------------------------------------------


@dataclass
class _Taps:
    """The zero tensors added to module outputs in one evaluation, and what they saw."""

    paths: list[str] = field(default_factory=list)
    eps: list[torch.Tensor] = field(default_factory=list)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    inputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    hidden: dict[str, tuple[nn.RNNBase, torch.Tensor]] = field(default_factory=dict)


def _rnn_hidden(mod: nn.Module, out) -> tuple[str, torch.Tensor] | None:
    """``(key, h_n)`` of a torch RNN's ``(output, h_n)`` / ``(output, (h_n, c_n))``, else
    ``None``."""
    if not isinstance(mod, nn.RNNBase) or not isinstance(out, tuple) or len(out) != 2:
        return None
    if not isinstance(out[0], torch.Tensor):  # a PackedSequence
        return None
    hidden = out[1][0] if isinstance(out[1], tuple) else out[1]
    return ("1.0" if isinstance(out[1], tuple) else "1"), hidden


def _fold_hidden(mod: nn.RNNBase, grad: torch.Tensor, d_hidden: torch.Tensor) -> torch.Tensor:
    """``dL/d output`` of a torch RNN with ``dL/d h_n`` of its last layer added where that
    state is in the output: ``h_n[-1]`` (forward direction) is ``output`` at the last step,
    ``h_n[-1]`` of a bidirectional RNN's backward direction ``output`` at the first step, in
    its second half of features.

    ``grad`` is ``(B, T, D * H)`` (``batch_first``), ``(T, B, D * H)`` or ``(T, D * H)``
    (unbatched); ``d_hidden`` ``(D * layers, B, H)`` or ``(D * layers, H)``."""
    dirs = 2 if mod.bidirectional else 1
    units = d_hidden.shape[-1]
    time = 1 if grad.ndim == 3 and mod.batch_first else 0
    grad = grad.clone()
    for d in range(dirs):
        step = -1 if d == 0 else 0
        index = [slice(None)] * grad.ndim
        index[time] = step
        index[-1] = slice(d * units, (d + 1) * units)
        grad[tuple(index)] += d_hidden[d_hidden.shape[0] - dirs + d]
    return grad


def _rnn_note(mod: nn.RNNBase) -> str:
    """The note on a torch RNN module read module by module: how its ``dL/d output`` is
    taken, and what it does not show."""
    hidden = [*(["c_n"] if isinstance(mod, nn.LSTM) else []), "h_n of an earlier layer"]
    hidden = hidden[: len(hidden) - (mod.num_layers == 1)]
    rest = (
        f"; a loss reading {' or '.join(hidden)} reaches the module by a path its output does "
        "not show, so there its dL/d output is not the whole gradient through it"
        if hidden
        else ""
    )
    return (
        "returns (output, h_n): its dL/d output is compared with dL/d h_n of the last layer "
        "added where that state is in output (h_n[-1] is output at the last step), the "
        "gradient a port returning the sequence alone (Keras return_sequences=True, Flax "
        f"nnx.RNN) shows{rest}"
    )


class TorchCapturedModel(CapturedModel):
    """A torch module read module by module (see :func:`capture_module`)."""

    framework = "torch"

    def __init__(
        self,
        module: nn.Module,
        modules: tuple[ModuleInfo, ...],
        *,
        batch: Batch,
        dtype: str,
        output_path: str,
        output_shape,
        description: str,
    ) -> None:
        self._module = module
        self.layers = modules
        self.batch = batch
        self.dtype = dtype
        self.output_path = output_path
        self.output_shape = tuple(output_shape)
        self.input_shape = tuple(batch.first.shape[1:])
        self.description = description

    @property
    def native(self) -> nn.Module:
        return self._module

    def _names(self, *, state: bool = False) -> dict[str, tuple[str, tuple | None]]:
        """Canonical name -> (state-dict name, layout) of every parameter (a tied one once,
        under its owner's name), then, with ``state``, of every state array (a BatchNorm's
        running statistics: ``mean``, ``var``)."""
        out = {}
        for info in self.layers:
            for local, native in (*info.params.items(), *(info.state.items() if state else ())):
                name = f"{info.path}.{local}" if info.path else local
                out[name] = (native, info.layouts.get(local))
        return out

    def weights(self) -> Params:
        tensors = self._module.state_dict()
        out = {}
        for name, (native, layout) in self._names(state=True).items():
            arr = tensor_numpy(tensors[native])
            out[name] = np.ascontiguousarray(to_canonical(arr, layout)) if layout else arr
        return out

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> TorchCapturedModel:
        names = self._names(state=True)
        unknown = [k for k in weights if k not in names]
        if unknown:
            raise ParamsError(
                f"unknown weight name(s) {unknown} for {self.description}; its canonical "
                f"names are {list(names)}"
            )
        module = copy.deepcopy(self._module)
        tensors = module.state_dict(keep_vars=True)
        with torch.no_grad():
            for name, value in weights.items():
                native, layout = names[name]
                write_tensor(tensors[native], np.asarray(value), layout, name)
        new = copy.copy(self)
        new._module = module
        return new

    # -- evaluation ----------------------------------------------------------------------------

    def _hooks(self, taps: _Taps, capture: bool):
        """Forward hooks tapping each module's first call (first floating output leaf)."""
        infos = {info.path: info for info in self.layers}
        names = {id(m): n for n, m in self._module.named_modules()}
        done: set[str] = set()

        def hook(mod, args, kwargs, out):
            path = names.get(id(mod))
            if path not in infos or path in done:
                return None
            done.add(path)
            key, leaf = _first_floating(out)
            taps.inputs[path] = [t.detach().clone() for t in _floating_leaves(args, kwargs)]
            if leaf is None:
                return None
            new, eps = tapped(leaf)
            taps.paths.append(path)
            taps.eps.append(eps)
            taps.values[path] = new.detach().clone()
            hidden = _rnn_hidden(mod, out) if key == "0" else None
            if hidden is not None:  # dL/d h_n, folded onto dL/d output after the backward
                h_new, h_eps = tapped(hidden[1])
                taps.hidden[path] = (mod, h_eps)
                out = replace_leaf(out, hidden[0], h_new)
            return replace_leaf(out, key, new)

        if not capture:
            return []
        return [m.register_forward_hook(hook, with_kwargs=True) for m in self._module.modules()]

    def _loss(self, loss, out: torch.Tensor, y):
        if isinstance(loss, Loss):
            yt = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.float64))
            return torch_loss(loss)(out, None if yt is None else yt.to(out.device, out.dtype))
        yt = None
        if y is not None:
            arr = np.asarray(y)
            yt = numpy_tensor(arr).to(out.device)
            yt = yt.to(out.dtype) if is_floating(arr.dtype) else yt
        value = loss(out, yt)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise InputError("a torch loss function must return a scalar tensor")
        return value.reshape(())

    def _updated(self, buffers: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        """The state arrays an evaluation updated (a BatchNorm in training mode: its running
        statistics, which torch updates in place in ``buffers``), by canonical name."""
        return {
            f"{info.path}.{local}" if info.path else local: tensor_numpy(buffers[native])
            for info in self.layers
            if (
                info.layer.updates_state
                if info.layer is not None
                else self._module.get_submodule(info.path).training
            )
            for local, native in info.state.items()
        }

    def _evaluate_batch(self, batch: Batch, y, loss, cotangent, capture: bool) -> Gradients:
        module = self._module
        names = self._names()
        taps = _Taps()
        with torch.enable_grad(), torch.random.fork_rng(devices=rng_devices(module)):
            params, buffers = fresh_tensors(module, grad=True)
            args, kwargs, floating = _tensors(
                batch, torch_dtype(self.dtype), module_device(module), grad=True
            )
            handles = self._hooks(taps, capture)
            try:
                tree = torch.func.functional_call(module, {**params, **buffers}, args, kwargs)
            except XgradError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError, KeyError) as exc:
                raise InputError(
                    f"torch could not evaluate {self.description}: {type(exc).__name__}: {exc}"
                ) from None
            finally:
                for handle in handles:
                    handle.remove()
            out, _ = pick_output(tree, self.output_path or None, what=self.description)
            if cotangent is None:
                root = value = self._loss(loss, out, y)
                seed = None
            else:
                root, value = out, None
                seed = torch.from_numpy(np.asarray(cotangent, dtype=np.float64)).to(
                    out.device, out.dtype
                )
            hidden = [eps for _, eps in taps.hidden.values()]
            wrt = [params[native] for native, _ in names.values()] + floating + taps.eps + hidden
            grads = torch.autograd.grad(root, wrt, grad_outputs=seed, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt, strict=True)]
        n, m = len(names), len(floating)
        grads, d_hidden = grads[: len(grads) - len(hidden)], grads[len(grads) - len(hidden) :]
        for (path, (mod, _)), dh in zip(taps.hidden.items(), d_hidden, strict=True):
            i = n + m + taps.paths.index(path)
            grads[i] = _fold_hidden(mod, grads[i], dh)
        dparams = {
            name: to_canonical(tensor_numpy(g, own=True), layout)
            for (name, (_, layout)), g in zip(names.items(), grads[:n], strict=True)
        }
        dinputs = dict(
            zip(batch.floating, (tensor_numpy(g) for g in grads[n : n + m]), strict=True)
        )
        first = next(iter(dinputs.values()), np.zeros((0,)))
        return Gradients(
            loss=None if value is None else float(value.detach()),
            params=dparams,
            input=first,
            output=tensor_numpy(out),
            state=self._updated(buffers),
            activations={p: tensor_numpy(v) for p, v in taps.values.items()} if capture else None,
            activation_grads=(
                {p: tensor_numpy(g) for p, g in zip(taps.paths, grads[n + m :], strict=True)}
                if capture
                else None
            ),
            inputs=dinputs,
            module_inputs=(
                {p: tuple(tensor_numpy(t) for t in ts) for p, ts in taps.inputs.items()}
                if capture
                else None
            ),
        )
