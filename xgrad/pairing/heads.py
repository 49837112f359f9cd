"""Attention modules whose heads differ in width: paired, their weights left unpaired, named.

Keras' ``MultiHeadAttention(num_heads, key_dim)`` takes ``key_dim`` as the width of *each*
head (its query kernel is ``(d, num_heads, key_dim)``); PyTorch's
``nn.MultiheadAttention(embed_dim, num_heads)`` splits ``embed_dim`` into heads of
``embed_dim // num_heads`` (its ``kdim``/``vdim`` are the key and value *inputs'* widths, not
the heads'); Flax's ``qkv_features`` is the width of all heads together. A port that reads
``key_dim=embed_dim`` (the Keras text-classification example) as torch's ``embed_dim`` has
heads half or a quarter as wide: nothing of its attention's shapes pairs. Two such attention
modules, at the same place of two models whose other parameters agree in size, still pair
(so that the divergence is placed at the attention, its inputs agreeing), their weights are
listed unpaired with the reason, and a note names both widths and the fix.

An attention module is read from its parameters' names (:mod:`xgrad.pairing.roles`): the
innermost module holding a query (or fused q/k/v) projection and an output projection. Its
width is the query projection's size over the module's output width (self-attention).

Nodes are :mod:`xgrad.pairing`'s module-tree nodes (``info``, ``children``, ``subtree``,
``size``), read duck-typed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xgrad.pairing.roles import bias_like, role

__all__ = ["Heads", "attention_heads", "explain_widths", "widths_differ"]


@dataclass(frozen=True)
class Heads:
    """One attention module's heads as its weights show them.

    Attributes:
        node: the module-tree node.
        dim: the model width (the module's output width).
        width: the query projection's width (all heads together).
        heads: the number of heads, where a kernel ``(d, heads, head_dim)`` shows it.
        head_dim: the width of each head, likewise.
    """

    node: object
    dim: int
    width: int
    heads: int | None = None
    head_dim: int | None = None


def _roles(node) -> dict[str, tuple[int, ...]]:
    """Role -> the shape of the weight (not bias) holding it, names relative to ``node``."""
    prefix = f"{node.info.path}." if node.info.path else ""
    found: dict[str, tuple[int, ...]] = {}
    for name, shape in node.subtree.items():
        local = name[len(prefix) :] if name.startswith(prefix) else name
        r = role(local)
        if r is None or bias_like(local) or len(shape) < 2:
            continue
        found.setdefault("+".join(r), tuple(shape))
    return found


def _read(node) -> Heads | None:
    roles = _roles(node)
    shape = node.info.output_shape
    if not shape or "out" not in roles:
        return None
    dim = int(shape[-1])
    query, stacked = roles.get("q"), roles.get("q+k+v")
    if query is None and stacked is None:
        return None
    size = math.prod(query) if query is not None else math.prod(stacked) // 3
    if dim <= 0 or size % dim:
        return None
    heads = head_dim = None
    if query is not None and len(query) == 3 and query[0] == dim:  # Keras/Flax (d, h, hd)
        heads, head_dim = query[1], query[2]
    return Heads(node, dim, size // dim, heads, head_dim)


def attention_heads(node) -> list[Heads]:
    """The attention modules in ``node``'s subtree, innermost, in call order."""
    inner = [h for child in node.children for h in attention_heads(child)]
    if inner:
        return inner
    found = _read(node)
    return [found] if found is not None else []


def widths_differ(r, c) -> bool:
    """Whether two modules' parameters differ in size only by attention modules whose heads
    differ in width (one or more), the other parameters agreeing in size."""
    ra, ca = attention_heads(r), attention_heads(c)
    if not ra or len(ra) != len(ca):
        return False
    if any(a.dim != b.dim for a, b in zip(ra, ca, strict=True)):
        return False
    differ = [(a, b) for a, b in zip(ra, ca, strict=True) if a.width != b.width]
    same = all(
        a.node.size == b.node.size for a, b in zip(ra, ca, strict=True) if a.width == b.width
    )
    rest_r = r.size - sum(a.node.size for a in ra)
    rest_c = c.size - sum(b.node.size for b in ca)
    return bool(differ) and same and rest_r == rest_c


_TORCH = " (nn.MultiheadAttention's heads are embed_dim // num_heads wide)"


def _side(h: Heads, other: Heads | None = None) -> str:
    """One side's widths in words (``other``: the side whose head count it may share)."""
    if h.heads is not None:
        text = f"{h.width} wide, {h.heads} heads of {h.head_dim}"
        if h.node.info.type == "MultiHeadAttention":
            text += " (Keras' key_dim is the width of each head)"
        return text
    text = f"{h.width} wide"
    if other is not None and other.heads and h.width % other.heads == 0:
        text += f", heads of {h.width // other.heads} if it has {other.heads} too"
    return text + (_TORCH if h.node.info.type == "MultiheadAttention" else "")


def _fix(a: Heads, b: Heads) -> str:
    known = a if a.heads is not None else b if b.heads is not None else None
    if known is None:
        return "give both attentions heads of one width"
    return (
        f"give both heads of one width: key_dim=embed_dim // num_heads "
        f"({known.dim // known.heads}) on the Keras side, or on the other q/k/v projections "
        f"Linear({known.dim}, {known.width}) and an output Linear({known.width}, {known.dim}) "
        "written by hand (torch's nn.MultiheadAttention cannot: its kdim and vdim are the key "
        "and value inputs' widths, not the heads')"
    )


def _text(a: Heads, b: Heads) -> str:
    return (
        f"reference {a.node.info.path} ({a.node.info.type}) and candidate "
        f"{b.node.info.path} ({b.node.info.type}) attend with heads of different widths: "
        f"the reference's query/key/value projections are {_side(a, b)}, the candidate's "
        f"{_side(b, a)}; none of their weights pair, so the attention's output differs. "
        f"Fix: {_fix(a, b)}"
    )


def explain_widths(pairs, left: list[tuple[str, str, str]]) -> str | None:
    """A note for each paired attention whose heads differ in width (``None``: none), and
    the reason of its weights in ``left`` (``(side, name, reason)``, rewritten in place)."""
    notes = []
    for r, c in pairs:
        ra, ca = _read(r), _read(c)
        if ra is None or ca is None or ra.width == ca.width or ra.dim != ca.dim:
            continue
        if attention_heads(r) != [ra] or attention_heads(c) != [ca]:
            continue
        text = _text(ra, ca)
        notes.append(text)
        names = set(r.subtree) | set(c.subtree)
        short = f"its attention's heads differ in width ({ra.width} wide against {ca.width})"
        left[:] = [
            (side, name, f"in {name.rsplit('.', 2)[0]}, {short}" if name in names else why)
            for side, name, why in left
        ]
    return "; ".join(notes) or None
