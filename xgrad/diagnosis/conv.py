"""Convolutional conventions (issue 22): a kernel in another layout, a classifier reading the
flattened features in the other order, "same" padded on the other side, a pooling that pads or
counts its padding otherwise, a norm taking its statistics over another axis.

Each cause re-runs the *reference's* unit, with its own captured input and weights, as
xgrad's NumPy float64 kinds (:class:`~xgrad.layers.Conv`, :class:`~xgrad.layers.MaxPool`,
:class:`~xgrad.layers.AvgPool`, :class:`~xgrad.layers.BatchNorm`,
:class:`~xgrad.layers.GroupNorm`, :class:`~xgrad.layers.Dense`) under the alternative, and is
confirmed by the one rule of :mod:`xgrad.diagnosis.records` (:func:`~records.check`): the
alternative reproduces the candidate, the unchanged unit does not and is the reference's own
computation.

A unit read as a kind says its configuration (channels-last values). A module read as no kind
(a user's ``nn.Conv2d`` read module by module, its values channels-first ``(B, C, H, W)``)
is fitted first (:func:`fit_unit`): the configuration of xgrad's kind, on the channel axis 1
or last, that reproduces the reference's own captured output from its captured input (the
module's behaviour at its boundary, never its name). Values are compared in the reference's
layout (``compare_models(layout=)`` permutes the candidate's back into it).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from xgrad.diagnosis.evidence import Evidence, UnitEvidence, run_unit, run_unit_grads
from xgrad.diagnosis.records import Cause, Check, Finding, check, drop
from xgrad.errors import XgradError
from xgrad.identify import EPSILONS, rel
from xgrad.layers import AvgPool, BatchNorm, Conv, Dense, GroupNorm, MaxPool

__all__ = ["CAUSES", "Fitted", "fit_unit"]

SCALE_NAMES = ("scale", "weight", "gamma")
"""A norm's scale as a unit may name it (xgrad's kinds, a torch module, a Keras layer)."""
BIAS_NAMES = ("bias", "beta")
MEAN_NAMES = ("mean", "running_mean", "moving_mean")
VAR_NAMES = ("var", "running_var", "moving_variance")


@dataclass(frozen=True)
class Fitted:
    """The reference's unit as xgrad's layers on channels-last values.

    Attributes:
        layers: the unit's layers (the fitted or stated kind first, then the unit's own
            weight-free layers).
        weights: the weights by the kind's local names.
        names: the kind's local name -> the unit's own (its gradients' names).
        first: the unit's values hold their channels on axis 1 (channels-first), not last.
        order: the channel order the kind takes the unit's channels in (a norm grouping
            channel ``c`` with ``c % G``: interleaved groups made contiguous), else ``None``;
            ``weights`` are in that order.
    """

    layers: list
    weights: dict[str, np.ndarray]
    names: dict[str, str] = field(default_factory=dict)
    first: bool = False
    order: np.ndarray | None = None

    @property
    def main(self):
        return self.layers[0]

    def last(self, a: np.ndarray) -> np.ndarray:
        """A value of the unit, in the reference's layout, as the kind takes it."""
        a = np.moveaxis(a, 1, -1) if self.first and a.ndim > 2 else a
        return a if self.order is None else a[..., self.order]

    def back(self, a: np.ndarray) -> np.ndarray:
        """A channels-last value (or a per-channel weight) in the reference's layout."""
        a = a if self.order is None else a[..., np.argsort(self.order)]
        return np.moveaxis(a, -1, 1) if self.first and a.ndim > 2 else a

    def with_main(self, main, weights=None) -> Fitted:
        return replace(self, layers=[main, *self.layers[1:]], weights=weights or self.weights)


def _fit_tol(ev: Evidence) -> float:
    """How closely a fitted kind must reproduce the reference's own output: its rounding."""
    return max(ev.fit_tol, 1e-8 if ev.dtype_ref == "float64" else 1e-4)


def _run(fitted: Fitted, unit: UnitEvidence) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The fitted unit on the reference's input, and the VJP of the candidate's ``dL/d
    output``: ``(output in the reference's layout, gradients by the unit's local names)``."""
    out, grads = run_unit_grads(
        fitted.layers, fitted.weights, fitted.last(unit.input_ref), fitted.last(unit.grad_cand)
    )
    if fitted.order is not None:  # per-channel gradients back in the unit's channel order
        grads = {k: fitted.back(v) if v.ndim == 1 else v for k, v in grads.items()}
    return fitted.back(out), {fitted.names.get(k, k): v for k, v in grads.items()}


def _reproduces(ev: Evidence, fitted: Fitted, unit: UnitEvidence) -> bool:
    try:
        out = fitted.back(run_unit(fitted.layers, fitted.weights, fitted.last(unit.input_ref)))
    except (XgradError, ValueError, KeyError, IndexError, TypeError):
        return False
    return out.shape == unit.output_ref.shape and rel(out, unit.output_ref) <= _fit_tol(ev)


def confirm(
    ev: Evidence, unit: UnitEvidence, fitted: Fitted, alternative: Fitted, grads=("bias",)
) -> Check:
    """The confirmation rule: ``alternative`` (the reference's unit under another convention)
    against the candidate's output and the gradients named in ``grads`` (those both sides
    hold), the unchanged ``fitted`` unit against the candidate and the reference."""
    try:
        alt_out, alt_grads = _run(alternative, unit)
        own_out, own_grads = _run(fitted, unit)
    except (XgradError, ValueError, KeyError, IndexError):
        return Check(np.inf, np.inf, 0.0, ev.tol, False)
    names = [
        k
        for k in grads
        if k in unit.dweights_cand
        and k in alt_grads
        and k in own_grads
        and alt_grads[k].shape == unit.dweights_cand[k].shape
    ]
    return check(
        ev,
        [unit.output_cand, *(unit.dweights_cand[k] for k in names)],
        [alt_out, *(alt_grads[k] for k in names)],
        [own_out, *(own_grads[k] for k in names)],
        reference=unit.output_ref,
    )


# -- fitting the reference's unit -------------------------------------------------------------


def _layouts(unit: UnitEvidence, rank: int) -> Iterator[bool]:
    """Whether to read the unit's values channels-first: last first, then first (rank > 2)."""
    yield False
    if unit.input_ref.ndim == rank and rank > 2:
        yield True


def _axis_geometry(n: int, k: int, out: int, *, pool: bool) -> list[tuple[int, int, int, int]]:
    """``(stride, dilation, lo, hi)`` on one axis of ``n`` that give ``out`` positions with a
    window of ``k`` taps, the plainest first (no dilation, then small strides, symmetric pads
    first)."""
    found = []
    for d in (1,) if pool else (1, 2):
        span = d * (k - 1)
        top = k - 1 if pool else span
        for s in (1, 2, 3, 4) if not pool else sorted({k, 1, 2, 3}):
            for lo, hi in sorted(
                itertools.product(range(top + 1), repeat=2), key=lambda p: (abs(p[0] - p[1]), p)
            ):
                if (n + lo + hi - span - 1) // s + 1 == out and n + lo + hi > span:
                    found.append((s, d, lo, hi))
    return found


def _geometries(k_sizes, n_sizes, out_sizes, *, pool: bool, limit: int = 600):
    """Per-axis ``(strides, dilation, pads)`` tuples for every spatial axis, at most
    ``limit``."""
    axes = [
        _axis_geometry(n, k, o, pool=pool)
        for n, k, o in zip(n_sizes, k_sizes, out_sizes, strict=True)
    ]
    for combo in itertools.islice(itertools.product(*axes), limit):
        strides = tuple(c[0] for c in combo)
        dilation = tuple(c[1] for c in combo)
        pads = tuple((c[2], c[3]) for c in combo)
        yield strides, dilation, pads


def _fit_conv(ev: Evidence, unit: UnitEvidence) -> Fitted | None:
    """A unit holding a ``kernel (*k, C // groups, F)`` (and a ``bias (F,)``) as a Conv."""
    w = unit.weights_ref
    kernel = w.get("kernel")
    if kernel is None or kernel.ndim not in (3, 4) or set(w) - {"kernel", "bias"}:
        return None
    weights = {k: w[k] for k in ("kernel", "bias") if k in w}
    if isinstance(unit.main_ref, Conv):
        return Fitted(list(unit.layers_ref), weights)
    rank = kernel.ndim
    for first in _layouts(unit, rank):
        probe = Fitted([None], weights, first=first)
        x, y = probe.last(unit.input_ref), probe.last(unit.output_ref)
        if x.ndim != rank or y.ndim != rank or y.shape[-1] != kernel.shape[-1]:
            continue
        if x.shape[-1] % kernel.shape[-2]:
            continue
        groups = x.shape[-1] // kernel.shape[-2]
        if kernel.shape[-1] % groups:
            continue
        for strides, dilation, pads in _geometries(
            kernel.shape[:-2], x.shape[1:-1], y.shape[1:-1], pool=False
        ):
            conv = Conv(
                kernel.shape[-1], kernel.shape[:-2], strides, pads, dilation, groups, "bias" in w
            )
            fitted = Fitted([conv], weights, first=first)
            if _reproduces(ev, fitted, unit):
                return fitted
    return None


def _fit_pool(ev: Evidence, unit: UnitEvidence) -> Fitted | None:
    """A unit without weights that keeps the channels and shrinks or keeps the spatial axes as
    a MaxPool or AvgPool (either ``count_include_pad``)."""
    if isinstance(unit.main_ref, MaxPool | AvgPool):
        return Fitted(list(unit.layers_ref), {})
    if unit.weights_ref or unit.input_ref.ndim not in (3, 4):
        return None
    if unit.output_ref.ndim != unit.input_ref.ndim:
        return None
    for first in _layouts(unit, unit.input_ref.ndim):
        probe = Fitted([None], {}, first=first)
        x, y = probe.last(unit.input_ref), probe.last(unit.output_ref)
        if x.shape[-1] != y.shape[-1]:
            continue
        for k in (2, 3, 4, 5):
            sizes = (k,) * (x.ndim - 2)
            for strides, _, pads in _geometries(sizes, x.shape[1:-1], y.shape[1:-1], pool=True):
                for pool in (
                    MaxPool(sizes, strides, pads),
                    AvgPool(sizes, strides, pads, count_include_pad=True),
                    AvgPool(sizes, strides, pads, count_include_pad=False),
                ):
                    if (
                        isinstance(pool, AvgPool)
                        and pool.count_include_pad
                        and not any(lo or hi for lo, hi in pads)
                    ):
                        continue  # without padding both counts are one average
                    fitted = Fitted([pool], {}, first=first)
                    if _reproduces(ev, fitted, unit):
                        return fitted
    return None


def _named(weights: dict, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in weights and weights[n].ndim == 1), None)


def _fit_norm(ev: Evidence, unit: UnitEvidence) -> Fitted | None:
    """A unit holding a scale and/or bias of ``(C,)`` (and maybe moving statistics) that keeps
    its input's shape, as a BatchNorm (batch or moving statistics) or a GroupNorm with
    contiguous groups, on the channel axis 1 or last; else as a GroupNorm with interleaved
    groups (channel ``c`` in group ``c % G``: :attr:`Fitted.order`)."""
    w = {**unit.weights_ref, **unit.state_ref}
    scale, bias = _named(w, SCALE_NAMES), _named(w, BIAS_NAMES)
    mean, var = _named(w, MEAN_NAMES), _named(w, VAR_NAMES)
    if isinstance(unit.main_ref, BatchNorm | GroupNorm):
        names = {"scale": scale, "bias": bias, "mean": mean, "var": var}
        return Fitted(
            list(unit.layers_ref),
            {k: w[n] for k, n in names.items() if n is not None},
            {k: n for k, n in names.items() if n is not None},
        )
    if (scale or bias) is None or unit.input_ref.shape != unit.output_ref.shape:
        return None
    if unit.input_ref.ndim < 2 or set(unit.weights_ref) - {scale, bias}:
        return None
    channels = w[scale or bias].shape[0]
    names = {k: n for k, n in (("scale", scale), ("bias", bias)) if n is not None}
    weights = {k: w[n] for k, n in names.items()}
    flags = {"scale": scale is not None, "center": bias is not None}
    forms = [BatchNorm(eps, training=True, **flags) for eps in EPSILONS]
    if mean and var:
        stats = {"mean": w[mean], "var": w[var]}
        forms += [(BatchNorm(eps, **flags), stats) for eps in EPSILONS]
    divisors = [g for g in range(1, channels + 1) if channels % g == 0]
    forms += [
        GroupNorm(g, eps, use_scale=scale is not None, use_bias=bias is not None)
        for g in divisors
        for eps in EPSILONS
    ]
    orders = [(None, form) for form in forms] + [
        (_interleaved(form.groups, channels), form)
        for form in forms
        if isinstance(form, GroupNorm) and 1 < form.groups < channels
    ]
    for first in _layouts(unit, unit.input_ref.ndim):
        if Fitted([None], {}, first=first).last(unit.input_ref).shape[-1] != channels:
            continue
        for order, form in orders:
            layer, extra = form if isinstance(form, tuple) else (form, {})
            own = {**weights, **extra}
            if order is not None:
                own = {k: v[order] for k, v in own.items()}
            fitted = Fitted([layer], own, names, first, order)
            if _reproduces(ev, fitted, unit):
                return fitted
    return None


FITS: dict[str, Callable[[Evidence, UnitEvidence], Fitted | None]] = {
    "conv": _fit_conv,
    "pool": _fit_pool,
    "norm": _fit_norm,
}


def fit_unit(ev: Evidence, unit: UnitEvidence, family: str) -> Fitted | None:
    """The reference's unit as a kind of ``family`` (``conv``, ``pool`` or ``norm``): its
    stated layers, or the configuration fitted to its captured values; ``None`` when it is
    none (memoised on the evidence's transformer context when there is one)."""
    memo = ev.transformer.memo if ev.transformer is not None else None
    key = ("conv-fit", unit.path, family)
    if memo is not None and key in memo:
        return memo[key]
    with np.errstate(all="ignore"):
        found = FITS[family](ev, unit)
    if memo is not None:
        memo[key] = found
    return found


# -- conv-kernel-layout -------------------------------------------------------------------------


def _torch_axes(rank: int) -> tuple[int, ...]:
    """The axes taking a canonical ``(*k, in, out)`` kernel to torch's ``(out, in, *k)``."""
    return (rank - 1, rank - 2, *range(rank - 2))


def kernel_readings(kernel: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """``(words, the kernel so read)`` for each other reading of a canonical ``(*k, in, out)``
    kernel that keeps its shape and changes its numbers."""
    rank = kernel.ndim
    spatial = tuple(range(rank - 2))
    torch_shape = tuple(kernel.shape[i] for i in _torch_axes(rank))
    ways = [
        (
            "its spatial axes flipped (rot180: a true convolution against the cross-correlation "
            "torch, Keras and lax compute; Theano and scipy.signal.convolve flip the kernel)",
            np.flip(kernel, spatial),
        )
    ]
    if rank == 4 and kernel.shape[0] == kernel.shape[1]:
        swapped = kernel.transpose(1, 0, 2, 3)
        ways.append(("kh and kw swapped (a torch weight transposed (3, 2, 1, 0))", swapped))
        ways.append(("kh and kw swapped and flipped", np.flip(swapped, spatial)))
    if kernel.shape[-1] == kernel.shape[-2]:
        ways.append(
            (
                "its (out, in) axes read as (in, out) (a torch weight transposed (2, 3, 0, 1))",
                np.swapaxes(kernel, -1, -2),
            )
        )
    ways.append(
        (
            "torch's (out, in, *k) weight reshaped to (*k, in, out) instead of transposed",
            np.transpose(kernel, _torch_axes(rank)).reshape(kernel.shape),
        )
    )
    back = np.argsort(_torch_axes(rank))
    ways.append(
        (
            "a (*k, in, out) kernel reshaped to torch's (out, in, *k) instead of transposed",
            np.transpose(kernel.reshape(torch_shape), back),
        )
    )
    return [(words, k) for words, k in ways if not np.array_equal(k, kernel)]


def conv_kernel_layout(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The reference's convolution re-run with its kernel read another way (spatial axes
    flipped, kh/kw swapped, (out, in) swapped, reshaped instead of transposed) reproduces the
    candidate: the candidate holds or computes with the kernel so read."""
    fitted = fit_unit(ev, unit, "conv")
    if fitted is None:
        return None
    kernel = fitted.weights["kernel"]
    held = unit.weights_cand.get("kernel")
    for words, other in kernel_readings(kernel):
        holds = held is not None and held.shape == other.shape and rel(held, other) <= 1e-3
        alternative = replace(fitted, weights={**fitted.weights, "kernel": other})
        grads = ("kernel", "bias") if holds else ("bias",)
        confirmed = confirm(ev, unit, fitted, alternative, grads)
        if confirmed.confirmed:
            how = "holds" if holds else "computes with"
            return Finding(
                f"the candidate {how} the reference's kernel {kernel.shape} with {words}; the "
                f"reference's convolution re-run with its kernel so read "
                f"{drop(before, confirmed.residual)}. torch stores (out, in, kh, kw), Keras and "
                "Flax (kh, kw, in, out): copy with weight.transpose(2, 3, 1, 0)",
                confirmed.residual,
                before,
            )
    return None


# -- padding-convention ---------------------------------------------------------------------------


def _pads_words(pads) -> str:
    return ", ".join(f"({lo}, {hi})" for lo, hi in pads)


def _side_words(pads) -> str:
    """What a padding is known as."""
    if all(lo == hi for lo, hi in pads):
        return "symmetric, torch's padding=p"
    if all(hi >= lo for lo, hi in pads):
        return "the extra one after: TensorFlow/Keras/lax 'SAME', torch padding='same'"
    return "the extra one before"


def other_pads(win, strides, dilation, n_sizes, k_sizes, *, pool: bool):
    """Every ``(lo, hi)`` per axis other than ``win``'s pads that keeps the output sizes."""
    for s, d, pads in _geometries(k_sizes, n_sizes, win.out_sizes, pool=pool, limit=2000):
        if s == tuple(strides) and d == tuple(dilation) and pads != tuple(win.pads):
            yield pads


def padding_convention(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The reference's convolution re-run with other zero pads before and after each spatial
    axis (the same output size) reproduces the candidate: "same" with the extra one on the
    other side, or a symmetric ``k // 2`` for a strided "same"."""
    fitted = fit_unit(ev, unit, "conv")
    if fitted is None:
        return None
    conv = fitted.main
    x = fitted.last(unit.input_ref)
    win = conv.window(x.shape[1:])
    for pads in other_pads(win, win.strides, win.dilation, x.shape[1:-1], win.kernel, pool=False):
        alternative = fitted.with_main(replace(conv, padding=pads))
        confirmed = confirm(ev, unit, fitted, alternative, ("kernel", "bias"))
        if confirmed.confirmed:
            return Finding(
                f"the reference pads (lo, hi) = {_pads_words(win.pads)} per spatial axis "
                f"({_side_words(win.pads)}), the candidate {_pads_words(pads)} "
                f"({_side_words(pads)}); the reference's convolution re-run with the "
                f"candidate's pads {drop(before, confirmed.residual)}. Give the port explicit "
                "pads (torch F.pad, Keras ZeroPadding2D with padding='valid')",
                confirmed.residual,
                before,
            )
    return None


# -- pool-padding -------------------------------------------------------------------------------


def _pool_words(pool, pads) -> str:
    words = f"pads {_pads_words(pads)}"
    if isinstance(pool, AvgPool):
        words += ", padding counted" if pool.count_include_pad else ", padding not counted"
    return words


def pool_padding(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The reference's pooling re-run with its padding counted or not (an average) or with
    other pads (the same output size) reproduces the candidate."""
    fitted = fit_unit(ev, unit, "pool")
    if fitted is None:
        return None
    pool = fitted.main
    x = fitted.last(unit.input_ref)
    win = pool.window(x.shape[1:])
    options = [
        tuple(win.pads),
        *other_pads(win, win.strides, (1,) * len(win.kernel), x.shape[1:-1], win.kernel, pool=True),
    ]
    counts = (True, False) if isinstance(pool, AvgPool) else (None,)
    for pads, count in itertools.product(options, counts):
        if pads == tuple(win.pads) and count in (None, getattr(pool, "count_include_pad", None)):
            continue
        other = replace(pool, padding=pads)
        if count is not None:
            other = replace(other, count_include_pad=count)
        confirmed = confirm(ev, unit, fitted, fitted.with_main(other), ())
        if confirmed.confirmed:
            return Finding(
                f"the reference's {pool.kind} {_pool_words(pool, win.pads)}, the candidate's "
                f"{_pool_words(other, pads)}; the reference's pooling re-run so "
                f"{drop(before, confirmed.residual)}{_pool_fix(pool)}",
                confirmed.residual,
                before,
            )
    return None


def _pool_fix(pool) -> str:
    if isinstance(pool, AvgPool):
        return (
            ". torch's AvgPool count_include_pad=True by default, Keras and TF 'same' average "
            "over the real cells only"
        )
    return ". Keras and TF 'same' pad the extra one after, torch padding=p both sides"


# -- norm-axis ------------------------------------------------------------------------------------


def _interleaved(groups: int, channels: int) -> np.ndarray:
    """The channel order that makes interleaved groups (channel ``c`` in group ``c % G``)
    contiguous."""
    return np.array([c for g in range(groups) for c in range(g, channels, groups)])


def _norm_alternatives(fitted: Fitted, x: np.ndarray):
    """``(words, alternative Fitted, how values map)`` for statistics over another axis."""
    main, channels = fitted.main, x.shape[-1]
    for axis in range(1, x.ndim - 1):
        if x.shape[axis] == channels:
            yield f"axis {axis} of the channels-last values (size {channels})", axis, None
    if isinstance(main, GroupNorm) and 1 < main.groups < channels:
        yield (
            f"interleaved groups (channel c in group c % {main.groups}) instead of contiguous "
            f"ones (c // {channels // main.groups})",
            None,
            _interleaved(main.groups, channels),
        )


def _norm_check(ev, unit, fitted: Fitted, axis, order) -> Check:
    """The confirmation rule for the reference's norm with statistics over ``axis`` (its
    weights applied along it) or on its channels reordered by ``order``."""
    x = fitted.last(unit.input_ref)
    g = fitted.last(unit.grad_cand)
    weights = dict(fitted.weights)
    if order is not None:
        x, g = x[..., order], g[..., order]
        weights = {k: v[order] for k, v in weights.items()}
    else:
        x, g = np.swapaxes(x, axis, -1), np.swapaxes(g, axis, -1)
    try:
        out, grads = run_unit_grads(fitted.layers, weights, x, g)
        own_out, own_grads = _run(fitted, unit)
    except (XgradError, ValueError, KeyError, IndexError):
        return Check(np.inf, np.inf, 0.0, ev.tol, False)
    if order is not None:
        back = np.argsort(order)
        out = out[..., back]
        grads = {k: v[back] for k, v in grads.items()}
    else:
        out = np.swapaxes(out, axis, -1)
    grads = {fitted.names.get(k, k): v for k, v in grads.items()}
    names = [
        k
        for k in ("scale", "bias", *fitted.names.values())
        if k in unit.dweights_cand and k in grads and k in own_grads
    ]
    names = list(dict.fromkeys(names))
    return check(
        ev,
        [unit.output_cand, *(unit.dweights_cand[k] for k in names)],
        [fitted.back(out), *(grads[k] for k in names)],
        [own_out, *(own_grads[k] for k in names)],
        reference=unit.output_ref,
    )


def norm_axis(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The reference's BatchNorm or GroupNorm re-run with its statistics over another axis of
    the channels' size, or with interleaved groups, reproduces the candidate."""
    fitted = fit_unit(ev, unit, "norm")
    if fitted is None or unit.input_ref.ndim < 3:
        return None
    if fitted.order is not None:  # the reference's groups interleaved: try contiguous ones
        return _contiguous(ev, unit, fitted, before)
    x = fitted.last(unit.input_ref)
    for words, axis, order in _norm_alternatives(fitted, x):
        confirmed = _norm_check(ev, unit, fitted, axis, order)
        if confirmed.confirmed:
            return Finding(
                f"the reference's {fitted.main.kind} takes its statistics per channel (the "
                f"last axis of channels-last values), the candidate's over {words}; re-run so "
                f"{drop(before, confirmed.residual)}. torch's BatchNorm1d/2d normalise axis "
                "1, Keras' and Flax's the last: BatchNorm1d on (N, L, C) normalises L",
                confirmed.residual,
                before,
            )
    return None


def _contiguous(ev: Evidence, unit: UnitEvidence, fitted: Fitted, before: float):
    """The reference's GroupNorm of interleaved groups re-run with contiguous ones."""
    back = np.argsort(fitted.order)
    weights = {k: v[back] for k, v in fitted.weights.items()}
    contiguous = replace(fitted, weights=weights, order=None)
    confirmed = confirm(ev, unit, fitted, contiguous, tuple(fitted.names.values()))
    if not confirmed.confirmed:
        return None
    groups, channels = fitted.main.groups, len(fitted.order)
    return Finding(
        f"the reference's groupnorm takes interleaved groups (channel c in group c % {groups}),"
        f" the candidate's contiguous ones (c // {channels // groups}: torch, Keras and Flax "
        f"GroupNorm); re-run so {drop(before, confirmed.residual)}. A hand-written GroupNorm's "
        "view(N, C // G, G, ...) interleaves; view(N, G, C // G, ...) is the frameworks' own",
        confirmed.residual,
        before,
    )


# -- channel-order -------------------------------------------------------------------------------


def _channel_counts(ev: Evidence, unit: UnitEvidence, features: int) -> list[int]:
    """Channel counts to try for features flattened before ``unit``: those of the spatial
    values before it (axis 1 and last), then every other divisor of ``features``."""
    seen = []
    for other in ev.units:
        if other is unit:
            break
        if other.output_ref.ndim >= 3:
            seen += [other.output_ref.shape[1], other.output_ref.shape[-1]]
    if ev.x.ndim >= 3:
        seen += [ev.x.shape[1], ev.x.shape[-1]]
    divisors = [c for c in range(2, features) if features % c == 0]
    return [c for c in dict.fromkeys([*reversed(seen), *divisors]) if c in divisors]


def _regroup(a: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """``a``'s rows read as ``grid`` in C order, transposed: ``(C, S)`` rows as ``(S, C)``."""
    rows = a.reshape(*grid, *a.shape[1:])
    return np.swapaxes(rows, 0, 1).reshape(a.shape)


def channel_order(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """A Dense after a flatten of a spatial activation: the reference's layer re-run with its
    kernel's rows regrouped between ``(C, S)`` and ``(S, C)`` order reproduces the candidate
    (one side flattens channels-first, the other channels-last, and the rows were not
    reordered)."""
    main = unit.main_ref
    kernel = unit.weights_ref.get("kernel")
    if not isinstance(main, Dense) or kernel is None or unit.input_ref.ndim != 2:
        return None
    if ev.x.ndim < 3 and not any(u.output_ref.ndim >= 3 for u in ev.units):
        return None
    features = kernel.shape[0]
    fitted = Fitted(list(unit.layers_ref), dict(unit.weights_ref))
    for channels in _channel_counts(ev, unit, features):
        spatial = features // channels
        words = (
            f"the candidate's rows are the reference's regrouped between (C, S) = "
            f"({channels}, {spatial}) and (S, C) = ({spatial}, {channels}) order (one side "
            "flattens channels first, the other channels last)"
        )
        for grid in ((channels, spatial), (spatial, channels)):
            other = {**fitted.weights, "kernel": _regroup(kernel, grid)}
            confirmed = confirm(ev, unit, fitted, replace(fitted, weights=other), ("bias",))
            if confirmed.confirmed:
                return Finding(
                    f"{unit.path} reads {features} features flattened from {channels} channels "
                    f"at {spatial} positions; {words}: the reference's layer "
                    f"re-run with its kernel's rows so regrouped "
                    f"{drop(before, confirmed.residual)}. torch flattens (C, H, W), Keras and "
                    "Flax (H, W, C): reorder the rows when porting, or permute to channels-first "
                    "before flattening",
                    confirmed.residual,
                    before,
                )
    return None


CAUSES = (
    Cause(
        "conv-kernel-layout",
        "forward",
        (),
        "a conv kernel read another way: spatial axes flipped (true convolution), kh/kw "
        "swapped, (out, in) as (in, out), or torch's (out, in, kh, kw) reshaped, not transposed",
        conv_kernel_layout,
    ),
    Cause(
        "channel-order",
        "forward",
        ("dense",),
        "a Dense after a flatten reading (C, H, W) features on one side, (H, W, C) on the "
        "other, its rows not reordered",
        channel_order,
    ),
    Cause(
        "padding-convention",
        "forward",
        (),
        "'same' padding with the extra zero on the other side, or torch's symmetric k // 2 for "
        "a strided Keras 'same' conv",
        padding_convention,
    ),
    Cause(
        "pool-padding",
        "forward",
        (),
        "average pooling counting its padding (torch's count_include_pad=True) or not (Keras "
        "'same'), or a pooling padded on other sides",
        pool_padding,
    ),
    Cause(
        "norm-axis",
        "forward",
        (),
        "BatchNorm/GroupNorm statistics over another axis (BatchNorm1d on (N, L, C) normalises "
        "L), or GroupNorm groups interleaved instead of contiguous",
        norm_axis,
    ),
)


def flatten_between(ev: Evidence, first) -> list | None:
    """The diagnosis of a first divergence in the code between two modules (``first``, a
    report's divergence with ``between``) where that code flattens a spatial activation and
    the module after it is a Dense: ``channel-order`` at that Dense when its re-run with its
    rows regrouped reproduces the candidate; else ``None``."""
    from xgrad.diagnosis.records import Diagnosis

    after = (first.between or {}).get("reference", (None, None))[1]
    at = next((i for i, u in enumerate(ev.units) if u.path == after), None)
    unit = None if at is None else ev.units[at]
    # Keras' convnet flattens, then drops out: walk past weight-free units on the vectors
    while (
        unit is not None
        and not unit.weights_ref
        and unit.input_ref.ndim == 2
        and at + 1 < len(ev.units)
    ):
        at += 1
        unit = ev.units[at]
    if unit is None or not isinstance(unit.main_ref, Dense) or unit.input_ref.ndim != 2:
        return None
    before = rel(unit.output_cand, unit.output_ref)
    with np.errstate(all="ignore"):
        found = channel_order(ev, unit, before)
    if found is None:
        return None
    return [
        Diagnosis.of(
            "channel-order", found, layer=unit.path, where="forward", framework=ev.framework
        )
    ]
