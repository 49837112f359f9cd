"""``Embedding``: integer token ids to vectors, ``y = embedding[ids] * s``.

Weights: ``embedding`` of shape ``(vocab, dim)`` (PyTorch ``nn.Embedding.weight``, Keras
``Embedding.embeddings``, Flax ``Embed.embedding``: one layout everywhere). ``s`` is 1, or
``scale`` when given (Gemma and T5-style code multiply by ``sqrt(dim)``: ``scale=dim ** 0.5``).

The backward pass scatters ``dL/dy`` into the rows that were read::

    dL/d embedding[v] = s * sum over positions p with ids[p] == v of dL/dy[p]

A ``padding_idx`` row (PyTorch's convention) gets no gradient: its ``dL/d row`` is 0 however
often it is read, and :meth:`Embedding.init` sets it to zeros as ``nn.Embedding`` does (the
forward pass reads whatever it holds). Token ids have no gradient: the VJP returns ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xgrad.errors import InputError, SpecError
from xgrad.layers.base import AbstractLayer, Shape, Step, check_float, check_positive_int

__all__ = ["Embedding", "check_ids"]


def check_ids(ids, vocab: int, where: str) -> np.ndarray:
    """``ids`` as an integer array, every one in ``[0, vocab)``, else :class:`InputError`
    naming ``where`` (the layer), the first bad id and the vocabulary size.

    Floats holding whole numbers (ids cast to a model's dtype on the way) are accepted.
    """
    arr = np.asarray(ids)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(
                f"{where} takes integer token ids, got {arr.dtype} values that are not whole "
                "numbers; pass ids as an integer array, e.g. ids.astype('int64')"
            )
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise InputError(
            f"{where} takes integer token ids, got dtype {arr.dtype}; pass an integer array"
        )
    bad = (arr < 0) | (arr >= vocab)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{where}: token id {int(arr[index])} at index {index} is out of range for a "
            f"vocabulary of {vocab} (ids must be in [0, {vocab})); "
            f"{int(bad.sum())} of {arr.size} ids are out of range"
        )
    return arr


@dataclass(frozen=True)
class Embedding(AbstractLayer):
    """A lookup table of token vectors, the first layer of a spec taking token ids.

    Args:
        vocab: the number of rows (token ids are in ``[0, vocab)``).
        dim: the width of each vector.
        padding_idx: a row that gets no gradient (PyTorch's ``padding_idx``), or ``None``.
        scale: a factor multiplying every looked-up vector (``dim ** 0.5`` in Gemma), or
            ``None`` for none.

    Raises:
        SpecError: a size that is not a positive integer, a ``padding_idx`` outside
            ``[0, vocab)``, a scale that is not a finite number.

    Example:
        >>> Embedding(20, 8).weight_shapes((6,))
        {'embedding': (20, 8)}
    """

    kind = "embedding"

    vocab: int
    dim: int
    padding_idx: int | None = None
    scale: float | None = None

    def __post_init__(self) -> None:
        vocab = check_positive_int(self.vocab, "Embedding vocab")
        object.__setattr__(self, "vocab", vocab)
        object.__setattr__(self, "dim", check_positive_int(self.dim, "Embedding dim"))
        if self.padding_idx is not None:
            pad = self.padding_idx
            if isinstance(pad, bool) or not isinstance(pad, int | np.integer):
                raise SpecError(f"Embedding padding_idx must be an integer or None, got {pad!r}")
            if not 0 <= pad < vocab:
                raise SpecError(
                    f"Embedding padding_idx {pad} is outside the vocabulary [0, {vocab}); "
                    "give a row index (PyTorch's negative indices: write vocab + index)"
                )
            object.__setattr__(self, "padding_idx", int(pad))
        if self.scale is not None:
            object.__setattr__(self, "scale", check_float(self.scale, "Embedding scale"))

    def param_names(self) -> tuple[str, ...]:
        return ("embedding",)

    def output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            raise SpecError(
                f"Embedding takes examples of token ids of shape (tokens,), got {input_shape}; "
                "write xgrad.MLP((tokens,), [Embedding(vocab, dim), ...])"
            )
        return (*input_shape, self.dim)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        return {"embedding": (self.vocab, self.dim)}

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Standard normal rows (``nn.Embedding``'s init); the ``padding_idx`` row zeros."""
        table = rng.normal(0.0, 1.0, size=(self.vocab, self.dim))
        if self.padding_idx is not None:
            table[self.padding_idx] = 0.0
        return {"embedding": table}

    def describe(self) -> str:
        extra = ""
        if self.padding_idx is not None:
            extra += f", padding_idx={self.padding_idx}"
        if self.scale is not None:
            extra += f", scale={self.scale:g}"
        return f"embedding({self.vocab}, {self.dim}{extra})"

    def factor(self, dtype) -> np.generic | None:
        """The scale as a scalar of ``dtype``, ``None`` when there is none."""
        return None if self.scale is None else np.dtype(dtype).type(self.scale)

    def forward(self, weights, x, *, path):
        table = weights[f"{path}.embedding"]
        ids = check_ids(x, self.vocab, f"Embedding {path}")
        y = table[ids]
        s = self.factor(table.dtype)
        return Step(path, self, x, y if s is None else y * s, cache=ids)

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        ids = step.cache
        table = weights[f"{step.path}.embedding"]
        s = self.factor(grad_output.dtype)
        g = grad_output if s is None else grad_output * s
        d_table = np.zeros(table.shape, dtype=np.result_type(table.dtype, g.dtype))
        np.add.at(d_table, ids.reshape(-1), g.reshape(-1, self.dim))
        if self.padding_idx is not None:
            d_table[self.padding_idx] = 0
        grads[f"{step.path}.embedding"] = d_table
        return None  # token ids have no gradient
