"""The transformer kinds in Keras: the ``embedding``, ``attention`` and ``gated_mlp`` entries
of :data:`~xgrad.frameworks.tensorflow.kinds.KINDS`.

=============  ==================================================  ============================
kind           built as / read from                                weights (Keras attributes)
=============  ==================================================  ============================
``embedding``  ``keras.layers.Embedding(vocab, dim)``; with        ``embeddings`` ``(vocab,
               ``padding_idx`` or ``scale``: :class:`~.keras_       dim)``
               layers.XgradEmbedding`
``attention``  ``keras.layers.MultiHeadAttention(heads,            ``_query_dense._kernel``
               head_dim)`` when ``kv_heads == heads``;             ``(dim, H, hd)``, ``_key_``,
               ``keras.layers.GroupQueryAttention(head_dim,      ``_value_dense``, bias
               heads, kv_heads)`` otherwise, both called           ``(H, hd)``;
               ``layer(x, x, use_causal_mask=causal)``, where      ``_output_dense._kernel``
               ``rope is None``, ``qkv == "separate"``,            ``(H, hd, dim)``, bias
               ``scale is None`` and Keras' score scale is         ``(dim,)``; xgrad's layer:
               exact (below); else :class:`~.keras_layers.         the canonical names
               XgradAttention`
``gated_mlp``  :class:`~.keras_layers.XgradGatedMLP`               the canonical names
=============  ==================================================  ============================

Every weight is in canonical layout: Keras' attention kernels are ``EinsumDense`` kernels
``(dim, heads, head_dim)`` and ``(heads, head_dim, dim)``, xgrad's own.

Verified in Keras 3.15's source (``keras/src/layers/attention``, ``backend/tensorflow/nn.py``):
both layers multiply the scores by ``1 / math.sqrt(key_dim)``; ``use_causal_mask=True`` masks
keys after the query (``dot_product_attention(is_causal=True)``, a lower-triangular band
filled with a large negative number, the same softmax as ``-inf`` wherever a row keeps one
key, as a causal row always does); ``GroupQueryAttention`` repeats each key/value head
``heads // kv_heads`` times with ``ops.repeat`` (LLaMA's ``repeat_kv``). On the TensorFlow
backend the scale reaches the scores as ``tf.cast(python_float, dtype)``, which makes a
float32 constant first: in float64 the scale is ``1/sqrt(head_dim)`` rounded to float32
(relative error up to 3e-8, far beyond float64's tolerance) unless that is exact (``head_dim``
1, 4, 16, 64, 256, ...). A float64 spec is therefore built with Keras' layers only where the
scale is exact, and a float64 Keras layer read is read with its rounded scale (a note says
so), which is what it computes.

``Embedding(padding_idx=...)``: Keras has no padding row; xgrad's layer passes the rows read
for that id through ``stop_gradient``, so the row's gradient is 0 as in PyTorch. Keras'
``Embedding(mask_zero=True)`` is refused when read: it hands a padding mask to the layers
after it (a ``MultiHeadAttention`` then ignores keys of id 0), which no spec states.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

import math

import numpy as np

from xgrad.errors import AlignmentError
from xgrad.frameworks.tensorflow.entry import KerasCall, KerasKind, LayerRead, where
from xgrad.frameworks.tensorflow.keras_layers import XgradAttention, XgradEmbedding, XgradGatedMLP
from xgrad.frameworks.tensorflow.ops import keras, tf
from xgrad.identify import FIT, rel
from xgrad.layers import Attention, Embedding

__all__ = ["KERAS_ATTENTION", "TRANSFORMER_KINDS", "keras_attention", "keras_scale"]

KERAS_ATTENTION = (keras.layers.MultiHeadAttention, keras.layers.GroupQueryAttention)
"""Keras' own attention layers, which xgrad builds and reads (exactly these classes)."""


def keras_scale(head_dim: int, dtype: str) -> float:
    """The factor Keras' attention layers multiply the scores by, in ``dtype`` on the
    TensorFlow backend: ``1 / sqrt(head_dim)``, rounded to float32 first in float64 (see the
    module docstring)."""
    exact = 1.0 / math.sqrt(float(head_dim))
    return float(np.float32(exact)) if dtype == "float64" else exact


def keras_attention(layer: Attention, dtype: str) -> type | None:
    """The Keras class that computes ``layer`` in ``dtype`` (``MultiHeadAttention`` or
    ``GroupQueryAttention``), ``None`` when only xgrad's own layer does (RoPE, a fused
    kernel, an explicit scale, or a float64 scale Keras rounds)."""
    if layer.rope is not None or layer.qkv != "separate" or layer.scale is not None:
        return None
    if keras_scale(layer.head_dim, dtype) != layer.score_scale:
        return None
    return KERAS_ATTENTION[0] if layer.kv_heads == layer.heads else KERAS_ATTENTION[1]


# -- embedding ------------------------------------------------------------------------------------


def _build_embedding(layer: Embedding, name: str, dtype: str):
    if layer.padding_idx is None and layer.scale is None:
        return keras.layers.Embedding(
            layer.vocab, layer.dim, embeddings_initializer="zeros", name=name, dtype=dtype
        )
    return XgradEmbedding(
        layer.vocab, layer.dim, layer.padding_idx, layer.scale, name=name, dtype=dtype
    )


def _read_embedding(layer, x, out, dtype) -> LayerRead:
    if layer.mask_zero:
        raise AlignmentError(
            f"{where(layer)} has mask_zero=True, which hands a padding mask to the layers "
            "after it (a MultiHeadAttention then ignores keys of id 0); xgrad reads "
            "Embedding(mask_zero=False)"
        )
    if layer.lora_enabled or layer.quantization_mode:
        raise AlignmentError(
            f"{where(layer)} is quantized or has LoRA enabled; xgrad reads a plain embedding "
            "table (merge the LoRA weights into it first)"
        )
    return LayerRead("embedding", Embedding(layer.input_dim, layer.output_dim), ("embedding",))


def _read_xgrad_embedding(layer, x, out, dtype) -> LayerRead:
    config = Embedding(layer.vocab, layer.dim, layer.padding_idx, layer.scale)
    return LayerRead("embedding", config, ("embedding",))


# -- attention ------------------------------------------------------------------------------------


def _build_attention(layer: Attention, name: str, dtype: str):
    cls = keras_attention(layer, dtype)
    common = {"use_bias": layer.use_bias, "kernel_initializer": "zeros", "name": name}
    if cls is keras.layers.MultiHeadAttention:
        return cls(layer.heads, layer.head_dim, dtype=dtype, **common)
    if cls is keras.layers.GroupQueryAttention:
        return cls(layer.head_dim, layer.heads, layer.kv_heads, dtype=dtype, **common)
    fields = ("dim", "heads", "kv_heads", "head_dim", "causal", "use_bias", "rope")
    return XgradAttention(
        *(getattr(layer, f) for f in fields),
        rope_base=layer.rope_base,
        qkv=layer.qkv,
        scale=layer.scale,
        name=name,
        dtype=dtype,
    )


def _self_attention(keras_layer, x, causal: bool, **kwargs):
    """A Keras attention layer as self-attention of ``x``: query, key and value all ``x``."""
    if type(keras_layer) in KERAS_ATTENTION:
        return keras_layer(x, x, use_causal_mask=causal, **kwargs)
    return keras_layer(x, **kwargs)  # xgrad's own: causal is in its configuration


def _call_attention(c: KerasCall, a):
    return _self_attention(c.keras_layer, a, c.layer.causal, training=False)


def _wire_attention(keras_layer, layer: Attention, h):
    return _self_attention(keras_layer, h, layer.causal)


def _causal(layer, x, out, dtype: str) -> bool:
    """Whether ``out`` is ``layer``'s self-attention of ``x`` with ``use_causal_mask=True``
    (rather than without), from the layer's own output on each.

    Raises:
        AlignmentError: neither reproduces ``out`` (cross-attention, or a mask passed).
    """
    x = tf.convert_to_tensor(x)
    errors = {c: rel(_self_attention(layer, x, c, training=False), out) for c in (False, True)}
    best = min(errors, key=errors.get)
    if errors[best] > FIT.get(dtype, 2e-6):
        raise AlignmentError(
            f"{where(layer)} does not compute self-attention of its query with or without "
            f"use_causal_mask (closest relative error {errors[best]:.1e}); xgrad reads "
            "layer(x, x) and layer(x, x, use_causal_mask=True), without attention_mask or "
            "Keras masks"
        )
    return best


def _check_attention(layer, x, accepted: dict[str, tuple]) -> None:
    """Refuse a configuration xgrad's Attention does not compute (``accepted``: attribute ->
    the values xgrad reads, the first one named in the message)."""
    if len(x.shape) != 3:
        raise AlignmentError(
            f"{where(layer)} is applied to examples of shape {tuple(x.shape[1:])}; xgrad reads "
            "attention over the tokens of (batch, tokens, dim)"
        )
    for attribute, values in accepted.items():
        have = getattr(layer, attribute, values[0])
        if have not in values:
            name = attribute.lstrip("_")
            raise AlignmentError(
                f"{where(layer)} has {name}={have!r}; xgrad reads {name}={values[0]!r}"
            )


def _read_keras_attention(layer, x, out, dtype) -> LayerRead:
    dim = int(x.shape[-1])
    if type(layer) is keras.layers.MultiHeadAttention:
        heads, kv_heads, head_dim = layer.num_heads, layer.num_heads, layer.key_dim
        extra = {
            "value_dim": (head_dim,),
            "_output_shape": (None, (dim,)),
            "_use_gate": (False,),
            "attention_axes": ((1,),),
            "_sliding_window": (None,),
        }
    else:
        heads, kv_heads, head_dim = (
            layer.num_query_heads,
            layer.num_key_value_heads,
            layer.head_dim,
        )
        extra = {"use_gate": (False,), "sliding_window": (None,)}
    _check_attention(layer, x, extra)
    scale = keras_scale(head_dim, layer.compute_dtype)
    exact = scale == 1.0 / math.sqrt(float(head_dim))
    config = Attention(
        dim,
        heads,
        kv_heads,
        head_dim,
        causal=_causal(layer, x, out, dtype),
        use_bias=layer.use_bias,
        scale=None if exact else scale,
    )
    note = None
    if not exact:
        note = (
            f"Keras' {type(layer).__name__} multiplies float64 scores by 1/sqrt({head_dim}) "
            f"rounded to float32 ({scale!r}; tf.cast of a Python float): read as that scale"
        )
    return LayerRead("attention", config, config.param_names(), note=note)


def _read_xgrad_layer(kind: str):
    def read(layer, x, out, dtype) -> LayerRead:
        return LayerRead(kind, layer.xgrad_layer, layer.xgrad_layer.param_names())

    return read


_ATTENTION_NAMES = tuple(
    f"{p}_{w}" for p in ("query", "key", "value", "qkv", "out") for w in ("kernel", "bias")
)
_KERAS_ATTENTION_WEIGHTS = {
    f"{p}_{w}": f"_{dense}_dense._{w}" if w == "kernel" else f"_{dense}_dense.{w}"
    for p, dense in (("query", "query"), ("key", "key"), ("value", "value"), ("out", "output"))
    for w in ("kernel", "bias")
}

TRANSFORMER_KINDS: dict[str, KerasKind] = {
    "embedding": KerasKind(
        _build_embedding,
        weights={"embedding": "embeddings"},
        reads={keras.layers.Embedding: _read_embedding, XgradEmbedding: _read_xgrad_embedding},
    ),
    "attention": KerasKind(
        _build_attention,
        weights={name: name for name in _ATTENTION_NAMES},
        call=_call_attention,
        reads={
            **dict.fromkeys(KERAS_ATTENTION, _read_keras_attention),
            XgradAttention: _read_xgrad_layer("attention"),
        },
        weights_of=dict.fromkeys(KERAS_ATTENTION, _KERAS_ATTENTION_WEIGHTS),
        wire=_wire_attention,
    ),
    "gated_mlp": KerasKind(
        lambda layer, name, dtype: XgradGatedMLP(
            layer.dim, layer.hidden, layer.activation, layer.use_bias, name=name, dtype=dtype
        ),
        weights={
            f"{p}_{w}": f"{p}_{w}" for p in ("gate", "up", "down") for w in ("kernel", "bias")
        },
        reads={XgradGatedMLP: _read_xgrad_layer("gated_mlp")},
    ),
}
"""The entries of the transformer kinds, merged into :data:`.kinds.KINDS`."""
