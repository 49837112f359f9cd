"""Convolutions, pooling and group norms in a JAX function's jaxpr: where they are, then what
they compute.

:mod:`~xgrad.frameworks.jax.jaxpr` cuts the stream into segments; this module reads three
kinds of segment it would otherwise refuse or misread:

* **conv**: a ``conv_general_dilated`` of the stream with a parameter as its kernel, with any
  ``dimension_numbers`` (``NHWC``/``HWIO`` as xgrad, Flax and Keras write it; ``NCHW``/``OIHW``
  as a port of PyTorch code does). The kernel's axes are a layout
  (:data:`~xgrad.frameworks.kinds.Layout`, ``OIHW`` is ``(3, 2, 0, 1)``), composed with any
  ``jnp.transpose`` of the parameter on its way. ``jnp.transpose`` of the stream right before
  and after it (NHWC -> NCHW -> conv -> NHWC) belongs to the layer, and so does the bias added
  after it. ``lhs_dilation`` (a transposed convolution) and ``batch_group_count`` are refused.
* **maxpool** / **avgpool**: ``reduce_window_max`` or ``reduce_window_sum`` of the stream
  (``lax.reduce_window`` from ``-inf`` / ``0``, Flax's ``max_pool`` / ``avg_pool``), an average
  pool's division by the window size or by the count of real cells included, and the
  transposes around it.
* **groupnorm**: a normalisation none of LayerNorm, RMSNorm or BatchNorm reproduces is tried
  as a GroupNorm of each number of groups (:func:`fit_groupnorm`).

What a read layer computes is then checked numerically, as :mod:`~.blocks` does: xgrad's own
float64 layer, configured from the primitive's parameters (strides, ``(lo, hi)`` pads,
dilation, groups, window), run on the layer's recorded input (batch first, channels last)
with the read weights, must reproduce its recorded output. A layer whose values are not
channels-last (a function computing NCHW throughout, whose flatten then orders features
``(c, h, w)``) does not reproduce and is left of unknown configuration with a note that says
so: its values are still compared, and it is never named as a channels-last layer it is not.

Importing this module imports JAX.
"""

from __future__ import annotations

import numpy as np

from xgrad.errors import SpecError
from xgrad.frameworks.kinds import Layout, to_canonical
from xgrad.identify import rel
from xgrad.layers import AvgPool, Conv, GlobalAvgPool, GroupNorm, MaxPool
from xgrad.layers.conv import conv_padding

__all__ = ["KINDS", "configure", "fit_groupnorm", "read_window", "regroup"]

KINDS = ("conv", "pool")
"""The read-layer kinds made here (``pool``: a max or average pool, told apart by its op)."""

TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "bfloat16": 3e-2, "float16": 1e-2}

_PERMUTE = {"transpose", "convert_element_type", "copy", "copy_p", "reduce_precision"}
_WINDOW_OPS = {"reduce_window_max": "max", "reduce_window_sum": "sum"}

CHANNELS_FIRST_NOTE = (
    "computes a {what} none of xgrad's channels-last configurations reproduces on its "
    "recorded values (closest relative error {err:.2g}); a {what} on channels-first (NCHW) "
    "values is read only between jnp.transpose calls to and from channels-last; its values "
    "are still compared"
)


# -- where they are -----------------------------------------------------------------------------


def _permutes_only(analyser, seg: list[int]) -> bool:
    return bool(seg) and all(analyser.g.nodes[k].name in _PERMUTE for k in seg)


def _entry(analyser, a: int, last) -> int:
    """The value a layer starting at ``a`` reads, moved back past transposes of the stream
    (NHWC -> NCHW before a channels-first conv) to the previous layer's end or the input."""
    stop = {analyser.x} | ({last.end} if last is not None else set())
    v = a
    while v not in stop and v in analyser.producer:
        node = analyser.g.nodes[analyser.producer[v]]
        ins = [i for i in node.ins if isinstance(i, int) and i in analyser.stream]
        if node.name not in _PERMUTE or len(ins) != 1:
            return a
        v = ins[0]
    return v if v in stop else a


def _kernel_layout(analyser, v: int, rhs_spec) -> tuple[int, Layout | None]:
    """``(leaf, layout)`` of a conv's kernel operand ``v``: the leaf, through transposes, and
    the layout it stores the canonical ``(*k, C/G, F)`` kernel in."""
    rank = len(rhs_spec) - 2
    at_conv = [0] * len(rhs_spec)  # axis j of the conv's operand holds canonical axis at_conv[j]
    at_conv[rhs_spec[0]], at_conv[rhs_spec[1]] = rank + 1, rank
    for i, axis in enumerate(rhs_spec[2:]):
        at_conv[axis] = i
    layout = list(at_conv)
    leaves = analyser.g.inputs[: analyser.n]
    while v not in leaves:
        node = analyser.g.nodes[analyser.producer[v]]
        if node.name == "transpose":
            perm = node.eqn.params["permutation"]  # out axis j = in axis perm[j]
            inner = [0] * len(perm)
            for j, p in enumerate(perm):
                inner[p] = layout[j]
            layout = inner
        elif node.name not in _PERMUTE:
            analyser.fail(
                f"parameter {analyser.names[analyser.origin[v][0]]!r} reaches a convolution "
                f"through '{node.name}'; xgrad reads a kernel used as it is stored or through "
                "jnp.transpose"
            )
        v = node.ins[0]
    identity = layout == list(range(len(layout)))
    return leaves.index(v), None if identity else tuple(layout)


def read_window(analyser, layers: list, d: dict, a: int, b: int, last) -> bool:
    """Read a segment as (part of) a convolution or a pool; ``False`` for any other."""
    seg = d["seg"]
    if d["convs"]:
        if len(d["convs"]) > 1 or d["dots"] or d["scale"] or d["sub"] or d["other"]:
            names = [analyser.names[c[1]] for c in d["convs"]]
            analyser.fail(f"parameters {names} are combined in one step xgrad cannot read")
        k, _, _, v = d["convs"][0]
        params = analyser.g.nodes[k].eqn.params
        if any(x != 1 for x in params["lhs_dilation"]) or params["batch_group_count"] != 1:
            analyser.fail(
                f"parameter {analyser.names[d['convs'][0][1]]!r} is used by a convolution "
                "with lhs_dilation (a transposed convolution) or batch_group_count, which "
                "xgrad's Conv does not compute"
            )
        leaf, layout = _kernel_layout(analyser, v, params["dimension_numbers"].rhs_spec)
        start = _entry(analyser, a, last)
        op = ("conv", params, analyser.g.shape(analyser.g.nodes[k].ins[0]))
        layer = analyser.new("conv", start, b, {"kernel": leaf}, pre=b, op=op, layout=layout)
        if len(d["shift"]) == 1:
            layer.leaves["bias"] = d["shift"][0]
        elif d["shift"]:
            analyser.fail(f"a convolution adds {len(d['shift'])} parameters; xgrad reads one bias")
        layers.append(layer)
        return True
    windows = [k for k in seg if analyser.g.nodes[k].name in _WINDOW_OPS]
    if windows:
        if len(windows) > 1 or d["dots"] or d["shift"] or d["scale"] or d["sub"] or d["other"]:
            analyser.fail(
                "a pooling window (lax.reduce_window) is combined with other work in one step "
                "xgrad cannot read; xgrad reads a max or average pool on its own"
            )
        node = analyser.g.nodes[windows[0]]
        op = (_WINDOW_OPS[node.name], node.eqn.params, analyser.g.shape(node.ins[0]))
        layer = analyser.new("pool", _entry(analyser, a, last), b, {}, op=op)
        layers.append(layer)
        return True
    has_params = d["dots"] or d["shift"] or d["scale"] or d["sub"] or d["static"] or d["other"]
    after = any(layer.kind in KINDS for layer in layers)  # a conv or pool before it
    if after and not has_params and not d["random"] and len(analyser.g.shape(b)) == 2:
        if d["reshape"] and not d["reduce_features"]:
            layers.append(analyser.new("flatten", a, b))  # features (h, w, c) into one axis
            return True
        if d["reduce_features"] and not d["reduce_batch"]:
            layers.append(analyser.new("pool", a, b, {}))  # a mean over the spatial axes
            return True
    if last is None or last.kind not in KINDS:
        return False
    only_shift = len(d["shift"]) == 1 and not (d["scale"] or d["sub"] or d["static"])
    if last.kind == "conv" and only_shift and "bias" not in last.leaves and not d["dots"]:
        last.leaves["bias"] = d["shift"][0]  # the bias, added after the conv (or its transpose)
        last.end = last.pre = b
        return True
    if has_params or d["random"] or d["reduce_features"] or d["reduce_batch"]:
        return False
    if _permutes_only(analyser, seg):
        last.end = b  # the transpose back to channels-last
        if last.kind == "conv":
            last.pre = b
        return True
    if _divides(analyser, last, seg, a, b):
        last.end = b  # an average pool's division (jnp.mean's, after its sum)
        return True
    return False


def _divides(analyser, last, seg: list[int], a: int, b: int) -> bool:
    """``seg`` divides (or multiplies) the values of an average pool or a mean over the
    spatial axes by constants, their shape unchanged: the end of that pool. A reshape (the
    grouping of a GroupNorm after it) or a max pool's scaling is not."""
    if last.kind != "pool" or (last.op is not None and last.op[0] != "sum"):
        return False
    names = [analyser.g.nodes[k].name for k in seg]
    scaled = any(n in ("div", "mul") for n in names)
    only = all(n in ("div", "mul", "broadcast_in_dim", "convert_element_type") for n in names)
    return scaled and only and analyser.g.shape(a) == analyser.g.shape(b)


def regroup(analyser, layer, b: int) -> bool:
    """Extend ``layer`` (a normalisation's statistics so far) over ``b`` where ``b`` reshapes
    its values back to the shape they had before a reshape into groups ``(..., G, C/G)`` (a
    GroupNorm's): the layer then starts before the first reshape and ends after the second.
    ``False`` (nothing changed) for any other segment."""
    start = analyser.g.shape(layer.start)
    node = (
        analyser.g.nodes[analyser.producer[layer.start]]
        if layer.start in analyser.producer
        else None
    )
    if node is None or node.name != "reshape" or analyser.g.shape(b) == start:
        return False
    before = node.ins[0]
    grouped = start[:-2] == analyser.g.shape(before)[:-1]
    if not grouped or analyser.g.shape(b) != analyser.g.shape(before):
        return False
    layer.start, layer.end = before, b
    return True


# -- what they compute --------------------------------------------------------------------------


def _matches(config, local: dict, x, y) -> float:
    weights = {f"w.{k}": v for k, v in local.items()}
    try:
        out = config.forward(weights, x, path="w").output
    except (SpecError, ValueError, IndexError):
        return np.inf
    return rel(out, y) if out.shape == y.shape else np.inf


def _one(sizes: tuple[int, ...]) -> int | tuple[int, ...]:
    """One int for sizes equal on every axis, as a spec is usually written."""
    return sizes[0] if len(set(sizes)) == 1 else sizes


def _padding(pads, in_sizes, kernel, strides, dilation):
    """``"valid"`` / ``"same"`` where the pairs are those, an int ``p`` where every pair is
    ``(p, p)`` (torch's ``padding=p``), else the pairs."""
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if all(p == (0, 0) for p in pads):
        return "valid"
    try:
        if conv_padding("same", in_sizes, kernel, strides, dilation) == pads:
            return "same"
    except SpecError:
        pass
    return pads[0][0] if len(set(pads)) == 1 and pads[0][0] == pads[0][1] else pads


def configure(layer, arrays: list, values: dict, in_shape: tuple, dtype: str):
    """``(config or None, kind, output shape, note, layouts)`` of a read conv or pool, as
    :func:`~xgrad.frameworks.jax.configs.configure` returns for the other kinds."""
    x, y = values[layer.start][:4], values[layer.end][:4]
    out_shape = tuple(values[layer.end].shape[1:])
    tol = TOLERANCE.get(dtype, 1e-4)
    if layer.op is None:  # a mean over the spatial axes
        err = _matches(GlobalAvgPool(), {}, x, y)
        if err <= tol:
            return GlobalAvgPool(), "global_avgpool", out_shape, None, {}
        note = CHANNELS_FIRST_NOTE.format(what="mean over the spatial axes", err=err)
        return None, "global_avgpool", out_shape, note, {}
    op, params, operand = layer.op
    if op == "conv":
        layouts = {"kernel": layer.layout} if layer.layout else {}
        local = {"kernel": to_canonical(np.asarray(arrays[layer.leaves["kernel"]]), layer.layout)}
        if "bias" in layer.leaves:
            local["bias"] = np.asarray(arrays[layer.leaves["bias"]]).reshape(-1)
        kernel = local["kernel"].shape[:-2]
        spec = params["dimension_numbers"].lhs_spec
        sizes = [operand[i] for i in spec[2:]]
        strides, dilation = tuple(params["window_strides"]), tuple(params["rhs_dilation"])
        try:
            config = Conv(
                local["kernel"].shape[-1],
                _one(kernel),
                strides=_one(strides),
                padding=_padding(params["padding"], sizes, kernel, strides, dilation),
                dilation=_one(dilation),
                groups=params["feature_group_count"],
                use_bias="bias" in local,
            )
        except SpecError:
            config = None
        err = np.inf if config is None else _matches(config, local, x, y)
        if err <= tol:
            return config, "conv", out_shape, None, layouts
        note = CHANNELS_FIRST_NOTE.format(what="convolution", err=err)
        return None, "conv", out_shape, note, layouts
    dims = params["window_dimensions"]
    spatial = slice(1, len(dims) - 1)
    pool, strides = tuple(dims[spatial]), tuple(params["window_strides"][spatial])
    pads = tuple(tuple(p) for p in params["padding"][spatial])
    padding = _padding(pads, x.shape[1:-1], pool, strides, 1)
    kind = "maxpool" if op == "max" else "avgpool"
    candidates = []
    try:
        sizes = (_one(pool), _one(strides), padding)
        if op == "max":
            candidates = [MaxPool(*sizes)]
        else:
            candidates = [AvgPool(*sizes, count_include_pad=c) for c in (False, True)]
    except SpecError:
        pass
    best = np.inf
    for config in candidates:
        err = _matches(config, {}, x, y)
        best = min(best, err)
        if err <= tol:
            return config, kind, out_shape, None, {}
    note = CHANNELS_FIRST_NOTE.format(what="pooling window", err=best)
    return None, kind, out_shape, note, {}


def _as_written(value: float) -> float:
    """An epsilon read from float32 code (9.99999974e-06) as it was written (1e-05), as
    :func:`xgrad.identify.fit_norm` reads one."""
    short = float(str(np.float32(value)))
    return short if abs(short - value) <= 1e-6 * abs(value) else float(value)


def fit_groupnorm(x, y, local: dict, constants, dtype: str):
    """The :class:`~xgrad.layers.GroupNorm` (groups, epsilon, scale, bias) whose float64
    forward reproduces ``y`` from ``x`` (batch first, channels last) with the read
    ``local`` weights, trying every number of groups from 2 to ``channels - 1`` that divides
    the channels (1 is a LayerNorm over the whole example, ``channels`` an instance norm;
    those are read by the callers' own fits) and each epsilon among ``constants`` and the
    frameworks' defaults; ``None`` when none does."""
    tol = TOLERANCE.get(dtype, 1e-4)
    x, y = np.asarray(x)[:4], np.asarray(y)[:4]
    if x.ndim < 2 or x.shape != y.shape:
        return None
    channels = x.shape[-1]
    eps_list = [_as_written(c) for c in constants if 0 < c < 0.1] + [1e-5, 1e-6, 1e-3]
    extra = {k: v.reshape(-1) for k, v in local.items() if k in ("scale", "bias")}
    for groups in range(2, channels):
        if channels % groups:
            continue
        for eps in dict.fromkeys(eps_list):
            config = GroupNorm(
                groups, epsilon=eps, use_scale="scale" in extra, use_bias="bias" in extra
            )
            if _matches(config, extra, x, y) <= tol:
                return config
    return None
