"""The torch model: one ``nn.Module``, its layers, and how to tap each layer's output.

:class:`TorchModel` answers for a built spec and for a user's module alike. An evaluation
never changes the module: :func:`call_with` runs it under ``torch.func.functional_call`` with
fresh copies of its parameters (leaves that require grad, whatever the module's own
``requires_grad`` flags) and of its buffers (so a BatchNorm in training mode updates the
copies: the updated running statistics are read from them). ``torch.enable_grad`` and
``torch.random.fork_rng`` restore grad mode and the global RNG on exit; the default dtype,
matmul precision and thread count are never touched.

Per-layer values (``capture=True``) come from *taps*. A tap adds a zero tensor ``eps`` to a
layer's output; ``dL/d eps`` is ``dL/d`` that output, through every use of it and also when a
later in-place op (``nn.ReLU(inplace=True)``) overwrites it. Two kinds of taps:

* :class:`HookTap`: forward hooks on submodules (a built spec; a user's module that
  ``torch.fx`` cannot trace);
* :class:`GraphTap`: a ``torch.fx`` graph of the module run by an interpreter that taps the
  nodes that end a layer.

Importing this module imports torch.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Mapping

import numpy as np
import torch
import torch.fx
from torch import nn

from xgrad.errors import InputError, ParamsError, XgradError
from xgrad.frameworks.base import AbstractModel, Gradients, LayerInfo
from xgrad.frameworks.kinds import NativeParts, to_canonical
from xgrad.frameworks.torch.losses import torch_loss
from xgrad.layers import Shape
from xgrad.layers.embedding import check_ids
from xgrad.losses import Loss
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = [
    "Capture",
    "GraphTap",
    "HookTap",
    "TorchModel",
    "call_with",
    "fresh_tensors",
    "is_floating",
    "module_device",
    "numpy_tensor",
    "rng_devices",
    "tapped",
    "tensor_numpy",
    "torch_dtype",
    "write_tensor",
    "write_weights",
]

_TORCH_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def torch_dtype(dtype: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32``."""
    return _TORCH_DTYPES[dtype]


def tapped(value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(value + eps, eps)`` with a fresh zero ``eps`` that requires grad: the sum stands for
    ``value`` in the rest of the computation, and ``dL/d eps`` is ``dL/d value``.

    torch cannot add float8 tensors (a ``.to(torch.float8_e4m3fn)`` in a user's ``forward``):
    there ``eps`` is float32 and the sum is cast back, which gives ``value`` exactly.
    """
    if value.is_floating_point() and value.element_size() == 1:
        eps = torch.zeros_like(value, dtype=torch.float32, requires_grad=True)
        return (value.float() + eps).to(value.dtype), eps
    eps = torch.zeros_like(value, requires_grad=True)
    return value + eps, eps


class Capture:
    """Per-layer values of one evaluation, filled in by a tap.

    Attributes:
        values: layer path -> its output (a detached copy, taken when it was computed).
        targets: layer path -> the tensor to differentiate for ``dL/d`` that output.
    """

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.targets: dict[str, torch.Tensor] = {}

    def tap(self, path: str, value: torch.Tensor) -> torch.Tensor:
        """``value + eps`` with a fresh zero ``eps``: use the result in place of ``value``."""
        out, eps = tapped(value)
        self.values[path] = out.detach().clone()
        self.targets[path] = eps
        return out

    def watch(self, path: str, value: torch.Tensor) -> None:
        """Record a value that cannot be replaced (one computed by code between two hooked
        modules): its gradient is taken with respect to the tensor itself."""
        self.values[path] = value.detach().clone()
        self.targets[path] = value


class AbstractTap(abc.ABC):
    """How to run a module so that each layer's output is tapped."""

    @abc.abstractmethod
    def run(self, module: nn.Module, x: torch.Tensor, capture: Capture | None) -> torch.Tensor:
        """The module's output for ``x``; with ``capture``, every layer tapped into it."""


class HookTap(AbstractTap):
    """Taps through forward hooks, registered for one run and removed after it.

    Args:
        outputs: submodule name (``"0"``, ``"2.0"``) -> the path of the layer it ends.
        inputs: submodule name -> the path of a layer computed by code just before that
            submodule (its input is the layer's output; :meth:`Capture.watch`).
        result: the path of a layer computed by code at the end of ``forward`` (the
            module's output is the layer's output), or ``None``.
    """

    def __init__(
        self,
        outputs: Mapping[str, str],
        inputs: Mapping[str, str] | None = None,
        result: str | None = None,
    ) -> None:
        self.outputs = dict(outputs)
        self.inputs = dict(inputs or {})
        self.result = result

    def run(self, module, x, capture):
        if capture is None:
            return module(x)
        handles = []
        try:
            for name, path in self.outputs.items():
                sub = module.get_submodule(name)
                handles.append(
                    sub.register_forward_hook(lambda m, args, out, p=path: capture.tap(p, out))
                )
            for name, path in self.inputs.items():
                sub = module.get_submodule(name)
                handles.append(
                    sub.register_forward_pre_hook(lambda m, args, p=path: capture.watch(p, args[0]))
                )
            out = module(x)
        finally:
            for handle in handles:
                handle.remove()
        return out if self.result is None else capture.tap(self.result, out)


class _TapInterpreter(torch.fx.Interpreter):
    def __init__(self, module, graph, taps, capture):
        super().__init__(module, graph=graph)
        self.taps = taps
        self.capture = capture

    def run_node(self, n):
        out = super().run_node(n)
        path = self.taps.get(n.name)
        if path is not None and self.capture is not None:
            out = self.capture.tap(path, out)
        return out


class GraphTap(AbstractTap):
    """Runs a ``torch.fx`` graph of the module, tapping the nodes that end a layer.

    Args:
        graph: the graph traced from the module (its ``get_attr`` and ``call_module``
            targets are looked up on the module at each run, so it serves every copy).
        taps: node name -> the path of the layer that node ends.
    """

    def __init__(self, graph: torch.fx.Graph, taps: Mapping[str, str]) -> None:
        self.graph = graph
        self.taps = dict(taps)

    def run(self, module, x, capture):
        return _TapInterpreter(module, self.graph, self.taps, capture).run(x)


class _Call(nn.Module):
    """``fn(net, x)`` as a module's forward, for ``torch.func.functional_call``."""

    def __init__(self, net: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.net = net
        self._fn = fn

    def forward(self, x):
        return self._fn(self.net, x)


def call_with(module: nn.Module, tensors: Mapping[str, torch.Tensor], fn: Callable, x):
    """``fn(module, x)`` with ``module``'s parameters and buffers replaced by ``tensors``
    (state-dict names) for the call; the module itself is left as it was."""
    return torch.func.functional_call(
        _Call(module, fn), {f"net.{k}": v for k, v in tensors.items()}, (x,)
    )


def fresh_tensors(module: nn.Module, *, grad: bool, share: bool = False) -> tuple[dict, dict]:
    """Copies of the module's parameters (leaves requiring grad when ``grad``) and buffers.

    With ``share``, the parameters are new leaves on the module's own storage instead of
    copies: for modules whose forward never writes to a parameter (xgrad's own builds).
    Buffers are always copies (a BatchNorm in training mode updates them in place)."""
    params = {
        name: (p.detach() if share else p.detach().clone()).requires_grad_(grad)
        for name, p in module.named_parameters()
    }
    buffers = {name: b.detach().clone() for name, b in module.named_buffers()}
    return params, buffers


def rng_devices(module: nn.Module) -> list:
    """The CUDA devices whose RNG a run of ``module`` may draw from (CPU's is always saved)."""
    return sorted({t.device for t in module.parameters() if t.device.type == "cuda"}, key=str)


def module_device(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


# Floating dtypes NumPy holds itself; any other (bfloat16, the float8 kinds) is widened first.
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def tensor_numpy(t: torch.Tensor, *, own: bool = False) -> np.ndarray:
    """``t`` as a NumPy array, whatever its dtype: the one way torch tensors leave torch.

    NumPy holds no bfloat16 and no float8: a bfloat16 tensor comes back as ml_dtypes'
    bfloat16 (the dtype JAX and TensorFlow give NumPy) when ml_dtypes is installed, and any
    other floating dtype NumPy lacks (``float8_e4m3fn``, ``float8_e5m2``, ...; bfloat16
    without ml_dtypes) as float32, which holds each of their values exactly. ``t.numpy()``
    would raise ``TypeError: Got unsupported ScalarType BFloat16``.

    Args:
        t: any tensor, on any device, requiring grad or not.
        own: ``t`` is a fresh result nothing else refers to, so the array may share its
            memory (a contiguous one on the CPU; otherwise it is copied).
    """
    t = t.detach()
    if t.is_floating_point() and t.dtype not in _NUMPY_FLOATS:
        wide = t.cpu().float().numpy()  # a new array: nothing else refers to it
        if t.dtype == torch.bfloat16:
            try:
                import ml_dtypes
            except ImportError:  # pragma: no cover - ml_dtypes comes with jax and tensorflow
                return wide
            return wide.astype(ml_dtypes.bfloat16)
        return wide
    arr = t.cpu().numpy()
    return arr if own and t.is_contiguous() and t.device.type == "cpu" else arr.copy()


def is_floating(dtype: np.dtype) -> bool:
    """Whether NumPy ``dtype`` holds floats: NumPy's own, or ml_dtypes' (``bfloat16``,
    ``float8_e4m3fn``, ...), which NumPy reports as kind ``"V"``."""
    return dtype.kind == "f" or (dtype.kind == "V" and dtype.name.startswith(("bfloat", "float")))


def numpy_tensor(arr) -> torch.Tensor:
    """``arr`` as a CPU tensor, whatever its dtype: the way arrays enter torch, the reverse of
    :func:`tensor_numpy`. ml_dtypes' floats (a bfloat16 array from JAX or Keras) come in as
    float32, which holds each of their values exactly: ``torch.from_numpy`` refuses them.
    """
    arr = np.asarray(arr)
    if arr.dtype.kind == "V" and is_floating(arr.dtype):
        arr = arr.astype(np.float32)
    elif not arr.flags.writeable:  # torch warns that it may not share a read-only array
        arr = arr.copy()
    return torch.from_numpy(np.ascontiguousarray(arr))


def _parts(info: LayerInfo, local: str, native: str) -> tuple[str, ...]:
    """The state-dict names holding a weight: its own, or its :class:`NativeParts`'."""
    layout = info.layouts.get(local)
    return layout.names(native) if isinstance(layout, NativeParts) else (native,)


def _canonical_shape(native: tuple[int, ...], layout) -> tuple[int, ...]:
    """The canonical shape of a tensor of shape ``native`` stored in ``layout``."""
    if not layout:
        return native
    shape = [0] * len(native)
    for axis, canonical_axis in enumerate(layout):
        shape[canonical_axis] = native[axis]
    return tuple(shape)


def write_tensor(
    target: torch.Tensor, arr: np.ndarray, layout, name: str, check: bool = True
) -> None:
    """Copy the canonical array ``arr`` into the module's tensor, stored in ``layout``
    (:mod:`xgrad.frameworks.kinds`; ``None``: canonically); ``check=False`` for weights
    already checked (shape, dtype and finiteness)."""
    want = _canonical_shape(tuple(target.shape), layout)
    if check:
        if not is_floating(arr.dtype):
            raise ParamsError(f"weight {name!r} has dtype {arr.dtype}; weights must be floats")
        if arr.shape != want:
            hint = (
                " (transposed? canonical kernels are (in, out))"
                if len(want) == 2 and arr.shape == want[::-1]
                else ""
            )
            raise ParamsError(
                f"weight {name!r} has shape {arr.shape} but the model needs {want}{hint}"
            )
        if not np.isfinite(arr).all():
            raise ParamsError(f"weight {name!r} contains NaN/Inf; weights must be finite")
    source = numpy_tensor(arr)
    # torch permutes in blocks, in parallel
    target.copy_(source.permute(*layout) if layout else source)


def write_weights(
    module: nn.Module, layers, weights: Mapping[str, np.ndarray], *, check: bool = True
) -> None:
    """Copy canonical ``weights`` into ``module``'s tensors, in place (permuted into the
    layouts the layers state). ``layers`` name each weight's state-dict key; ``check=False`` for
    weights checked already (:func:`xgrad.params.check_params`).

    Raises:
        ParamsError: a wrong shape, a non-float array, or NaN/Inf.
    """
    infos = {
        f"{info.path}.{local}": (info, local, native)
        for top in layers
        for info in top.walk()
        for local, native in info.weights.items()
    }
    tensors = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for name, value in weights.items():
            info, local, native = infos[name]
            layout = info.layouts.get(local)
            if isinstance(layout, NativeParts):
                _write_parts(tensors, native, np.asarray(value), layout, name, check)
            else:
                write_tensor(tensors[native], np.asarray(value), layout, name, check)


def _write_parts(tensors, native: str, arr: np.ndarray, parts: NativeParts, name, check) -> None:
    """Write a canonical array held by several native tensors (:class:`NativeParts`: torch's
    LSTM bias as ``(bias, 0)``, a GRU's gates reordered)."""
    targets = [tensors[n] for n in parts.names(native)]
    want = parts.to_canonical([np.empty(tuple(t.shape)) for t in targets]).shape
    if check and arr.shape != want:
        raise ParamsError(f"weight {name!r} has shape {arr.shape} but the model needs {want}")
    for target, part in zip(targets, parts.to_native(arr), strict=True):
        write_tensor(target, np.ascontiguousarray(part), None, name, check)


class TorchModel(AbstractModel):
    """An ``nn.Module`` answering in canonical names and layout.

    Args:
        module: the module holding the weights (owned by this model: a built one, or a deep
            copy of the user's); never changed.
        layers: its layers in call order; ``LayerInfo.params`` / ``state`` give each
            weight's state-dict name, ``layouts`` the layout of those not stored canonically
            (``nn.Linear``'s ``(out, in)`` weight is the kernel ``(in, out)``, layout
            ``(1, 0)``).
        tap: how to run the module with each layer's output tapped.
        dtype: ``"float32"`` or ``"float64"``.
        input_shape, output_shape: the shapes of one example in and out.
        description: a short text naming the model.
        spec: the spec it was built from, or ``None`` for a user's module.
        pooled: ``(pool, key, nbytes)`` when ``module`` (``nbytes`` of weights) came from or
            is to go to a :class:`~xgrad.frameworks.pool.BuildPool`: it returns there when
            this model is collected, unless :attr:`native` gave it away.
    """

    framework = "torch"

    def __init__(
        self,
        module: nn.Module,
        layers: tuple[LayerInfo, ...],
        tap: AbstractTap,
        *,
        dtype: str,
        input_shape: Shape,
        output_shape: Shape,
        description: str,
        spec: MLP | None = None,
        pooled: tuple | None = None,
    ) -> None:
        self._module = module
        self.layers = tuple(layers)
        self._tap = tap
        self.dtype = dtype
        self.input_shape = tuple(input_shape)
        self.output_shape = tuple(output_shape)
        self.description = description
        self._spec = spec
        self._lease = None if pooled is None else pooled[0].lend(self, pooled[1], module, pooled[2])

    @property
    def native(self) -> nn.Module:
        """The ``nn.Module`` holding this model's weights (changing it changes the model)."""
        if self._lease is not None:
            self._lease.escape()  # the user holds the module now: it is never reused
        return self._module

    def spec(self) -> MLP | None:
        return self._spec if self._spec is not None else super().spec()

    # -- weights ---------------------------------------------------------------------------

    def _infos(self) -> dict[str, tuple[LayerInfo, str, str]]:
        """Canonical name -> (layer, local name, native name), parameters then state per layer."""
        return {
            f"{info.path}.{local}": (info, local, native)
            for info in self.walk()
            for local, native in info.weights.items()
        }

    def weights(self) -> Params:
        """Parameters and state in canonical names and layout (kernel ``(in, out)``), arrays of
        the model's dtype."""
        tensors = self._module.state_dict()
        out = {}
        for name, (info, local, native) in self._infos().items():
            layout = info.layouts.get(local)
            if isinstance(layout, NativeParts):
                parts = [tensor_numpy(tensors[n]) for n in layout.names(native)]
                out[name] = np.ascontiguousarray(layout.to_canonical(parts))
                continue
            arr = tensor_numpy(tensors[native])
            out[name] = np.ascontiguousarray(to_canonical(arr, layout)) if layout else arr
        return out

    def with_weights(self, weights: Mapping[str, np.ndarray]) -> TorchModel:
        """A new model on a deep copy of the module, holding ``weights`` (canonical names and
        layout; names not given keep their value).

        Raises:
            ParamsError: an unknown name, a wrong shape, a non-float array, or NaN/Inf.
        """
        infos = self._infos()
        unknown = [k for k in weights if k not in infos]
        if unknown:
            raise ParamsError(
                f"unknown weight name(s) {unknown} for {self.description}; its canonical "
                f"names are {list(infos)}"
            )
        module = copy.deepcopy(self._module)
        write_weights(module, self.layers, weights)
        return TorchModel(
            module,
            self.layers,
            self._tap,
            dtype=self.dtype,
            input_shape=self.input_shape,
            output_shape=self.output_shape,
            description=self.description,
            spec=self._spec,
        )

    # -- evaluation ------------------------------------------------------------------------

    def _loss(self, loss, out: torch.Tensor, y) -> torch.Tensor:
        if isinstance(loss, Loss):
            yt = None
            if y is not None:
                yt = torch.from_numpy(np.asarray(y, dtype=np.float64)).to(out.device, out.dtype)
            return torch_loss(loss)(out, yt)
        yt = None
        if y is not None:
            arr = np.asarray(y)
            yt = numpy_tensor(arr).to(out.device)
            if is_floating(arr.dtype):
                yt = yt.to(out.dtype)
        value = loss(out, yt)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise InputError(
                f"a torch loss function must return a scalar tensor, got {got}; reduce it, "
                "e.g. with .sum() or .mean()"
            )
        return value.reshape(())

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        module = self._module
        device = module_device(module)
        param_names = {
            f"{info.path}.{local}": (info, local, _parts(info, local, native))
            for info in self.walk()
            for local, native in info.params.items()
        }
        with torch.enable_grad(), torch.random.fork_rng(devices=rng_devices(module)):
            # a built module's forward is xgrad's own and never writes to a parameter: its
            # parameters are used in place; a user's module gets copies
            params, buffers = fresh_tensors(module, grad=True, share=self._spec is not None)
            xt = self._input(x, device)
            cap = Capture() if capture else None
            try:
                out = call_with(
                    module,
                    {**params, **buffers},
                    lambda net, inp: self._tap.run(net, inp, cap),
                    xt.clone(),
                )
                self._check_output(out, x.shape[0])
                value = None
                if cotangent is None:
                    root = value = self._loss(loss, out, y)
                    seed = None
                else:
                    root = out
                    seed = torch.from_numpy(np.array(cotangent, dtype=np.float64))
                    seed = seed.to(device=device, dtype=out.dtype)
                paths = [info.path for info in self.walk()] if cap is not None else []
                wrt = [params[n] for _, _, natives in param_names.values() for n in natives]
                wrt += ([xt] if xt.is_floating_point() else []) + [cap.targets[p] for p in paths]
                grads = torch.autograd.grad(root, wrt, grad_outputs=seed, allow_unused=True)
            except XgradError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise InputError(
                    f"torch could not evaluate {self.description}: {type(exc).__name__}: {exc}"
                ) from None
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, wrt, strict=True)]
        n = sum(len(natives) for _, _, natives in param_names.values())
        # token ids have no gradient: no dL/d input, and the layers' come right after params
        dx = tensor_numpy(grads[n], own=True) if xt.is_floating_point() else None
        m = n + (dx is not None)
        dparams, k = {}, 0
        for name, (info, local, natives) in param_names.items():
            layout, parts = info.layouts.get(local), grads[k : k + len(natives)]
            k += len(natives)
            if isinstance(layout, NativeParts):
                dparams[name] = layout.grad_to_canonical([tensor_numpy(g) for g in parts])
                continue
            # a permuted weight's gradient is handed over as a permuted view (canonical
            # shape, another memory order): the metrics read it in that order, no copy is made
            dparams[name] = to_canonical(tensor_numpy(parts[0], own=True), layout)
        state = {
            f"{info.path}.{local}": tensor_numpy(buffers[native], own=True)
            for info in self.walk()
            if info.layer is not None and info.layer.updates_state
            for local, native in info.state.items()
        }
        return Gradients(
            loss=None if value is None else float(value.detach()),
            params=dparams,
            input=dx,
            output=tensor_numpy(out, own=True),
            state=state,
            activations={p: tensor_numpy(cap.values[p], own=True) for p in paths}
            if capture
            else None,
            activation_grads=(
                {p: tensor_numpy(g, own=True) for p, g in zip(paths, grads[m:], strict=True)}
                if capture
                else None
            ),
        )

    def _input(self, x: np.ndarray, device) -> torch.Tensor:
        """The batch as a tensor: floats in the model's dtype, requiring grad; token ids (a
        spec whose first layer is an ``Embedding``) as ``int64``, checked against its
        vocabulary first (torch's own error names no layer)."""
        first = self.layers[0].layer if self.layers else None
        if first is None or first.kind != "embedding":
            xt = torch.from_numpy(np.array(x, dtype=np.float64))
            return xt.to(device=device, dtype=torch_dtype(self.dtype)).requires_grad_(True)
        ids = check_ids(x, first.vocab, f"Embedding {self.layers[0].path}")
        return torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)

    def _check_output(self, out, batch: int) -> None:
        want = (batch, *self.output_shape)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise InputError(
                f"{self.description} returned {got}, expected a tensor of shape {want}"
            )
