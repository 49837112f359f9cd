"""Every layer kind in torch, in one table: how torch builds it, names and lays out its
weights, and how torch's own modules and functional calls are read back as it.

=========================  =======================================  ==============================
kind                       built as / read from                     weights (torch names)
=========================  =======================================  ==============================
``dense``                  ``nn.Sequential(nn.Linear, activation)``  ``0.weight`` ``(out, in)``:
                           / ``nn.Linear``, ``F.linear``            the kernel, layout ``(1, 0)``;
                                                                    ``0.bias``
``layernorm``              ``nn.LayerNorm`` / and ``F.layer_norm``  ``weight``, ``bias``
``rmsnorm``                ``nn.RMSNorm`` / and ``F.rms_norm``      ``weight``; ``eps=None`` read
                                                                    as ``finfo(dtype).eps``
``batchnorm``              ``nn.BatchNorm1d(momentum=1 - m)``       ``weight``, ``bias``; state
                                                                    ``running_mean``,
                                                                    ``running_var``
``dropout``                ``nn.Dropout`` (eval), active:           -
                           :class:`~.modules.MaskedDropout`
``activation``             :func:`~.modules.activation_module` /    -
                           activation modules and functions
``flatten``                ``nn.Flatten`` / and ``x.flatten(1)``    -
``residual``               :class:`~.modules.Residual`              those of its layers
``embedding``              :func:`~.modules.embedding_module`:      ``weight`` ``(vocab, dim)``
                           ``nn.Embedding(padding_idx=...)`` / and
                           ``F.embedding``, ``ScaledEmbedding``
``attention``              :class:`~.modules.SelfAttention`         the canonical names and
                           (einsum, ``F.scaled_dot_product_         shapes: ``query_kernel``
                           attention``) / and read from it          ``(dim, H, hd)``, ...
``gated_mlp``              :class:`~.modules.GatedMLP` (three       ``gate_proj.weight``
                           ``nn.Linear``) / and read from it        ``(hidden, dim)``, layout
                                                                    ``(1, 0)``; ``up_proj``,
                                                                    ``down_proj``; ``.bias``
=========================  =======================================  ==============================

Of the transformer kinds, users' ``nn.Embedding`` and ``F.embedding`` are read (the ids'
vocabulary from the table; ``padding_idx`` from the module), and xgrad's own
:class:`~.modules.SelfAttention`, :class:`~.modules.GatedMLP` and
:class:`~.modules.ScaledEmbedding` from their attributes. A hand-written attention (q/k/v
``nn.Linear``, matmul, softmax) and ``nn.MultiheadAttention`` are not: the first is no chain of
layers, and the second's fused ``in_proj_weight (3E, E)`` is no axis permutation of the
canonical ``(dim, H, hd)`` kernels (a :class:`~xgrad.frameworks.kinds.Layout` permutes axes
only). Both are compared module by module (:mod:`.capture`).

A read module of another class raises :class:`~xgrad.errors.AlignmentError` naming it, unless
it holds no weights (then :data:`ELEMENTWISE`: the reader identifies it from its values).
Where torch's convention differs from xgrad's definition of the layer it is read as (the
unbiased running variance, ``selu'(0)``, ...), :attr:`Found.note` says so: xgrad reports
such differences, it never hides them.

A new kind is one more entry of :data:`KINDS` (:class:`TorchKind`); see docs/design.md.

Importing this module imports torch.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from xgrad.errors import AlignmentError, SpecError
from xgrad.frameworks.kinds import TRANSPOSED, KindTable, Layout
from xgrad.frameworks.torch import cnn, recurrent
from xgrad.frameworks.torch.found import Found
from xgrad.frameworks.torch.modules import (
    GatedMLP,
    HardSigmoid,
    MaskedDropout,
    Residual,
    ScaledEmbedding,
    SelfAttention,
    Selu,
    Softplus,
    activation_module,
    embedding_module,
)
from xgrad.identify import probe_activation
from xgrad.layers import (
    Activation,
    Attention,
    BatchNorm,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    LayerNorm,
    RMSNorm,
    Shape,
)
from xgrad.layers import GatedMLP as GatedMLPLayer

__all__ = [
    "ALIAS",
    "ELEMENTWISE",
    "KINDS",
    "READ_MODULES",
    "Call",
    "Found",
    "TorchKind",
    "function_layer",
    "is_add",
    "module_layer",
]

READ_MODULES = (
    "nn.Linear, nn.LayerNorm, nn.RMSNorm, nn.BatchNorm1d, nn.Dropout, nn.Flatten, "
    "nn.Embedding (first), nn.Identity and activation modules (nn.ReLU, nn.GELU, "
    "nn.LeakyReLU, ...), xgrad's channels-last Conv1d/2d, MaxPool1d/2d, AvgPool1d/2d, "
    "GroupNorm, BatchNorm1d/2d, GlobalAvgPool and batch-first LSTM and GRU"
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


ALIAS = object()
"""Returned for a module or call that passes its input on unchanged (``nn.Identity``)."""

ELEMENTWISE = object()
"""Returned for a module of a class xgrad does not know that holds no weights (``nn.Mish``,
``nn.Hardswish``, a module of your own): the reader identifies it from what it computes."""


class Call(NamedTuple):
    """A functional call on the stream, as an fx node, for a :attr:`TorchKind.functions`
    reader: the node, the number of axes of its stream input (batch included), how messages
    name it, the model's dtype and the traced module (for weights given as arguments)."""

    node: object
    ndim: int
    where: str
    dtype: str
    module: nn.Module


@dataclass(frozen=True)
class TorchKind:
    """How torch builds and reads one layer kind: the kind's entry in :data:`KINDS`.

    Attributes:
        build: ``(layer, path, shape, dtype, child) -> nn.Module``: the module computing
            ``layer`` at ``path`` on examples of ``shape`` in the torch ``dtype``, with a slot
            for each weight (xgrad writes their values next); ``child(layer, path, shape)``
            builds a nested layer (a residual block's).
        weights: local name -> the weight's name inside the built module (``0.weight``).
        layouts: local name -> the layout torch stores it in, for those not canonical (an
            axis permutation or a :class:`~xgrad.frameworks.kinds.NativeParts`); or a
            function ``(layer, input_shape) -> that mapping`` where it depends on them (a
            convolution's rank, a GRU's ``reset_after``).
        modules: torch module classes read as this kind.
        read: ``(module, name, dtype, ndim) -> Found`` for an instance of ``modules``
            (``name``: its qualified name; ``ndim``: axes of its input, batch included).
        functions: functional forms read as this kind: callable -> ``(Call) -> Found``.
        captured: whether module capture (:mod:`.capture`) names instances of ``modules`` as
            this kind too; the transformer kinds are read by the reader only, so that a
            captured ``nn.Embedding`` keeps torch's names (``weight``).
    """

    build: Callable[..., nn.Module]
    weights: Mapping[str, str] = field(default_factory=dict)
    layouts: Mapping[str, Layout] | Callable[..., Mapping] = field(default_factory=dict)
    modules: tuple[type, ...] = ()
    read: Callable[..., Found] | None = None
    functions: Mapping[Callable, Callable[[Call], Found]] = field(default_factory=dict)
    captured: bool = True


def _unsupported(what: str, why: str = "") -> AlignmentError:
    return AlignmentError(
        f"{what} is not a layer xgrad reads{why}; xgrad reads {READ_MODULES}, and in forward "
        "the functional forms of torch's ones (F.linear, F.layer_norm, F.relu, ...), residual "
        "additions x + f(x) and x.flatten(1)"
    )


def _arg(node, index: int, name: str, default=None):
    """Argument ``index`` / keyword ``name`` of an fx node, else ``default``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _get_attr(node, what: str, where: str) -> str | None:
    """The state-dict name of a weight argument (an fx ``get_attr`` node), ``None`` for none."""
    if node is None:
        return None
    if getattr(node, "op", None) != "get_attr":
        raise _unsupported(where, f": its {what} is computed, not a parameter of the module")
    return node.target


def _named(prefix: str, weight_names: dict[str, str]) -> dict[str, str]:
    """Local name -> state-dict name of the module called ``prefix`` (``""``: the root)."""
    return {
        local: f"{prefix}.{torch_name}" if prefix else torch_name
        for local, torch_name in weight_names.items()
    }


def _slot(module: nn.Module, name: str, shape: Shape, dtype: torch.dtype) -> None:
    """Give ``module`` a parameter ``name`` of ``shape`` where torch declared it ``None``."""
    setattr(module, name, nn.Parameter(torch.empty(shape, dtype=dtype)))


# -- dense ----------------------------------------------------------------------------------------


def _build_dense(layer: Dense, path, shape, dtype, child) -> nn.Module:
    linear = nn.Linear(shape[-1], layer.units, bias=layer.use_bias, dtype=dtype)
    if layer.activation == "linear":
        return nn.Sequential(linear)
    return nn.Sequential(linear, activation_module(layer.activation))


def _read_linear(module, name, dtype, ndim) -> Found:
    has_bias = module.bias is not None
    return Found(
        Dense(module.out_features, "linear", use_bias=has_bias),
        params=_named(name, {"kernel": "weight", **({"bias": "bias"} if has_bias else {})}),
        layouts={"kernel": TRANSPOSED},
    )


def _read_f_linear(call: Call) -> Found:
    weight = _get_attr(_arg(call.node, 1, "weight"), "weight", call.where)
    bias = _get_attr(_arg(call.node, 2, "bias"), "bias", call.where)
    units = int(call.module.get_parameter(weight).shape[0])
    params = {"kernel": weight, **({"bias": bias} if bias else {})}
    return Found(
        Dense(units, "linear", use_bias=bias is not None),
        params=params,
        layouts={"kernel": TRANSPOSED},
    )


# -- norms ----------------------------------------------------------------------------------------


def _eps(eps, dtype: str) -> float:
    return float(torch.finfo(getattr(torch, dtype)).eps) if eps is None else float(eps)


def _norm_shape(shape, where: str) -> int:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if len(shape) != 1:
        raise _unsupported(
            where, f" over the last {len(shape)} axes {shape} (xgrad normalises feature vectors)"
        )
    return shape[0]


def _affine(name: str, scale: bool, center: bool) -> dict[str, str]:
    """``scale`` -> ``{name}.weight`` and ``bias`` -> ``{name}.bias``, for those present."""
    names = {"scale": "weight"} if scale else {}
    if center:
        names["bias"] = "bias"
    return _named(name, names)


def _affine_slots(module: nn.Module, layer, d: int, dtype) -> nn.Module:
    # torch cannot declare a shift without a scale (LayerNorm's bias needs
    # elementwise_affine, BatchNorm's affine covers both): such a module is declared without
    # either and given its bias here. Its forward passes self.weight and self.bias to
    # F.layer_norm / F.batch_norm, so the bias takes part as usual.
    if layer.scale and getattr(module, "weight", None) is None:
        _slot(module, "weight", (d,), dtype)
    if getattr(layer, "center", False) and getattr(module, "bias", None) is None:
        _slot(module, "bias", (d,), dtype)
    return module


def _build_layernorm(layer: LayerNorm, path, shape, dtype, child) -> nn.Module:
    both = layer.scale and layer.center
    module = nn.LayerNorm(
        shape[-1], eps=layer.epsilon, elementwise_affine=layer.scale, bias=both, dtype=dtype
    )
    return _affine_slots(module, layer, shape[-1], dtype)


def _build_rmsnorm(layer: RMSNorm, path, shape, dtype, child) -> nn.Module:
    return nn.RMSNorm(shape[-1], eps=layer.epsilon, elementwise_affine=layer.scale, dtype=dtype)


def _read_norm(module, name, dtype, ndim) -> Found:
    _norm_shape(module.normalized_shape, f"module {name!r} ({type(module).__name__})")
    scale, center = module.weight is not None, getattr(module, "bias", None) is not None
    params = _affine(name, scale, center)
    if isinstance(module, nn.RMSNorm):
        return Found(RMSNorm(_eps(module.eps, dtype), scale=scale), params=params)
    return Found(LayerNorm(float(module.eps), center=center, scale=scale), params=params)


def _read_f_norm(call: Call) -> Found:
    node, where = call.node, call.where
    _norm_shape(_arg(node, 1, "normalized_shape"), where)
    weight = _get_attr(_arg(node, 2, "weight"), "weight", where)
    if node.target is F.rms_norm:
        eps = _eps(_arg(node, 3, "eps"), call.dtype)
        return Found(
            RMSNorm(eps, scale=weight is not None), params={"scale": weight} if weight else {}
        )
    bias = _get_attr(_arg(node, 3, "bias"), "bias", where)
    params = {**({"scale": weight} if weight else {}), **({"bias": bias} if bias else {})}
    layer = LayerNorm(
        float(_arg(node, 4, "eps", 1e-5)), center=bias is not None, scale=weight is not None
    )
    return Found(layer, params=params)


def _read_batchnorm(module, name, dtype, ndim) -> Found:
    where = f"module {name!r} ({type(module).__name__})"
    if not module.track_running_stats or module.running_mean is None:
        raise _unsupported(
            where, " with track_running_stats=False (xgrad's BatchNorm keeps moving statistics)"
        )
    if ndim != 2 and not isinstance(module, cnn.ChannelsLast):
        # torch normalises axis 1 (channels-first); xgrad's channels are last
        raise _unsupported(where, f" over inputs of {ndim} axes (xgrad reads (batch, features))")
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


# -- dropout, flatten, residual -------------------------------------------------------------------


def _build_dropout(layer: Dropout, path, shape, dtype, child) -> nn.Module:
    return MaskedDropout(layer, path) if layer.active else nn.Dropout(layer.rate)


def _dropout(p, training: bool, where: str) -> Found:
    try:
        layer = Dropout(float(p), active=bool(training))
    except SpecError as exc:
        raise _unsupported(where, f": {exc}") from None
    return Found(layer, note=DROPOUT_NOTE if training and p > 0 else None)


def _read_dropout(module, name, dtype, ndim) -> Found:
    if isinstance(module, MaskedDropout):
        return Found(module.layer)
    return _dropout(module.p, module.training, f"module {name!r} ({type(module).__name__})")


def _read_flatten(module, name, dtype, ndim) -> Found:
    if module.start_dim != 1 or module.end_dim != -1:
        raise _unsupported(
            f"module {name!r} ({type(module).__name__})",
            f" with start_dim={module.start_dim}, end_dim={module.end_dim} "
            "(xgrad's Flatten keeps the batch axis only: start_dim=1, end_dim=-1)",
        )
    return Found(Flatten())


def _build_residual(layer, path, shape, dtype, child) -> nn.Module:
    items, inner = [], shape
    for j, sub in enumerate(layer.children):
        items.append(child(sub, f"{path}.layers.{j}", inner))
        inner = sub.output_shape(inner)
    return Residual(*items)


# -- transformer kinds ----------------------------------------------------------------------------


_ATTENTION_WEIGHTS = tuple(
    f"{name}_{part}"
    for name in ("query", "key", "value", "qkv", "out")
    for part in ("kernel", "bias")
)
_MLP_WEIGHTS = {
    f"{name}_{part}": f"{name}_proj.{torch_name}"
    for name in ("gate", "up", "down")
    for part, torch_name in (("kernel", "weight"), ("bias", "bias"))
}


def _read_embedding(module, name, dtype, ndim) -> Found:
    """``nn.Embedding`` (and xgrad's :class:`~.modules.ScaledEmbedding`, its ``scale``):
    ``weight (vocab, dim)`` as it is, ``padding_idx`` as torch normalised it (>= 0)."""
    where = f"module {name!r} ({type(module).__name__})"
    _embedding_options(module.max_norm, module.scale_grad_by_freq, module.sparse, where)
    scale = module.scale if isinstance(module, ScaledEmbedding) else None
    layer = Embedding(
        module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx, scale=scale
    )
    return Found(layer, params=_named(name, {"embedding": "weight"}))


def _embedding_options(max_norm, by_freq, sparse, where: str) -> None:
    if max_norm is not None:
        raise _unsupported(
            where, f" with max_norm={max_norm:g} (it renormalises the rows it reads, in place)"
        )
    if by_freq:
        raise _unsupported(
            where, " with scale_grad_by_freq=True (xgrad's Embedding sums each row's gradient)"
        )
    if sparse:
        raise _unsupported(where, " with sparse=True (pass a copy built with sparse=False)")


def _read_f_embedding(call: Call) -> Found:
    """``F.embedding(ids, self.weight, padding_idx=...)``: the weight a parameter of the
    module, ``padding_idx`` negative counted from the end as torch counts it."""
    node, where = call.node, call.where
    weight = _get_attr(_arg(node, 1, "weight"), "weight", where)
    vocab, dim = call.module.get_parameter(weight).shape
    _embedding_options(
        _arg(node, 3, "max_norm"),
        _arg(node, 5, "scale_grad_by_freq", False),
        _arg(node, 6, "sparse", False),
        where,
    )
    pad = _arg(node, 2, "padding_idx")
    pad = None if pad is None else int(pad) % int(vocab)
    return Found(Embedding(int(vocab), int(dim), padding_idx=pad), params={"embedding": weight})


def _read_self_attention(module: SelfAttention, name, dtype, ndim) -> Found:
    """xgrad's own :class:`~.modules.SelfAttention`, from its attributes (a leaf the tracer
    does not enter): its parameters are the canonical weights, by name and shape."""
    first = module.qkv_kernel if module.qkv == "fused" else module.query_kernel
    default = module.head_dim**-0.5
    layer = Attention(
        int(first.shape[0]),
        module.heads,
        kv_heads=module.kv_heads,
        head_dim=module.head_dim,
        causal=module.causal,
        use_bias=module.use_bias,
        rope=module.rope,
        rope_base=module.rope_base,
        qkv=module.qkv,
        scale=None if module.scale == default else module.scale,
    )
    own = {n: n for n, _ in module.named_parameters(recurse=False)}
    return Found(layer, params=_named(name, own))


def _read_gated_mlp(module: GatedMLP, name, dtype, ndim) -> Found:
    """xgrad's own :class:`~.modules.GatedMLP`: three ``nn.Linear`` (``(out, in)``, layout
    ``(1, 0)``) and the activation module between, read as any activation module is."""
    act = module_layer(module.act_fn, f"{name}.act_fn", dtype, ndim, captured=False)
    if not isinstance(act, Found) or not isinstance(act.layer, Activation):
        raise _unsupported(f"module {name!r} (GatedMLP)", ": its act_fn is not an activation")
    use_bias = module.gate_proj.bias is not None
    layer = GatedMLPLayer(
        module.gate_proj.in_features,
        module.gate_proj.out_features,
        activation=act.layer.name,
        use_bias=use_bias,
    )
    weights = {k: v for k, v in _MLP_WEIGHTS.items() if use_bias or k.endswith("_kernel")}
    kernels = ("gate_kernel", "up_kernel", "down_kernel")
    return Found(
        layer,
        params=_named(name, weights),
        layouts=dict.fromkeys(kernels, TRANSPOSED),
        note=act.note,
    )


# -- activations ----------------------------------------------------------------------------------


def _activation(name: str, note: str | None = None) -> Found:
    return Found(Activation(name), note=note)


def _gelu(fn: Callable[[torch.Tensor], torch.Tensor], where: str) -> Found:
    """A GELU named by the form it computes on a probe (erf or tanh), never from its name
    or its ``approximate`` argument's spelling."""
    with torch.no_grad():
        name = probe_activation(lambda z: fn(torch.from_numpy(z)).numpy())
    if name not in ("gelu", "gelu_tanh"):
        raise _unsupported(where, " that computes neither GELU form on a probe")
    return _activation(name)


def _softplus(beta, threshold, where: str) -> Found:
    if beta != 1:
        raise _unsupported(where, f" with beta={beta:g} (xgrad's softplus has beta 1)")
    note = SOFTPLUS_NOTE.format(threshold=threshold) if threshold != float("inf") else None
    return _activation("softplus", note)


def _elu(alpha, where: str) -> Found:
    if alpha != 1:
        raise _unsupported(where, f" with alpha={alpha:g} (xgrad's elu has alpha 1)")
    return _activation("elu")


def _over_last_axis(name: str, dim, ndim: int, where: str) -> Found:
    """A softmax or log-softmax over ``dim`` of a value with ``ndim`` axes (batch included);
    ``dim=None`` is torch's implicit choice (axis 1, or 0 for 0, 1 or 3 axes)."""
    if dim is None:
        dim = 0 if ndim in (0, 1, 3) else 1
    if dim not in (-1, ndim - 1):
        raise _unsupported(where, f" over dim={dim} (xgrad's {name} is over the last axis)")
    return _activation(name)


ACTIVATION_MODULES: tuple[tuple[type, Callable], ...] = (
    (Selu, lambda m, w, dt, nd: _activation("selu")),
    (Softplus, lambda m, w, dt, nd: _activation("softplus")),
    (HardSigmoid, lambda m, w, dt, nd: _activation("hard_sigmoid")),
    (nn.ReLU, lambda m, w, dt, nd: _activation("relu")),
    (nn.ReLU6, lambda m, w, dt, nd: _activation("relu6")),
    (nn.Sigmoid, lambda m, w, dt, nd: _activation("sigmoid")),
    (nn.Tanh, lambda m, w, dt, nd: _activation("tanh")),
    (nn.GELU, lambda m, w, dt, nd: _gelu(m, w)),
    (nn.LeakyReLU, lambda m, w, dt, nd: _activation(f"leaky_relu:{float(m.negative_slope)!r}")),
    (nn.ELU, lambda m, w, dt, nd: _elu(m.alpha, w)),
    (nn.SELU, lambda m, w, dt, nd: _activation("selu", SELU_NOTE)),
    (nn.SiLU, lambda m, w, dt, nd: _activation("silu")),
    (nn.Softplus, lambda m, w, dt, nd: _softplus(m.beta, m.threshold, w)),
    (
        nn.Hardsigmoid,
        lambda m, w, dt, nd: _activation(
            "hard_sigmoid", HARDSIGMOID_NOTE if dt == "float64" else None
        ),
    ),
    (nn.Softmax, lambda m, w, dt, nd: _over_last_axis("softmax", m.dim, nd, w)),
    (nn.LogSoftmax, lambda m, w, dt, nd: _over_last_axis("log_softmax", m.dim, nd, w)),
)
"""Activation module classes and how each is read: ``(class, (module, where, dtype, ndim)
-> Found)``. xgrad's own modules come first (they are torch modules too)."""


def _read_activation(module, name, dtype, ndim) -> Found:
    where = f"module {name!r} ({type(module).__name__})"
    for cls, read in ACTIVATION_MODULES:
        if isinstance(module, cls):
            return read(module, where, dtype, ndim)
    raise _unsupported(where)  # pragma: no cover - modules lists exactly these classes


def _softmax(name: str) -> Callable[[Call], Found]:
    return lambda c: _over_last_axis(name, _arg(c.node, 1, "dim"), c.ndim, c.where)


def _named_activation(name: str, note: str | None = None) -> Callable[[Call], Found]:
    return lambda c: _activation(name, note)


_ACTIVATION_FUNCTIONS: dict[Callable, Callable[[Call], Found]] = {
    F.relu: _named_activation("relu"),
    torch.relu: _named_activation("relu"),
    F.gelu: lambda c: _gelu(
        lambda t: F.gelu(t, approximate=_arg(c.node, 1, "approximate", "none")), c.where
    ),
    F.leaky_relu: lambda c: _activation(
        f"leaky_relu:{float(_arg(c.node, 1, 'negative_slope', 0.01))!r}"
    ),
    torch.sigmoid: _named_activation("sigmoid"),
    F.sigmoid: _named_activation("sigmoid"),
    torch.tanh: _named_activation("tanh"),
    F.tanh: _named_activation("tanh"),
    F.softmax: _softmax("softmax"),
    torch.softmax: _softmax("softmax"),
    F.log_softmax: _softmax("log_softmax"),
    torch.log_softmax: _softmax("log_softmax"),
    F.elu: lambda c: _elu(_arg(c.node, 1, "alpha", 1.0), c.where),
    F.selu: _named_activation("selu", SELU_NOTE),
    torch.selu: _named_activation("selu", SELU_NOTE),
    F.silu: _named_activation("silu"),
    F.softplus: lambda c: _softplus(
        _arg(c.node, 1, "beta", 1.0), _arg(c.node, 2, "threshold", 20.0), c.where
    ),
    F.relu6: _named_activation("relu6"),
    F.hardsigmoid: _named_activation("hard_sigmoid"),
}

# -- the table ------------------------------------------------------------------------------------

_NORM_WEIGHTS = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}

KINDS: KindTable[TorchKind] = KindTable(
    "torch",
    {
        "dense": TorchKind(
            _build_dense,
            weights={"kernel": "0.weight", "bias": "0.bias"},
            layouts={"kernel": TRANSPOSED},
            modules=(nn.Linear,),
            read=_read_linear,
            functions={F.linear: _read_f_linear},
        ),
        "activation": TorchKind(
            lambda layer, path, shape, dtype, child: activation_module(layer.name),
            modules=tuple(cls for cls, _ in ACTIVATION_MODULES),
            read=_read_activation,
            functions=_ACTIVATION_FUNCTIONS,
        ),
        "layernorm": TorchKind(
            _build_layernorm,
            weights=_NORM_WEIGHTS,
            modules=(nn.LayerNorm,),
            read=_read_norm,
            functions={F.layer_norm: _read_f_norm},
        ),
        "rmsnorm": TorchKind(
            _build_rmsnorm,
            weights=_NORM_WEIGHTS,
            modules=(nn.RMSNorm,),
            read=_read_norm,
            functions={F.rms_norm: _read_f_norm},
        ),
        "batchnorm": TorchKind(
            cnn.build_batchnorm,
            weights=_NORM_WEIGHTS,
            modules=(nn.BatchNorm1d, cnn.BatchNorm2d),
            read=_read_batchnorm,
        ),
        "conv": TorchKind(
            cnn.build_conv,
            weights={"kernel": "weight", "bias": "bias"},
            layouts=cnn.conv_layouts,
            modules=(cnn.Conv1d, cnn.Conv2d),
            read=cnn.read_conv,
        ),
        "maxpool": TorchKind(
            cnn.build_maxpool, modules=(cnn.MaxPool1d, cnn.MaxPool2d), read=cnn.read_maxpool
        ),
        "avgpool": TorchKind(
            cnn.build_avgpool, modules=(cnn.AvgPool1d, cnn.AvgPool2d), read=cnn.read_avgpool
        ),
        "global_avgpool": TorchKind(
            cnn.build_global_avgpool, modules=(cnn.GlobalAvgPool,), read=cnn.read_global_avgpool
        ),
        "groupnorm": TorchKind(
            cnn.build_groupnorm,
            weights=_NORM_WEIGHTS,
            modules=(cnn.GroupNorm,),
            read=cnn.read_groupnorm,
        ),
        "lstm": TorchKind(
            recurrent.build_lstm,
            weights=recurrent.LSTM_WEIGHTS,
            layouts=recurrent.LSTM_LAYOUTS,
            modules=(recurrent.LSTM,),
            read=recurrent.read_lstm,
        ),
        "gru": TorchKind(
            recurrent.build_gru,
            weights=recurrent.GRU_WEIGHTS,
            layouts=recurrent.gru_layouts,
            modules=(recurrent.GRU, recurrent.GRUResetBefore),
            read=recurrent.read_gru,
        ),
        "dropout": TorchKind(
            _build_dropout,
            modules=(MaskedDropout, nn.Dropout),
            read=_read_dropout,
            functions={
                F.dropout: lambda c: _dropout(
                    _arg(c.node, 1, "p", 0.5), _arg(c.node, 2, "training", True), c.where
                ),
                torch.dropout: lambda c: _dropout(
                    _arg(c.node, 1, "p"), _arg(c.node, 2, "train"), c.where
                ),
            },
        ),
        "flatten": TorchKind(
            lambda layer, path, shape, dtype, child: nn.Flatten(),
            modules=(nn.Flatten,),
            read=_read_flatten,
        ),
        "residual": TorchKind(_build_residual),
        "embedding": TorchKind(
            lambda layer, path, shape, dtype, child: embedding_module(layer, dtype),
            weights={"embedding": "weight"},
            modules=(nn.Embedding,),
            read=_read_embedding,
            captured=False,
            functions={F.embedding: _read_f_embedding},
        ),
        "attention": TorchKind(
            lambda layer, path, shape, dtype, child: SelfAttention.of(layer, shape[-1], dtype),
            weights={name: name for name in _ATTENTION_WEIGHTS},
            modules=(SelfAttention,),
            read=_read_self_attention,
            captured=False,
        ),
        "gated_mlp": TorchKind(
            lambda layer, path, shape, dtype, child: GatedMLP.of(layer, shape[-1], dtype),
            weights=_MLP_WEIGHTS,
            layouts=dict.fromkeys(("gate_kernel", "up_kernel", "down_kernel"), TRANSPOSED),
            modules=(GatedMLP,),
            read=_read_gated_mlp,
            captured=False,
        ),
    },
    entry_type=TorchKind,
)
"""Layer kind -> its :class:`TorchKind`: the one place torch's form of each kind lives."""


# -- reading ----------------------------------------------------------------------------------


def module_layer(
    module: nn.Module, name: str, dtype: str, ndim: int = 2, *, captured: bool = True
) -> Found | object:
    """The layer a torch module is (the first :data:`KINDS` entry whose ``modules`` it is an
    instance of), :data:`ALIAS` for ``nn.Identity``, :data:`ELEMENTWISE` for a weight-free
    module of another class.

    Args:
        module: the module.
        name: its qualified name in the model (``"0"``, ``"block.fc1"``): weights are named
            ``{name}.weight`` and so on.
        dtype: the model's dtype (``"float32"``), for ``nn.RMSNorm(eps=None)``.
        ndim: the number of axes of its input, batch included (for a softmax's ``dim``).
        captured: ``True`` for module capture, which skips the entries read by the reader
            only (:attr:`TorchKind.captured`); the reader passes ``False``.

    Raises:
        AlignmentError: the module is of a kind xgrad does not read, or configured in a way
            xgrad's layer cannot express; the message names it and its class.
    """
    if isinstance(module, nn.Identity):
        return ALIAS
    for _, entry in KINDS.items():
        if entry.modules and isinstance(module, entry.modules) and (entry.captured or not captured):
            return entry.read(module, name, dtype, ndim)
    if not any(True for _ in module.parameters()) and not any(True for _ in module.buffers()):
        return ELEMENTWISE
    raise _unsupported(f"module {name!r} ({type(module).__name__})", cnn.not_read_why(module))


_METHODS: dict[str, Callable[[Call], Found]] = {
    "relu": _named_activation("relu"),
    "sigmoid": _named_activation("sigmoid"),
    "tanh": _named_activation("tanh"),
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


def _function_reader(target) -> Callable[[Call], Found] | None:
    for _, entry in KINDS.items():
        reader = entry.functions.get(target)
        if reader is not None:
            return reader
    return None


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
    call = Call(node, len(in_shape), where, dtype, module)
    if node.op == "call_method":
        if target in _ALIAS_METHODS:
            return ALIAS
        if target in _METHODS:
            return _METHODS[target](call)
        if target in _RESHAPES:
            return _reshape(in_shape, out_shape, where)
        return None
    if target in _RESHAPE_FUNCTIONS:
        return _reshape(in_shape, out_shape, where)
    if target is torch.clone:
        return ALIAS
    reader = _function_reader(target)
    return None if reader is None else reader(call)


def _reshape(in_shape: tuple, out_shape: tuple, where: str) -> Found | object:
    flat = (in_shape[0], int(torch.Size(in_shape[1:]).numel()))
    if tuple(out_shape) == tuple(in_shape) and len(in_shape) == 2:
        return ALIAS
    if tuple(out_shape) == flat:
        return Found(Flatten())
    raise _unsupported(
        where, f": it reshapes {tuple(in_shape)} to {tuple(out_shape)}, not to (batch, features)"
    )
