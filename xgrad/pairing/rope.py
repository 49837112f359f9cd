"""Query and key projections stored in the other RoPE order (Meta's LLaMA against Hugging
Face's), paired through the permutation that makes the two equivalent.

RoPE rotates pairs of each head's entries. Meta's original LLaMA code (and GPT-J) pairs
neighbours ``(x[2m], x[2m+1])`` (a complex multiply); Hugging Face's LLaMA (and GPT-NeoX)
pairs the two halves ``(x[m], x[m + hd/2])`` (``rotate_half``). The two compute the same
attention when the rows of ``wq`` and ``wk`` are permuted within each head, which is what
Hugging Face's ``convert_llama_weights_to_hf.py`` does (``permute``) and, in transformers 5,
``core_model_loading.PermuteForRope``: for each head, the entry at ``2m + t`` of Meta's
order is the one at ``t * hd/2 + m`` of Hugging Face's (``t`` in 0, 1). A correct port of
Meta's code holding Hugging Face's weights therefore holds its q/k projections permuted.

:func:`rope_orders` finds the query and key parameters (by their role's name,
:mod:`xgrad.pairing.roles`) paired as they stand whose candidate values are the reference's
with exactly this permutation of their output axis, for exactly one head width, and pairs
them through it (:class:`RopeOrder`): gradients are compared, and weights copied, through the
permutation. The values decide (an array of one value, or one the candidate holds under no
permutation or under the identity, is left as it was); nothing is guessed. The permutation
alone is no proof that the two attentions agree (the candidate must also rotate the other
pairs): the comparison of the gradients and outputs is.

Example:
    >>> a = np.arange(8.0)  # one head of 8: halves (0 1 2 3 | 4 5 6 7)
    >>> reorder(a, 8, "interleaved")
    array([0., 4., 1., 5., 2., 6., 3., 7.])
    >>> reorder(reorder(a, 8, "interleaved"), 8, "half")
    array([0., 1., 2., 3., 4., 5., 6., 7.])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xgrad.identify import rel
from xgrad.pairing.params import TIED, Join, ParamPairing, Values, last
from xgrad.pairing.roles import role

__all__ = ["RopeOrder", "reorder", "rope_orders"]

ORDERS = ("interleaved", "half")
"""A head's order of RoPE's pairs: ``interleaved`` ``(2m, 2m+1)``, ``half`` ``(m, m + hd/2)``."""
_ROLES = {("q",): "q", ("k",): "k"}
_HELD = 1e-6  # the relative difference at which an array holds another's values (a copy)


def reorder(a, head_dim: int, to: str) -> np.ndarray:
    """``a`` with the entries of each head along its last axis (``heads * head_dim``, heads
    first) moved into the RoPE order ``to`` from the other one (:data:`ORDERS`)."""
    a = np.asarray(a)
    grid = (2, head_dim // 2) if to == "interleaved" else (head_dim // 2, 2)
    split = a.reshape(*a.shape[:-1], a.shape[-1] // head_dim, *grid)
    return np.ascontiguousarray(np.swapaxes(split, -1, -2)).reshape(a.shape)


@dataclass(frozen=True)
class RopeOrder(Join):
    """A reference parameter paired one to one with the candidate's ``parts[0]``, whose
    values are the reference's with the last axis (a kernel's ``(in, out)`` columns, a bias)
    permuted within each head of ``head_dim`` into the RoPE order ``to``:
    ``candidate = inner(reorder(reference, head_dim, to))``.

    Attributes:
        head_dim: the width of one head; ``heads``: how many the axis holds.
        to: the candidate's order (:data:`ORDERS`); the reference's is the other.
        inner: how the reordered array becomes the candidate's (another axis order or a
            reshape, as the pairing found it), or ``None``: as it stands.
    """

    head_dim: int = 2
    heads: int = 1
    to: str = "interleaved"
    inner: Join | None = None

    @property
    def frm(self) -> str:
        """The reference's order."""
        return ORDERS[1 - ORDERS.index(self.to)]

    def split(self, value) -> list:
        moved = reorder(value, self.head_dim, self.to)
        return [moved] if self.inner is None else self.inner.split(moved)

    def join(self, parts: Sequence):
        a = np.asarray(parts[0]) if self.inner is None else self.inner.join(parts)
        return reorder(a, self.head_dim, self.frm)


def _informative(a) -> bool:
    return a is not None and np.size(a) > 1 and bool(np.ptp(a) > 0)


def _held(a, b) -> bool:
    return np.shape(a) == np.shape(b) and rel(np.asarray(b, np.float64), a) <= _HELD


def _head_dims(n: int) -> list[int]:
    """The head widths a last axis of ``n`` can hold whose RoPE permutation is not the
    identity (even, at least 4)."""
    return [hd for hd in range(4, n + 1, 2) if n % hd == 0]


def _found(r: np.ndarray, c: np.ndarray, inner: Join | None) -> RopeOrder | None:
    """The one :class:`RopeOrder` under which the candidate's ``c`` holds the reference's
    ``r``, else ``None`` (none, or two that are not the same permutation)."""
    if r.ndim == 0:
        return None
    found: dict[bytes, RopeOrder] = {}
    index = np.arange(r.shape[-1])
    probe = r.reshape(-1, r.shape[-1])[:1]  # one row first: most heads and orders fail there
    for hd in _head_dims(r.shape[-1]):
        for to in ORDERS:
            n = r.shape[-1] // hd
            way = RopeOrder(("",), 0, (None,), head_dim=hd, heads=n, to=to, inner=inner)
            moved = reorder(probe, hd, to)
            if inner is None and not _held(moved, np.asarray(c).reshape(-1, r.shape[-1])[:1]):
                continue
            if _held(way.split(r)[0], c):  # a permutation of its own inverse counts once
                found.setdefault(reorder(index, hd, to).tobytes(), way)
    return next(iter(found.values())) if len(found) == 1 else None


def rope_orders(acc: ParamPairing, values: Values) -> dict[str, RopeOrder]:
    """The query and key parameters of ``acc`` paired one to one (as they stand, in another
    axis order, or through a reshape) that the candidate holds in the other RoPE order (see
    the module docstring), re-paired through it: moved from ``acc.names`` to ``acc.joins``.

    Returns:
        reference name -> its :class:`RopeOrder` (the ones re-paired).
    """
    out: dict[str, RopeOrder] = {}
    ones = [(rn, cn, acc.layouts.get(rn)) for rn, cn in acc.names.items()]
    ones += [(rn, j.parts[0], j) for rn, j in acc.joins.items() if type(j) is Join]
    for rn, cn, how in ones:
        if rn.startswith(TIED) or cn.startswith(TIED) or last(rn) not in ("kernel", "bias"):
            continue
        if (role(rn) or role(cn)) not in _ROLES or isinstance(how, Join) and len(how.parts) > 1:
            continue
        r, c = values.array("reference", rn), values.array("candidate", cn)
        if not _informative(r) or c is None:
            continue
        r = np.asarray(r, np.float64)
        if isinstance(how, Join):
            inner: Join | None = how
        else:
            inner = None if how is None else Join((cn,), 0, (how,))
        as_is = r if inner is None else inner.split(r)[0]
        if _held(as_is, c):
            continue
        found = _found(r, np.asarray(c, np.float64), inner)
        if found is None:
            continue
        out[rn] = dataclasses.replace(found, parts=(cn,))
        acc.names.pop(rn, None)
        acc.layouts.pop(rn, None)
        acc.joins[rn] = out[rn]
    return out


def rope_note(found: dict[str, RopeOrder], native: dict[str, str]) -> str | None:
    """What the report says of the parameters :func:`rope_orders` re-paired (``native``:
    the candidate's canonical -> native names)."""
    if not found:
        return None
    listed = ", ".join(
        f"{native.get(j.parts[0], j.parts[0])} ({_heads(rn, j)})" for rn, j in found.items()
    )
    orders = {j.to for j in found.values()}
    cand = "interleaved" if orders == {"interleaved"} else "halves" if orders == {"half"} else None
    if cand == "interleaved":
        who = (
            "the candidate stores its query/key projections in the interleaved RoPE order "
            "(pairs (2m, 2m+1) of each head: Meta's original LLaMA layout), the reference in "
            "the halves order (m, m + head_dim/2: Hugging Face's)"
        )
        rope = "the candidate rotates interleaved pairs and the reference halves"
    elif cand == "halves":
        who = (
            "the candidate stores its query/key projections in the halves RoPE order "
            "(m, m + head_dim/2: Hugging Face's layout), the reference in the interleaved "
            "order (pairs (2m, 2m+1): Meta's original LLaMA layout)"
        )
        rope = "the candidate rotates halves and the reference interleaved pairs"
    else:
        who = "the two sides store their query/key projections in different RoPE orders"
        rope = "each side rotates the pairs of its own order"
    return (
        f"{who}: {listed} hold the reference's values with their rows permuted within each "
        "head as Hugging Face's convert_llama_weights_to_hf.py (PermuteForRope) permutes "
        f"them, so they were paired, compared and copied through that permutation; this is "
        f"equivalent when {rope} (the comparison checks that it does)"
    )


def _heads(rn: str, j: RopeOrder) -> str:
    what = {"q": "query", "k": "key"}.get(_ROLES.get(role(rn) or (), ""), "projection")
    return f"{what}, {j.heads} heads of {j.head_dim}"
