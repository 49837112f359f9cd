"""Every layer kind in Flax, in one table: the NNX module that builds it, how its output is
finished, the names of its weights (NNX and Linen), and the NNX classes read as it.

==============  ========================================  =======================  =============
kind            built as (NNX) / read from                weights                  Linen
==============  ========================================  =======================  =============
``dense``       ``nnx.Linear`` / and read from it; built  ``kernel (in, out)``,    ``Dense``
                with its activation after it              ``bias``
``activation``  :class:`~.modules.ActivationLayer`        -                        -
``layernorm``   ``nnx.LayerNorm`` / and read from it      ``scale``, ``bias``      ``LayerNorm``
``rmsnorm``     ``nnx.RMSNorm`` / and read from it        ``scale``                ``RMSNorm``
``batchnorm``   ``nnx.BatchNorm`` / and read from it      ``scale``, ``bias``;     ``BatchNorm``
                (statistics over every axis but the       ``BatchStat`` ``mean``,
                last: the batch and spatial positions)    ``var``
``dropout``     ``nnx.Dropout(deterministic=True)``;      -                        -
                active: :class:`~.modules.MaskedDropout`
                / read from ``nnx.Dropout``
``flatten``     :class:`~.modules.FlattenLayer`           -                        -
``residual``    an :class:`~.builder.XgradModule` of its  those of its layers      -
                layers, added to its input
``embedding``   ``nnx.Embed``; its output times ``scale``  ``embedding (vocab,      ``Embed``
                and, with ``padding_idx``, read through   dim)``
                ``stop_gradient`` at the padding ids
``attention``   ``nnx.MultiHeadAttention`` (causal:       ``query/kernel (dim, H,  -
                ``nnx.make_causal_mask``) without RoPE,   hd)``, ``key/...``,
                with separate q/k/v and the default       ``value/...`` or
                scale; else :class:`~.modules.            ``qkv/kernel``;
                SelfAttention`` (``nnx.LinearGeneral``)   ``out/kernel (H, hd,
                                                          dim)``, ``*/bias``
``gated_mlp``   :class:`~.modules.GatedMLPLayer` (three   ``gate/kernel``,         -
                ``nnx.Linear``)                           ``up/kernel``,
                                                          ``down/kernel``, biases
``conv``, ...   :mod:`~.cnn` (``nnx.Conv``, Flax's        see there                ``Conv``,
                pooling functions, ``nnx.GroupNorm``)                              ``GroupNorm``
                and :mod:`~.recurrent` (``nnx.RNN``)
==============  ========================================  =======================  =============

Flax stores every weight canonically (``nnx.Linear``'s kernel is ``(in, out)``,
``nnx.LinearGeneral``'s ``(in, heads, head_dim)``), so no entry states a layout. Every module
acts on the last axis of a batch of any rank (``(batch, tokens, d)``); ``nnx.Embed`` takes
integer ids ``(batch, tokens)``.

``nnx.MultiHeadAttention`` in float64 and float16 is given
:func:`~.modules.weights_attention` (Flax's ``dot_product_attention_weights``) in place of its
default, ``jax.nn.dot_product_attention``, which computes the softmax in float32 whatever the
dtype, and in float16 asks for an ``F16_F16_F32`` matmul that the CPU refuses in the backward
pass (:data:`OWN_ATTENTION_DTYPES`).

Users' NNX and Linen models are read from their jaxpr (:mod:`xgrad.frameworks.jax.reader`;
the transformer kinds, ``nnx.Embed`` and ``nnx.MultiHeadAttention`` included, by
:mod:`xgrad.frameworks.jax.blocks`, identified from their values); an NNX module of an entry's
``modules`` adds what it states and the jaxpr does not (a norm's epsilon, BatchNorm's
momentum). A model captured module by module
(:mod:`xgrad.frameworks.flax.capture`) reads a module of an entry's ``modules`` (NNX) or
``linen`` class (Linen) as that kind, its configuration from ``hints``. The transformer kinds
(``embedding``, ``attention``, ``gated_mlp``) name no ``modules`` and no ``hints`` yet: a
captured ``nnx.Embed``, ``nn.Embed`` or ``nnx.MultiHeadAttention`` stays an opaque module
(compared, localised).

A new kind is one more entry of :data:`KINDS` (:class:`FlaxKind`); see docs/design.md.

Importing this module imports Flax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
from flax import nnx

from xgrad.frameworks.flax import cnn, recurrent
from xgrad.frameworks.flax.modules import (
    ActivationLayer,
    FlattenLayer,
    GatedMLPLayer,
    MaskedDropout,
    SelfAttention,
    weights_attention,
)
from xgrad.frameworks.jax.attention import head_sizes
from xgrad.frameworks.jax.ops import jax_activation
from xgrad.frameworks.kinds import KindTable
from xgrad.layers import (
    AbstractLayer,
    Attention,
    BatchNorm,
    Dense,
    Dropout,
    Embedding,
    GatedMLP,
    LayerNorm,
    RMSNorm,
    Shape,
)

__all__ = ["KINDS", "OWN_ATTENTION_DTYPES", "Block", "FlaxKind", "Run", "flax_attention"]

Block = Callable[[tuple[AbstractLayer, ...], str, Shape], nnx.Module]
"""``(layers, prefix, shape) -> module``: nested layers (a residual block's) built as one NNX
module, layer ``j`` at path ``{prefix}.{j}``, on examples of ``shape``; given by the model."""

Run = Callable[[nnx.Module, jax.Array], jax.Array]
"""``(module, x) -> output``: a module made by a :data:`Block` run on ``x``, its layers'
values captured as the model captures any layer's; given by the model."""


@dataclass(frozen=True)
class FlaxKind:
    """How Flax builds, names and reads one layer kind: the kind's entry in :data:`KINDS`.

    Attributes:
        build: ``(layer, path, shape, dtype, rngs, block) -> nnx.Module``: the module
            computing ``layer`` at ``path`` on examples of ``shape`` in ``dtype`` (a JAX
            dtype), with a slot for each weight (xgrad writes their values next); ``block``
            builds nested layers (:data:`Block`).
        call: ``(layer, module, x, run) -> output``: how the model applies the built module
            and finishes its output (Dense's activation); ``run`` runs a nested block
            (:data:`Run`). ``None``: ``module(x)``.
        weights: local name -> the weight's name inside the module, which is its NNX state
            path below the layer's (``layers/0/kernel``) and its variable in the Linen module.
        linen: the Linen module (``nn.Dense``, ...) holding the weights in a compact Linen
            model: the ``Dense`` of ``Dense_0`` in :func:`~.builder.linen_variables`;
            ``None`` where Linen has no such module.
        modules: NNX module classes read as this kind in users' models.
        hints: ``(module) -> {field: value}``: the configuration an instance of ``modules``
            states (a norm's epsilon), completing what the jaxpr reader identifies.
    """

    build: Callable[..., nnx.Module]
    call: Callable[[AbstractLayer, nnx.Module, jax.Array, Run], jax.Array] | None = None
    weights: Mapping[str, str] = field(default_factory=dict)
    linen: str | None = None
    modules: tuple[type, ...] = ()
    hints: Callable[[nnx.Module], dict] | None = None


def _dense(layer: Dense, path, shape, dtype, rngs, block) -> nnx.Module:
    return nnx.Linear(
        shape[-1], layer.units, use_bias=layer.use_bias, dtype=dtype, param_dtype=dtype, rngs=rngs
    )


def _layernorm(layer: LayerNorm, path, shape, dtype, rngs, block) -> nnx.Module:
    return nnx.LayerNorm(
        shape[-1],
        epsilon=layer.epsilon,
        use_bias=layer.center,
        use_scale=layer.scale,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


def _rmsnorm(layer: RMSNorm, path, shape, dtype, rngs, block) -> nnx.Module:
    return nnx.RMSNorm(
        shape[-1],
        epsilon=layer.epsilon,
        use_scale=layer.scale,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


def _batchnorm(layer: BatchNorm, path, shape, dtype, rngs, block) -> nnx.Module:
    return nnx.BatchNorm(
        shape[-1],
        use_running_average=not layer.training,
        momentum=layer.momentum,
        epsilon=layer.epsilon,
        use_bias=layer.center,
        use_scale=layer.scale,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
    )


def _dropout(layer: Dropout, path, shape, dtype, rngs, block) -> nnx.Module:
    if layer.active:
        return MaskedDropout(layer, path)
    return nnx.Dropout(layer.rate, deterministic=True)


def _residual(layer, path, shape, dtype, rngs, block) -> nnx.Module:
    return block(layer.children, f"{path}.layers", shape)


def _embedding(layer: Embedding, path, shape, dtype, rngs, block) -> nnx.Module:
    return nnx.Embed(layer.vocab, layer.dim, dtype=dtype, param_dtype=dtype, rngs=rngs)


def _embedding_call(layer: Embedding, module: nnx.Embed, ids, run):
    y = module(ids)
    if layer.padding_idx is not None:
        # torch's padding_idx (nnx.Embed has none): the row is read, no gradient reaches it
        y = jnp.where((ids == layer.padding_idx)[..., None], jax.lax.stop_gradient(y), y)
    return y if layer.scale is None else y * jnp.asarray(layer.scale, y.dtype)


OWN_ATTENTION_DTYPES = {
    "float64": "jax.nn.dot_product_attention computes the softmax in float32",
    "float16": "jax.nn.dot_product_attention's F16_F16_F32 matmul fails on CPU in the backward",
}
"""dtype -> why ``nnx.MultiHeadAttention`` gets :func:`~.modules.weights_attention` there
instead of its default attention function (float32 and bfloat16 keep the default)."""


def flax_attention(layer: Attention) -> bool:
    """Whether ``nnx.MultiHeadAttention`` computes ``layer``: no rotary positions, separate
    q/k/v projections, the scale ``1/sqrt(head_dim)`` (grouped-query heads it has:
    ``num_kv_heads``, each key/value head serving consecutive query heads)."""
    return layer.rope is None and layer.qkv == "separate" and layer.scale is None


def _attention(layer: Attention, path, shape, dtype, rngs, block) -> nnx.Module:
    if not flax_attention(layer):
        return SelfAttention(layer, dtype=dtype, rngs=rngs)
    heads, kv_heads, head_dim = head_sizes(layer)
    own = jnp.dtype(dtype).name in OWN_ATTENTION_DTYPES
    extra = {"attention_fn": weights_attention} if own else {}
    return nnx.MultiHeadAttention(
        heads,
        layer.dim,
        qkv_features=heads * head_dim,
        out_features=layer.dim,
        num_kv_heads=kv_heads,
        use_bias=layer.use_bias,
        decode=False,
        dtype=dtype,
        param_dtype=dtype,
        rngs=rngs,
        **extra,
    )


def _attention_call(layer: Attention, module: nnx.Module, x, run):
    if not isinstance(module, nnx.MultiHeadAttention):
        return module(x)
    # Flax's causal mask (batch, 1, tokens, tokens): True where key j <= query i
    mask = nnx.make_causal_mask(x[..., 0]) if layer.causal else None
    return module(x, mask=mask)


def _gated_mlp(layer: GatedMLP, path, shape, dtype, rngs, block) -> nnx.Module:
    return GatedMLPLayer(layer, dtype=dtype, rngs=rngs)


def _sublayer_weights(*names: str) -> dict[str, str]:
    """``query_kernel -> query/kernel``: the canonical names of submodules' kernels and
    biases."""
    return {f"{n}_{w}": f"{n}/{w}" for n in names for w in ("kernel", "bias")}


def _conv_hints(module: nnx.Conv) -> dict:
    """:func:`~.cnn.conv_hints`, a size equal on every axis written once (``kernel=3``, not
    ``(3, 3)``), as a spec writes it and the JAX reader reads it: a spec built in Flax reads
    back equal to itself."""
    hints = cnn.conv_hints(module)
    for key in ("kernel", "strides", "dilation"):
        sizes = hints[key]
        if isinstance(sizes, tuple) and len(set(sizes)) == 1:
            hints[key] = sizes[0]
    return hints


_NORM_WEIGHTS = {"scale": "scale", "bias": "bias", "mean": "mean", "var": "var"}


KINDS: KindTable[FlaxKind] = KindTable(
    "flax",
    {
        "dense": FlaxKind(
            _dense,
            call=lambda layer, module, x, run: jax_activation(layer.act)(module(x)),
            weights={"kernel": "kernel", "bias": "bias"},
            linen="Dense",
            modules=(nnx.Linear,),
        ),
        "activation": FlaxKind(
            lambda layer, path, shape, dtype, rngs, block: ActivationLayer(layer.name)
        ),
        "layernorm": FlaxKind(
            _layernorm,
            weights=_NORM_WEIGHTS,
            linen="LayerNorm",
            modules=(nnx.LayerNorm,),
            hints=lambda m: {"epsilon": m.epsilon},
        ),
        "rmsnorm": FlaxKind(
            _rmsnorm,
            weights=_NORM_WEIGHTS,
            linen="RMSNorm",
            modules=(nnx.RMSNorm,),
            hints=lambda m: {"epsilon": m.epsilon},
        ),
        "batchnorm": FlaxKind(
            _batchnorm,
            weights=_NORM_WEIGHTS,
            linen="BatchNorm",
            modules=(nnx.BatchNorm,),
            hints=lambda m: {"epsilon": m.epsilon, "momentum": m.momentum},
        ),
        "dropout": FlaxKind(_dropout, modules=(nnx.Dropout,), hints=lambda m: {"rate": m.rate}),
        "flatten": FlaxKind(lambda layer, path, shape, dtype, rngs, block: FlattenLayer()),
        "residual": FlaxKind(_residual, call=lambda layer, module, x, run: x + run(module, x)),
        "embedding": FlaxKind(
            _embedding, call=_embedding_call, weights={"embedding": "embedding"}, linen="Embed"
        ),
        "attention": FlaxKind(
            _attention,
            call=_attention_call,
            weights=_sublayer_weights("query", "key", "value", "qkv", "out"),
        ),
        "gated_mlp": FlaxKind(_gated_mlp, weights=_sublayer_weights("gate", "up", "down")),
        "conv": FlaxKind(
            cnn.build_conv,
            weights={"kernel": "kernel", "bias": "bias"},
            linen="Conv",
            modules=(nnx.Conv,),
            hints=_conv_hints,
        ),
        "maxpool": FlaxKind(lambda layer, path, shape, *_: cnn.PoolLayer(layer, shape)),
        "avgpool": FlaxKind(lambda layer, path, shape, *_: cnn.PoolLayer(layer, shape)),
        "global_avgpool": FlaxKind(lambda *_: cnn.GlobalAvgPoolLayer()),
        "groupnorm": FlaxKind(
            cnn.build_groupnorm,
            weights={"scale": "scale", "bias": "bias"},
            linen="GroupNorm",
            modules=(nnx.GroupNorm,),
            hints=cnn.groupnorm_hints,
        ),
        "lstm": FlaxKind(
            recurrent.build_lstm,
            call=recurrent.recurrent_call,
            weights=recurrent.LSTM_WEIGHTS,
            modules=(nnx.RNN,),
            hints=recurrent.lstm_hints,
        ),
        "gru": FlaxKind(
            recurrent.build_gru, call=recurrent.recurrent_call, weights=recurrent.GRU_WEIGHTS
        ),
    },
    entry_type=FlaxKind,
)
"""Layer kind -> its :class:`FlaxKind`: the one place Flax's form of each kind lives."""
