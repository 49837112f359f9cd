"""The two comparisons users call most, as sequences of the pipeline's phases
(:mod:`xgrad.comparison`).

* :func:`compare` is "the float64 NumPy model of a spec against each framework's model of
  it": every framework builds the spec from the same weights.
* :func:`compare_models` is "the user's reference model against the candidate": both are
  read by their frameworks' readers, their layers aligned, the reference's weights copied
  into (a copy of) the candidate.

Both measure entries per parameter, updated state, dL/dinput, output and loss; per-layer
forward and backward comparisons; where each side first diverges; and, on a mismatch, the
diagnosis (:mod:`xgrad.diagnosis`). Neither asks which framework it is talking to.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import numpy as np

from xgrad.align import Alignment, identity_alignment
from xgrad.comparison import (
    Comparison,
    Description,
    Inputs,
    Side,
    assemble,
    evaluate,
    explain_report,
    finish,
    judged_dtype,
    loss_scale,
    model_text,
    prepare_inputs,
    read_pair,
    with_config_diffs,
)
from xgrad.comparison import transfer as transfer_weights
from xgrad.errors import InputError
from xgrad.frameworks.base import ALL_DTYPES, AbstractFramework, check_dtype, check_input
from xgrad.frameworks.registry import resolve_frameworks
from xgrad.metrics import rtol_note, tolerance
from xgrad.pairing.layouts import layouts_of
from xgrad.params import check_params, init_params
from xgrad.report import Report
from xgrad.spec import MLP

__all__ = [
    "Inputs",
    "Side",
    "assemble",
    "compare",
    "compare_models",
    "evaluate",
    "explain_report",
    "loss_scale",
    "model_text",
    "prepare_inputs",
    "resolve_frameworks",
]

REFERENCE = {"framework": "numpy", "dtype": "float64"}


# -- compare: a spec in every framework ----------------------------------------------------


def _check_frameworks(frameworks_: list[AbstractFramework], dtype: str, spec: MLP) -> None:
    """Refuse a framework that does not compute in ``dtype`` or build every layer kind of
    ``spec``, before any of them computes anything."""
    lacking = [fw for fw in frameworks_ if dtype not in fw.dtypes]
    if lacking:
        names = ", ".join(fw.name for fw in lacking)
        having = [fw.name for fw in frameworks_ if dtype in fw.dtypes]
        fix = f"drop {names} from frameworks" if having else "use another dtype"
        verb = "computes" if len(lacking) == 1 else "compute"
        raise InputError(
            f"dtype {dtype!r} is not supported by {names} (which {verb} in "
            f"{', '.join(lacking[0].dtypes)}); {fix}"
        )
    for fw in frameworks_:
        fw.kinds().check(spec)


def _referee(spec: MLP, weights, inputs_args, capture: bool) -> tuple[Side, Inputs]:
    """xgrad's NumPy model of ``spec`` in float64, evaluated, its forward steps kept for
    diagnosis (it never runs them again)."""
    from xgrad.frameworks.numpy import FRAMEWORK as NUMPY

    referee = NUMPY._build(spec, weights, "float64")
    inputs = prepare_inputs(referee, *inputs_args)
    start = time.perf_counter()
    if inputs.cotangent is not None:
        grads, trace = referee.evaluate_traced(
            inputs.x, cotangent=inputs.cotangent, capture=capture
        )
    else:
        grads, trace = referee.evaluate_traced(
            inputs.x, inputs.y, loss=inputs.loss, capture=capture
        )
    return Side("reference", referee, grads, time.perf_counter() - start, trace, weights), inputs


def compare(
    model: MLP,
    x,
    y=None,
    *,
    loss: str = "sum",
    frameworks: str | Iterable[str | AbstractFramework] | None = None,
    dtype: str = "float32",
    params: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    cotangent=None,
    rtol: float | None = None,
    title: str | None = None,
    explain: bool | None = None,
) -> Report:
    """Compare every framework's gradients of ``model`` against a float64 NumPy reference.

    Each framework builds the spec from the same canonical weights, cast to ``dtype``; the
    reference is xgrad's NumPy model of it in float64 (every layer's own forward and VJP).

    Args:
        model: the :class:`~xgrad.MLP` spec.
        x: inputs, shape ``(batch, *input_shape)``.
        y: targets for the losses that need them (see :mod:`xgrad.losses`).
        loss: a loss name; ignored when ``cotangent`` is given.
        frameworks: names (``"numpy,jax"`` or a list) and/or framework objects; ``None``
            means every installed framework.
        dtype: the dtype every framework computes in, ``"float32"`` or ``"float64"``.
        params: canonical weights (see :mod:`xgrad.params`); ``None`` draws them with
            :func:`xgrad.init_params` ``(model, seed)``.
        seed: the seed for ``params=None``.
        cotangent: a ``grad_output = dL/doutput`` to back-propagate instead of a loss (the
            seed article's gradient "received from the subsequent layer").
        rtol: overrides the per-dtype normwise tolerance (:data:`xgrad.metrics.TOLERANCES`).
        title: a heading for the report.
        explain: on a mismatch, compare every layer and test the known causes
            (:mod:`xgrad.diagnosis`), into ``report.layers`` and ``report.diagnoses``.
            ``None`` (default): only when something mismatches; ``True``: always; ``False``:
            never.

    Returns:
        A :class:`~xgrad.Report`; ``report.ok`` says whether everything matched.

    Raises:
        SpecError, InputError, ParamsError, FrameworkError: bad arguments, before any
            framework computes anything.

    Example:
        >>> import numpy as np, xgrad
        >>> spec = xgrad.MLP(3, [xgrad.Dense(4, "sigmoid")])
        >>> report = xgrad.compare(spec, np.ones((2, 3)), frameworks="numpy")
        >>> report.ok, [e.name for e in report.parameters]
        (True, ['layers.0.kernel', 'layers.0.bias'])
    """

    if not isinstance(model, MLP):
        raise InputError(
            f"compare needs an xgrad.MLP spec as model, got {type(model).__name__}; for your "
            "own Keras/Flax/JAX models use xgrad.compare_models"
        )
    frameworks_ = resolve_frameworks(frameworks)
    dtype = check_dtype(dtype, ALL_DTYPES)
    _check_frameworks(frameworks_, dtype, model)
    tol = tolerance(dtype, rtol)
    weights = init_params(model, seed) if params is None else check_params(model, params)
    # Per-layer values are captured in the one evaluation each model gets, unless diagnosis is
    # off: capturing costs a few percent of a step, evaluating again after a mismatch a whole
    # step.
    capture = explain is not False
    ref, inputs = _referee(model, weights, (x, y, loss, cotangent), capture)
    timing = {"reference (numpy float64)": ref.seconds}
    # the weights in the run dtype, cast once and shared by every framework's build (each
    # copies them into its own tensors; none writes to these arrays); bfloat16, which NumPy
    # holds only through ml_dtypes, is left to each framework to cast from float64
    native = dtype in ("float16", "float32")
    cast = {k: v.astype(dtype) for k, v in weights.items()} if native else weights
    alignments: dict[str, Alignment] = {}
    sides = []
    for fw in frameworks_:
        start = time.perf_counter()
        built = fw._build(model, cast, dtype)
        alignments[fw.name] = identity_alignment(ref.model, built)
        side = evaluate(fw.name, built, inputs, capture=capture)
        side.seconds = timing[fw.name] = time.perf_counter() - start
        sides.append(side)
    c = Comparison(ref, sides, alignments, inputs, dtype, tol)
    report = assemble(
        c,
        Description(
            reference=REFERENCE,
            model_text=model.describe(),
            seed=seed if params is None else None,
            title=title,
            timing=timing,
            layers="captured" if explain is True else "failing",
            notes=[note] if (note := rtol_note(rtol, dtype)) else (),
        ),
    )
    return finish(report, c, explain)


# -- compare_models: a user's model against its port ----------------------------------------


def compare_models(
    reference,
    candidate,
    x,
    y=None,
    *,
    loss="projection",
    mapping: str | Mapping[str, str] = "auto",
    transfer: bool | str = "auto",
    rtol: float | None = None,
    cotangent=None,
    title: str | None = None,
    explain: bool | None = None,
    seed: int = 0,
    output=None,
    training=None,
    ignore=(),
    read: str = "auto",
    apply_kwargs=None,
    layout=None,
) -> Report:
    """Compare a model with its port: outputs, loss, gradients and every layer or module.

    Two models that xgrad reads completely into its layer kinds are compared layer by layer
    and diagnosed; any other pair (attention, custom modules, several inputs, token ids,
    dict outputs) is read module by module (:mod:`xgrad.frameworks.capture`): every module
    is compared at its boundary and the first that parts is named on both sides by its
    attribute path, and those of a known kind are diagnosed.

    Args:
        reference: the model you trust: a ``keras.Model`` (Sequential, Functional or
            subclassed), a ``torch.nn.Module``, a ``flax.nnx.Module``, a
            ``(flax.linen.Module, variables)`` pair, a pure-JAX ``(apply_fn, params)`` pair or
            an ``(xgrad.MLP, params)`` pair.
        candidate: the port, any of the same kinds.
        x: inputs: one array ``(batch, ...)`` of any rank (NumPy, torch, JAX or TensorFlow;
            integer token ids too), a tuple or list of them (positional inputs) or a dict
            (inputs by name).
        y: targets, for the losses that need them.
        loss: a loss name (see :mod:`xgrad.losses`), computed on each side in its own
            framework with xgrad's definition; or a pair ``(reference_fn, candidate_fn)`` of
            each side's own loss function ``(output, y) -> scalar`` in its own framework. The
            default, ``projection``, is ``sum(output * r)`` for a seeded random ``r``: its
            gradients are never degenerate.
        mapping: ``"auto"`` pairs layers in call order; ``{reference layer name: candidate
            layer name}`` pairs them by name; ``{reference parameter: candidate parameter}``
            (native names) pairs parameters when the layers cannot be read.
        transfer: ``True`` copies the reference's weights into a copy of the candidate
            first, so both start identical; ``False`` compares the candidate's own weights (a
            loader that transposed or swapped a kernel is caught: ``weight-layout``);
            ``"auto"`` (default) does the second when the candidate already holds the
            reference's weights (any of them, in place, transposed or elsewhere) and the first
            when its weights are an unrelated initialisation. ``report.notes`` says which.
            Neither of your objects is ever changed.
        rtol: overrides the per-dtype normwise tolerance.
        cotangent: a ``grad_output`` of the output's shape instead of a loss.
        title: a heading for the report.
        explain: test the known causes of a mismatch (:mod:`xgrad.diagnosis`) and put
            them in ``report.diagnoses``; ``None`` (default) only when something
            mismatches, ``True`` always, ``False`` never.
        seed: seeds the targets drawn when ``y`` is not given (``projection``'s direction).
        output: which of the models' outputs the loss sees, when they return several (a
            tuple, a dict, a ``ModelOutput``): its key, index or path; ``None`` (default):
            the first floating tensor (the report says which). One value, or one per side:
            ``{"reference": ..., "candidate": ...}``.
        training: the mode each model computes in: ``None`` (default) as you left it
            (``.train()``/``.eval()``, a ``training=True`` in a Keras ``call``), ``True`` or
            ``False`` for both, or ``{"reference": bool, "candidate": bool}``.
        ignore: parameters present on one side only that you accept as such (native or
            canonical names, or globs such as ``"*.bias"``); any other unpaired parameter
            makes the report not ok.
        read: ``"auto"`` (default), ``"layers"`` (into xgrad's layer kinds only) or
            ``"modules"`` (module by module).
        apply_kwargs: keyword arguments of the models' calls beside their inputs, for Flax
            (Linen's ``apply(variables, x, train=False)``: ``{"train": False}``); one dict,
            or ``{"reference": ..., "candidate": ...}``.
        layout: the layout of ``x``'s axes (``N`` batch, ``C`` channels, ``H``/``W`` or
            ``L`` spatial, ``T`` time; :data:`xgrad.pairing.layouts.LAYOUTS`): one string
            when both sides take ``x`` as it is (``"NCHW"``), or ``{"reference": "NCHW",
            "candidate": "NHWC"}`` when the candidate takes its inputs in another layout:
            ``x`` is given in the reference's layout, permuted for the candidate, and the
            candidate's output, gradients and every module's activations are compared in
            the reference's layout (module by module). ``None`` (default): both take ``x``
            as it is; a batch whose layout the shapes cannot tell (channels and width of
            one size before a convolution) is then refused.

    Returns:
        A :class:`~xgrad.Report` whose reference is the reference model; the candidate is
        reported under its framework's name. ``report.layers`` holds each aligned layer's
        forward (output) and backward (``dL/d output``) comparison;
        ``report.first_divergence`` says where the two first part.

    Raises:
        AlignmentError: the layers cannot be paired (depth, kind, width, bias); the message
            names the layer on both sides and what to change.
        InputError: ``x``, ``y``, ``cotangent`` or ``mapping`` are malformed.
        LayoutError: ``layout`` is malformed or does not fit ``x``, or is needed (shapes
            that do not tell the layout) and missing.
    """

    start = time.perf_counter()
    pair = _read(
        reference,
        candidate,
        x,
        layouts_of(layout),
        mapping=mapping,
        read=read,
        output=output,
        training=training,
        apply_kwargs=apply_kwargs,
    )
    prepared = time.perf_counter()
    ref_model = pair.reference
    x = pair.batch if pair.tier == "modules" else pair.batch.args[0]
    if y is None and cotangent is None and isinstance(loss, str) and loss == "projection":
        from xgrad.losses import random_targets

        batch = pair.batch.size
        shape = (batch, *ref_model.output_shape)
        y = random_targets(
            "projection",
            batch,
            int(np.prod(ref_model.output_shape)),
            seed,
            shape=shape if len(ref_model.output_shape) > 1 else None,
        )
    inputs = prepare_inputs(ref_model, x, y, loss, cotangent)
    if pair.tier == "layers":
        check_input(pair.candidate.input_shape, inputs.x, vocab=pair.candidate.vocab)
    unpaired, ignored = _unpaired(pair, ignore)
    pair = transfer_weights(pair, transfer)
    cand_model = pair.candidate
    dtype = judged_dtype(ref_model.dtype)
    tol = tolerance(dtype, rtol)
    timing = {
        "read and align": prepared - start,
        "weights checked or copied": time.perf_counter() - prepared,
    }
    capture = bool(pair.alignment.pairs)
    ref = evaluate("reference", ref_model, inputs, capture=capture, side=0)
    label = cand_model.framework if cand_model.framework != "reference" else "candidate"
    cand = evaluate(label, cand_model, inputs, capture=capture, side=1)
    describe = {
        "model": ref_model.description,
        "framework": ref_model.framework,
        "dtype": ref_model.dtype,
    }
    cand_describe = {
        "model": cand_model.description,
        "framework": cand_model.framework,
        "dtype": cand_model.dtype,
        "transferred": pair.transferred,
    }
    c = Comparison(ref, [cand], {label: pair.alignment}, inputs, dtype, tol, native_reference=True)
    report = assemble(
        c,
        Description(
            reference=describe,
            model_text=model_text(ref_model),
            title=title,
            models={"reference": describe, label: cand_describe},
            notes=[*pair.notes, *ignored],
            unpaired=unpaired,
            timing={**timing, "reference": ref.seconds, label: cand.seconds},
        ),
    )
    return finish(with_config_diffs(report, c), c, explain)


_LAYOUT_HINT = (
    "; if the two models take x in different layouts (NCHW against NHWC, time-first against "
    "batch-first), pass layout={'reference': ..., 'candidate': ...} with x in the reference's"
)


def _for_side(value, side: str, keyed: bool = True):
    """One side's ``output=``/``training=`` (``keyed``) or ``apply_kwargs=`` value: the same
    for both, or the side's entry of a ``{"reference": ..., "candidate": ...}`` dict."""
    if isinstance(value, Mapping) and value and set(value) <= {"reference", "candidate"}:
        return value.get(side)
    return value


def _read(reference, candidate, x, layouts, **options):
    """:func:`read_pair`, with the candidate captured on ``x`` in its own layout where
    ``layouts`` differ (:mod:`xgrad.pairing.layouts`)."""
    from xgrad.frameworks.capture import as_batch
    from xgrad.frameworks.registry import capture_model
    from xgrad.pairing.layouts import (
        LaidOutModel,
        LayoutError,
        batch_to_candidate,
        check_unambiguous,
        relayout,
    )

    if layouts is not None:
        cand_batch = batch_to_candidate(as_batch(x), layouts)  # checks the rank
    if layouts is None or not layouts.differ:
        try:
            pair = read_pair(reference, candidate, x, **options)
        except InputError as exc:
            batch = as_batch(x)
            deep = batch.floating and batch.leaves[batch.floating[0]].ndim >= 3
            if layouts is None and deep and "failed" in str(exc):
                raise type(exc)(f"{exc}{_LAYOUT_HINT}") from None
            raise
        if layouts is None and pair.tier == "modules":
            check_unambiguous(pair.reference, pair.candidate, pair.batch)
        return pair
    if options["read"] == "layers":
        raise LayoutError(
            f"layout gives the sides different layouts ({layouts.reference} against "
            f"{layouts.candidate}), which xgrad compares module by module: pass read='modules' "
            "or 'auto'"
        )
    captured = capture_model(
        candidate,
        cand_batch,
        output=_for_side(options["output"], "candidate"),
        training=_for_side(options["training"], "candidate"),
        apply_kwargs=_for_side(options["apply_kwargs"], "candidate"),
    )
    laid = LaidOutModel(captured, layouts, as_batch(x))
    pair = read_pair(reference, laid, x, **{**options, "read": "modules"})
    pair.alignment, pair.candidate, notes = relayout(
        pair.alignment, pair.reference, pair.candidate, options["mapping"]
    )
    axes = layouts.to_candidate(layouts.rank)
    pair.notes += [
        f"layout: the reference takes x as {layouts.reference}, the candidate as "
        f"{layouts.candidate} (x permuted by axes {axes}); its output, gradients and modules' "
        f"activations are compared in the reference's layout",
        *notes,
    ]
    return pair


def _unpaired(pair, ignore) -> tuple[list[dict], list[str]]:
    """``(unpaired parameters not ignored, notes on those ignored)``.

    Raises:
        InputError: ``ignore`` names no parameter that pairs with nothing (the message lists
            the nearest names).
    """
    import difflib
    import fnmatch

    patterns = [ignore] if isinstance(ignore, str) else list(ignore or ())
    found = getattr(pair.alignment, "unpaired", ())
    rows = []
    for side, name, reason in found:
        model = pair.reference if side == "reference" else pair.candidate
        native = model.native_names().get(name, name)
        rows.append({"side": side, "name": name, "native": native, "reason": reason})
    kept, ignored, used = [], [], set()
    for row in rows:
        hit = [
            p
            for p in patterns
            if fnmatch.fnmatchcase(row["native"], p) or fnmatch.fnmatchcase(row["name"], p)
        ]
        used.update(hit)
        (ignored if hit else kept).append(row)
    unknown = [p for p in patterns if p not in used]
    if unknown:
        names = [r["native"] for r in rows] + [r["name"] for r in rows]
        near = difflib.get_close_matches(unknown[0], names, n=3) or names[:5]
        raise InputError(
            f"ignore={unknown[0]!r} names no parameter that pairs with nothing"
            + (
                f"; the unpaired ones are: {', '.join(map(repr, near))}"
                if near
                else "; every parameter pairs"
            )
        )
    notes = [f"ignored as you asked: {r['side']} {r['native']} ({r['reason']})" for r in ignored]
    return kept, notes
