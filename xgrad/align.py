"""Alignment: which parts of two models correspond, for weights and for per-layer values.

A model is compared at its **units**: a layer with weights (Dense, a norm) together with the
weight-free layers that follow it (activation, dropout, flatten), or a residual block. Units
make models written differently comparable: ``Dense(8, "relu")`` in Keras and
``nn.Linear`` then ``nn.ReLU`` in PyTorch are one unit each, with the same output.

:func:`align` pairs the units of two models (in call order, or by an explicit mapping) and
gives the renaming of weights from one model's canonical names to the other's. Both
models' weights are in canonical layout already (each reader permutes them), so pairing
needs no permutation; a parameter mapping between models whose layers cannot be read says
which arrays are stored in another axis order (:data:`~xgrad.frameworks.kinds.Layout`) by
their shapes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from xgrad.errors import AlignmentError, InputError
from xgrad.frameworks.base import AbstractModel, LayerInfo
from xgrad.frameworks.kinds import TRANSPOSED, Layout, to_canonical, to_native

__all__ = ["Alignment", "Unit", "align", "identity_alignment", "units"]

NORMS = ("layernorm", "rmsnorm", "batchnorm")


@dataclass(frozen=True)
class Unit:
    """One comparable part of a model.

    Attributes:
        info: the layer with weights, or the residual block.
        end: the path of the layer whose output is the unit's output.
        start: the path of the layer whose output enters the unit (``None``: the model input).
        members: weight-free layers folded in after ``info`` (activation, dropout, ...).
        children: a residual block's own units.
    """

    info: LayerInfo
    end: str
    start: str | None
    members: tuple[LayerInfo, ...] = ()
    children: tuple[Unit, ...] = ()

    @property
    def path(self) -> str:
        return self.info.path

    def walk(self) -> Iterator[Unit]:
        """A block's units, then the block itself: the order in which outputs are computed."""
        for child in self.children:
            yield from child.walk()
        yield self

    def describe(self) -> str:
        text = self.info.describe()
        if self.members:
            text += " + " + " + ".join(m.describe() for m in self.members)
        return text


def units(layers: Sequence[LayerInfo], start: str | None = None) -> tuple[Unit, ...]:
    """The units of a layer sequence: each layer with weights, and each norm (with or without
    affine terms), with the weight-free layers after it. Weight-free layers before the first
    unit, such as a ``Flatten`` of the input, belong to none."""
    out: list[Unit] = []
    previous = start
    for info in layers:
        if info.children:
            out.append(Unit(info, info.path, previous, children=units(info.children, previous)))
        elif info.params or info.state or info.kind in NORMS:  # a norm, even without weights
            out.append(Unit(info, info.path, previous))
        elif out:
            last = out[-1]
            out[-1] = replace(last, end=info.path, members=(*last.members, info))
        previous = info.path
    return tuple(out)


def _flat(tree: Sequence[Unit]) -> list[Unit]:
    return [u for unit in tree for u in unit.walk()]


@dataclass(frozen=True)
class Alignment:
    """How a candidate corresponds to the reference.

    Attributes:
        pairs: ``(reference unit, candidate unit)`` in the order outputs are computed (a
            block's layers before the block); empty when per-layer localisation is
            unavailable.
        names: reference canonical weight name -> candidate canonical weight name.
        layouts: reference name -> the layout of the candidate's array relative to the
            reference's (``cand = np.transpose(ref, layout)``), for the arrays paired in
            another axis order (parameter mappings between models whose layers cannot be
            read); the others pair as they are.
        note: why per-layer localisation is unavailable, or ``None``.
        unpaired: ``(side, canonical name, reason)`` of every weight of a paired layer that
            the other side's layer lacks (a LayerNorm's scale and bias on one side only).
    """

    pairs: tuple[tuple[Unit, Unit], ...]
    names: dict[str, str]
    layouts: dict[str, Layout] = field(default_factory=dict)
    note: str | None = None
    unpaired: tuple[tuple[str, str, str], ...] = ()

    @property
    def transposed(self) -> frozenset[str]:
        """Reference names whose candidate array is the 2-D transpose."""
        return frozenset(k for k, layout in self.layouts.items() if tuple(layout) == TRANSPOSED)

    def paired(self, name: str) -> bool:
        """Whether the reference's parameter ``name`` has a counterpart in the candidate."""
        return name in self.names

    def candidate_value(self, name: str, arrays: Mapping):
        """The candidate's counterpart of the reference's ``name`` among ``arrays`` (the
        candidate's canonical names), in the reference's layout; ``None`` if absent."""
        cand = self.names.get(name)
        if cand not in arrays:
            return None
        return to_canonical(arrays[cand], self.layouts.get(name))

    def candidate_label(self, name: str, native: Mapping[str, str]) -> str:
        """How a report names the counterpart of ``name`` (``native``: the candidate's
        canonical -> native names)."""
        cand = self.names.get(name, "")
        return native.get(cand, cand)

    def to_candidate(self, weights: Mapping) -> dict:
        """Reference-named arrays renamed (and permuted) for the candidate."""
        out = {}
        for ref_name, cand_name in self.names.items():
            if ref_name in weights:
                out[cand_name] = to_native(weights[ref_name], self.layouts.get(ref_name))
        return out

    def to_reference(self, arrays: Mapping) -> dict:
        """Candidate-named arrays renamed (and permuted) to the reference's names."""
        out = {}
        for ref_name, cand_name in self.names.items():
            if cand_name in arrays:
                out[ref_name] = to_canonical(arrays[cand_name], self.layouts.get(ref_name))
        return out


def identity_alignment(reference: AbstractModel, built: AbstractModel | None = None) -> Alignment:
    """Models built from one spec: every name and unit pairs with the one at the same path
    (``built``'s units carry its framework's own layer names)."""
    ref_units = _flat(units(reference.layers))
    own = {u.path: u for u in _flat(units((built or reference).layers))}
    return Alignment(
        pairs=tuple((u, own.get(u.path, u)) for u in ref_units),
        names={name: name for name in reference.native_names()},
    )


def _unit_list(tree: Sequence[Unit]) -> str:
    return (
        ", ".join(f"{u.info.name or u.path} ({u.describe()})" for u in tree)
        or "no layer with weights"
    )


def _shapes(info: LayerInfo) -> str:
    return f"{info.input_shape} -> {info.output_shape}"


def _check_pair(r: Unit, c: Unit) -> None:
    ri, ci = r.info, c.info
    where = (
        f"layer {r.path}: reference {ri.name!r} ({ri.describe()}) <-> candidate "
        f"{ci.name!r} ({ci.describe()})"
    )
    rk, ck = ri.kind, ci.kind
    if (rk in NORMS) != (ck in NORMS) or (rk not in NORMS and rk != ck):
        raise AlignmentError(
            f"{where}: a {rk} layer is paired with a {ck} layer; the models differ in "
            "structure here (pass mapping={reference layer: candidate layer} to pair by name)"
        )
    if rk == "residual":
        if len(r.children) != len(c.children):  # (pairs of residual blocks only)
            raise AlignmentError(
                f"{where}: the reference block has {len(r.children)} layers with weights "
                f"({_unit_list(r.children)}), the candidate's {len(c.children)} "
                f"({_unit_list(c.children)})"
            )
        return
    if ri.input_shape != ci.input_shape or ri.output_shape != ci.output_shape:
        hint = ""
        if rk == "dense" and (ri.input_shape, ri.output_shape) == (ci.output_shape, ci.input_shape):
            hint = (
                "; the widths are swapped: is the candidate's kernel transposed, or its "
                "layer declared with (out, in)?"
            )
        raise AlignmentError(
            f"{where}: the reference maps {_shapes(ri)} features but the candidate maps "
            f"{_shapes(ci)}{hint}"
        )
    if rk == "dense" and ("bias" in ri.params) != ("bias" in ci.params):
        has, lacks = (
            ("reference", "candidate") if "bias" in ri.params else ("candidate", "reference")
        )
        raise AlignmentError(
            f"{where}: the {has} layer has a bias of shape {ri.output_shape} but the {lacks} "
            f"layer has none; give the {lacks} layer a bias (e.g. use_bias=True) or remove "
            f"it from the {has}"
        )


def _compatible(r: Unit, c: Unit) -> bool:
    rk, ck = r.info.kind, c.info.kind
    return (rk in NORMS and ck in NORMS) or rk == ck


def _no_skip(block: Unit, inline: Sequence[Unit]) -> Unit:
    """The candidate's side of a residual block it computes without the skip connection."""
    info = LayerInfo(
        path=inline[0].path,
        kind="residual",
        name="(no skip connection)",
        layer=None,
        input_shape=block.info.input_shape,
        output_shape=block.info.output_shape,
    )
    return Unit(info, inline[-1].end, inline[0].start)


def _layers_with_weights(tree: Sequence[Unit]) -> int:
    return sum(_layers_with_weights(u.children) if u.children else 1 for u in tree)


def _pair(ref: Sequence[Unit], cand: Sequence[Unit], where: str) -> list[tuple[Unit, Unit]]:
    if _layers_with_weights(ref) != _layers_with_weights(cand):
        raise AlignmentError(
            f"{where}the reference has {_layers_with_weights(ref)} layers with weights "
            f"({_unit_list(ref)}) but the candidate has {_layers_with_weights(cand)} "
            f"({_unit_list(cand)}); make the depths equal, or pass "
            "mapping={reference layer: candidate layer}"
        )
    out: list[tuple[Unit, Unit]] = []
    i = j = 0
    while i < len(ref) and j < len(cand):
        r, c = ref[i], cand[j]
        if r.children and not c.children:
            k = len(r.children)
            inline = cand[j : j + k]
            if len(inline) == k and all(
                not u.children and _compatible(rc, u)
                for rc, u in zip(r.children, inline, strict=True)
            ):
                out += _pair(r.children, inline, f"in block {r.path}: ")
                out.append((r, _no_skip(r, inline)))
                i, j = i + 1, j + k
                continue
        if c.children and not r.children:
            raise AlignmentError(
                f"{where}the candidate has a residual block {c.info.name!r} ({c.describe()}) "
                f"where the reference has layer {r.path} {r.info.name!r} ({r.describe()}) "
                "without a skip connection; the models differ in structure here"
            )
        _check_pair(r, c)
        if r.children:
            out += _pair(r.children, c.children, f"in block {r.path}: ")
        out.append((r, c))
        i, j = i + 1, j + 1
    if i != len(ref) or j != len(cand):
        raise AlignmentError(
            f"{where}the reference has {len(ref)} layers with weights ({_unit_list(ref)}) but "
            f"the candidate has {len(cand)} ({_unit_list(cand)}); make the depths equal, or "
            "pass mapping={reference layer: candidate layer}"
        )
    return out


Shapes = Mapping[str, tuple]
"""Each side's canonical weight name -> its shape (``{"reference": ..., "candidate": ...}``)."""


def _shapes_of(reference: AbstractModel, candidate: AbstractModel) -> dict[str, Shapes]:
    return {
        side: {k: tuple(np.shape(v)) for k, v in model.weights().items()}
        for side, model in (("reference", reference), ("candidate", candidate))
    }


def _differ(r: Unit, c: Unit, local: str, shapes: Mapping[str, Shapes]) -> tuple | None:
    """``(reference shape, candidate shape)`` of a weight both layers name when the two
    differ (layers of another configuration: a Keras GRU's ``(2, 3u)`` bias with
    ``reset_after=True`` against its ``(3u,)`` one), else ``None``."""
    rs = shapes.get("reference", {}).get(f"{r.path}.{local}")
    cs = shapes.get("candidate", {}).get(f"{c.path}.{local}")
    return None if rs is None or cs is None or rs == cs else (rs, cs)


def _names(pairs, shapes: Mapping[str, Shapes]) -> dict[str, str]:
    """Weights of paired layers paired by their local name, where their shapes agree."""
    names = {}
    for r, c in pairs:
        for local in r.info.weights:
            if local in c.info.weights and _differ(r, c, local, shapes) is None:
                names[f"{r.path}.{local}"] = f"{c.path}.{local}"
    return names


def _unpaired(pairs, shapes: Mapping[str, Shapes]) -> tuple[tuple[str, str, str], ...]:
    """The weights of paired layers that the other side's layer lacks, or holds in another
    shape."""
    out = []
    for r, c in pairs:
        for side, own, other in (("reference", r, c), ("candidate", c, r)):
            for local in own.info.params:
                if local not in other.info.params:
                    why = f"{other.info.name} ({other.info.describe()}) none"
                else:
                    differ = _differ(r, c, local, shapes)
                    if differ is None:
                        continue
                    mine, theirs = differ if side == "reference" else differ[::-1]
                    why = (
                        f"{other.info.name} ({other.info.describe()}) one of shape {theirs} "
                        f"where this one's is {mine}: the layers are configured differently "
                        "(see the configuration differences), so the two are not paired"
                    )
                out.append(
                    (
                        side,
                        f"{own.path}.{local}",
                        f"{own.info.name} ({own.info.describe()}) has a {local} and {why}",
                    )
                )
    return tuple(out)


def _find_unit(tree: Sequence[Unit], name: str, side: str) -> Unit:
    flat = _flat(tree)
    for u in flat:
        info = u.info
        if (
            name in (info.name, info.path, info.name.rsplit("/", 1)[-1])
            or name in info.params.values()
        ):
            return u
    raise AlignmentError(
        f"mapping names {side} layer {name!r}, which does not exist; the {side} layers are: "
        f"{', '.join(repr(u.info.name) for u in flat)}"
    )


def _layer_mapping(ref_tree, cand_tree, mapping) -> list[tuple[Unit, Unit]]:
    pairs = [
        (_find_unit(ref_tree, r, "reference"), _find_unit(cand_tree, c, "candidate"))
        for r, c in mapping.items()
    ]
    ref_flat, cand_flat = _flat(ref_tree), _flat(cand_tree)
    used_r = [r.path for r, _ in pairs]
    used_c = [c.path for _, c in pairs]
    if len(set(used_r)) != len(used_r) or len(set(used_c)) != len(used_c):
        raise AlignmentError("mapping pairs a layer more than once")
    missing = [u.info.name for u in ref_flat if u.path not in used_r and not u.children]
    if missing:
        raise AlignmentError(
            f"mapping leaves reference layer(s) {missing} unpaired; name every reference layer once"
        )
    extra = [u.info.name for u in cand_flat if u.path not in used_c and not u.children]
    if extra:
        raise AlignmentError(
            f"candidate layer(s) {extra} are not in the mapping; every layer with weights of "
            "both models must be paired"
        )
    for r, c in pairs:
        _check_pair(r, c)
    order = {u.path: i for i, u in enumerate(ref_flat)}
    return sorted(pairs, key=lambda rc: order[rc[0].path])


def _layout_between(rs: tuple, cs: tuple, r: str, c: str) -> Layout:
    """The axis order taking a reference array of shape ``rs`` to the candidate's ``cs``: the
    reversal of the axes when it fits (a transposed kernel), else the one permutation that
    does.

    Raises:
        AlignmentError: no permutation fits, or several do (equal axis lengths).
    """
    reversal = tuple(range(len(rs)))[::-1]
    if len(rs) == len(cs) and tuple(rs[i] for i in reversal) == tuple(cs):
        return reversal
    fits = [p for p in itertools.permutations(range(len(rs))) if tuple(rs[i] for i in p) == cs]
    if len(fits) == 1:
        return tuple(fits[0])
    why = (
        "no axis order of the one gives the other"
        if not fits
        else (f"{len(fits)} axis orders give it ({', '.join(map(str, fits[:3]))}, ...)")
    )
    raise AlignmentError(
        f"mapping pairs reference {r!r} of shape {rs} with candidate {c!r} of shape {cs}; "
        f"the shapes must be equal or one a permutation of the other, and {why}"
    )


def _param_mapping(ref: AbstractModel, cand: AbstractModel, mapping) -> Alignment:
    ref_native = {v: k for k, v in ref.native_names().items()}
    cand_native = {v: k for k, v in cand.native_names().items()}
    ref_weights, cand_weights = ref.weights(), cand.weights()
    names, layouts = {}, {}
    for r, c in mapping.items():
        if r not in ref_native:
            raise AlignmentError(
                f"mapping names reference parameter {r!r}, which does not exist; the "
                f"reference's parameters are: {', '.join(map(repr, ref_native))}"
            )
        if c not in cand_native:
            raise AlignmentError(
                f"mapping names candidate parameter {c!r}, which does not exist; the "
                f"candidate's parameters are: {', '.join(map(repr, cand_native))}"
            )
        rn, cn = ref_native[r], cand_native[c]
        rs, cs = ref_weights[rn].shape, cand_weights[cn].shape
        if rs != cs:
            layouts[rn] = _layout_between(rs, cs, r, c)
        names[rn] = cn
    missing = [ref.native_names()[n] for n in ref.param_names if n not in names]
    if missing:
        raise AlignmentError(
            f"mapping leaves reference parameter(s) {missing} unpaired; name every parameter once"
        )
    return Alignment((), names, layouts, note="per-layer localisation unavailable")


def align(
    reference: AbstractModel, candidate: AbstractModel, mapping: str | Mapping[str, str] = "auto"
) -> Alignment:
    """Pair the units of two models, and name each reference weight on the candidate.

    Args:
        reference, candidate: the two models.
        mapping: ``"auto"`` pairs units in call order; a dict of
            ``{reference layer name: candidate layer name}`` pairs layers by name; a dict of
            ``{reference parameter: candidate parameter}`` (native names) pairs parameters
            directly, for models whose layers cannot be read (no per-layer comparison then).

    Raises:
        AlignmentError: a different depth, kind, width or bias; a name that does not exist;
            the message names the layer on both sides and what to change.
        InputError: ``mapping`` is neither ``"auto"`` nor a dict.
    """
    ref_tree, cand_tree = units(reference.layers), units(candidate.layers)
    if isinstance(mapping, str) and mapping == "auto":
        for model, tree in ((reference, ref_tree), (candidate, cand_tree)):
            if not tree:
                why = getattr(model, "structure_error", None) or "it has no layer with weights"
                raise AlignmentError(
                    f"cannot read the layers of {model.description}: {why}; pass "
                    "mapping={reference parameter: candidate parameter} to compare outputs, "
                    "loss and every mapped parameter's gradient without per-layer localisation"
                )
        pairs = _pair(ref_tree, cand_tree, "")
        shapes = _shapes_of(reference, candidate)
        return Alignment(tuple(pairs), _names(pairs, shapes), unpaired=_unpaired(pairs, shapes))
    if not isinstance(mapping, Mapping) or not mapping:
        raise InputError(f"mapping must be 'auto' or a non-empty dict of names, got {mapping!r}")
    ref_params = set(reference.native_names().values())
    if all(key in ref_params for key in mapping) and not all(
        key in {u.info.name for u in _flat(ref_tree)} for key in mapping
    ):
        return _param_mapping(reference, candidate, mapping)
    if not ref_tree or not cand_tree:
        return _param_mapping(reference, candidate, mapping)
    pairs = _layer_mapping(ref_tree, cand_tree, mapping)
    shapes = _shapes_of(reference, candidate)
    return Alignment(tuple(pairs), _names(pairs, shapes), unpaired=_unpaired(pairs, shapes))
