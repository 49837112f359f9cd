"""``Conv``: a 1-D or 2-D convolution over channels-last examples, and the window geometry
(padding, strides, dilation) the pooling kinds share.

Layout (batch axis ``B`` excluded from shapes elsewhere; here it is the first axis)::

    x       (B, *spatial, C)                 (B, L, C) or (B, H, W, C)
    kernel  (*k, C // groups, F)             Keras / Flax HWIO order; torch stores
                                             (F, C // groups, *k)
    bias    (F,)
    y       (B, *out, F)

Padding per spatial axis is a pair ``(lo, hi)`` of zeros added before and after (see
:func:`conv_padding`: ``"valid"``, ``"same"``, an int, or explicit pairs). With ``p`` the
padded input, ``s`` the strides and ``d`` the dilation, output position ``o`` and tap ``t``
read ``p[o * s + t * d]`` on each axis, so the output length is
``(n + lo + hi - d * (k - 1) - 1) // s + 1``.

Groups: channels split into ``G`` blocks of ``cin_g = C // G``; output channel ``f`` belongs
to group ``f // (F // G)`` and reads input channels ``g * cin_g .. (g + 1) * cin_g - 1``
(torch, Keras and lax ``feature_group_count``).

Forward as a matrix product per group ("im2col"): the windows of the padded input are
gathered as columns ``cols[n, g, (t, c)]`` (``n`` runs over batch and output positions,
``t`` over the taps in row-major order, ``c`` over the group's channels) and::

    y[n, g, :] = cols[n, g, :] @ W[g]            W[g] = kernel[..., g-block of F] as (T*cin_g, F/G)
    y += bias

The VJP is the transpose of each step::

    d W[g]     = cols[:, g, :]^T @ dy[:, g, :]    (summed over batch and positions)
    d bias     = dy summed over batch and positions
    d cols     = dy[:, g, :] @ W[g]^T
    d x        = scatter-add of d cols back onto the windows they were read from
                 (one strided slice per tap), then the padding cropped off
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from xgrad.errors import SpecError
from xgrad.layers.base import AbstractLayer, Shape, Step, check_bool, check_positive_int

__all__ = [
    "Conv",
    "Window",
    "conv_padding",
    "gather_windows",
    "scatter_windows",
    "window_geometry",
]

PADDING_HELP = (
    '"valid", "same", an int p >= 0 (p zeros on both sides of every axis) or one (lo, hi) pair '
    "per spatial axis, e.g. ((1, 2), (0, 1))"
)

# -- sizes and padding ---------------------------------------------------------------------------


def check_sizes(value, what: str, *, optional: bool = False) -> int | tuple[int, ...] | None:
    """A positive int (every spatial axis) or a tuple of 1 or 2 positive ints (one per spatial
    axis), as given; ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, tuple | list):
        if len(value) not in (1, 2):
            raise SpecError(
                f"{what} must be an int or one size per spatial axis (1 or 2 of them), "
                f"got {value!r}"
            )
        return tuple(check_positive_int(v, what) for v in value)
    return check_positive_int(value, what)


def check_padding(value, what: str) -> str | int | tuple[tuple[int, int], ...]:
    """A padding in normalised form: ``"valid"`` / ``"same"`` (lower case), an int >= 0, or a
    tuple of ``(lo, hi)`` int pairs (one per spatial axis)."""
    if isinstance(value, str):
        if value.lower() not in ("valid", "same"):
            raise SpecError(f"{what} must be {PADDING_HELP}; got {value!r}")
        return value.lower()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value < 0:
            raise SpecError(f"{what} must be {PADDING_HELP}; got the negative int {value!r}")
        return int(value)
    if isinstance(value, tuple | list) and len(value) in (1, 2):
        pairs = []
        for pair in value:
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise SpecError(
                    f"{what} must be {PADDING_HELP}; got {value!r} (for p zeros on both sides "
                    "of an axis write the pair (p, p))"
                )
            if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in pair) or (
                min(pair) < 0
            ):
                raise SpecError(f"{what} pairs must hold ints >= 0, got {value!r}")
            pairs.append((int(pair[0]), int(pair[1])))
        return tuple(pairs)
    raise SpecError(f"{what} must be {PADDING_HELP}; got {value!r}")


def _per_axis(value, rank: int, what: str) -> tuple[int, ...]:
    if isinstance(value, tuple | list):
        if len(value) != rank:
            raise SpecError(
                f"{what} {tuple(value)} has {len(value)} sizes but the input has {rank} spatial "
                f"ax{'is' if rank == 1 else 'es'}; give one size per spatial axis or one int "
                "for all of them"
            )
        return tuple(int(v) for v in value)
    return (int(value),) * rank


def conv_padding(
    layer_padding, in_sizes, kernel, strides=1, dilation=1
) -> tuple[tuple[int, int], ...]:
    """The zeros added before and after each spatial axis, ``((lo, hi), ...)``.

    Args:
        layer_padding: ``"valid"`` (none), ``"same"`` (TensorFlow / Keras / lax ``"SAME"`` /
            torch ``'same'``: output length ``ceil(n / s)``, total
            ``max((ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)``, ``lo = total // 2``, the
            odd one on the right), an int ``p`` (``(p, p)`` on every axis, torch's
            ``padding=p``) or one ``(lo, hi)`` pair per axis.
        in_sizes: the input's spatial sizes ``(n,)`` or ``(h, w)``.
        kernel, strides, dilation: an int for every axis or one per axis.

    Raises:
        SpecError: a padding of another form, or sizes whose count is not the spatial rank.
    """
    rank = len(in_sizes)
    padding = check_padding(layer_padding, "padding")
    ks = _per_axis(kernel, rank, "kernel")
    ss = _per_axis(strides, rank, "strides")
    ds = _per_axis(dilation, rank, "dilation")
    if padding == "valid":
        return ((0, 0),) * rank
    if isinstance(padding, int):
        return ((padding, padding),) * rank
    if isinstance(padding, tuple):
        if len(padding) != rank:
            raise SpecError(
                f"padding {padding} has {len(padding)} (lo, hi) pairs but the input has {rank} "
                "spatial axes; give one pair per axis"
            )
        return padding
    pads = []
    for n, k, s, d in zip(in_sizes, ks, ss, ds, strict=True):
        out = -(-n // s)  # ceil(n / s)
        total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


class Window(NamedTuple):
    """The geometry of a convolution or pooling window on one input shape, per spatial axis."""

    kernel: tuple[int, ...]  # taps
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]  # (lo, hi) zeros before / after
    out_sizes: tuple[int, ...]


def window_geometry(
    what: str, input_shape: Shape, kernel, strides, dilation, padding, *, kernel_name="kernel"
) -> Window:
    """Resolve a layer's window on examples ``input_shape`` (``(n, C)`` or ``(h, w, C)``).

    Raises:
        SpecError: an input of another rank, sizes whose count is not its spatial rank, or an
            output length below 1 (naming ``what``, the axis and the fix).
    """
    shape = tuple(input_shape)
    if len(shape) not in (2, 3):
        raise SpecError(
            f"{what} takes channels-last examples (length, channels) or (height, width, "
            f"channels), got {shape}; put a channel axis last (e.g. (28, 28, 1))"
        )
    sizes, rank = shape[:-1], len(shape) - 1
    ks = _per_axis(kernel, rank, f"{what} {kernel_name}")
    ss = _per_axis(strides, rank, f"{what} strides")
    ds = _per_axis(dilation, rank, f"{what} dilation")
    try:
        pads = conv_padding(padding, sizes, ks, ss, ds)
    except SpecError as exc:
        raise SpecError(f"{what} {exc}") from None
    outs = []
    for axis, (n, k, s, d, (lo, hi)) in enumerate(zip(sizes, ks, ss, ds, pads, strict=True)):
        out = (n + lo + hi - d * (k - 1) - 1) // s + 1
        if out < 1:
            raise SpecError(
                f"{what} on input {shape}: spatial axis {axis} (size {n}, padded {n + lo + hi}) "
                f"is shorter than the dilated {kernel_name} {d * (k - 1) + 1}, so the output "
                'would be empty; use padding="same", a smaller kernel or dilation, or a larger '
                "input"
            )
        outs.append(out)
    return Window(ks, ss, ds, pads, tuple(outs))


# -- windows as columns, and back ------------------------------------------------------------


def pad_spatial(x: np.ndarray, pads, value: float = 0.0) -> np.ndarray:
    """``x (B, *spatial, C)`` with ``pads`` added around each spatial axis, filled with
    ``value``."""
    return np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=value)


def gather_windows(xp: np.ndarray, win: Window) -> np.ndarray:
    """The windows of a padded ``xp (B, *padded, C)``: ``(B, *out, C, *kernel)``, tap ``t``
    of output ``o`` being ``xp[o * s + t * d]`` on each axis (a strided view, no copy)."""
    rank = len(win.kernel)
    span = tuple(d * (k - 1) + 1 for k, d in zip(win.kernel, win.dilation, strict=True))
    view = np.lib.stride_tricks.sliding_window_view(xp, span, axis=tuple(range(1, rank + 1)))
    index = (
        slice(None),
        *(slice(None, s * (o - 1) + 1, s) for s, o in zip(win.strides, win.out_sizes, strict=True)),
        slice(None),
        *(slice(None, None, d) for d in win.dilation),
    )
    return view[index]


def scatter_windows(dwin: np.ndarray, padded: Shape, win: Window) -> np.ndarray:
    """The transpose of :func:`gather_windows` followed by the crop of the padding:
    ``dwin (B, *out, C, *kernel)`` summed back onto the cells each tap read, returning
    ``(B, *spatial, C)``. One strided slice per tap (the only Python loop)."""
    rank = len(win.kernel)
    acc = np.zeros(padded, dtype=dwin.dtype)
    for tap in np.ndindex(*win.kernel):
        cells = tuple(
            slice(t * d, t * d + s * (o - 1) + 1, s)
            for t, d, s, o in zip(tap, win.dilation, win.strides, win.out_sizes, strict=True)
        )
        acc[(slice(None), *cells, slice(None))] += dwin[(Ellipsis, *tap)]
    sizes = padded[1 : rank + 1]
    crop = tuple(slice(lo, n - hi) for (lo, hi), n in zip(win.pads, sizes, strict=True))
    return acc[(slice(None), *crop, slice(None))]


# -- the layer -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conv(AbstractLayer):
    """A 1-D or 2-D convolution (cross-correlation, as every framework computes it) on
    channels-last examples ``(length, C)`` or ``(height, width, C)``.

    Args:
        features: output channels ``F``.
        kernel: taps per spatial axis: an int for every axis or one per axis.
        strides: an int or one per axis.
        padding: ``"valid"``, ``"same"``, an int or one ``(lo, hi)`` pair per axis (see
            :func:`conv_padding`); stored lower-cased / as int pairs.
        dilation: an int or one per axis.
        groups: channel groups ``G``; it must divide ``features`` and the input channels.
        use_bias: whether there is a ``bias (F,)``.

    Weights: ``kernel (*kernel, C // groups, F)``, ``bias (F,)``. No activation (compose
    with :class:`~xgrad.Activation`).

    Raises:
        SpecError: a size that is not a positive integer, an unknown padding, ``groups`` not
            dividing ``features`` (here) or the input channels, sizes whose count is not the
            input's spatial rank, or an empty output (when the input shape is known).

    Example:
        >>> Conv(8, 3, groups=2).weight_shapes((28, 28, 4))["kernel"]
        (3, 3, 2, 8)
    """

    kind = "conv"

    features: int
    kernel: int | tuple[int, ...]
    strides: int | tuple[int, ...] = 1
    padding: str | int | tuple = "valid"
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    use_bias: bool = True

    def __post_init__(self) -> None:
        put = object.__setattr__
        put(self, "features", check_positive_int(self.features, "Conv features"))
        put(self, "kernel", check_sizes(self.kernel, "Conv kernel"))
        put(self, "strides", check_sizes(self.strides, "Conv strides"))
        put(self, "padding", check_padding(self.padding, "Conv padding"))
        put(self, "dilation", check_sizes(self.dilation, "Conv dilation"))
        put(self, "groups", check_positive_int(self.groups, "Conv groups"))
        put(self, "use_bias", check_bool(self.use_bias, "Conv use_bias"))
        if self.features % self.groups:
            raise SpecError(
                f"Conv groups={self.groups} must divide features={self.features}; use a "
                "number of groups that divides both the features and the input channels"
            )

    def window(self, input_shape: Shape) -> Window:
        """The resolved geometry on examples ``input_shape`` (kernel, strides, dilation,
        ``(lo, hi)`` pads and output sizes per spatial axis)."""
        win = window_geometry(
            "Conv", input_shape, self.kernel, self.strides, self.dilation, self.padding
        )
        channels = input_shape[-1]
        if channels % self.groups:
            raise SpecError(
                f"Conv groups={self.groups} must divide the input channels {channels} (input "
                f"{tuple(input_shape)}); use a number of groups that divides both {channels} "
                f"and features={self.features}"
            )
        return win

    def param_names(self) -> tuple[str, ...]:
        return ("kernel", "bias") if self.use_bias else ("kernel",)

    def output_shape(self, input_shape: Shape) -> Shape:
        return (*self.window(input_shape).out_sizes, self.features)

    def weight_shapes(self, input_shape: Shape) -> dict[str, Shape]:
        win = self.window(input_shape)
        shapes = {"kernel": (*win.kernel, input_shape[-1] // self.groups, self.features)}
        if self.use_bias:
            shapes["bias"] = (self.features,)
        return shapes

    def init(self, rng, input_shape, *, bias_scale=0.1):
        """Glorot-uniform kernel (fans ``taps * C / G`` and ``taps * F``, as Keras counts
        them); bias uniform in [-bias_scale, bias_scale]."""
        shape = self.weight_shapes(input_shape)["kernel"]
        taps = math.prod(shape[:-2])
        limit = math.sqrt(6.0 / (taps * shape[-2] + taps * shape[-1]))
        out = {"kernel": rng.uniform(-limit, limit, size=shape)}
        if self.use_bias:
            out["bias"] = rng.uniform(-bias_scale, bias_scale, size=(self.features,))
        return out

    def describe(self) -> str:
        parts = [f"{self.features}", f"k={self.kernel}"]
        parts += [f"{n}={v}" for n, v in (("s", self.strides), ("d", self.dilation)) if v != 1]
        parts += [] if self.padding == "valid" else [f"pad={self.padding}"]
        parts += [] if self.groups == 1 else [f"groups={self.groups}"]
        parts += [] if self.use_bias else ["no bias"]
        return f"conv({', '.join(parts)})"

    # -- math --------------------------------------------------------------------------------

    def _grouped_kernel(self, kernel: np.ndarray) -> np.ndarray:
        """``kernel (*k, cin_g, F)`` as ``(G, T * cin_g, F / G)``, rows in (tap, channel)
        order."""
        *_, cin_g, f = kernel.shape
        g = self.groups
        k = kernel.reshape(-1, cin_g, g, f // g)  # (T, cin_g, G, F/G)
        return k.transpose(2, 0, 1, 3).reshape(g, -1, f // g)

    def _columns(self, windows: np.ndarray) -> np.ndarray:
        """``windows (B, *out, C, *k)`` as ``cols (N, G, T * cin_g)``, ``N = B * prod(out)``."""
        rank = (windows.ndim - 2) // 2
        c = windows.shape[rank + 1]
        w = windows.reshape(*windows.shape[: rank + 1], self.groups, c // self.groups, -1)
        w = np.moveaxis(w, -1, -2)  # (B, *out, G, T, cin_g)
        return w.reshape(-1, self.groups, w.shape[-2] * w.shape[-1])

    def forward(self, weights, x, *, path):
        win = self.window(x.shape[1:])
        xp = pad_spatial(x, win.pads)
        cols = self._columns(gather_windows(xp, win))  # (N, G, T * cin_g)
        kernel = weights[f"{path}.kernel"]
        y = np.matmul(cols.transpose(1, 0, 2), self._grouped_kernel(kernel))  # (G, N, F/G)
        y = y.transpose(1, 0, 2).reshape(x.shape[0], *win.out_sizes, self.features)
        if self.use_bias:
            y = y + weights[f"{path}.bias"]
        return Step(path, self, x, y, cache=(win, xp.shape, cols))

    def vjp(self, weights, step, grad_output, grads, output_grads=None):
        win, padded, cols = step.cache
        kernel = weights[f"{step.path}.kernel"]
        g, fg = self.groups, self.features // self.groups
        dy = grad_output.reshape(-1, g, fg).transpose(1, 0, 2)  # (G, N, F/G)
        dk = np.matmul(cols.transpose(1, 2, 0), dy)  # (G, T * cin_g, F/G)
        cin_g = kernel.shape[-2]
        dk = dk.reshape(g, -1, cin_g, fg).transpose(1, 2, 0, 3)  # (T, cin_g, G, F/G)
        grads[f"{step.path}.kernel"] = dk.reshape(kernel.shape)
        if self.use_bias:
            grads[f"{step.path}.bias"] = grad_output.reshape(-1, self.features).sum(axis=0)
        dcols = np.matmul(dy, self._grouped_kernel(kernel).transpose(0, 2, 1))  # (G, N, T*cin_g)
        b = grad_output.shape[0]
        taps = win.kernel
        dwin = dcols.reshape(g, b, *win.out_sizes, math.prod(taps), cin_g)
        dwin = np.moveaxis(dwin, 0, -3)  # (B, *out, G, T, cin_g)
        dwin = np.moveaxis(dwin, -2, -1).reshape(b, *win.out_sizes, g * cin_g, *taps)
        return scatter_windows(dwin, padded, win)
