"""Inputs in different layouts per side (tier (a)): a reference that takes ``NCHW`` against a
candidate that takes ``NHWC``, a time-first recurrent model against a batch-first one.

The user states each side's layout (``layout=`` of :func:`xgrad.compare_models`), as a
string of axis letters: ``N`` the batch, ``C`` the channels, ``H`` and ``W`` the spatial axes
of 2-D inputs, ``L`` the one of 1-D inputs, ``T`` time (:data:`LAYOUTS`). ``x`` is given in
the reference's layout; the candidate is captured and evaluated on ``x`` permuted into its
own (:class:`LaidOutModel`), and everything it returns that has an activation's axes (its
output, ``dL/dinput``, every module's output, ``dL/d`` output and inputs) is permuted back
into the reference's layout, by rank: an array of the layout's rank is permuted as the input
is; an array ``(batch, features)`` is taken as it stands, except features flattened from a
spatial activation (below); other ranks are compared as they stand.

A flatten is no axis permutation: ``(C, H, W)`` flattened is another order of features than
``(H, W, C)`` flattened, and the ``Dense`` after it pairs with the port's only if the port
reordered its rows. :func:`relayout` looks at each paired module whose input is a vector of
``F`` features computed (through weight-free modules only) from a spatial activation of
``C`` channels: each of its kernels with an axis of ``F`` rows is paired as it stands or with
those rows regrouped from ``(C, F / C)`` to ``(F / C, C)`` (:class:`Regroup`), whichever the
candidate's values hold; when they hold neither (an unrelated initialisation, a port that
forgot to reorder), the kernel pairs with nothing and the reason says so (``channel-order``):
it is never copied or compared in an order that may be wrong.

Without ``layout=``, a batch whose axes the layouts cannot be told apart on (channels and
width of one size in a 4-D input that a convolution reads, batch and time of one size before
a recurrent module) is refused by :func:`check_unambiguous`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from xgrad.errors import InputError
from xgrad.frameworks.base import Gradients
from xgrad.frameworks.capture import Batch, CapturedModel, ModuleInfo
from xgrad.frameworks.kinds import Layout
from xgrad.identify import rel
from xgrad.pairing.params import Join

__all__ = [
    "LAYOUTS",
    "LaidOutModel",
    "LayoutError",
    "Layouts",
    "Regroup",
    "check_unambiguous",
    "layouts_of",
    "relayout",
]

LAYOUTS = ("NC", "NCL", "NLC", "NCHW", "NHWC", "NTC", "TNC")
"""The layouts ``layout=`` takes: ``N`` batch, ``C`` channels (features), ``H``/``W`` the
spatial axes of 2-D inputs, ``L`` the one of 1-D inputs, ``T`` time. Two sides' layouts are
two orders of the same letters (``NCHW`` against ``NHWC``, ``NTC`` against ``TNC``)."""

SPATIAL = frozenset("HWL")


class LayoutError(InputError):
    """``layout=`` is malformed, does not fit the inputs, or is needed and missing."""


def _check_one(value, what: str) -> str:
    if not isinstance(value, str) or value.upper() not in LAYOUTS:
        raise LayoutError(
            f"{what} {value!r} is not a layout xgrad knows; it needs to be one of "
            f"{', '.join(LAYOUTS)} (N batch, C channels, H/W or L spatial, T time)"
        )
    return value.upper()


@dataclass(frozen=True)
class Layouts:
    """Each side's input layout (letters of :data:`LAYOUTS`).

    Example:
        >>> lay = Layouts("NCHW", "NHWC")
        >>> lay.to_candidate(4), lay.to_reference(4)
        ((0, 2, 3, 1), (0, 3, 1, 2))
    """

    reference: str
    candidate: str

    @property
    def differ(self) -> bool:
        """Whether the sides' layouts differ (else nothing is permuted)."""
        return self.reference != self.candidate

    @property
    def rank(self) -> int:
        return len(self.reference)

    def to_candidate(self, ndim: int) -> Layout | None:
        """The axes taking a reference-layout array of ``ndim`` axes to the candidate's
        (``np.transpose(a, axes)``), ``None`` when it stays as it is."""
        if ndim != self.rank or not self.differ:
            return None
        return tuple(self.reference.index(letter) for letter in self.candidate)

    def to_reference(self, ndim: int) -> Layout | None:
        """The axes taking a candidate-layout array of ``ndim`` axes to the reference's."""
        if ndim != self.rank or not self.differ:
            return None
        return tuple(self.candidate.index(letter) for letter in self.reference)

    def flat_orders(self) -> tuple[str, str] | None:
        """``(reference, candidate)`` order of features flattened from a spatial activation:
        ``"CS"`` channels first, ``"SC"`` channels last; ``None`` when flattening orders them
        alike (or the layouts have no channel and spatial axes)."""
        orders = []
        for lay in (self.reference, self.candidate):
            if "C" not in lay or not SPATIAL & set(lay):
                return None
            example = lay.replace("N", "")
            orders.append("CS" if example[0] == "C" else "SC")
        return None if orders[0] == orders[1] else (orders[0], orders[1])


def layouts_of(value) -> Layouts | None:
    """``layout=`` checked: ``None`` (not stated), one layout for both sides, or
    ``{"reference": ..., "candidate": ...}``.

    Raises:
        LayoutError: an unknown layout, other keys, or two layouts that are not orders of the
            same axes.
    """
    if value is None:
        return None
    if isinstance(value, Mapping):
        keys = set(value)
        if keys != {"reference", "candidate"}:
            raise LayoutError(
                "layout as a dict takes the keys 'reference' and 'candidate' (both), got "
                f"{', '.join(map(repr, sorted(keys, key=str)))}"
            )
        ref = _check_one(value["reference"], "layout['reference']")
        cand = _check_one(value["candidate"], "layout['candidate']")
        if sorted(ref) != sorted(cand):
            raise LayoutError(
                f"layout gives the reference {ref} and the candidate {cand}: they must be two "
                "orders of the same axes (NCHW against NHWC, NCL against NLC, NTC against TNC)"
            )
        return Layouts(ref, cand)
    one = _check_one(value, "layout")
    return Layouts(one, one)


# -- the candidate seen in the reference's layout ---------------------------------------------


def _moved(a, axes: Layout | None):
    return a if a is None or axes is None else np.ascontiguousarray(np.transpose(a, axes))


def _swap(a: np.ndarray, axis: int, grid: tuple[int, int]) -> np.ndarray:
    """``a`` with its ``axis`` (of ``grid[0] * grid[1]`` entries, read as ``grid`` in C
    order) re-ordered as ``grid`` transposed: features flattened from ``(C, S)`` as they are
    flattened from ``(S, C)``, or back."""
    a = np.asarray(a)
    shape = a.shape
    split = a.reshape(*shape[:axis], *grid, *shape[axis + 1 :])
    return np.ascontiguousarray(np.swapaxes(split, axis, axis + 1)).reshape(shape)


def batch_to_candidate(batch: Batch, layouts: Layouts) -> Batch:
    """The floating inputs of the layout's rank permuted into the candidate's layout.

    Raises:
        LayoutError: no floating input has the layout's number of axes.
    """
    leaves = {n: a for n, a in batch.leaves.items() if n in batch.floating}
    fitting = {n: a for n, a in leaves.items() if a.ndim == layouts.rank}
    if not fitting:
        shapes = ", ".join(f"{n} {a.shape}" for n, a in leaves.items()) or "no floating input"
        raise LayoutError(
            f"layout {layouts.reference!r} has {layouts.rank} axes but the inputs are {shapes}; "
            "state the layout of x as you pass it"
        )
    axes = layouts.to_candidate(layouts.rank)
    return batch.with_leaves({n: _moved(a, axes) for n, a in fitting.items()})


class LaidOutModel(CapturedModel):
    """A captured candidate seen in the reference's layout: evaluated on inputs given in the
    reference's layout, answering with every activation in the reference's layout (see the
    module docstring). Its weights are the candidate's own, untouched.

    Attributes:
        inner: the candidate as captured on inputs in its own layout.
        layouts: both sides' layouts.
        flat: candidate module path -> how its flattened output (``"out"``) or first input
            (``"in"``) becomes the reference's order: the candidate's ``(S, C)`` grid to swap,
            ``None`` to leave it out (its order is unknown); set by :func:`relayout`.
    """

    def __init__(
        self,
        inner: CapturedModel,
        layouts: Layouts,
        batch: Batch,
        flat: Mapping[tuple[str, str], tuple[int, int] | None] | None = None,
    ) -> None:
        self.inner = inner
        self.layouts = layouts
        self.batch = batch
        self.flat = dict(flat or {})
        self.framework = inner.framework
        self.dtype = inner.dtype
        self.description = inner.description
        self.output_path = inner.output_path
        self.output_note = inner.output_note
        self.input_shape = tuple(batch.first.shape[1:])
        self.output_shape = self._example(inner.output_shape)
        self.layers = tuple(
            dataclasses.replace(
                info,
                input_shape=self._example(info.input_shape),
                output_shape=self._example(info.output_shape),
                input_shapes=tuple(self._example(s) for s in info.input_shapes),
            )
            for info in inner.modules
        )

    def _example(self, shape: tuple) -> tuple:
        """A candidate example shape (batch axis excluded) in the reference's layout."""
        axes = self.layouts.to_reference(len(shape) + 1)
        if axes is None:
            return tuple(shape)
        first = self.layouts.reference.index(self.layouts.candidate[0])
        full = (int(self.batch.first.shape[first]), *shape)
        return tuple(full[i] for i in axes)[1:]

    @property
    def native(self):
        return self.inner.native

    def weights(self):
        return self.inner.weights()

    def native_names(self) -> dict[str, str]:
        return self.inner.native_names()

    def with_weights(self, weights) -> LaidOutModel:
        return LaidOutModel(self.inner.with_weights(weights), self.layouts, self.batch, self.flat)

    def _back(self, a):
        """A candidate array in the reference's layout (by its rank)."""
        if a is None:
            return None
        return _moved(np.asarray(a), self.layouts.to_reference(np.ndim(a)))

    def _activation(self, path: str, where: str, a):
        if (path, where) in self.flat and np.ndim(a) == 2:  # (batch, flattened features)
            grid = self.flat[(path, where)]
            return None if grid is None or a is None else _swap(np.asarray(a), 1, grid)
        return self._back(a)

    def _there(self, values: Mapping | None, where: str) -> dict | None:
        if values is None:
            return None
        out = {p: self._activation(p, where, v) for p, v in values.items()}
        return {p: v for p, v in out.items() if v is not None}

    def _evaluate_batch(self, batch: Batch, y, loss, cotangent, capture: bool) -> Gradients:
        # targets and a cotangent of the output's shape are given in the reference's layout
        if y is not None and np.ndim(y) == len(self.output_shape) + 1:
            y = _moved(np.asarray(y), self.layouts.to_candidate(np.ndim(y)))
        if cotangent is not None:
            cotangent = _moved(cotangent, self.layouts.to_candidate(np.ndim(cotangent)))
        g = self.inner._evaluate_batch(
            batch_to_candidate(batch, self.layouts), y, loss, cotangent, capture
        )
        inputs = None
        if g.module_inputs is not None:
            inputs = {
                p: tuple(
                    v
                    for k, a in enumerate(ts)
                    if (v := self._activation(p, "in", a) if k == 0 else self._back(a)) is not None
                )
                for p, ts in g.module_inputs.items()
            }
        return Gradients(
            loss=g.loss,
            params=g.params,
            input=self._back(g.input),
            output=self._back(g.output),
            state=g.state,
            activations=self._there(g.activations, "out"),
            activation_grads=self._there(g.activation_grads, "out"),
            inputs=None if g.inputs is None else {n: self._back(a) for n, a in g.inputs.items()},
            module_inputs=inputs,
        )


# -- a Dense after a flatten ------------------------------------------------------------------


@dataclass(frozen=True)
class Regroup(Join):
    """A reference parameter whose axis ``along`` reads features flattened in the
    reference's order, paired one to one with the candidate's ``parts[0]``, which reads them
    in the other: ``candidate = np.transpose(_swap(reference, along, grid), layout)``.

    Attributes:
        along: the axis of the flattened features (a kernel's rows).
        grid: the reference's order of those features, ``(C, S)`` (channels first) or
            ``(S, C)``, for ``C`` channels at ``S`` spatial positions.
        layout: the axis order the one-to-one pairing gives the regrouped array (``None``:
            as it stands).
    """

    along: int = 0
    grid: tuple[int, int] = (1, 1)
    layout: Layout | None = None

    def split(self, value) -> list:
        a = _swap(np.asarray(value), self.along, self.grid)
        return [_moved(a, self.layout)]

    def join(self, parts: Sequence):
        a = np.asarray(parts[0])
        if self.layout:
            a = np.transpose(a, tuple(int(i) for i in np.argsort(self.layout)))
        return _swap(a, self.along, self.grid[::-1])


def _owners(model: CapturedModel) -> dict[str, ModuleInfo]:
    return {
        (f"{info.path}.{local}" if info.path else local): info
        for info in model.modules
        for local in info.params
    }


def _source(model: CapturedModel, module: ModuleInfo, features: int, layouts: Layouts):
    """``(channels, chain)`` when ``module``'s input of ``features`` is computed from a
    spatial activation of ``channels`` channels through weight-free modules only (``chain``,
    whose outputs are those features), else ``None``."""
    example = layouts.reference.replace("N", "")
    channel = example.index("C")
    mods = list(model.modules)
    at = next(i for i, m in enumerate(mods) if m.path == module.path)
    chain: list[str] = []
    inside = f"{module.path}." if module.path else None
    for m in reversed(mods[:at]):
        if m.scope is None or (inside and m.path.startswith(inside)):
            continue
        shape = tuple(m.output_shape)
        if len(shape) == len(example):
            return shape[channel], chain
        if shape == (features,) and not m.params:
            chain.append(m.path)
            continue
        return None
    x = model.batch.first
    return (x.shape[1:][channel], chain) if x.ndim == layouts.rank else None


def _informative_held(a, b) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and a.size > 1 and bool(np.ptp(a) > 0) and rel(b, a) <= 1e-6


def _flat_reason(rn, cn, r: ModuleInfo, features, grid, layouts: Layouts) -> str:
    c, s = (grid[0], grid[1]) if grid[0] * grid[1] == features else (0, 0)
    orders = layouts.flat_orders() or ("CS", "SC")
    shape = {"CS": f"({c}, {s})", "SC": f"({s}, {c})"}
    return (
        f"in {r.path} ({r.type or r.kind}), {rn} reads {features} features flattened from a "
        f"{c}-channel activation, ordered {shape[orders[0]]} by the reference "
        f"({layouts.reference}) and {shape[orders[1]]} by the candidate ({layouts.candidate}) "
        f"unless it permutes before flattening; {cn}'s values hold the reference's in neither "
        "order (channel-order), so they are not paired: load the weights with the rows "
        "reordered and pass transfer=False, or mapping= to pair them as they stand"
    )


def _decide(a, b, layout, features: int, grid) -> tuple[str, Regroup | None]:
    """``("as-is" | "regroup" | "unknown", the record)`` for a reference array ``a`` paired
    with the candidate's ``b`` (``layout``) whose axes of ``features`` rows may be
    regrouped."""
    as_is = _informative_held(_moved(np.asarray(a), layout), b)
    ways = [
        Regroup(("",), 0, (None,), along=axis, grid=grid, layout=layout)
        for axis in range(np.ndim(a))
        if np.shape(a)[axis] == features
    ]
    held = [w for w in ways if _informative_held(w.split(a)[0], b)]
    if as_is and not held:
        return "as-is", None
    if len(held) == 1 and not as_is:
        return "regroup", held[0]
    return "unknown", None


def relayout(pairing, reference: CapturedModel, candidate: LaidOutModel, mapping="auto"):
    """The pairing and the candidate, with each kernel that reads flattened features decided
    (see the module docstring): ``(pairing, candidate, notes)``. A parameter a ``mapping``
    names (canonical or native name) is paired as the mapping says."""
    layouts = candidate.layouts
    orders = layouts.flat_orders()
    if orders is None:
        return pairing, candidate, []
    names, lays, joins = dict(pairing.names), dict(pairing.layouts), dict(pairing.joins)
    unpaired, flat, notes = list(pairing.unpaired), dict(candidate.flat), []
    ref_w, cand_w = reference.weights(), candidate.weights()
    owner_r, owner_c = _owners(reference), _owners(candidate)
    native = reference.native_names()
    named = {n for n in native if isinstance(mapping, Mapping) and {n, native[n]} & set(mapping)}
    for rn, cn in [*names.items(), *((k, j.parts[0]) for k, j in joins.items())]:
        r, c = owner_r.get(rn), owner_c.get(cn)
        a = ref_w.get(rn)
        if r is None or c is None or a is None or rn in named:
            continue
        if np.ndim(a) < 2 or len(r.input_shapes) != 1:
            continue
        features = r.input_shapes[0][0] if len(r.input_shapes[0]) == 1 else None
        found = _source(reference, r, features, layouts) if features in a.shape else None
        if found is None or found[0] == features:
            continue
        channels = found[0]
        spatial = features // channels
        grid = (channels, spatial) if orders[0] == "CS" else (spatial, channels)
        if rn in joins or features % channels:
            how, record = "unknown", None
        else:
            how, record = _decide(a, cand_w[cn], lays.get(rn), features, grid)
        cand_chain = _source(candidate, c, features, layouts)
        where = [
            (c.path, "in"),
            *((p, w) for p in (cand_chain or (0, []))[1] for w in ("in", "out")),
        ]
        if how == "as-is":
            continue
        if how == "regroup":
            names.pop(rn)
            lays.pop(rn, None)
            joins[rn] = dataclasses.replace(record, parts=(cn,))
            flat.update(dict.fromkeys(where, grid[::-1]))
            notes.append(
                f"{rn} reads features flattened from {channels} channels: the candidate's "
                f"{cn} holds it with its rows reordered as {layouts.candidate} flattens them, "
                "so it is paired (and copied, and compared) that way"
            )
            continue
        names.pop(rn, None)
        lays.pop(rn, None)
        joins.pop(rn, None)
        flat.update(dict.fromkeys(where))
        reason = _flat_reason(rn, cn, r, features, grid, layouts)
        unpaired += [
            ("reference", rn, reason),
            ("candidate", cn, reason),
        ]
    new = dataclasses.replace(
        pairing, names=names, layouts=lays, joins=joins, unpaired=tuple(unpaired)
    )
    model = LaidOutModel(candidate.inner, layouts, candidate.batch, flat)
    return new, model, notes


# -- no layout stated --------------------------------------------------------------------------

_RECURRENT = ("LSTM", "GRU", "RNN")


def _reads(model: CapturedModel, ndim: int, x_ndim: int, recurrent: bool = False):
    """The first module reading an input of ``x_ndim`` axes with a parameter of ``ndim``
    axes (a convolution's kernel), or (``recurrent``) a recurrent module."""
    shapes = {k: np.shape(v) for k, v in model.weights().items()}
    for info in model.modules:
        if not info.input_shapes or len(info.input_shapes[0]) + 1 != x_ndim:
            continue
        if recurrent:
            if info.type.upper().endswith(_RECURRENT):
                return info
            continue
        own = [shapes.get(f"{info.path}.{p}" if info.path else p, ()) for p in info.params]
        if any(len(s) == ndim for s in own):
            return info
    return None


def check_unambiguous(reference: CapturedModel, candidate: CapturedModel, batch: Batch) -> None:
    """Refuse inputs whose layout the shapes cannot tell when no layout was stated: a 4-D
    (3-D) input that a 2-D (1-D) convolution reads with as many channels as its last axis
    holds, or a 3-D input read by a recurrent module with as many rows as its second axis.

    Raises:
        LayoutError: naming the module and the ``layout=`` to pass.
    """
    if not batch.floating:
        return
    x = batch.leaves[batch.floating[0]]
    cases = []
    if x.ndim == 4 and x.shape[1] == x.shape[3]:
        cases.append((4, False, "NCHW", "NHWC", "channels on axis 1 or 3"))
    if x.ndim == 3 and x.shape[1] == x.shape[2]:
        cases.append((3, False, "NCL", "NLC", "channels on axis 1 or 2"))
    if x.ndim == 3 and x.shape[0] == x.shape[1]:
        cases.append((2, True, "NTC", "TNC", "the batch on axis 0 or 1"))
    for ndim, recurrent, first, other, what in cases:
        for side, model in (("reference", reference), ("candidate", candidate)):
            info = _reads(model, ndim, x.ndim, recurrent)
            if info is None:
                continue
            raise LayoutError(
                f"x has shape {x.shape}, which fits {what}, and the {side}'s {info.path} "
                f"({info.type}) reads it: xgrad cannot tell from the shapes which layout each "
                f"side takes and does not guess; pass layout={first!r} if both take x as it "
                f"is, or layout={{'reference': {first!r}, 'candidate': {other!r}}} (or the "
                "other way round) if they differ (x is given in the reference's layout and "
                "permuted for the candidate)"
            )
