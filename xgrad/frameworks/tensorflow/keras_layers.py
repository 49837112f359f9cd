"""xgrad's own Keras layers, for the transformer configurations Keras' layers do not compute.

Each holds its weights in xgrad's canonical names and shapes (:mod:`xgrad.layers`), computes
with ``keras.ops`` in the layer's dtype, and is registered with Keras
(``keras.saving.register_keras_serializable(package="xgrad")``), so a model holding one saves
to a ``.keras`` file that loads in safe mode wherever this module has been imported (as
:class:`~xgrad.frameworks.tensorflow.ops.XgradActivation` does):

=====================  ============================  ==========================================
layer                  registered as                 used for
=====================  ============================  ==========================================
:class:`XgradEmbedding`  ``xgrad>Embedding``         ``Embedding`` with ``padding_idx`` (its
                                                     row gets no gradient) or ``scale``
:class:`XgradAttention`  ``xgrad>Attention``         ``Attention`` with RoPE, a fused ``qkv``
                                                     kernel, an explicit ``scale``, or a float64
                                                     score scale Keras rounds (see
                                                     :mod:`.transformer`)
:class:`XgradGatedMLP`   ``xgrad>GatedMLP``          every ``GatedMLP`` (Keras has none)
=====================  ============================  ==========================================

Shapes are static: the token count of the input (``x.shape[1]``) must be known when the layer
is called, as it is in a model started with ``keras.Input((tokens, dim))``.

Importing this module imports TensorFlow and Keras.
"""

from __future__ import annotations

import numpy as np

from xgrad.activations import get_activation
from xgrad.errors import InputError
from xgrad.frameworks.tensorflow.ops import keras, tf_activation
from xgrad.layers import Attention, GatedMLP
from xgrad.layers.attention import rope_angles

__all__ = ["XgradAttention", "XgradEmbedding", "XgradGatedMLP"]

ops = keras.ops


def _ids(ids):
    """Token ids as int32 or int64 (Keras' ``Embedding`` casts anything else to int32)."""
    return ids if str(ids.dtype) in ("int32", "int64") else ops.cast(ids, "int32")


@keras.saving.register_keras_serializable(package="xgrad", name="Embedding")
class XgradEmbedding(keras.layers.Layer):
    """``y = embeddings[ids] * scale``, the row ``padding_idx`` held out of the gradient.

    Args:
        vocab: rows of ``embeddings``.
        dim: its columns: ``embeddings`` is ``(vocab, dim)``, as ``keras.layers.Embedding``
            holds it.
        padding_idx: a row that gets no gradient (PyTorch's ``padding_idx``): the rows read
            for ids equal to it pass through ``stop_gradient``, so their value is unchanged
            and ``dL/d embeddings[padding_idx]`` is 0. ``None``: none.
        scale: a factor multiplying each row read (a Python float, converted straight to the
            layer's dtype), ``None``: none.
    """

    def __init__(self, vocab, dim, padding_idx=None, scale=None, **kwargs):
        super().__init__(**kwargs)
        self.vocab, self.dim = int(vocab), int(dim)
        self.padding_idx = None if padding_idx is None else int(padding_idx)
        self.scale = None if scale is None else float(scale)
        self.autocast = False  # ids stay integers

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.vocab, self.dim), initializer="zeros", name="embeddings"
        )

    def call(self, ids):
        ids = _ids(ids)
        rows = ops.take(self.embeddings, ids, axis=0)
        if self.padding_idx is not None:
            pad = ops.expand_dims(ops.equal(ids, self.padding_idx), -1)
            rows = ops.where(pad, ops.stop_gradient(rows), rows)
        return rows if self.scale is None else rows * self.scale

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.dim)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "vocab": self.vocab,
            "dim": self.dim,
            "padding_idx": self.padding_idx,
            "scale": self.scale,
        }


def _rope(x, cos, sin, layout: str):
    """Rotate the pairs of ``x (B, T, heads, hd)`` by ``cos, sin (T, hd/2)`` (constants of
    ``x``'s dtype): ``(a, b) -> (a cos - b sin, a sin + b cos)``; ``half`` pairs ``x[m]`` with
    ``x[m + hd/2]``, ``interleaved`` ``x[2m]`` with ``x[2m+1]``."""
    c, s = cos[:, None, :], sin[:, None, :]
    hd = x.shape[-1]
    if layout == "half":
        a, b = x[..., : hd // 2], x[..., hd // 2 :]
        return ops.concatenate([a * c - b * s, a * s + b * c], axis=-1)
    pairs = ops.reshape(x, (-1, x.shape[1], x.shape[2], hd // 2, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return ops.reshape(ops.stack([a * c - b * s, a * s + b * c], axis=-1), (-1, *x.shape[1:]))


@keras.saving.register_keras_serializable(package="xgrad", name="Attention")
class XgradAttention(keras.layers.Layer):
    """Multi-head self-attention as :class:`xgrad.Attention` computes it (its arguments,
    same meanings), on ``x (B, T, dim)``, with the canonical weights as attributes:
    ``query_kernel (dim, H, hd)``, ``key_kernel``/``value_kernel (dim, K, hd)`` (or
    ``qkv_kernel (dim, H + 2K, hd)``), ``out_kernel (H, hd, dim)`` and their biases.

    Key/value heads are repeated ``H // K`` times each (``ops.repeat``: LLaMA's
    ``repeat_kv``); RoPE's ``cos``/``sin`` are xgrad's own tables
    (:func:`~xgrad.layers.attention.rope_angles`, float64 cast to the layer's dtype); the
    scores are multiplied by ``scale`` (``1/sqrt(hd)`` when ``None``) as a Python float,
    converted straight to the layer's dtype; causal: a key after the query scores ``-inf``. In
    float16 and bfloat16 the scores and the softmax are computed in float32 (as Keras'
    ``dot_product_attention`` and Hugging Face's LLaMA compute them), the probabilities cast
    back.
    """

    def __init__(
        self,
        dim,
        heads,
        kv_heads=None,
        head_dim=None,
        causal=False,
        use_bias=True,
        rope=None,
        rope_base=10000.0,
        qkv="separate",
        scale=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # xgrad's configuration checks the arguments and resolves the defaults
        self.xgrad_layer = Attention(
            dim, heads, kv_heads, head_dim, causal, use_bias, rope, rope_base, qkv, scale
        )

    def build(self, input_shape=None):
        shapes = self.xgrad_layer.weight_shapes((None, self.xgrad_layer.dim))
        for name, shape in shapes.items():
            setattr(self, name, self.add_weight(shape=shape, initializer="zeros", name=name))

    def _project(self, x, name: str):
        z = ops.einsum("btd,dhk->bthk", x, getattr(self, f"{name}_kernel"))
        return z + getattr(self, f"{name}_bias") if self.xgrad_layer.use_bias else z

    def call(self, x):
        c = self.xgrad_layer
        tokens = x.shape[1]
        if tokens is None:
            raise InputError(
                f"Keras layer {self.name!r} (xgrad Attention) needs the token count of its "
                "input known when it is called; start the model with keras.Input((tokens, dim))"
            )
        if c.qkv == "fused":
            z = self._project(x, "qkv")
            h, k = c.heads, c.kv_heads
            q, key, v = z[:, :, :h], z[:, :, h : h + k], z[:, :, h + k :]
        else:
            q, key, v = (self._project(x, n) for n in ("query", "key", "value"))
        if c.rope is not None:
            cos, sin = (  # float64 tables rounded once to the layer's dtype
                ops.cast(t, self.compute_dtype)
                for t in rope_angles(tokens, c.head_dim, c.rope_base, np.float64)
            )
            q, key = _rope(q, cos, sin, c.rope), _rope(key, cos, sin, c.rope)
        if c.groups > 1:
            key, v = ops.repeat(key, c.groups, axis=2), ops.repeat(v, c.groups, axis=2)
        # 16-bit scores and softmax in float32, as Keras' dot_product_attention computes them
        wide = "float32" if self.compute_dtype in ("float16", "bfloat16") else self.compute_dtype
        s = ops.cast(ops.einsum("bihd,bjhd->bhij", q, key), wide) * c.score_scale
        if c.causal:
            past = ops.convert_to_tensor(np.tril(np.ones((tokens, tokens), dtype=bool)))
            s = ops.where(past, s, ops.full_like(s, -np.inf))
        p = ops.cast(ops.softmax(s, axis=-1), v.dtype)
        o = ops.einsum("bhij,bjhd->bihd", p, v)
        y = ops.einsum("bihd,hdo->bio", o, self.out_kernel)
        return y + self.out_bias if c.use_bias else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        c = self.xgrad_layer
        return {
            **super().get_config(),
            **{
                name: getattr(c, name)
                for name in (
                    "dim",
                    "heads",
                    "kv_heads",
                    "head_dim",
                    "causal",
                    "use_bias",
                    "rope",
                    "rope_base",
                    "qkv",
                    "scale",
                )
            },
        }


@keras.saving.register_keras_serializable(package="xgrad", name="GatedMLP")
class XgradGatedMLP(keras.layers.Layer):
    """``y = (act(x @ gate_kernel + gate_bias) * (x @ up_kernel + up_bias)) @ down_kernel +
    down_bias`` on the last axis, as :class:`xgrad.GatedMLP` computes it: ``gate_kernel``,
    ``up_kernel (dim, hidden)``, ``down_kernel (hidden, dim)`` (biases with ``use_bias``).

    The activation is xgrad's (by name), applied as
    :func:`~xgrad.frameworks.tensorflow.ops.tf_activation` applies it to a ``Dense``.
    """

    def __init__(self, dim, hidden, activation="silu", use_bias=False, **kwargs):
        super().__init__(**kwargs)
        self.xgrad_layer = GatedMLP(dim, hidden, activation, use_bias)
        self._act = tf_activation(get_activation(self.xgrad_layer.activation))

    def build(self, input_shape=None):
        shapes = self.xgrad_layer.weight_shapes((self.xgrad_layer.dim,))
        for name, shape in shapes.items():
            setattr(self, name, self.add_weight(shape=shape, initializer="zeros", name=name))

    def call(self, x):
        z, u = ops.matmul(x, self.gate_kernel), ops.matmul(x, self.up_kernel)
        if self.xgrad_layer.use_bias:
            z, u = z + self.gate_bias, u + self.up_bias
        y = ops.matmul(self._act(z) * u, self.down_kernel)
        return y + self.down_bias if self.xgrad_layer.use_bias else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        c = self.xgrad_layer
        return {
            **super().get_config(),
            "dim": c.dim,
            "hidden": c.hidden,
            "activation": c.activation,
            "use_bias": c.use_bias,
        }
