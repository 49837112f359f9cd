"""What xgrad layer a torch module or a functional call is: the readers' vocabulary.

====================================  ======================================================
torch                                 xgrad
====================================  ======================================================
``nn.Linear``, ``F.linear``           ``Dense(out_features, "linear", use_bias)``; kernel =
                                      ``weight`` transposed (``transposed={"kernel"}``)
``nn.LayerNorm``, ``F.layer_norm``    ``LayerNorm(eps, center=bias, scale=weight)``
``nn.RMSNorm``, ``F.rms_norm``        ``RMSNorm(eps)``; ``eps=None``: ``torch.finfo(dtype).eps``
``nn.BatchNorm1d``                    ``BatchNorm(eps, 1 - momentum, training=.training)``;
                                      state ``running_mean``, ``running_var``
``nn.Dropout``, ``F.dropout``         ``Dropout(p, active=training)``
``nn.Flatten``, ``x.flatten(1)``      ``Flatten()``
activation modules and functions      ``Activation(name)`` (:data:`ACTIVATION_MODULES`;
                                      softmax and log-softmax over the last axis only)
``nn.Identity``, ``x.contiguous()``   nothing (the same value)
====================================  ======================================================

Anything else raises :class:`~xgrad.errors.AlignmentError` naming the module and its class.
Where torch's convention differs from xgrad's definition of the layer it is read as (the
unbiased running variance, ``selu'(0)``, ...), :attr:`Found.note` says so: xgrad reports
such differences, it never hides them.

Importing this module imports torch.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from xgrad.errors import AlignmentError, SpecError
from xgrad.frameworks.torch.modules import HardSigmoid, MaskedDropout, Selu, Softplus
from xgrad.layers import (
    AbstractLayer,
    Activation,
    BatchNorm,
    Dense,
    Dropout,
    Flatten,
    LayerNorm,
    RMSNorm,
)

__all__ = [
    "ACTIVATION_MODULES",
    "ALIAS",
    "ELEMENTWISE",
    "READ_MODULES",
    "Found",
    "function_layer",
    "is_add",
    "module_layer",
]

READ_MODULES = (
    "nn.Linear, nn.LayerNorm, nn.RMSNorm, nn.BatchNorm1d, nn.Dropout, nn.Flatten, "
    "nn.Identity and activation modules (nn.ReLU, nn.GELU, nn.LeakyReLU, ...)"
)

DROPOUT_NOTE = (
    "training mode: this Dropout zeroes a new random set of units on every call, so nothing "
    "compares; call module.eval() before comparing"
)
BATCHNORM_NOTE = (
    "training mode: normalises by the batch statistics and updates running_mean/running_var "
    "(the variance unbiased, divided by N - 1); call module.eval() to use the running statistics"
)
SELU_NOTE = "torch's selu'(0) is scale * alpha = 1.7581; xgrad's (TensorFlow's) is scale = 1.0507"
HARDSIGMOID_NOTE = (
    "torch's Hardsigmoid backward multiplies by 1/6 rounded to float32, a relative error of "
    "3e-8 in float64"
)
SOFTPLUS_NOTE = (
    "torch's Softplus returns x itself above threshold={threshold:g}: value and derivative "
    "there differ from log(1 + exp(x))'s by up to exp(-threshold)"
)


@dataclass
class Found:
    """One layer as read from torch.

    Attributes:
        layer: its xgrad configuration.
        params: local name -> state-dict name of each parameter.
        state: local name -> state-dict name of each state buffer.
        transposed: local names stored transposed (``kernel`` of a Linear).
        note: a torch convention that differs from xgrad's definition, or a training mode.
    """

    layer: AbstractLayer
    params: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    transposed: frozenset[str] = frozenset()
    note: str | None = None

    @property
    def kind(self) -> str:
        # an elementwise function none of xgrad's activations reproduces: compared as computed
        return self.layer.kind if self.layer is not None else "activation"


ALIAS = object()
"""Returned for a module or call that passes its input on unchanged (``nn.Identity``)."""

ELEMENTWISE = object()
"""Returned for a module of a class xgrad does not know that holds no weights (``nn.Mish``,
``nn.Hardswish``, a module of your own): the reader identifies it from what it computes."""


def _unsupported(what: str, why: str = "") -> AlignmentError:
    return AlignmentError(
        f"{what} is not a layer xgrad reads{why}; xgrad reads {READ_MODULES}, and in forward "
        "the functional forms of these, residual additions x + f(x) and x.flatten(1)"
    )


def _activation(name: str, note: str | None = None) -> Found:
    return Found(Activation(name), note=note)


def _softplus(beta, threshold, where: str) -> Found:
    if beta != 1:
        raise _unsupported(where, f" with beta={beta:g} (xgrad's softplus has beta 1)")
    note = SOFTPLUS_NOTE.format(threshold=threshold) if threshold != float("inf") else None
    return _activation("softplus", note)


def _elu(alpha, where: str) -> Found:
    if alpha != 1:
        raise _unsupported(where, f" with alpha={alpha:g} (xgrad's elu has alpha 1)")
    return _activation("elu")


ACTIVATION_MODULES: tuple[tuple[type, Callable], ...] = (
    (Selu, lambda m, w, dt: _activation("selu")),
    (Softplus, lambda m, w, dt: _activation("softplus")),
    (HardSigmoid, lambda m, w, dt: _activation("hard_sigmoid")),
    (nn.ReLU, lambda m, w, dt: _activation("relu")),
    (nn.ReLU6, lambda m, w, dt: _activation("relu6")),
    (nn.Sigmoid, lambda m, w, dt: _activation("sigmoid")),
    (nn.Tanh, lambda m, w, dt: _activation("tanh")),
    (nn.GELU, lambda m, w, dt: _activation("gelu_tanh" if m.approximate == "tanh" else "gelu")),
    (nn.LeakyReLU, lambda m, w, dt: _activation(f"leaky_relu:{float(m.negative_slope)!r}")),
    (nn.ELU, lambda m, w, dt: _elu(m.alpha, w)),
    (nn.SELU, lambda m, w, dt: _activation("selu", SELU_NOTE)),
    (nn.SiLU, lambda m, w, dt: _activation("silu")),
    (nn.Softplus, lambda m, w, dt: _softplus(m.beta, m.threshold, w)),
    (
        nn.Hardsigmoid,
        lambda m, w, dt: _activation("hard_sigmoid", HARDSIGMOID_NOTE if dt == "float64" else None),
    ),
)
"""Activation module classes and how each is read: ``(class, (module, where, dtype) ->
Found)``. xgrad's own modules come first (they are torch modules too)."""


def _eps(eps, dtype: str) -> float:
    return float(torch.finfo(getattr(torch, dtype)).eps) if eps is None else float(eps)


def _norm_shape(shape, where: str) -> int:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if len(shape) != 1:
        raise _unsupported(
            where, f" over the last {len(shape)} axes {shape} (xgrad normalises feature vectors)"
        )
    return shape[0]


def _named(prefix: str, weight_names: dict[str, str]) -> dict[str, str]:
    """Local name -> state-dict name of the module called ``prefix`` (``""``: the root)."""
    return {
        local: f"{prefix}.{torch_name}" if prefix else torch_name
        for local, torch_name in weight_names.items()
    }


def _affine(name: str, scale: bool, center: bool) -> dict[str, str]:
    """``scale`` -> ``{name}.weight`` and ``bias`` -> ``{name}.bias``, for those present."""
    names = {"scale": "weight"} if scale else {}
    if center:
        names["bias"] = "bias"
    return _named(name, names)


def _over_last_axis(name: str, dim, ndim: int, where: str) -> Found:
    """A softmax or log-softmax over ``dim`` of a value with ``ndim`` axes (batch included);
    ``dim=None`` is torch's implicit choice (axis 1, or 0 for 0, 1 or 3 axes)."""
    if dim is None:
        dim = 0 if ndim in (0, 1, 3) else 1
    if dim not in (-1, ndim - 1):
        raise _unsupported(where, f" over dim={dim} (xgrad's {name} is over the last axis)")
    return _activation(name)


def module_layer(module: nn.Module, name: str, dtype: str, ndim: int = 2) -> Found | object:
    """The layer a torch module is, :data:`ALIAS` for ``nn.Identity``.

    Args:
        module: the module.
        name: its qualified name in the model (``"0"``, ``"block.fc1"``): weights are named
            ``{name}.weight`` and so on.
        dtype: the model's dtype (``"float32"``), for ``nn.RMSNorm(eps=None)``.
        ndim: the number of axes of its input, batch included (for a softmax's ``dim``).

    Raises:
        AlignmentError: the module is of a kind xgrad does not read, or configured in a way
            xgrad's layer cannot express; the message names it and its class.
    """
    where = f"module {name!r} ({type(module).__name__})"
    if isinstance(module, nn.Identity):
        return ALIAS
    if isinstance(module, nn.Linear):
        has_bias = module.bias is not None
        return Found(
            Dense(module.out_features, "linear", use_bias=has_bias),
            params=_named(name, {"kernel": "weight", **({"bias": "bias"} if has_bias else {})}),
            transposed=frozenset({"kernel"}),
        )
    if isinstance(module, nn.LayerNorm | nn.RMSNorm):
        _norm_shape(module.normalized_shape, where)
        scale, center = module.weight is not None, getattr(module, "bias", None) is not None
        params = _affine(name, scale, center)
        if isinstance(module, nn.RMSNorm):
            return Found(RMSNorm(_eps(module.eps, dtype), scale=scale), params=params)
        return Found(LayerNorm(float(module.eps), center=center, scale=scale), params=params)
    if isinstance(module, nn.BatchNorm1d):
        return _batchnorm(module, name, where)
    if isinstance(module, MaskedDropout):
        return Found(module.layer)
    if isinstance(module, nn.Dropout):
        return _dropout(module.p, module.training, where)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise _unsupported(
                where,
                f" with start_dim={module.start_dim}, end_dim={module.end_dim} "
                "(xgrad's Flatten keeps the batch axis only: start_dim=1, end_dim=-1)",
            )
        return Found(Flatten())
    if isinstance(module, nn.Softmax | nn.LogSoftmax):
        kind = "softmax" if isinstance(module, nn.Softmax) else "log_softmax"
        return _over_last_axis(kind, module.dim, ndim, where)
    for cls, read in ACTIVATION_MODULES:
        if isinstance(module, cls):
            return read(module, where, dtype)
    if not any(True for _ in module.parameters()) and not any(True for _ in module.buffers()):
        return ELEMENTWISE
    raise _unsupported(where)


def _batchnorm(module, name: str, where: str) -> Found:
    if not module.track_running_stats or module.running_mean is None:
        raise _unsupported(
            where, " with track_running_stats=False (xgrad's BatchNorm keeps moving statistics)"
        )
    note = None
    if module.momentum is None:
        # cumulative average: the next update weights the new value 1 / (batches + 1)
        momentum = 1 - 1 / (int(module.num_batches_tracked) + 1)
        note = (
            "momentum=None (a cumulative average): the next update keeps "
            f"{momentum:g} of the running value"
        )
    else:
        momentum = 1 - float(module.momentum)
    if module.training:
        note = BATCHNORM_NOTE if note is None else f"{BATCHNORM_NOTE}; {note}"
    scale, center = module.weight is not None, module.bias is not None
    params = _affine(name, scale, center)
    layer = BatchNorm(
        float(module.eps), momentum, training=module.training, center=center, scale=scale
    )
    state = _named(name, {"mean": "running_mean", "var": "running_var"})
    return Found(layer, params=params, state=state, note=note)


def _dropout(p, training: bool, where: str) -> Found:
    try:
        layer = Dropout(float(p), active=bool(training))
    except SpecError as exc:
        raise _unsupported(where, f": {exc}") from None
    return Found(layer, note=DROPOUT_NOTE if training and p > 0 else None)


# -- functional calls (torch.fx nodes) --------------------------------------------------------


def _arg(node, index: int, name: str, default=None):
    """Argument ``index`` / keyword ``name`` of an fx node, else ``default``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _softmax(name: str) -> Callable:
    def read(node, ndim: int, where: str) -> Found:
        return _over_last_axis(name, _arg(node, 1, "dim"), ndim, where)

    return read


_FUNCTIONS: dict[object, Callable] = {
    F.relu: lambda n, nd, w: _activation("relu"),
    torch.relu: lambda n, nd, w: _activation("relu"),
    F.gelu: lambda n, nd, w: _activation(
        "gelu_tanh" if _arg(n, 1, "approximate", "none") == "tanh" else "gelu"
    ),
    F.leaky_relu: lambda n, nd, w: _activation(
        f"leaky_relu:{float(_arg(n, 1, 'negative_slope', 0.01))!r}"
    ),
    torch.sigmoid: lambda n, nd, w: _activation("sigmoid"),
    F.sigmoid: lambda n, nd, w: _activation("sigmoid"),
    torch.tanh: lambda n, nd, w: _activation("tanh"),
    F.tanh: lambda n, nd, w: _activation("tanh"),
    F.softmax: _softmax("softmax"),
    torch.softmax: _softmax("softmax"),
    F.log_softmax: _softmax("log_softmax"),
    torch.log_softmax: _softmax("log_softmax"),
    F.elu: lambda n, nd, w: _elu(_arg(n, 1, "alpha", 1.0), w),
    F.selu: lambda n, nd, w: _activation("selu", SELU_NOTE),
    torch.selu: lambda n, nd, w: _activation("selu", SELU_NOTE),
    F.silu: lambda n, nd, w: _activation("silu"),
    F.softplus: lambda n, nd, w: _softplus(
        _arg(n, 1, "beta", 1.0), _arg(n, 2, "threshold", 20.0), w
    ),
    F.relu6: lambda n, nd, w: _activation("relu6"),
    F.hardsigmoid: lambda n, nd, w: _activation("hard_sigmoid"),
    F.dropout: lambda n, nd, w: _dropout(_arg(n, 1, "p", 0.5), _arg(n, 2, "training", True), w),
    torch.dropout: lambda n, nd, w: _dropout(_arg(n, 1, "p"), _arg(n, 2, "train"), w),
}

_METHODS: dict[str, Callable] = {
    "relu": lambda n, nd, w: _activation("relu"),
    "sigmoid": lambda n, nd, w: _activation("sigmoid"),
    "tanh": lambda n, nd, w: _activation("tanh"),
    "softmax": _softmax("softmax"),
    "log_softmax": _softmax("log_softmax"),
}

_ALIAS_METHODS = ("contiguous", "clone")
_RESHAPES = {"flatten", "reshape", "view"}
_RESHAPE_FUNCTIONS = (torch.flatten, torch.reshape)


def is_add(node) -> bool:
    """Whether an fx node adds two values (``x + h``, ``torch.add(x, h)``, ``x.add(h)``)
    with no scaling."""
    if node.op == "call_function" and node.target in (operator.add, torch.add):
        return len(node.args) == 2 and _arg(node, 2, "alpha", 1) == 1
    if node.op == "call_method" and node.target == "add":
        return len(node.args) == 2 and node.kwargs.get("alpha", 1) == 1
    return False


def _get_attr(node, what: str, where: str) -> str | None:
    """The state-dict name of a weight argument (an fx ``get_attr`` node), ``None`` for none."""
    if node is None:
        return None
    if getattr(node, "op", None) != "get_attr":
        raise _unsupported(where, f": its {what} is computed, not a parameter of the module")
    return node.target


def function_layer(
    node, in_shape: tuple, out_shape: tuple, dtype: str, module
) -> Found | object | None:
    """The layer an fx ``call_function`` / ``call_method`` node on the stream is.

    Args:
        node: the node; its first argument is the stream value.
        in_shape, out_shape: shapes of that value and of the node's value (batch first).
        dtype: the model's dtype.
        module: the traced module (for the shapes of weights given as arguments).

    Returns:
        A :class:`Found`, :data:`ALIAS`, or ``None`` when the call is unknown (the reader
        then identifies it numerically, or refuses it).
    """
    target = node.target
    where = f"{node.op} {getattr(target, '__name__', target)!s} (fx node {node.name!r})"
    ndim = len(in_shape)
    if node.op == "call_method":
        if target in _ALIAS_METHODS:
            return ALIAS
        if target in _METHODS:
            return _METHODS[target](node, ndim, where)
        if target in _RESHAPES:
            return _reshape(in_shape, out_shape, where)
        return None
    if target in _RESHAPE_FUNCTIONS:
        return _reshape(in_shape, out_shape, where)
    if target is torch.clone:
        return ALIAS
    if target in _FUNCTIONS:
        return _FUNCTIONS[target](node, ndim, where)
    if target is F.linear:
        weight = _get_attr(_arg(node, 1, "weight"), "weight", where)
        bias = _get_attr(_arg(node, 2, "bias"), "bias", where)
        units = int(module.get_parameter(weight).shape[0])
        params = {"kernel": weight, **({"bias": bias} if bias else {})}
        return Found(
            Dense(units, "linear", use_bias=bias is not None),
            params=params,
            transposed=frozenset({"kernel"}),
        )
    if target in (F.layer_norm, F.rms_norm):
        _norm_shape(_arg(node, 1, "normalized_shape"), where)
        weight = _get_attr(_arg(node, 2, "weight"), "weight", where)
        if target is F.rms_norm:
            eps = _eps(_arg(node, 3, "eps"), dtype)
            return Found(
                RMSNorm(eps, scale=weight is not None),
                params={"scale": weight} if weight else {},
            )
        bias = _get_attr(_arg(node, 3, "bias"), "bias", where)
        params = {**({"scale": weight} if weight else {}), **({"bias": bias} if bias else {})}
        layer = LayerNorm(
            float(_arg(node, 4, "eps", 1e-5)), center=bias is not None, scale=weight is not None
        )
        return Found(layer, params=params)
    return None


def _reshape(in_shape: tuple, out_shape: tuple, where: str) -> Found | object:
    flat = (in_shape[0], int(torch.Size(in_shape[1:]).numel()))
    if tuple(out_shape) == tuple(in_shape) and len(in_shape) == 2:
        return ALIAS
    if tuple(out_shape) == flat:
        return Found(Flatten())
    raise _unsupported(
        where, f": it reshapes {tuple(in_shape)} to {tuple(out_shape)}, not to (batch, features)"
    )
