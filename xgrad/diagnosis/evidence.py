"""Evidence: what both sides computed, per unit, in float64, ready to be re-evaluated.

Built once per compared side from the two evaluations the runner already made (with
per-layer capture); nothing is recomputed here. Causes (:mod:`xgrad.diagnosis.causes`)
re-run one unit's layers with their own NumPy forward and VJP under another convention.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from xgrad.align import Alignment, Unit
from xgrad.identify import fit_activation, fit_norm
from xgrad.layers import Activation, Dense, Dropout
from xgrad.layers.base import AbstractLayer

__all__ = ["Evidence", "UnitEvidence", "build_evidence", "run_unit"]


def f64(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


@dataclass
class UnitEvidence:
    """One aligned unit on both sides (float64; weights in canonical layout, local names).

    ``layers_*`` are the unit's layers: the layer with weights, then the weight-free ones
    folded in (an activation, a dropout); ``None`` where a side does not state a config and
    none could be identified. ``input_*`` is the value entering the unit on each side.
    """

    path: str
    label: str
    kind: str
    layers_ref: list[AbstractLayer | None]
    layers_cand: list[AbstractLayer | None]
    weights_ref: dict[str, np.ndarray]
    weights_cand: dict[str, np.ndarray]
    dweights_ref: dict[str, np.ndarray]
    dweights_cand: dict[str, np.ndarray]
    input_ref: np.ndarray
    input_cand: np.ndarray
    output_ref: np.ndarray
    output_cand: np.ndarray
    grad_ref: np.ndarray
    grad_cand: np.ndarray
    state_ref: dict[str, np.ndarray] = field(default_factory=dict)
    state_cand: dict[str, np.ndarray] = field(default_factory=dict)
    block_input_ref: np.ndarray | None = None  # for a residual block: what the skip adds
    skip_cand: bool = True  # False: the candidate has this block's layers without the skip

    @property
    def main_ref(self) -> AbstractLayer | None:
        return self.layers_ref[0] if self.layers_ref else None

    def activation(self, side: str = "ref") -> str | None:
        """The unit's activation: the Dense's own, or an Activation folded in after it."""
        layers = self.layers_ref if side == "ref" else self.layers_cand
        for layer in layers:
            if isinstance(layer, Dense) and layer.activation != "linear":
                return layer.activation
            if isinstance(layer, Activation):
                return layer.name
        if layers and isinstance(layers[0], Dense):
            return "linear"
        return None

    def z(self, side: str = "ref") -> np.ndarray | None:
        """A Dense unit's pre-activation ``input @ kernel + bias`` on one side."""
        main = self.main_ref
        if not isinstance(main, Dense):
            return None
        x, w = (
            (self.input_ref, self.weights_ref)
            if side == "ref"
            else (self.input_cand, self.weights_cand)
        )
        if "kernel" not in w or w["kernel"].shape[0] != x.shape[-1]:
            return None
        z = x @ w["kernel"]
        return z + w["bias"] if "bias" in w else z


@dataclass
class Evidence:
    """Everything the causes may re-evaluate, for one candidate against the reference."""

    framework: str
    units: list[UnitEvidence]
    x: np.ndarray
    dinput_ref: np.ndarray
    dinput_cand: np.ndarray
    output_ref: np.ndarray
    output_cand: np.ndarray
    loss: object  # a Loss, a pair of loss functions, or None with a cotangent
    y: np.ndarray | None
    dtype: str
    dtype_ref: str
    dtype_cand: str
    tol: float
    fit_tol: float = 0.0
    """The tolerance a re-evaluation must reach to confirm a cause: ``tol``, or float32's when
    the candidate computes in a lower precision than asked (no re-evaluation can get below
    its rounding)."""

    def unit(self, path: str) -> UnitEvidence:
        return next(u for u in self.units if u.path == path)


def run_unit(layers, weights: dict, x: np.ndarray, *, path: str = "u") -> np.ndarray:
    """Apply a unit's layers (main layer with ``weights`` by local name, then the weight-free
    ones) to ``x`` with their own NumPy forward; dropout is skipped (inactive)."""
    flat = {f"{path}.{k}": v for k, v in weights.items()}
    a = x
    with np.errstate(all="ignore"):
        for k, layer in enumerate(layers):
            if layer is None:
                raise ValueError("unknown layer")
            if isinstance(layer, Dropout):
                continue
            a = layer.forward(flat if k == 0 else {}, a, path=path).output
    return a


def _identify(layers, weights, x, out, dtype) -> list[AbstractLayer | None]:
    """Fill configs a side does not state, numerically, from its own captured values."""
    if not layers or all(layer is not None for layer in layers):
        return layers
    layers = list(layers)
    main = layers[0]
    if main is None and "kernel" in weights:
        z = x @ weights["kernel"] + weights.get("bias", 0)
        name = fit_activation(z, out, "float32" if dtype != "float64" else "float64")[0]
        layers[0] = (
            Dense(weights["kernel"].shape[1], name or "linear", use_bias="bias" in weights)
            if name
            else None
        )
    elif main is None and ({"scale", "bias"} & set(weights) or not weights):
        found, _ = fit_norm(
            x, out, weights, dtype=dtype if dtype in ("float32", "float64") else "float32"
        )
        layers[0] = found
    return layers


def build_evidence(ref, cand, alignment: Alignment, inputs, *, dtype: str, tol: float) -> Evidence:
    """Evidence for one candidate side (a :class:`~xgrad.runner.Side`) against ``ref``."""
    ref_w, cand_w = ref.model.weights(), cand.model.weights()
    ref_acts, cand_acts = ref.grads.activations, cand.grads.activations
    ref_grads, cand_grads = ref.grads.activation_grads, cand.grads.activation_grads
    x = f64(inputs.x)
    ref_infos = {info.path: info for info in ref.model.walk()}
    cand_infos = {info.path: info for info in cand.model.walk()}

    def value_before(acts, unit: Unit):
        if unit.start is None:
            return x.reshape(x.shape[0], -1) if x.ndim > 2 else x
        return f64(acts[unit.start])

    def configs(unit: Unit, infos):
        if unit.info.children:
            return [unit.info.layer]
        return [unit.info.layer, *(infos[m.path].layer for m in unit.members)]

    def local(arrays, unit: Unit):
        prefix = unit.path + "."
        return {
            k[len(prefix) :]: f64(v)
            for k, v in arrays.items()
            if k.startswith(prefix) and "." not in k[len(prefix) :]
        }

    units = []
    for r, c in alignment.pairs:
        if r.end not in ref_acts or c.end not in cand_acts:
            continue
        wr, wc = local(ref_w, r), local(cand_w, c)
        in_r, in_c = value_before(ref_acts, r), value_before(cand_acts, c)
        out_r, out_c = f64(ref_acts[r.end]), f64(cand_acts[c.end])
        ev = UnitEvidence(
            path=r.path,
            label=f"{r.path} {r.info.kind} ({r.info.name} <-> {c.info.name})",
            kind=r.info.kind,
            layers_ref=_identify(configs(r, ref_infos), wr, in_r, out_r, ref.model.dtype),
            layers_cand=_identify(configs(c, cand_infos), wc, in_c, out_c, cand.model.dtype),
            weights_ref=wr,
            weights_cand=wc,
            dweights_ref=local(ref.grads.params, r),
            dweights_cand=local(cand.grads.params, c),
            input_ref=in_r,
            input_cand=in_c,
            output_ref=out_r,
            output_cand=out_c,
            grad_ref=f64(ref_grads[r.end]),
            grad_cand=f64(cand_grads[c.end]),
            state_ref=local(ref.grads.state, r),
            state_cand=local(cand.grads.state, c),
            skip_cand=not (r.info.children and not c.info.children),
        )
        if r.info.children:
            ev.block_input_ref = in_r
        units.append(ev)
    lower = "float32" if dtype == "float64" and cand.model.dtype != "float64" else None
    return Evidence(
        framework=cand.label,
        units=units,
        x=x,
        dinput_ref=f64(ref.grads.input),
        dinput_cand=f64(cand.grads.input),
        output_ref=f64(ref.grads.output),
        output_cand=f64(cand.grads.output),
        loss=inputs.loss,
        y=None if inputs.y is None else f64(inputs.y),
        dtype=dtype,
        dtype_ref=ref.model.dtype,
        dtype_cand=cand.model.dtype,
        tol=tol,
        fit_tol=max(tol, 1e-5) if lower else tol,
    )
