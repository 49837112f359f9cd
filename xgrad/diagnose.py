"""Diagnosis: name the cause of a discrepancy by testing each known cause.

Nothing here is guessed from names. Each hypothesis re-evaluates the diverging layer (from
the values captured on each side) or the loss gradient under the alternative convention.
It is *confirmed* only when the discrepancy then drops to rounding level (``residual <=
tolerance``). When no hypothesis is confirmed, the answer is ``unexplained``.

Cause ids: ``gelu-approximation``, ``leaky-relu-slope``, ``activation-mismatch``,
``kink-convention``, ``kink-rounding``, ``crossentropy-clipping``, ``loss-reduction``,
``matmul-precision``, ``dtype``, ``weight-layout``, ``unexplained``. See ``docs/pitfalls.md``.

Everything here is NumPy in float64; no framework is imported.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from xgrad.activations import ACTIVATIONS, SELU_ALPHA, SELU_SCALE, get_activation
from xgrad.losses import EPSILON

__all__ = ["CAUSES", "Diagnosis", "Evidence", "LayerEvidence", "diagnose", "round_mantissa"]

CAUSES = (
    "gelu-approximation",
    "leaky-relu-slope",
    "activation-mismatch",
    "kink-convention",
    "kink-rounding",
    "crossentropy-clipping",
    "loss-reduction",
    "matmul-precision",
    "dtype",
    "weight-layout",
    "unexplained",
)

_MATMUL_FORMATS = {"tf32": 10, "bf16": 7}  # mantissa bits kept in each operand
_FLOAT32_TOL = 1e-5


@dataclass(frozen=True)
class Diagnosis:
    """One tested explanation of a discrepancy.

    Attributes:
        cause: one of :data:`CAUSES`.
        layer: the layer index it concerns, or ``None`` for the model as a whole.
        detail: what was found, in words, with the before and after errors.
        confirmed: the re-evaluation under the alternative convention brought the error
            to rounding level (``False`` only for ``unexplained``).
        residual: the normwise error left after the re-evaluation (``None`` if untested).
        before: the normwise error that was to be explained.
        where: ``forward``, ``backward`` or ``None``.
        framework: the compared framework (the candidate).
    """

    cause: str
    layer: int | None
    detail: str
    confirmed: bool
    residual: float | None
    before: float | None
    where: str | None
    framework: str

    def to_dict(self) -> dict:
        out = asdict(self)
        for key in ("residual", "before"):
            value = out[key]
            if value is not None and not math.isfinite(value):
                out[key] = "inf" if value > 0 else "nan"
        return out

    def text(self, layer_label: str | None = None) -> str:
        where = f"{self.where} diverges; " if self.where else ""
        head = f"{layer_label or (f'layer {self.layer}' if self.layer is not None else 'model')}"
        verdict = "confirmed cause" if self.confirmed else "no cause confirmed"
        return f"{head} [{self.framework}]: {where}{verdict}: {self.cause}: {self.detail}"


@dataclass
class LayerEvidence:
    """What both sides computed at one aligned dense layer (float64 NumPy arrays).

    ``*_ref`` is the reference side, ``*_cand`` the candidate. ``input`` is the value
    entering the layer (``x`` for layer 0), ``act`` the activation leaving it, ``grad``
    the gradient ``dL/d act`` reaching it (``grad_cand`` may be unknown). Kernels are
    canonical ``(in, out)``; biases ``None`` for layers without one.
    """

    index: int
    label: str
    activation: str | None
    kernel_ref: np.ndarray
    bias_ref: np.ndarray | None
    kernel_cand: np.ndarray
    bias_cand: np.ndarray | None
    input_ref: np.ndarray
    input_cand: np.ndarray
    act_ref: np.ndarray
    act_cand: np.ndarray
    grad_ref: np.ndarray
    grad_cand: np.ndarray | None
    dkernel_ref: np.ndarray
    dkernel_cand: np.ndarray
    dbias_ref: np.ndarray | None
    dbias_cand: np.ndarray | None

    def z_ref(self) -> np.ndarray:
        z = self.input_ref @ self.kernel_ref
        return z if self.bias_ref is None else z + self.bias_ref

    def z_cand(self) -> np.ndarray:
        z = self.input_cand @ self.kernel_cand
        return z if self.bias_cand is None else z + self.bias_cand


@dataclass
class Evidence:
    """Everything :func:`diagnose` may re-evaluate, for one candidate against the reference."""

    framework: str
    layers: list[LayerEvidence]
    dinput_ref: np.ndarray
    dinput_cand: np.ndarray
    output_ref: np.ndarray
    output_cand: np.ndarray
    loss: str | None
    y: np.ndarray | None
    dtype: str
    dtype_ref: str
    dtype_cand: str
    tol: float
    fit_tol: float | None = None
    """The tolerance a re-evaluation must reach to confirm a cause: ``tol``, or float32's
    when the candidate computes in float32 although float64 was asked (then no
    re-evaluation can get below float32 rounding). Set by :func:`diagnose`."""


# -- helpers ------------------------------------------------------------------------------


def _rel(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = float(np.linalg.norm(b))
    num = float(np.linalg.norm(a - b))
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (round to nearest even), as a matmul
    unit does when it reads TF32 (10 bits) or bfloat16 (7 bits) operands."""
    f = np.asarray(x, dtype=np.float32)
    i = f.view(np.uint32).astype(np.uint64)
    shift = 23 - bits
    lsb = (i >> shift) & 1
    i = (i + (1 << (shift - 1)) - 1 + lsb) & ~np.uint64((1 << shift) - 1)
    return i.astype(np.uint32).view(np.float32).astype(np.float64)


def _fit(z: np.ndarray, a: np.ndarray, tol: float) -> tuple[str | None, float]:
    from xgrad.porting.convert import fit_activation

    name, err = fit_activation(z, a, "float64")
    if name is None:
        # fit_activation's own threshold is for exact dtypes; accept within the run's tol.
        best, best_err = None, math.inf
        for cand in _candidates(z, a):
            with np.errstate(all="ignore"):
                e = _rel(get_activation(cand)(z), a)
            if e < best_err:
                best, best_err = cand, e
        return (best if best_err <= tol else None), best_err
    return name, err


def _candidates(z, a) -> list[str]:
    from xgrad.porting.convert import _leaky_slope

    names = list(ACTIVATIONS)
    slope = _leaky_slope(z, a)
    if slope is not None:
        names.append(f"leaky_relu:{round(slope, 6)!r}")
    return names


def _describe_activation(name: str) -> str:
    act = get_activation(name)
    if act.kind == "gelu":
        return "the exact erf GELU"
    if act.kind == "gelu_tanh":
        return "the tanh GELU"
    if act.kind == "leaky_relu":
        return f"leaky_relu with slope {act.slope:g}"
    return name


def _derivative(name: str, z: np.ndarray) -> np.ndarray:
    act = get_activation(name)
    if act.derivative is None:
        raise ValueError("softmax has no elementwise derivative")
    return act.derivative(z)


def _layer_grads(layer: LayerEvidence, delta: np.ndarray):
    """(dkernel, dbias, dinput) of one layer for the given ``delta = dL/dz``."""
    dk = layer.input_ref.T @ delta
    db = delta.sum(axis=0) if layer.bias_ref is not None else None
    return dk, db, delta @ layer.kernel_ref.T


def _grads_residual(layer: LayerEvidence, delta: np.ndarray) -> float:
    dk, db, _ = _layer_grads(layer, delta)
    parts = [_rel(layer.dkernel_cand, dk)]
    if db is not None and layer.dbias_cand is not None:
        parts.append(_rel(layer.dbias_cand, db))
    return max(parts)


def _backward_error(layer: LayerEvidence) -> float:
    parts = [_rel(layer.dkernel_cand, layer.dkernel_ref)]
    if layer.dbias_ref is not None and layer.dbias_cand is not None:
        parts.append(_rel(layer.dbias_cand, layer.dbias_ref))
    if layer.grad_cand is not None:
        parts.append(_rel(layer.grad_cand, layer.grad_ref))
    return max(parts)


def _divergence(ev: Evidence) -> tuple[int | None, str | None, float]:
    for layer in ev.layers:
        err = _rel(layer.act_cand, layer.act_ref)
        if err > ev.tol:
            return layer.index, "forward", err
    for layer in reversed(ev.layers):
        err = _backward_error(layer)
        if layer.index == 0:
            err = max(err, _rel(ev.dinput_cand, ev.dinput_ref))
        if err > ev.tol:
            return layer.index, "backward", err
    return None, None, 0.0


# -- hypotheses ---------------------------------------------------------------------------


def _make(ev: Evidence, cause, layer, detail, residual, before, where) -> Diagnosis:
    return Diagnosis(
        cause=cause,
        layer=layer,
        detail=detail,
        confirmed=cause != "unexplained",
        residual=residual,
        before=before,
        where=where,
        framework=ev.framework,
    )


def _drop(before: float, after: float) -> str:
    return f"the error drops from {before:.2g} to {after:.2g}"


def _loss_reduction(ev: Evidence) -> Diagnosis | None:
    """Every gradient is the reference's times one constant factor."""
    pairs = [(ev.dinput_cand, ev.dinput_ref)]
    for layer in ev.layers:
        pairs.append((layer.dkernel_cand, layer.dkernel_ref))
        if layer.dbias_ref is not None and layer.dbias_cand is not None:
            pairs.append((layer.dbias_cand, layer.dbias_ref))
    cand = np.concatenate([np.ravel(c) for c, _ in pairs])
    ref = np.concatenate([np.ravel(r) for _, r in pairs])
    den = float(ref @ ref)
    if den == 0 or _rel(ev.output_cand, ev.output_ref) > ev.fit_tol:
        return None
    factor = float(cand @ ref) / den
    if abs(factor - 1) < 1e-3 or factor == 0:
        return None
    residual = _rel(cand, factor * ref)
    before = _rel(cand, ref)
    if residual > ev.fit_tol:
        return None
    batch, units = ev.output_ref.shape
    named = {
        batch * units: f"1/{batch * units} = 1/(batch {batch} x units {units}): a mean "
        "over all elements where the reference sums",
        batch: f"1/{batch} = 1/batch: a mean over the batch where the reference sums",
        units: f"1/{units} = 1/units: a mean over the last axis where the reference sums",
    }
    text = None
    for n, words in named.items():
        if n > 1 and abs(factor * n - 1) < 1e-6:
            text = words
        elif n > 1 and abs(factor / n - 1) < 1e-6:
            text = f"{n} = the inverse: the candidate sums where the reference means"
    if text is None and abs(factor - 0.5) < 1e-6:
        text = "0.5: the 1/2 of an l2 loss (0.5 * squared error)"
    if text is None and abs(factor - 2) < 1e-6:
        text = "2: the reference has the 1/2 of an l2 loss and the candidate not"
    text = text or f"{factor:.6g}"
    detail = (
        f"every gradient of the candidate is the reference's times {factor:.6g} (factor "
        f"{text}); scaling by 1/{factor:.6g}, {_drop(before, residual)}"
    )
    return _make(ev, "loss-reduction", None, detail, residual, before, None)


def _weights(ev: Evidence, layer: LayerEvidence, before: float) -> Diagnosis | None:
    """The candidate's kernel is not the reference's: transposed, another layer's, or not."""

    def same(cand, ref):  # the reference rounded to the candidate's dtype, as a copy does
        if ref is None or cand is None:
            return ref is None and cand is None
        rounded = np.asarray(ref).astype(ev.dtype_cand).astype(np.float64)
        return cand.shape == ref.shape and _rel(cand, rounded) <= ev.fit_tol

    if same(layer.kernel_cand, layer.kernel_ref) and same(layer.bias_cand, layer.bias_ref):
        return None
    act = layer.activation or "linear"

    def rerun(kernel):
        z = layer.input_cand @ kernel
        if layer.bias_cand is not None:
            z = z + layer.bias_cand
        with np.errstate(all="ignore"):
            return get_activation(act)(z)

    k, r = layer.kernel_cand, layer.kernel_ref
    if k.shape == r.T.shape and _rel(k, r.T) <= ev.fit_tol:
        residual = _rel(rerun(r), layer.act_ref)
        detail = (
            f"the candidate's kernel is the reference's transposed ({k.shape}); with the "
            f"reference's layout {_drop(before, residual)}"
        )
        return _make(ev, "weight-layout", layer.index, detail, residual, before, "forward")
    for other in ev.layers:
        if (
            other.index != layer.index
            and other.kernel_ref.shape == k.shape
            and _rel(k, other.kernel_ref) <= ev.fit_tol
        ):
            residual = _rel(rerun(r), layer.act_ref)
            detail = (
                f"the candidate's layer {layer.index} holds the reference's layer "
                f"{other.index} kernel: layers paired in the wrong order; with layer "
                f"{layer.index}'s own kernel {_drop(before, residual)}"
            )
            return _make(ev, "weight-layout", layer.index, detail, residual, before, "forward")
    detail = (
        f"the candidate's weights of layer {layer.index} differ from the reference's "
        f"(rel {_rel(k, r):.2g}), and not by a transpose or a reordering of layers; "
        "were they copied across?"
    )
    return _make(ev, "unexplained", layer.index, detail, None, before, "forward")


def _activation(ev: Evidence, layer: LayerEvidence, before: float) -> Diagnosis | None:
    z_ref, z_cand = layer.z_ref(), layer.z_cand()
    ref_name = layer.activation or _fit(z_ref, layer.act_ref, ev.fit_tol)[0]
    cand_name, _ = _fit(z_cand, layer.act_cand, ev.fit_tol)
    if ref_name is None or cand_name is None:
        return None
    ref_act, cand_act = get_activation(ref_name), get_activation(cand_name)
    if ref_act.name == cand_act.name:
        return None
    with np.errstate(all="ignore"):
        residual = _rel(ref_act(z_cand), layer.act_ref)
    if residual > ev.fit_tol:
        return None
    kinds = {ref_act.kind, cand_act.kind}
    if kinds == {"gelu", "gelu_tanh"}:
        ref_form = "exact erf GELU" if ref_act.kind == "gelu" else "tanh GELU"
        cand_form = "tanh form" if cand_act.kind == "gelu_tanh" else "exact erf form"
        detail = (
            f"reference uses the {ref_form}, candidate the {cand_form}; with the "
            f"{'erf' if ref_act.kind == 'gelu' else 'tanh'} form on both sides "
            f"{_drop(before, residual)}"
        )
        return _make(ev, "gelu-approximation", layer.index, detail, residual, before, "forward")
    if kinds == {"leaky_relu"}:
        detail = (
            f"reference slope {ref_act.slope:g}, candidate slope {cand_act.slope:g}; with "
            f"slope {ref_act.slope:g} on both sides {_drop(before, residual)}"
        )
        return _make(ev, "leaky-relu-slope", layer.index, detail, residual, before, "forward")
    detail = (
        f"reference computes {_describe_activation(ref_act.name)}, candidate "
        f"{_describe_activation(cand_act.name)}; with {ref_act.name} on both sides "
        f"{_drop(before, residual)}"
    )
    return _make(ev, "activation-mismatch", layer.index, detail, residual, before, "forward")


def _float32_exact(a: np.ndarray) -> bool:
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(all="ignore"):
        return bool(np.all(a.astype(np.float32).astype(np.float64) == a))


def _dtype(ev: Evidence, layer: LayerEvidence, before: float) -> Diagnosis | None:
    wanted = ev.dtype
    if wanted != "float64":
        return None
    declared = ev.dtype_cand != "float64"
    if not (declared or _float32_exact(layer.act_cand)):
        return None
    act = get_activation(
        layer.activation or _fit(layer.z_ref(), layer.act_ref, 1e-5)[0] or "linear"
    )
    f32 = np.float32
    z = layer.input_ref.astype(f32) @ layer.kernel_ref.astype(f32)
    if layer.bias_ref is not None:
        z = z + layer.bias_ref.astype(f32)
    with np.errstate(all="ignore"):
        a32 = act(z)
    residual = _rel(layer.act_cand, a32)
    if residual > _FLOAT32_TOL:
        return None
    how = f"declares {ev.dtype_cand}" if declared else "returns values that are all float32 numbers"
    detail = (
        f"float64 was asked, but the candidate computes in float32 (it {how}); the "
        f"reference evaluated in float32 agrees with it to {residual:.2g}, against "
        f"{before:.2g} in float64"
    )
    return _make(ev, "dtype", layer.index, detail, residual, before, "forward")


def _matmul_precision(ev: Evidence, layer: LayerEvidence, before: float) -> Diagnosis | None:
    act = get_activation(
        layer.activation or _fit(layer.z_ref(), layer.act_ref, 1e-3)[0] or "linear"
    )
    best = None
    for fmt, bits in _MATMUL_FORMATS.items():
        z = round_mantissa(layer.input_cand, bits) @ round_mantissa(layer.kernel_cand, bits)
        if layer.bias_cand is not None:
            z = z + layer.bias_cand
        with np.errstate(all="ignore"):
            residual = _rel(layer.act_cand, act(z))
        if best is None or residual < best[1]:
            best = (fmt, residual)
    fmt, residual = best
    if residual > max(_FLOAT32_TOL, ev.fit_tol) or residual > before / 5:
        return None
    detail = (
        f"the candidate's matmul reads its operands as {fmt.upper()} "
        f"({_MATMUL_FORMATS[fmt]}-bit mantissa), as GPUs and TPUs do by default "
        f"(TensorFlow's TF32, JAX's default precision); emulating that on the CPU "
        f"reproduces the candidate to {residual:.2g}, against {before:.2g} for full "
        "float32"
    )
    return _make(ev, "matmul-precision", layer.index, detail, residual, before, "forward")


def _clipping(ev: Evidence, layer: LayerEvidence, before: float) -> Diagnosis | None:
    if ev.loss not in ("bce", "cce") or layer.index != len(ev.layers) - 1 or ev.y is None:
        return None
    z = layer.z_ref()
    p = layer.act_ref
    if ev.loss == "bce":
        logits_delta = (1 / (1 + np.exp(-z)) - ev.y) / p.size
    else:
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        soft = e / e.sum(axis=-1, keepdims=True)
        logits_delta = (soft * ev.y.sum(axis=-1, keepdims=True) - ev.y) / p.shape[0]
    saturated = int(((p < EPSILON) | (p > 1 - EPSILON)).sum())
    residual = _grads_residual(layer, logits_delta)
    if saturated == 0 or residual > ev.fit_tol:
        return None
    detail = (
        f"{saturated} output(s) are saturated (p < 1e-7 or p > 1 - 1e-7): the reference "
        f"clips probabilities there (gradient 0), the candidate uses the logits form "
        f"(as Keras does on the TensorFlow backend for a sigmoid/softmax output); with "
        f"the logits form on both sides {_drop(before, residual)}"
    )
    return _make(ev, "crossentropy-clipping", layer.index, detail, residual, before, "backward")


_KINK_ALTERNATIVES = {
    "relu": {0.0: (0.0, 1.0, 0.5)},
    "relu6": {0.0: (0.0, 1.0, 0.5), 6.0: (0.0, 1.0, 0.5)},
    "hard_sigmoid": {-3.0: (0.0, 1 / 6, 1 / 12), 3.0: (0.0, 1 / 6, 1 / 12)},
    "selu": {0.0: (SELU_SCALE, SELU_SCALE * SELU_ALPHA, SELU_SCALE * (1 + SELU_ALPHA) / 2)},
}
_KINK_SOURCES = {
    0.5: " (as jnp.maximum(x, 0) or lax's balanced max/min give)",
    1.0: " (a >= comparison, as jax.nn.leaky_relu uses)",
}


def _kink(ev: Evidence, layer: LayerEvidence, before: float) -> Diagnosis | None:
    name = layer.activation or _fit(layer.z_ref(), layer.act_ref, ev.fit_tol)[0]
    if name is None:
        return None
    act = get_activation(name)
    z = layer.z_ref()
    at = np.zeros(z.shape, dtype=bool)
    for k in act.kinks:
        at |= z == k
    if not at.any():
        return None
    alternatives = dict(_KINK_ALTERNATIVES.get(act.kind, {}))
    if act.kind == "leaky_relu":
        s = act.slope
        alternatives = {0.0: (s, 1.0, (1 + s) / 2)}
    base = _derivative(name, z)
    for k, values in alternatives.items():
        mask = z == k
        if not mask.any():
            continue
        for v in values:
            deriv = np.where(mask, v, base)
            residual = _grads_residual(layer, layer.grad_ref * deriv)
            if residual <= ev.fit_tol and _rel(deriv, base) > 0:
                ref_value = float(base[mask][0])
                detail = (
                    f"{int(mask.sum())} pre-activation(s) are exactly at {act.name}'s "
                    f"kink {k:g}; the candidate's derivative there is {v:.6g}"
                    f"{_KINK_SOURCES.get(v, '')}, the reference's {ref_value:.6g}; with "
                    f"the reference's value {_drop(before, residual)}"
                )
                return _make(
                    ev, "kink-convention", layer.index, detail, residual, before, "backward"
                )
    return None


def _side_derivative(name: str, a: np.ndarray, z: np.ndarray) -> np.ndarray | None:
    """The derivative on the side of each kink that the activation values ``a`` show."""
    act = get_activation(name)
    if act.kind == "relu":
        return (a > 0).astype(np.float64)
    if act.kind == "leaky_relu":
        return np.where(a > 0, 1.0, act.slope)
    if act.kind == "relu6":
        return ((a > 0) & (a < 6)).astype(np.float64)
    if act.kind == "hard_sigmoid":
        return ((a > 0) & (a < 1)).astype(np.float64) / 6
    if act.kind == "selu":
        return np.where(a > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0)))
    return None


def _kink_rounding(ev: Evidence, layer: LayerEvidence, before: float) -> Diagnosis | None:
    """Pre-activations within rounding of a kink, rounded to its other side by the candidate."""
    name = layer.activation or _fit(layer.z_ref(), layer.act_ref, ev.fit_tol)[0]
    if name is None or not get_activation(name).kinks:
        return None
    z = layer.z_ref()
    side = _side_derivative(name, layer.act_cand, z)
    if side is None:
        return None
    base = _derivative(name, z)
    flipped = side != base
    if not flipped.any():
        return None
    kinks = np.array(get_activation(name).kinks)
    distance = np.min(np.abs(z[flipped][:, None] - kinks[None, :]), axis=1)
    # float32 rounding of z: a few units of eps times the size of the terms summed into it
    bound = 1e3 * np.finfo(np.float32).eps * max(float(np.abs(z).max()), 1.0)
    if float(distance.max()) > bound:
        return None
    residual = _grads_residual(layer, layer.grad_ref * side)
    if residual > ev.fit_tol:
        return None
    detail = (
        f"{int(flipped.sum())} pre-activation(s) lie within rounding of {name}'s kink "
        f"(largest distance {float(distance.max()):.2g}); the candidate's rounding puts "
        "them on the other side, which flips the derivative there; with the candidate's "
        f"side on both {_drop(before, residual)}. Both sides are right to their "
        "precision: this is rounding, not a convention"
    )
    return _make(ev, "kink-rounding", layer.index, detail, residual, before, "backward")


def _backward_activation(ev: Evidence, layer: LayerEvidence, before: float):
    z = layer.z_ref()
    ref_name = layer.activation or _fit(z, layer.act_ref, ev.fit_tol)[0]
    for name in ACTIVATIONS:
        if name in ("softmax", ref_name):
            continue
        with np.errstate(all="ignore"):
            residual = _grads_residual(layer, layer.grad_ref * _derivative(name, z))
        if residual <= ev.fit_tol:
            detail = (
                f"the forward values agree, but the candidate back-propagates the "
                f"derivative of {name} where the reference's is that of {ref_name}; with "
                f"that derivative {_drop(before, residual)}"
            )
            return _make(
                ev, "activation-mismatch", layer.index, detail, residual, before, "backward"
            )
    return None


def _untransposed_dinput(ev: Evidence, before: float) -> Diagnosis | None:
    layer = ev.layers[0]
    k = layer.kernel_ref
    if k.shape[0] != k.shape[1]:
        return None
    name = layer.activation or _fit(layer.z_ref(), layer.act_ref, ev.fit_tol)[0]
    if name is None:
        return None
    act = get_activation(name)
    delta = act.vjp(layer.z_ref(), layer.act_ref, layer.grad_ref)
    residual = _rel(ev.dinput_cand, delta @ k)
    if residual > ev.fit_tol:
        return None
    detail = (
        f"the candidate's dL/dinput is delta @ W instead of delta @ W.T (a missing "
        f"transpose in layer 0's backward); recomputed that way {_drop(before, residual)}"
    )
    return _make(ev, "weight-layout", 0, detail, residual, before, "backward")


def diagnose(ev: Evidence) -> list[Diagnosis]:
    """Test every known cause against the evidence; the confirmed ones, or ``unexplained``.

    Returns an empty list when nothing diverges.
    """
    with np.errstate(all="ignore"):
        return _diagnose(ev)


def _nonfinite(ev: Evidence) -> bool:
    arrays = [ev.dinput_cand, ev.output_cand]
    for layer in ev.layers:
        arrays += [layer.act_cand, layer.dkernel_cand]
    return any(not np.all(np.isfinite(a)) for a in arrays)


def _lower_precision(ev: Evidence) -> str | None:
    """How the candidate shows that it computes in float32 when float64 was asked."""
    if ev.dtype != "float64":
        return None
    if ev.dtype_cand != "float64":
        return f"it declares {ev.dtype_cand}"
    if ev.layers and all(_float32_exact(layer.act_cand) for layer in ev.layers):
        return "it returns values that are all float32 numbers"
    return None


def _diagnose(ev: Evidence) -> list[Diagnosis]:
    lower = _lower_precision(ev)
    ev.fit_tol = max(ev.tol, _FLOAT32_TOL) if lower else ev.tol
    found = _diagnose_one(ev)
    if lower and found and found[0].cause not in ("dtype", "unexplained"):
        found.append(
            _make(
                ev,
                "dtype",
                None,
                f"besides, float64 was asked but the candidate computes in float32 "
                f"({lower}): that alone makes differences of about 1e-7, so the "
                f"cause above was confirmed to float32's tolerance "
                f"({_FLOAT32_TOL:g})",
                None,
                None,
                None,
            )
        )
    return found


def _diagnose_one(ev: Evidence) -> list[Diagnosis]:
    if _nonfinite(ev):
        return [
            _make(
                ev,
                "unexplained",
                None,
                "the candidate produced NaN/Inf (an overflow, "
                "or a NaN in its code); xgrad diagnoses finite discrepancies only, see "
                "the nonfinite entries for where",
                None,
                None,
                None,
            )
        ]
    layer_index, where, before = _divergence(ev)
    if layer_index is None:
        if (
            _rel(ev.output_cand, ev.output_ref) <= ev.tol
            and _rel(ev.dinput_cand, ev.dinput_ref) <= ev.tol
        ):
            return []
    whole = _loss_reduction(ev)
    if whole is not None:
        return [whole]
    if layer_index is None:
        return [
            _make(
                ev,
                "unexplained",
                None,
                "the outputs or dL/dinput differ, but no layer does",
                None,
                None,
                None,
            )
        ]
    layer = ev.layers[layer_index]
    if where == "forward":
        tests = (_weights, _activation, _dtype, _matmul_precision)
    else:
        tests = (_clipping, _kink, _kink_rounding, _backward_activation)
    for test in tests:
        found = test(ev, layer, before)
        if found is not None:
            return [found]
    if where == "backward" and layer_index == 0:
        found = _untransposed_dinput(ev, _rel(ev.dinput_cand, ev.dinput_ref))
        if found is not None:
            return [found]
    if where == "forward":
        detail = (
            "none of the known causes (activation form or slope, kink convention, "
            "clipping, loss reduction, matmul precision, dtype, weight layout) "
            "reproduces the candidate's activations"
        )
    else:
        detail = (
            "the forward values agree; none of the known causes (kink convention, "
            "clipping, another activation's derivative, loss reduction, a missing "
            "transpose) reproduces the candidate's gradients"
        )
    return [_make(ev, "unexplained", layer_index, detail, None, before, where)]
