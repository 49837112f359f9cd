"""``compare_models``: a user's model against their port, layer by layer.

Flow: wrap both models as sources -> align their dense layers -> copy the reference's
weights into a copy of the candidate -> gradients and per-layer values from each model's
own framework -> the same :class:`~xgrad.Report` as :func:`xgrad.compare`, with both
sides' native names, a per-layer section and the first divergence.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from xgrad.adapters.base import check_cotangent_shape, check_input_width
from xgrad.compare import _entry, loss_scale
from xgrad.diagnose import Evidence, LayerEvidence, diagnose
from xgrad.errors import AlignmentError, InputError
from xgrad.losses import get_loss
from xgrad.metrics import compare_arrays, tolerance
from xgrad.params import Params
from xgrad.porting.source import DenseLayer, ModelSource, model_source
from xgrad.report import Entry, LayerEntry, Report

__all__ = ["align", "compare_models"]


def _layer_list(source: ModelSource) -> str:
    return ", ".join(
        f"{layer.name} {layer.in_dim}->{layer.out_dim}"
        f"{'' if layer.bias is not None else ' (no bias)'}"
        for layer in source.layers
    )


def _find(source: ModelSource, name: str, side: str) -> int:
    for i, layer in enumerate(source.layers):
        if name in (layer.name, layer.name.rsplit("/", 1)[-1], layer.kernel):
            return i
    raise AlignmentError(
        f"mapping names {side} layer {name!r}, which does not exist; the {side} layers are: "
        f"{', '.join(repr(layer.name) for layer in source.layers)}"
    )


def align(
    reference: ModelSource, candidate: ModelSource, mapping: str | Mapping[str, str] = "auto"
) -> list[tuple[int, int]]:
    """Pair the dense layers of two models: ``[(reference index, candidate index), ...]``.

    ``"auto"`` pairs them in call order; a ``{reference layer name: candidate layer name}``
    mapping pairs them by name (every reference layer must be named once). Every pair must
    have the same ``(in, out)`` widths and both or neither must have a bias.

    Raises:
        AlignmentError: a different depth, width or bias; a name that does not exist.
    """
    if isinstance(mapping, str) and mapping == "auto":
        if len(reference.layers) != len(candidate.layers):
            raise AlignmentError(
                f"the reference has {len(reference.layers)} dense layers "
                f"({_layer_list(reference)}) but the candidate has {len(candidate.layers)} "
                f"({_layer_list(candidate)}); "
                "make the depths equal, or pass mapping={reference layer: candidate layer}"
            )
        pairs = [(i, i) for i in range(len(reference.layers))]
    elif isinstance(mapping, Mapping):
        pairs = [
            (_find(reference, r, "reference"), _find(candidate, c, "candidate"))
            for r, c in mapping.items()
        ]
        ref_used = sorted(i for i, _ in pairs)
        missing = [
            reference.layers[i].name for i in range(len(reference.layers)) if i not in ref_used
        ]
        if missing:
            raise AlignmentError(
                f"mapping leaves reference layer(s) {missing} unpaired; "
                "name every reference layer once"
            )
        cands = [j for _, j in pairs]
        if len(set(cands)) != len(cands) or len(set(ref_used)) != len(ref_used):
            raise AlignmentError("mapping pairs a layer more than once")
        if len(candidate.layers) != len(pairs):
            extra = [
                candidate.layers[j].name for j in range(len(candidate.layers)) if j not in cands
            ]
            raise AlignmentError(
                f"candidate layer(s) {extra} are not in the mapping; every "
                "dense layer of both models must be paired"
            )
        pairs.sort()
    else:
        raise InputError(f"mapping must be 'auto' or a dict of layer names, got {mapping!r}")
    for i, j in pairs:
        _check_pair(i, reference.layers[i], candidate.layers[j])
    return pairs


def _check_pair(i: int, r: DenseLayer, c: DenseLayer) -> None:
    where = f"layer {i}: reference {r.name!r} <-> candidate {c.name!r}"
    if (r.in_dim, r.out_dim) != (c.in_dim, c.out_dim):
        hint = ""
        if (r.in_dim, r.out_dim) == (c.out_dim, c.in_dim):
            hint = (
                "; the widths are swapped: is the candidate's kernel transposed, or its "
                "layer declared with (out, in)?"
            )
        raise AlignmentError(
            f"{where}: the reference maps {r.in_dim} -> {r.out_dim} features (kernel "
            f"{r.kernel!r} {r.kernel_shape}) but the candidate maps {c.in_dim} -> {c.out_dim} "
            f"(kernel {c.kernel!r} {c.kernel_shape}){hint}"
        )
    if (r.bias is None) != (c.bias is None):
        has, lacks = (
            ("reference", "candidate") if r.bias is not None else ("candidate", "reference")
        )
        raise AlignmentError(
            f"{where}: the {has} layer has a bias of shape ({r.out_dim},) but the {lacks} "
            f"layer has none; give the {lacks} layer a bias (e.g. use_bias=True) or remove "
            f"it from the {has}"
        )


def _remap(params: Params, pairs, *, forward: bool) -> Params:
    """Rename ``layers.{i}`` <-> ``layers.{j}`` along ``pairs`` (forward: ref -> cand)."""
    out = {}
    for i, j in pairs:
        src, dst = (i, j) if forward else (j, i)
        for kind in ("kernel", "bias"):
            key = f"layers.{src}.{kind}"
            if key in params:
                out[f"layers.{dst}.{kind}"] = params[key]
    return out


def _divergence(
    layers: list[LayerEntry], entries_by_name: dict[str, Entry], label: str, ref_label: str
) -> dict | None:
    def bad(m):
        return m.status != "match"

    for layer in layers:
        if bad(layer.forward):
            return {
                "layer": layer.index,
                "where": "forward",
                "frameworks": [ref_label, label],
                "names": dict(layer.names),
            }
    for layer in reversed(layers):
        own = [entries_by_name.get(f"layers.{layer.index}.{k}") for k in ("kernel", "bias")]
        if (
            bad(layer.backward)
            or any(e is not None and bad(e.results[label]) for e in own)
            or (layer.index == 0 and bad(entries_by_name["input"].results[label]))
        ):
            return {
                "layer": layer.index,
                "where": "backward",
                "frameworks": [ref_label, label],
                "names": dict(layer.names),
            }
    return None


def compare_models(
    reference,
    candidate,
    x,
    y=None,
    *,
    loss: str = "sum",
    mapping: str | Mapping[str, str] = "auto",
    transfer: bool = True,
    rtol: float | None = None,
    cotangent=None,
    title: str | None = None,
    explain: bool | None = None,
) -> Report:
    """Compare a model with its port: outputs, loss, gradients and every layer.

    Args:
        reference: the model you trust: a ``keras.Model`` (Sequential or Functional, of
            Dense, Activation, Dropout and InputLayer layers), a ``flax.nnx.Module``, a
            ``(flax.linen.Module, variables)`` pair, a pure-JAX ``(apply_fn, params)`` pair
            or an ``(xgrad.MLP, params)`` pair.
        candidate: the port, any of the same kinds.
        x: inputs, shape ``(batch, input_dim)``.
        y: targets, for the losses that need them.
        loss: a loss name (see :mod:`xgrad.losses`), computed on each side in its own
            framework with xgrad's definition.
        mapping: ``"auto"`` pairs dense layers in call order; or
            ``{reference layer name: candidate layer name}``.
        transfer: copy the reference's weights into a copy of the candidate first, so both
            start identical. Neither of your objects is ever changed.
        rtol: overrides the per-dtype normwise tolerance.
        cotangent: a ``grad_output`` of shape ``(batch, units)`` instead of a loss.
        title: a heading for the report.
        explain: test the known causes of a mismatch (:mod:`xgrad.diagnose`) and put
            them in ``report.diagnoses``; ``None`` (default) only when something
            mismatches, ``True`` always, ``False`` never.

    Returns:
        A :class:`~xgrad.Report` whose reference is the reference model; the candidate is
        reported under its framework's name. ``report.layers`` holds each aligned layer's
        forward (activation) and backward (``dL/d activation``) comparison;
        ``report.first_divergence`` says where the two first part.

    Raises:
        AlignmentError: the layers cannot be paired (depth, width, bias, unsupported layer);
            the message names the layer on both sides and what to change.
        InputError: ``x``, ``y``, ``cotangent`` or ``mapping`` are malformed.
    """
    xs = np.asarray(x) if hasattr(x, "shape") else np.asarray(x, dtype=np.float64)
    width = xs.shape[1] if xs.ndim == 2 else None
    ref = model_source(reference, input_dim=width)
    cand = model_source(candidate, input_dim=width)
    pairs = align(ref, cand, mapping)
    xs = check_input_width(ref.input_dim, x)
    batch, units = xs.shape[0], ref.layers[-1].out_dim
    if cotangent is not None:
        cot = check_cotangent_shape(units, cotangent, batch)
        loss_obj, ys = None, None
    else:
        cot = None
        loss_obj = get_loss(loss)
        ys = loss_obj.prepare_target(y, (batch, units))
    if transfer:
        cand = cand.with_params(_remap(ref.native_params(), pairs, forward=True))
    # The reference says what precision is asked for: a float32 port of a float64 model is
    # judged at float64 tolerance, and the diagnosis names the dtype.
    dtype = ref.dtype if ref.dtype in ("float32", "float64") else "float32"
    tol = tolerance(dtype, rtol)

    timing = {}
    start = time.perf_counter()
    ref_grads = ref.gradients(xs, ys, loss_obj, cot)
    ref_capture = ref.capture(xs, ys, loss_obj, cot)
    timing["reference"] = time.perf_counter() - start
    start = time.perf_counter()
    cand_grads = cand.gradients(xs, ys, loss_obj, cot)
    cand_capture = cand.capture(xs, ys, loss_obj, cot)
    label = cand.framework if cand.framework != "reference" else "candidate"
    timing[label] = time.perf_counter() - start

    cand_params = _remap(cand_grads.params, pairs, forward=False)
    ref_names, cand_names = ref.native_names(), cand.native_names()
    entries = []
    for i, j in pairs:
        for kind in ("kernel", "bias"):
            name = f"layers.{i}.{kind}"
            if name not in ref_grads.params:
                continue
            native = {"reference": ref_names[name], label: cand_names[f"layers.{j}.{kind}"]}
            entries.append(
                _entry(
                    name,
                    "parameter",
                    ref_grads.params[name].shape,
                    native,
                    {label: cand_params[name]},
                    ref_grads.params[name],
                    dtype,
                    tol,
                )
            )
    both = {"reference": "input", label: "input"}
    input_entry = _entry(
        "input", "input", xs.shape, both, {label: cand_grads.input}, ref_grads.input, dtype, tol
    )
    output_entry = _entry(
        "output",
        "output",
        ref_grads.output.shape,
        {"reference": "output", label: "output"},
        {label: cand_grads.output},
        ref_grads.output,
        dtype,
        tol,
    )
    loss_entry = None
    if loss_obj is not None:
        loss_entry = _entry(
            "loss",
            "loss",
            (),
            {"reference": loss_obj.name, label: loss_obj.name},
            {label: np.asarray(cand_grads.loss)},
            np.asarray(ref_grads.loss),
            dtype,
            tol,
            scale=loss_scale(loss_obj.name, ref_grads.output),
        )
    layers = []
    for i, j in pairs:
        layers.append(
            LayerEntry(
                index=i,
                names={"reference": ref.layers[i].name, label: cand.layers[j].name},
                shape=tuple(ref_capture.activations[i].shape),
                forward=compare_arrays(
                    cand_capture.activations[j], ref_capture.activations[i], dtype=dtype, tol=tol
                ),
                backward=compare_arrays(
                    cand_capture.gradients[j], ref_capture.gradients[i], dtype=dtype, tol=tol
                ),
            )
        )
    by_name = {e.name: e for e in [*entries, input_entry]}
    report = Report(
        model=" -> ".join(
            [str(ref.input_dim)]
            + [f"{layer.out_dim}:{layer.activation or '?'}" for layer in ref.layers]
        ),
        dtype=dtype,
        loss=None if loss_obj is None else loss_obj.name,
        frameworks=(label,),
        reference={"model": ref.description, "framework": ref.framework, "dtype": ref.dtype},
        tolerance=tol,
        batch=batch,
        seed=None,
        losses={} if loss_obj is None else {label: cand_grads.loss},
        reference_loss=ref_grads.loss,
        parameters=tuple(entries),
        input=input_entry,
        output=output_entry,
        loss_value=loss_entry,
        timing=timing,
        title=title,
        layers=tuple(layers),
        first_divergence=_divergence(layers, by_name, label, "reference"),
        models={
            "reference": {"model": ref.description, "framework": ref.framework, "dtype": ref.dtype},
            label: {
                "model": cand.description,
                "framework": cand.framework,
                "dtype": cand.dtype,
                "transferred": transfer,
            },
        },
    )
    if explain is False or (explain is None and report.ok):
        return report
    evidence = _evidence(
        _Side(ref, ref_grads, ref_capture),
        _Side(cand, cand_grads, cand_capture),
        pairs,
        xs,
        ys,
        loss_obj,
        label,
        layers,
        dtype,
        tol,
    )
    return dataclasses.replace(report, diagnoses=tuple(diagnose(evidence)))


class _Side(NamedTuple):
    """One model as compared: its source, its gradients and its per-layer capture."""

    source: ModelSource
    grads: object
    capture: object


def _evidence(r: _Side, c: _Side, pairs, xs, ys, loss_obj, label, layers, dtype, tol) -> Evidence:
    ref, ref_grads, ref_capture = r
    cand, cand_grads, cand_capture = c
    ref_params = ref.native_params()
    cand_params = _remap(cand.native_params(), pairs, forward=False)
    cand_grad_params = _remap(cand_grads.params, pairs, forward=False)

    def f64(a):
        return None if a is None else np.asarray(a, dtype=np.float64)

    out = []
    for (i, j), entry in zip(pairs, layers, strict=True):
        out.append(
            LayerEvidence(
                index=i,
                label=entry.label,
                activation=ref.layers[i].activation,
                kernel_ref=ref_params[f"layers.{i}.kernel"],
                bias_ref=ref_params.get(f"layers.{i}.bias"),
                kernel_cand=cand_params[f"layers.{i}.kernel"],
                bias_cand=cand_params.get(f"layers.{i}.bias"),
                input_ref=xs if i == 0 else f64(ref_capture.activations[i - 1]),
                input_cand=xs if j == 0 else f64(cand_capture.activations[j - 1]),
                act_ref=f64(ref_capture.activations[i]),
                act_cand=f64(cand_capture.activations[j]),
                grad_ref=f64(ref_capture.gradients[i]),
                grad_cand=f64(cand_capture.gradients[j]),
                dkernel_ref=f64(ref_grads.params[f"layers.{i}.kernel"]),
                dkernel_cand=f64(cand_grad_params[f"layers.{i}.kernel"]),
                dbias_ref=f64(ref_grads.params.get(f"layers.{i}.bias")),
                dbias_cand=f64(cand_grad_params.get(f"layers.{i}.bias")),
            )
        )
    return Evidence(
        framework=label,
        layers=out,
        dinput_ref=f64(ref_grads.input),
        dinput_cand=f64(cand_grads.input),
        output_ref=f64(ref_grads.output),
        output_cand=f64(cand_grads.output),
        loss=None if loss_obj is None else loss_obj.name,
        y=ys,
        dtype=dtype,
        dtype_ref=ref.dtype,
        dtype_cand=cand.dtype,
        tol=tol,
    )
