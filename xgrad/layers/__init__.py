"""The layer vocabulary: one module per layer kind, one registry.

=============  ===========================================  ==========================
kind           class                                        weights (local names)
=============  ===========================================  ==========================
dense          :class:`Dense` (units, activation, use_bias)  kernel (in, out), bias
activation     :class:`Activation` (name)                   -
layernorm      :class:`LayerNorm` (epsilon=1e-3, ...)        scale, bias
rmsnorm        :class:`RMSNorm` (epsilon=1e-6, scale)        scale
batchnorm      :class:`BatchNorm` (epsilon=1e-3, ...)        scale, bias; state mean, var
groupnorm      :class:`GroupNorm` (groups, epsilon=1e-5)     scale, bias (channels,)
dropout        :class:`Dropout` (rate, active=False)         -
flatten        :class:`Flatten` ()                           -
residual       :class:`Residual` (layers)                    those of its layers
embedding      :class:`Embedding` (vocab, dim, ...)          embedding (vocab, dim)
attention      :class:`Attention` (dim, heads, ...)          query/key/value_kernel
                                                            (dim, heads, head_dim) or
                                                            qkv_kernel (dim, H + 2K, hd),
                                                            out_kernel (heads, hd, dim),
                                                            biases
gated_mlp      :class:`GatedMLP` (dim, hidden, activation)  gate/up_kernel (dim, hidden),
                                                            down_kernel (hidden, dim),
                                                            biases
conv           :class:`Conv` (features, kernel, strides,     kernel (*k, in // groups,
               padding, dilation, groups, use_bias)          features), bias (features,)
maxpool        :class:`MaxPool` (pool, strides, padding)     -
avgpool        :class:`AvgPool` (pool, ..., count_include_   -
               pad=False)
global_avgpool :class:`GlobalAvgPool` ()                     -
lstm           :class:`LSTM` (units, return_sequences)      kernel (in, 4u), recurrent_kernel
                                                            (u, 4u), bias (4u,): gates i, f, c, o
gru            :class:`GRU` (units, ..., reset_after=True)  kernel (in, 3u), recurrent_kernel
                                                            (u, 3u), bias (2, 3u) or (3u,):
                                                            gates z, r, h
=============  ===========================================  ==========================

Dense, LayerNorm, RMSNorm, Activation, Dropout and GatedMLP act on the last axis of
examples of any rank (a transformer's ``(tokens, dim)``), their weight gradients summed over
every leading axis. :func:`transformer_block` composes these kinds into a pre-LN or post-LN
block (no kind of its own). Conv and the pools take channels-last examples ``(length,
channels)`` or ``(height, width, channels)``.
LSTM and GRU take sequences ``(time, features)`` and keep
Keras' layouts and gate orders (see :mod:`xgrad.layers.recurrent` for PyTorch's).

BatchNorm and GroupNorm normalise the channels, the last axis, of examples of any rank
(``(channels,)``, ``(length, channels)``, ``(height, width, channels)``); their weights
and BatchNorm's state have shape ``(channels,)``.

A new layer kind is its own module here plus one line in :data:`LAYERS` (or, outside
xgrad, :func:`register_layer`), and one entry in each framework's kind table that should
build it (``xgrad/frameworks/<name>/kinds.py``; see docs/design.md, "Add a layer kind").
"""

from xgrad.layers.activation import Activation
from xgrad.layers.attention import Attention
from xgrad.layers.base import AbstractLayer, Shape, Step, forward_sequence, vjp_sequence
from xgrad.layers.batchnorm import BatchNorm
from xgrad.layers.conv import Conv
from xgrad.layers.dense import Dense
from xgrad.layers.dropout import Dropout
from xgrad.layers.embedding import Embedding
from xgrad.layers.flatten import Flatten
from xgrad.layers.gated_mlp import GatedMLP
from xgrad.layers.groupnorm import GroupNorm
from xgrad.layers.layernorm import LayerNorm
from xgrad.layers.pool import AvgPool, GlobalAvgPool, MaxPool
from xgrad.layers.recurrent import GRU, LSTM
from xgrad.layers.residual import Residual
from xgrad.layers.rmsnorm import RMSNorm
from xgrad.layers.transformer import transformer_block

__all__ = [
    "LAYERS",
    "AbstractLayer",
    "Activation",
    "Attention",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "Dense",
    "Dropout",
    "Embedding",
    "Flatten",
    "GRU",
    "GatedMLP",
    "GroupNorm",
    "GlobalAvgPool",
    "LSTM",
    "LayerNorm",
    "MaxPool",
    "RMSNorm",
    "Residual",
    "Shape",
    "Step",
    "forward_sequence",
    "register_layer",
    "transformer_block",
    "unregister_layer",
    "vjp_sequence",
]

LAYERS: dict[str, type[AbstractLayer]] = {
    cls.kind: cls
    for cls in (
        Dense,
        Activation,
        LayerNorm,
        RMSNorm,
        BatchNorm,
        GroupNorm,
        Dropout,
        Flatten,
        Residual,
        Embedding,
        Attention,
        GatedMLP,
        Conv,
        MaxPool,
        AvgPool,
        GlobalAvgPool,
        LSTM,
        GRU,
    )
}
"""Every layer kind by name."""

_BUILT_IN = frozenset(LAYERS)


def register_layer(cls: type[AbstractLayer]) -> type[AbstractLayer]:
    """Add a layer kind to :data:`LAYERS` (usable as a class decorator).

    The class is an :class:`AbstractLayer` (a frozen dataclass) whose ``kind`` is a new name;
    each framework that should build it then registers its entry in its kind table
    (``xgrad.frameworks.<name>.kinds.KINDS.register(kind, entry)``).

    Raises:
        SpecError: not a layer class, no ``kind``, or the kind is taken by another class.
    """
    from xgrad.errors import SpecError

    if not (isinstance(cls, type) and issubclass(cls, AbstractLayer)):
        raise SpecError(f"register_layer takes an AbstractLayer subclass, got {cls!r}")
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind.isidentifier():
        raise SpecError(f"{cls.__name__}.kind must be a name such as 'scale', got {kind!r}")
    if LAYERS.get(kind, cls) is not cls:
        raise SpecError(f"layer kind {kind!r} is taken by {LAYERS[kind].__name__}")
    LAYERS[kind] = cls
    return cls


def unregister_layer(kind: str) -> type[AbstractLayer] | None:
    """Remove a layer kind registered with :func:`register_layer` (xgrad's own kinds stay);
    returns its class, ``None`` if it was not registered."""
    from xgrad.errors import SpecError

    if kind in _BUILT_IN:
        raise SpecError(f"{kind!r} is one of xgrad's own layer kinds; it cannot be removed")
    return LAYERS.pop(kind, None)
