"""Pairing two models read module by module (tier (a)): which module of the candidate is which
of the reference's, and which parameter is which.

Modules are paired top down, scope by scope: the two models' own calls pair, then the
modules called directly from two paired modules are lined up in call order by a sequence
alignment (:func:`_line_up`) whose score prefers the same parameter count, the same parameter
shapes (up to the order of their axes), the same output shape, the same layer kind and the
same attribute name; a module with parameters never pairs with one without. A module that
calls others may pair with one that does not (PyTorch's ``nn.MultiheadAttention`` computes
with its own weights what Flax's ``MultiHeadAttention`` computes with four submodules): its
parameters are then paired with the whole subtree's.

Parameters are paired within each pair of modules (:mod:`xgrad.pairing.options`, the ways
in :mod:`xgrad.pairing.params`): one to one where the shapes are equal or one permutation of
the axes makes them so; one to several where one side's array is the others' stacked along
an axis (a fused ``in_proj_weight (3E, E)`` against separate q/k/v projections, or separate
ones against a port's fused one); and these through a reshape (a torch ``(d, d)`` projection
against a ``(d, heads, head_dim)`` DenseGeneral kernel, GPT-2's ``c_attn (d, 3d)`` against
three of them). Which way, which axis order and which stacking order are decided by the
names (their roles: ``q_proj``, ``_query_dense``, ``query_kernel``, :mod:`xgrad.pairing.roles`)
or the values, never guessed: where two ways remain, the parameters stay unpaired with a
note naming both. A square parameter of a module of no known kind is paired as it stands
(its layout cannot be told from its shape), and a note says so; a tied weight against a
separate square one is not (a tied LM head's ``(vocab, d)`` table against a ``(d, vocab)``
kernel): the values decide its axis order, or it stays unpaired. A query or key projection
whose candidate values are the reference's with its rows permuted within each head into the
other RoPE order (Meta's LLaMA against Hugging Face's, :mod:`xgrad.pairing.rope`) pairs
through that permutation, with a note; the projection's output is then not compared as it
stands (its attention module's is). A recurrent weight whose candidate values are the
reference's with its gate blocks in another order (PyTorch's GRU ``r, z, n`` against Keras'
``z, r, h``, :mod:`xgrad.pairing.blocks`) pairs through that permutation of the blocks, with a
note. What pairs with nothing is listed
(:attr:`ModulePairing.unpaired`), with the reason.

``mapping=`` overrides: ``{reference module path: candidate module path}`` pairs modules by
name, ``{reference parameter: candidate parameter}`` (canonical or native names) pairs
parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from xgrad.align import Alignment, Unit
from xgrad.errors import AlignmentError
from xgrad.frameworks.capture import CapturedModel, ModuleInfo
from xgrad.frameworks.kinds import Layout
from xgrad.pairing.blocks import blocks_note, found_blocks, pair_blocks
from xgrad.pairing.heads import explain_widths, widths_differ
from xgrad.pairing.known import known_note, pair_known
from xgrad.pairing.options import pair_params
from xgrad.pairing.params import (
    TIED,
    Join,
    ParamPairing,
    Split,
    Values,
    fit,
    last,
    one_join,
    permutation,
)
from xgrad.pairing.rope import rope_note, rope_orders
from xgrad.pairing.sums import Sum, pair_sums, sums_note

__all__ = ["Join", "ModulePairing", "pair_modules"]


@dataclass(frozen=True)
class ModulePairing(Alignment):
    """How a captured candidate corresponds to a captured reference (an
    :class:`~xgrad.align.Alignment` whose units are modules).

    Attributes:
        joins: reference name -> :class:`Join`, for parameters paired one to several.
        unpaired_modules: ``(side, path, what)`` of the modules paired with none of the
            other side's (a module on one side only, or one the other side computes as code).
        assumed: reference names of square parameters of opaque modules paired as they stand.
        how: reference module path -> why it was paired (``name``, ``shapes``, ``order``,
            ``mapping``).
        tied: weights tied on one side only (:class:`Tied`).
        splits: reference name -> :class:`~xgrad.pairing.params.Split`, for parameters
            that are part of one candidate parameter (a port's fused q/k/v kernel).
        notes: what the report should say of how parameters were paired (query/key
            projections stored in the other RoPE order, :mod:`xgrad.pairing.rope`).
        sums: arrays paired as a sum with one array of the other side (PyTorch's LSTM
            ``bias_ih + bias_hh`` against one bias, :mod:`xgrad.pairing.sums`).
    """

    joins: dict[str, Join] = field(default_factory=dict)
    splits: dict[str, Split] = field(default_factory=dict)
    unpaired_modules: tuple[tuple[str, str, str], ...] = ()
    tied: tuple[Tied, ...] = ()
    assumed: tuple[str, ...] = ()
    how: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    sums: tuple[Sum, ...] = ()

    def _sum(self, name: str) -> Sum | None:
        return next((s for s in self.sums if name in s.refs), None)

    def paired(self, name: str) -> bool:
        return (
            name in self.names
            or name in self.joins
            or name in self.splits
            or self._sum(name) is not None
        )

    def candidate_value(self, name: str, arrays: Mapping):
        summed = self._sum(name)
        if summed is not None:  # a gradient: each part's is the sum's
            return summed.gradient(arrays)
        split = self.splits.get(name)
        if split is not None:
            return split.part(name, arrays[split.whole]) if split.whole in arrays else None
        join = self.joins.get(name)
        if join is None:
            return super().candidate_value(name, arrays)
        if not all(p in arrays for p in join.parts):
            return None
        return join.join([arrays[p] for p in join.parts])

    def candidate_label(self, name: str, native: Mapping[str, str]) -> str:
        summed = self._sum(name)
        if summed is not None:
            return summed.label(native)
        split = self.splits.get(name)
        if split is not None:
            i = split.parts.index(name)
            return f"{native.get(split.whole, split.whole)} (part {i + 1} of {len(split.parts)})"
        join = self.joins.get(name)
        if join is None:
            return super().candidate_label(name, native)
        return " + ".join(native.get(p, p) for p in join.parts)

    def to_candidate(self, weights: Mapping) -> dict:
        out = super().to_candidate(weights)
        for t in self.tied:  # the candidate's separate copy takes the tied array's value
            if t.side == "reference" and t.owner in weights:
                value = np.asarray(weights[t.owner])
                out[t.other] = value if t.layout is None else np.transpose(value, t.layout)
        for ref_name, join in self.joins.items():
            if ref_name in weights:
                out.update(zip(join.parts, join.split(weights[ref_name]), strict=True))
        for split in {id(t): t for t in self.splits.values()}.values():
            if all(p in weights for p in split.parts):
                out[split.whole] = split.join([weights[p] for p in split.parts])
        for summed in self.sums:
            out.update(summed.to_candidate(weights))
        return out

    def to_reference(self, arrays: Mapping) -> dict:
        out = super().to_reference(arrays)
        for ref_name in (*self.joins, *self.splits):
            value = self.candidate_value(ref_name, arrays)
            if value is not None:
                out[ref_name] = value
        for summed in self.sums:
            out.update(summed.to_reference(arrays))
        return out


# -- the module trees -----------------------------------------------------------------------------


@dataclass(eq=False)  # nodes are told apart by identity (list.index, list comparisons)
class _Node:
    """One module with its subtree's parameters (canonical name -> shape), in call order."""

    info: ModuleInfo
    children: list[_Node]
    own: dict[str, tuple[int, ...]]
    subtree: dict[str, tuple[int, ...]] = field(default_factory=dict)
    group: bool = False  # several sibling modules taken as one (:func:`_groups`)

    @functools.cached_property
    def size(self) -> int:  # read once the subtree is filled (:func:`_tree`)
        return sum(math.prod(s) for s in self.subtree.values())

    def shapes(self) -> list[tuple[int, ...]]:
        return sorted(tuple(sorted(s)) for s in self.subtree.values())


def _tree(model: CapturedModel, shapes: Mapping[str, tuple[int, ...]]) -> _Node:
    """The module tree of a captured model (children in call order, the order their calls
    finish within their scope)."""
    nodes: dict[str, _Node] = {}
    for info in model.modules:
        own = {
            (f"{info.path}.{local}" if info.path else local): shapes[
                f"{info.path}.{local}" if info.path else local
            ]
            # a known kind's state (a BatchNorm's mean and var) pairs like its parameters, so
            # that a transfer copies it; an opaque module's state is left as it is
            for local in (*info.params, *(info.state if info.layer is not None else ()))
        }
        for local, owner in info.shared.items():  # a tied weight: paired like one of its own
            if owner in shapes:
                own[f"{TIED}{info.path}.{local}" if info.path else f"{TIED}{local}"] = shapes[owner]
        nodes[info.path] = _Node(info, [], own)
    root = nodes.get("")
    if root is None:  # pragma: no cover - every capture records the model's own call
        raise AlignmentError(f"{model.description}: the model's own call was not captured")
    for info in model.modules:
        if info.scope is not None and info.scope in nodes:
            nodes[info.scope].children.append(nodes[info.path])

    def fill(node: _Node) -> dict:
        node.subtree = dict(node.own)
        for child in node.children:
            node.subtree.update(fill(child))
        return node.subtree

    fill(root)
    return root


@dataclass(frozen=True)
class Tied:
    """A weight tied on one side and not on the other (``tied-weights``).

    Attributes:
        side: the side that ties (``reference`` or ``candidate``).
        alias: the tying side's name of the use (``head.weight``).
        owner: the tying side's canonical name of the one array (``emb.weight``).
        other: the other side's separate parameter at that use (``head.kernel``).
        layout: the other's layout relative to the owner's array (``None``: as it is).
    """

    side: str
    alias: str
    owner: str
    other: str
    layout: Layout | None


def _untie(acc: ParamPairing, left: list, owners: dict[str, dict[str, str]]) -> list[Tied]:
    """Tied weights out of the pairing: tied on both sides, nothing to compare; on one side
    only, a :class:`Tied` (the other side's parameter neither paired nor listed unpaired)."""
    found = []
    for rn, cn in list(acc.names.items()):
        if not (rn.startswith(TIED) or cn.startswith(TIED)):
            continue
        layout = acc.layouts.pop(rn, None)
        del acc.names[rn]
        if rn.startswith(TIED) and not cn.startswith(TIED):
            alias = rn[len(TIED) :]
            found.append(Tied("reference", alias, owners["reference"][alias], cn, layout))
        elif cn.startswith(TIED) and not rn.startswith(TIED):
            alias = cn[len(TIED) :]
            inverse = None if layout is None else tuple(int(i) for i in np.argsort(layout))
            found.append(Tied("candidate", alias, owners["candidate"][alias], rn, inverse))
    left[:] = [u for u in left if not u[1].startswith(TIED)]
    return found


# -- scoring --------------------------------------------------------------------------------------


def _compatible(r: _Node, c: _Node) -> bool:
    if bool(r.subtree) != bool(c.subtree):
        return False
    if r.subtree:
        return r.size == c.size or _summed(r, c) or widths_differ(r, c)
    return r.info.output_shape == c.info.output_shape


def _summed(r: _Node, c: _Node) -> bool:
    """Whether two modules' parameters differ only in how many vectors of a shape each holds,
    both holding one at least (PyTorch's LSTM's two biases against a port's one: they may pair
    as a sum, :mod:`xgrad.pairing.sums`)."""
    count_r, count_c = Counter(r.shapes()), Counter(c.shapes())
    differ = [s for s in count_r.keys() | count_c.keys() if count_r[s] != count_c[s]]
    return bool(differ) and all(len(s) == 1 and count_r[s] and count_c[s] for s in differ)


def _score(r: _Node, c: _Node) -> float:
    """How well two modules pair (higher is better; only for compatible ones)."""
    score = 4.0 if r.subtree else 1.0
    if r.shapes() == c.shapes():
        score += 2.0
    if r.info.output_shape == c.info.output_shape:
        score += 1.0
    if r.info.kind == c.info.kind and r.info.kind != "module":
        score += 1.0
    if last(r.info.path) == last(c.info.path):
        score += 0.5
    return score


def _line_up_deep(ref: Sequence[_Node], cand: Sequence[_Node]) -> list[tuple[_Node, _Node]]:
    """:func:`_line_up`, then, between the pairs found, the modules left unpaired opened up
    one level (a container's children in its place: a ``nn.Sequential`` of layers against
    the same layers called one by one) and lined up again: the reference's side opened, the
    candidate's, or both, whichever pairs the most parameters (the first of equals). When
    weighted modules are left unpaired, the whole sequence is also tried with its containers
    opened the same ways, and kept if it pairs more: a port that calls its embedding, blocks
    and norm from the model itself, its LM head tied to the embedding, against Hugging Face's
    ``LlamaModel`` wrapping them beside a separate ``lm_head``."""
    out = _segments(ref, cand, _line_up(ref, cand))
    if _covered(out) < _size(ref) + _size(cand):
        opened = [t for t in _openings(ref, cand) if _has_containers(t, ref, cand)]
        for t in opened:
            found = _segments(*t, _line_up(*t))
            if _covered(found) > _covered(out):
                out = found
    return out


def _segments(ref, cand, pairs) -> list[tuple[_Node, _Node]]:
    """``pairs``, and between them the unpaired modules opened up (:func:`_line_up_deep`)."""
    out: list[tuple[_Node, _Node]] = []
    i = j = 0
    for a, b in [*pairs, (None, None)]:
        ri = ref.index(a) if a is not None else len(ref)
        cj = cand.index(b) if b is not None else len(cand)
        seg_r, seg_c = list(ref[i:ri]), list(cand[j:cj])
        if seg_r and seg_c:
            tries = [t for t in _openings(seg_r, seg_c) if t != (seg_r, seg_c)]
            if tries:
                out += max((_line_up_deep(*t) for t in tries), key=_covered)
            else:
                out += _groups(seg_r, seg_c)
        if a is not None:
            out.append((a, b))
        i, j = ri + 1, cj + 1
    return out


def _openings(ref: Sequence[_Node], cand: Sequence[_Node]) -> list[tuple[list, list]]:
    """The reference's containers opened one level, the candidate's, and both's."""
    open_r = [g for n in ref for g in (n.children or [n])]
    open_c = [g for n in cand for g in (n.children or [n])]
    return [(open_r, list(cand)), (list(ref), open_c), (open_r, open_c)]


def _has_containers(t, ref, cand) -> bool:
    return (list(t[0]), list(t[1])) != (list(ref), list(cand))


def _size(nodes: Sequence[_Node]) -> int:
    return sum(n.size for n in nodes)


def _covered(pairs: Sequence[tuple[_Node, _Node]]) -> int:
    """How many parameters the pairs pair, on both sides."""
    return sum(a.size + b.size for a, b in pairs)


def _group(run: Sequence[_Node]) -> _Node:
    """Several sibling modules as one (their parameters pooled; the last one's output)."""
    subtree: dict = {}
    for node in run:
        subtree.update(node.subtree)
    return _Node(run[-1].info, list(run), {}, subtree, group=True)


def _groups(seg_r: list[_Node], seg_c: list[_Node]) -> list[tuple[_Node, _Node]]:
    """One module with parameters against a run of sibling modules with as many parameters
    in all (``nn.MultiheadAttention`` against hand-written q/k/v/o projections): paired as
    a group, whose output is the run's last."""
    weighted_r = [n for n in seg_r if n.subtree]
    weighted_c = [n for n in seg_c if n.subtree]
    if len(weighted_r) == 1 and len(weighted_c) > 1:
        group = _group(weighted_c)
        if group.size == weighted_r[0].size:
            return [(weighted_r[0], group)]
    if len(weighted_c) == 1 and len(weighted_r) > 1:
        group = _group(weighted_r)
        if group.size == weighted_c[0].size:
            return [(group, weighted_c[0])]
    return []


def _line_up(ref: Sequence[_Node], cand: Sequence[_Node]) -> list[tuple[_Node, _Node]]:
    """The best order-preserving pairing of two sequences of sibling modules (a sequence
    alignment: gaps cost nothing, a pair scores :func:`_score`)."""
    n, m = len(ref), len(cand)
    best = np.zeros((n + 1, m + 1))
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            take = -np.inf
            if _compatible(ref[i], cand[j]):
                take = _score(ref[i], cand[j]) + best[i + 1, j + 1]
            best[i, j] = max(take, best[i + 1, j], best[i, j + 1])
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if _compatible(ref[i], cand[j]) and best[i, j] == (
            _score(ref[i], cand[j]) + best[i + 1, j + 1]
        ):
            pairs.append((ref[i], cand[j]))
            i, j = i + 1, j + 1
        elif best[i, j] == best[i + 1, j]:
            i += 1
        else:
            j += 1
    return pairs


# -- pairing --------------------------------------------------------------------------------------


def _module_mapping(mapping: Mapping[str, str], ref: _Node, cand: _Node) -> dict[str, str] | None:
    """``mapping`` as module paths, when every key and value names a module; else ``None``."""

    def paths(node: _Node) -> dict[str, _Node]:
        out = {node.info.path: node}
        for child in node.children:
            out.update(paths(child))
        return out

    rp, cp = paths(ref), paths(cand)
    if all(k in rp for k in mapping) and all(v in cp for v in mapping.values()):
        return dict(mapping)
    return None


def pair_modules(
    reference: CapturedModel,
    candidate: CapturedModel,
    mapping: str | Mapping[str, str] = "auto",
) -> ModulePairing:
    """Pair two models read module by module (see the module docstring).

    Raises:
        AlignmentError: a ``mapping`` naming modules or parameters that do not exist.
    """
    owners = {
        side: {
            (f"{i.path}.{local}" if i.path else local): owner
            for i in model.modules
            for local, owner in i.shared.items()
        }
        for side, model in (("reference", reference), ("candidate", candidate))
    }
    values = Values(reference.weights(), candidate.weights(), owners)
    ref_w = {k: tuple(np.shape(v)) for k, v in values.reference.items()}
    cand_w = {k: tuple(np.shape(v)) for k, v in values.candidate.items()}
    rt, ct = _tree(reference, ref_w), _tree(candidate, cand_w)
    forced = _module_mapping(mapping, rt, ct) if isinstance(mapping, Mapping) else None
    pairs: list[tuple[_Node, _Node]] = []
    how: dict[str, str] = {}
    acc = ParamPairing()
    left: list[tuple[str, str, str]] = []
    left_modules: list[tuple[str, str, str]] = []
    known: list[str] = []  # reference names paired by the documented layouts

    def visit(r: _Node, c: _Node, why: str) -> None:
        pairs.append((r, c))
        how[r.info.path] = why
        if r.children and c.children and not (r.group or c.group):
            lined = (
                _forced_children(r, c, forced) if forced else _line_up_deep(r.children, c.children)
            )
            for a, b in lined:
                visit(a, b, "mapping" if forced else _why(a, b))
            # the pair's own parameters, and those of descendants left unpaired
            taken_r = {n for a, _ in lined for n in a.subtree}
            taken_c = {n for _, b in lined for n in b.subtree}
            rest_r = _Node(r.info, [], {}, {k: v for k, v in r.subtree.items() if k not in taken_r})
            rest_c = _Node(c.info, [], {}, {k: v for k, v in c.subtree.items() if k not in taken_c})
        else:
            rest_r, rest_c = r, c
        lr, lc = list(rest_r.subtree.items()), list(rest_c.subtree.items())
        all_r, all_c = list(lr), list(lc)
        pair_params(lr, lc, acc, values, where=(_where(r), _where(c)))
        pair_sums(all_r, all_c, lr, lc, acc, values)
        pair_blocks(all_r, all_c, lr, lc, acc, values)
        known.extend(pair_known(_types(r), _types(c), all_r, all_c, lr, lc, acc, values))
        for side, names, (a, b) in (("reference", lr, (r, c)), ("candidate", lc, (c, r))):
            left.extend(
                (
                    side,
                    n,
                    f"in {_label(a)}, " + acc.why.get(n, f"nothing of its shape in {_label(b)}"),
                )
                for n, _ in names
            )

    visit(rt, ct, "the models")
    tied = _untie(acc, left, owners)
    widths = explain_widths(pairs, left)  # attention heads of another width
    reordered = rope_orders(acc, values)
    _apply_param_mapping(mapping, reference, candidate, acc, left, forced is not None)
    reordered = {n: j for n, j in reordered.items() if acc.joins.get(n) is j}
    # a projection whose output is the other's permuted is paired by its weights only: its
    # output (heads in the other RoPE order) is not compared as it stands
    permuted = {n.rsplit(".", 1)[0] for n in reordered}
    paired = {id(n) for pair in pairs for n in pair}
    paired |= {id(g) for pair in pairs for n in pair if n.group for g in n.children}
    for side, root in (("reference", rt), ("candidate", ct)):
        left_modules += [
            (
                side,
                n.info.path,
                f"{n.info.type or n.info.kind}, called from {n.info.scope or '(the model)'}",
            )
            for n in _walk(root)
            if id(n) not in paired
        ]
    units = [
        (_unit(r), _unit(c))
        for r, c in sorted(pairs, key=lambda rc: _order(reference, rc[0].info.path))
        if not (r.info.path in permuted and not r.children and not r.group)
    ]
    note = rope_note(reordered, candidate.native_names())
    by_values = [s for s in acc.sums if not set(s.refs) & set(known)]
    summed = sums_note(by_values, reference.native_names(), candidate.native_names())
    found = [f for f in found_blocks(acc.joins, acc.splits) if f[0] not in known]
    blocks = blocks_note(found, reference.native_names())
    documented = known_note(known, reference.native_names())
    return ModulePairing(
        pairs=tuple(units),
        names=acc.names,
        layouts=acc.layouts,
        joins=acc.joins,
        splits=acc.splits,
        unpaired=tuple(left),
        unpaired_modules=tuple(left_modules),
        assumed=tuple(acc.assumed),
        how=how,
        tied=tuple(tied),
        notes=tuple(n for n in (note, summed, blocks, documented, widths) if n),
        sums=tuple(acc.sums),
    )


def _where(node: _Node) -> str:
    """The path a module's parameter names are read relative to: its caller's, so that the
    module's own name counts (``q_proj.weight``, ``qkv_proj.kernel``)."""
    return node.info.scope or ""


def _types(node: _Node) -> set[str]:
    """The class names of a module and its descendants (a Keras ``GRU`` and its ``GRUCell``)."""
    return {n.info.type for n in _walk(node)}


def _walk(node: _Node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _unit(node: _Node) -> Unit:
    """A module as a unit of the comparison: its output compared at ``end``; a group of
    sibling modules named by all of them, its output the last one's, its input the first
    one's (``start``)."""
    if not node.group:
        return Unit(node.info, node.info.path, None)
    name = " + ".join(n.info.name or n.info.path for n in node.children)
    info = dataclasses.replace(node.info, name=name)
    return Unit(info, node.info.path, node.children[0].info.path)


def _order(model: CapturedModel, path: str) -> int:
    for i, info in enumerate(model.modules):
        if info.path == path:
            return i
    return len(model.modules)


def _label(node: _Node) -> str:
    return f"{node.info.path or '(the model)'} ({node.info.type or node.info.kind})"


def _why(r: _Node, c: _Node) -> str:
    if last(r.info.path) == last(c.info.path):
        return "name and shapes"
    return "shapes and call order" if r.subtree else "output shape and call order"


def _forced_children(r: _Node, c: _Node, forced: Mapping[str, str]) -> list[tuple[_Node, _Node]]:
    cand = {child.info.path: child for child in c.children}
    return [
        (child, cand[forced[child.info.path]])
        for child in r.children
        if forced.get(child.info.path) in cand
    ]


def _unknown_name(side: str, name: str, model: CapturedModel) -> str:
    """The message for a mapping name that is neither a module nor a parameter of ``side``:
    the nearest names first, then every module path and parameter (native names)."""
    import difflib

    modules = [i.path for i in model.modules if i.path]
    params = list(model.native_names().values())
    near = difflib.get_close_matches(name, [*modules, *params], n=3)
    return (
        f"mapping names {side} {name!r}, which is neither a module nor a parameter of the "
        f"{side}"
        + (f" (nearest: {', '.join(map(repr, near))})" if near else "")
        + f"; its modules are: {', '.join(map(repr, modules)) or 'none'}; its parameters: "
        f"{', '.join(map(repr, params)) or 'none'}"
    )


def _apply_param_mapping(
    mapping, reference, candidate, acc: ParamPairing, left: list, modules: bool
):
    """A ``{reference parameter: candidate parameter}`` mapping (canonical or native names)
    pairs those parameters, replacing what was paired for them automatically."""
    if not isinstance(mapping, Mapping) or modules:
        return
    ref_native = {v: k for k, v in reference.native_names().items()}
    cand_native = {v: k for k, v in candidate.native_names().items()}
    ref_w, cand_w = reference.weights(), candidate.weights()
    for r, c in mapping.items():
        rn = r if r in ref_w else ref_native.get(r)
        cn = c if c in cand_w else cand_native.get(c)
        for side, name, found, model in (
            ("reference", r, rn, reference),
            ("candidate", c, cn, candidate),
        ):
            if found is None and name not in {i.path for i in model.modules if i.path}:
                raise AlignmentError(_unknown_name(side, name, model))
        if rn is None or cn is None:
            raise AlignmentError(
                f"mapping pairs {r!r} with {c!r}: give module paths on both sides, or "
                "parameters on both sides, for every pair (a module pair is used only when "
                "every pair names modules)"
            )
        rs, cs = np.shape(ref_w[rn]), np.shape(cand_w[cn])
        layout = permutation(rs, cs)
        # named by the user: a reshape as it stands unless only another axis order fits
        reshaped = None if layout is not False else fit(rs, cs, known=True)
        if layout is False and (reshaped is None or isinstance(reshaped, str)):
            raise AlignmentError(
                f"mapping pairs reference {r!r} of shape {rs} with candidate {c!r} of shape "
                f"{cs}; no axis order of the one, reshaped or not, gives the other"
            )
        for name, taken in list(acc.names.items()):
            if taken == cn:
                del acc.names[name]
        for name, join in list(acc.joins.items()):
            if cn in join.parts:
                del acc.joins[name]
        for name, split in list(acc.splits.items()):
            if cn == split.whole or rn in split.parts:
                del acc.splits[name]
        acc.joins.pop(rn, None)
        acc.names.pop(rn, None)
        acc.layouts.pop(rn, None)
        if reshaped is not None:
            acc.joins[rn] = one_join(cn, reshaped, rs)
        else:
            acc.names[rn] = cn
            if layout is not None:
                acc.layouts[rn] = layout
        left[:] = [u for u in left if u[1] not in (rn, cn)]
