"""Evidence: what both sides computed, per unit, in float64, ready to be re-evaluated.

Built once per compared side from the two evaluations the runner already made (with
per-layer capture); nothing is recomputed here. The reference's side is shared by every
compared side of a call (:class:`ReferenceValues`): its float64 weights, and, for the
rounding checks, its float64 forward steps and gradients, each computed at most once.
Causes (:mod:`xgrad.diagnosis.causes`) re-run one unit's layers with their own NumPy forward
and VJP under another convention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from xgrad.align import Alignment, Unit
from xgrad.errors import AlignmentError
from xgrad.identify import fit_activation, fit_norm
from xgrad.layers import Activation, Dense, Dropout, forward_sequence, vjp_sequence
from xgrad.layers.base import AbstractLayer, Step
from xgrad.losses import Loss

__all__ = [
    "Context",
    "Evidence",
    "ReferenceValues",
    "UnitEvidence",
    "build_evidence",
    "one_unit_evidence",
    "run_unit",
    "run_unit_grads",
]


def f64(a) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype=np.float64)


class ReferenceValues:
    """The reference's side of one call's diagnoses, made once and shared by every side.

    Args:
        ref: the evaluated reference (a :class:`~xgrad.runner.Side`).
        inputs: the checked batch (:class:`~xgrad.runner.Inputs`).
        weights: the reference's canonical weights in float64, when the caller has them
            (else read once from the model).
        trace: the forward steps of the reference's own float64 NumPy evaluation (the
            referee of :func:`xgrad.compare`), whose gradients are then ``ref.grads``; else
            the float64 forward and backward pass of the reference's spec is run here, once,
            when first asked for.
    """

    def __init__(self, ref, inputs, *, weights=None, trace: list[Step] | None = None) -> None:
        self.ref = ref
        self.inputs = inputs
        self._weights = None if weights is None else {k: f64(v) for k, v in weights.items()}
        self._trace = trace
        self._forward: tuple[np.ndarray, list[Step]] | None = None
        self._grads: tuple[dict[str, np.ndarray], np.ndarray] | None = None
        self._spec = ref.model.spec()
        self.memo: dict = {}  # what a cause computed once for every side (its own keys)

    @property
    def spec(self):
        """The reference's :class:`~xgrad.MLP`, or ``None`` when a layer is unknown."""
        return self._spec

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """Every canonical weight of the reference, float64."""
        if self._weights is None:
            self._weights = {k: f64(v) for k, v in self.ref.model.weights().items()}
        return self._weights

    @property
    def x(self) -> np.ndarray:
        return f64(self.inputs.x)

    def forward(self) -> tuple[np.ndarray, list[Step]]:
        """The float64 output and forward steps of the reference's spec on ``x`` (the
        referee's own when it was traced). Needs :attr:`spec`."""
        if self._forward is None:
            if self._trace is not None:
                out = self._trace[-1].output if self._trace else self.x
                self._forward = (out, self._trace)
            else:
                with np.errstate(all="ignore"):
                    self._forward = forward_sequence(self._spec.layers, self.weights, self.x)
        return self._forward

    def seed(self) -> np.ndarray:
        """``dL/d output`` of the float64 forward pass (the cotangent, when one was given)."""
        inputs = self.inputs
        if inputs.cotangent is not None:
            return f64(inputs.cotangent)
        if "seed" not in self.memo:
            out = self.forward()[0]
            y = None if inputs.y is None else f64(inputs.y)
            with np.errstate(all="ignore"):
                self.memo["seed"] = np.asarray(inputs.loss.value_and_grad(out, y)[1], np.float64)
        return self.memo["seed"]

    def gradients(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """``(dL/dparams, dL/dinput)`` of the float64 forward pass for :meth:`seed`: the
        referee's own gradients, or one float64 backward pass made here."""
        if self._grads is None:
            if self._trace is not None and self.ref.model.dtype == "float64":
                grads = self.ref.grads
                self._grads = ({k: f64(v) for k, v in grads.params.items()}, f64(grads.input))
            else:
                steps = self.forward()[1]
                params: dict[str, np.ndarray] = {}
                with np.errstate(all="ignore"):
                    dx = vjp_sequence(self.weights, steps, self.seed(), params)
                self._grads = (params, dx)
        return self._grads

    @property
    def has_loss(self) -> bool:
        """A loss of xgrad's (or a cotangent) that NumPy can differentiate."""
        return self.inputs.cotangent is not None or isinstance(self.inputs.loss, Loss)


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
    # a residual block followed by weight-free layers (an activation after the add): the
    # reference's layers, and the block's own output (x + f(x)) that they take on each side
    members_ref: list[AbstractLayer | None] = field(default_factory=list)
    block_output_ref: np.ndarray | None = None
    block_output_cand: np.ndarray | None = None
    skip_cand: bool = True  # False: the candidate has this block's layers without the skip

    @property
    def misshapen(self) -> list[str]:
        """``name (candidate shape) vs (reference shape)`` of weights both sides name whose
        shapes are neither equal nor transposed: they were never paired, so never copied
        across (``nnx.MultiHeadAttention``'s ``(d, heads, head_dim)`` kernels against
        ``(d, d)`` ones), and the causes that re-run the unit on them do not apply."""
        return [
            f"{k} {self.weights_cand[k].shape} vs {self.weights_ref[k].shape}"
            for k, ref in self.weights_ref.items()
            if k in self.weights_cand and self.weights_cand[k].shape not in (ref.shape, ref.T.shape)
        ]

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
class Context:
    """What the transformer causes (:mod:`xgrad.diagnosis.transformer`,
    :mod:`xgrad.diagnosis.tokens`) read beyond one :class:`UnitEvidence`: a module read as
    no kind (Hugging Face's ``LlamaAttention``) keeps its weights in its submodules, and its
    padding mask among its inputs.

    Attributes:
        weights: every canonical weight of the reference, by canonical name, float64.
        inputs_ref: module path -> the reference module's captured floating inputs, in call
            order (the first is the module's input; a padding mask or position tables may
            follow); empty for a model not read module by module.
        inputs_cand: the same on the candidate's side.
        memo: what a cause fitted once per unit (keyed by the cause's own tuples).
        positions: words naming the batch's position ids where a row is not consecutive
            (:func:`xgrad.diagnosis.positions.other_positions`): the RoPE causes are then
            not re-run; ``None``: positions ``0 .. T-1`` (up to a shift) or none given.
    """

    weights: Mapping[str, np.ndarray]
    inputs_ref: Mapping[str, list]
    inputs_cand: Mapping[str, list]
    memo: dict = field(default_factory=dict)
    positions: str | None = None


@dataclass
class Evidence:
    """Everything the causes may re-evaluate, for one candidate against the reference."""

    framework: str
    units: list[UnitEvidence]
    x: np.ndarray
    dinput_ref: np.ndarray | None  # None for token ids: they have no dL/dinput
    dinput_cand: np.ndarray | None
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
    transformer: Context | None = None
    """What the transformer causes read beyond the units (:class:`Context`), attached by
    :func:`xgrad.diagnosis.transformer.attach`; ``None`` until then."""

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


def run_unit_grads(
    layers, weights: dict, x: np.ndarray, grad_output: np.ndarray, *, path: str = "u"
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`run_unit`, and the VJP of ``grad_output`` (``dL/d output``) through it:
    ``(output, dL/d weights by local name)``."""
    flat = {f"{path}.{k}": v for k, v in weights.items()}
    steps = []
    a = x
    with np.errstate(all="ignore"):
        for k, layer in enumerate(layers):
            if layer is None:
                raise ValueError("unknown layer")
            if isinstance(layer, Dropout):
                continue
            steps.append(layer.forward(flat if k == 0 else {}, a, path=path))
            a = steps[-1].output
        grads: dict[str, np.ndarray] = {}
        g = grad_output
        for step in reversed(steps):
            g = step.layer.vjp(flat, step, g, grads)
    return a, {k[len(path) + 1 :]: v for k, v in grads.items()}


def _identify(layers, weights, x, out, dtype) -> list[AbstractLayer | None]:
    """Fill configs a side does not state, numerically, from its own captured values."""
    if not layers or all(layer is not None for layer in layers):
        return layers
    layers = list(layers)
    main = layers[0]
    kernel = weights.get("kernel")
    if main is None and kernel is not None and (kernel.ndim != 2 or kernel.shape[0] != x.shape[-1]):
        return layers  # a weight of another kind's (a module read as it is)
    if main is None and "kernel" not in weights and np.shape(x) != np.shape(out):
        return layers  # no norm changes the shape
    if main is None and "kernel" in weights:
        z = x @ weights["kernel"] + weights.get("bias", 0)
        name = fit_activation(z, out, "float32" if dtype != "float64" else "float64")[0]
        layers[0] = (
            Dense(weights["kernel"].shape[1], name or "linear", use_bias="bias" in weights)
            if name
            else None
        )
    elif main is None and ({"scale", "bias"} & set(weights) or not weights):
        if any(np.shape(w) != (np.shape(x)[-1],) for w in weights.values()):
            return layers  # channels first (torch's BatchNorm2d, GroupNorm): no last-axis norm
        try:
            found, _ = fit_norm(
                x, out, weights, dtype=dtype if dtype in ("float32", "float64") else "float32"
            )
        except AlignmentError:
            return layers  # not a norm xgrad has: the unit stays as it is read
        layers[0] = found
    return layers


def _token_wise(layers) -> bool:
    """Whether every layer of a unit on both sides is known and computes each vector of the
    last axis on its own (:attr:`~xgrad.layers.AbstractLayer.token_wise`)."""
    return bool(layers) and all(layer is not None and layer.token_wise for layer in layers)


def _vectors(a: np.ndarray) -> np.ndarray:
    """``(batch, tokens, ..., d)`` as ``(batch * tokens * ..., d)``: how a token-wise layer
    sees it, and how xgrad's NumPy layers take it."""
    return a.reshape(-1, a.shape[-1]) if a.ndim > 2 else a


def _as_taken(x: np.ndarray, shape) -> np.ndarray:
    """The batch ``x`` as the first unit's layer takes it: ``(batch, *shape)`` (a token-wise
    ``Dense`` on ``(tokens, d)`` keeps its tokens; after a ``Flatten`` the layer takes
    vectors), else flattened to vectors."""
    if shape and int(np.prod(shape)) == x[0].size:
        return x.reshape(x.shape[0], *shape)
    return x.reshape(x.shape[0], -1) if x.ndim > 2 else x


def build_evidence(
    ref, cand, alignment: Alignment, inputs, *, dtype: str, tol: float, reference=None
) -> Evidence:
    """Evidence for one candidate side (a :class:`~xgrad.runner.Side`) against ``ref``;
    ``reference`` (:class:`ReferenceValues`) shares the reference's float64 weights between
    the sides of one call."""
    ref_w = ref.model.weights() if reference is None else reference.weights
    cand_w = cand.model.weights()
    ref_acts, cand_acts = ref.grads.activations, cand.grads.activations
    ref_grads, cand_grads = ref.grads.activation_grads, cand.grads.activation_grads
    x = f64(inputs.x)
    ref_infos = {info.path: info for info in ref.model.walk()}
    cand_infos = {info.path: info for info in cand.model.walk()}

    def value_before(acts, unit: Unit, grads):
        captured = (grads.module_inputs or {}).get(unit.path)
        if captured:  # a model read module by module: the module's own first input
            return f64(captured[0])
        if unit.start is None:  # the first unit: the input, as its layer takes it
            return _as_taken(x, unit.info.input_shape)
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
        in_r, in_c = value_before(ref_acts, r, ref.grads), value_before(cand_acts, c, cand.grads)
        out_r, out_c = f64(ref_acts[r.end]), f64(cand_acts[c.end])
        g_r, g_c = f64(ref_grads[r.end]), f64(cand_grads[c.end])
        if _token_wise(configs(r, ref_infos) + configs(c, cand_infos)):
            in_r, in_c, out_r, out_c, g_r, g_c = map(_vectors, (in_r, in_c, out_r, out_c, g_r, g_c))
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
            grad_ref=g_r,
            grad_cand=g_c,
            state_ref=local(ref.grads.state, r),
            state_cand=local(cand.grads.state, c),
            skip_cand=not (r.info.children and not c.info.children),
        )
        if r.info.children:
            ev.block_input_ref = in_r
            if r.members and c.members and r.path in ref_acts and c.path in cand_acts:
                ev.members_ref = [ref_infos[m.path].layer for m in r.members]
                ev.block_output_ref = f64(ref_acts[r.path])
                ev.block_output_cand = f64(cand_acts[c.path])
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


def one_unit_evidence(
    ref, side, inputs, unit: UnitEvidence, *, dtype: str, tol: float, fit_tol: float
):
    """Evidence of one side holding only ``unit``: code between two modules read as a layer
    (an activation, an embedding's scale), diagnosed like a unit of its own. ``ref`` and
    ``side`` are evaluated sides (:class:`~xgrad.runner.Side`), ``inputs`` the checked batch."""
    return Evidence(
        framework=side.label,
        units=[unit],
        x=f64(inputs.x),
        dinput_ref=f64(ref.grads.input),
        dinput_cand=f64(side.grads.input),
        output_ref=f64(ref.grads.output),
        output_cand=f64(side.grads.output),
        loss=inputs.loss,
        y=None if inputs.y is None else f64(inputs.y),
        dtype=dtype,
        dtype_ref=ref.model.dtype,
        dtype_cand=side.model.dtype,
        tol=tol,
        fit_tol=fit_tol,
    )
