"""The comparison runner: the same params into every framework, gradients against a
float64 reference, a :class:`~xgrad.report.Report` out.

The runner never asks which framework it is talking to: it only uses the adapter
interface, so a user's own :class:`~xgrad.adapters.base.AbstractAdapter` is compared
exactly like the built-in ones.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from xgrad.adapters.base import (
    AbstractAdapter,
    Gradients,
    available_frameworks,
    check_cotangent,
    check_dtype,
    check_input,
    get_adapter,
)
from xgrad.errors import FrameworkError, InputError
from xgrad.losses import get_loss
from xgrad.metrics import PreparedReference, quick_rel_norm, tolerance
from xgrad.params import check_params, init_params
from xgrad.report import Entry, Pairwise, Report
from xgrad.spec import MLP

__all__ = ["compare", "loss_scale", "resolve_frameworks"]


def loss_scale(loss_name: str | None, output: np.ndarray) -> float | None:
    """The scale a loss value is judged against when its terms can cancel.

    ``sum`` and ``mean`` add outputs of either sign: their value can be far smaller than
    its terms, and its rounding error scales with the terms, so it is compared relative to
    the sum (or mean) of ``|output|``. The other losses add non-negative terms, for which
    ``|loss|`` is that scale already (``None``).
    """
    if loss_name == "sum":
        return float(np.abs(output).sum())
    if loss_name == "mean":
        return float(np.abs(output).mean())
    return None


REFERENCE = {"framework": "numpy", "dtype": "float64"}


def resolve_frameworks(
    frameworks: str | Iterable[str | AbstractAdapter] | None,
) -> list[AbstractAdapter]:
    """Turn names and adapter objects into adapters, importing only the frameworks named.

    Args:
        frameworks: ``None`` for every installed framework; a comma-separated string; or
            a sequence of names and :class:`AbstractAdapter` instances.

    Raises:
        FrameworkError: an unknown name, a non-adapter object, a repeated name, or none.
        FrameworkNotInstalledError: a named framework is not installed.
    """
    if frameworks is None:
        items: list = available_frameworks()
    elif isinstance(frameworks, str):
        items = [f for f in (p.strip() for p in frameworks.split(",")) if f]
    elif isinstance(frameworks, AbstractAdapter):
        items = [frameworks]
    elif isinstance(frameworks, Iterable):
        items = list(frameworks)
    else:
        raise FrameworkError(
            f"frameworks must be names or adapter objects, got {type(frameworks).__name__}"
        )
    adapters: list[AbstractAdapter] = []
    for item in items:
        if isinstance(item, AbstractAdapter):
            adapters.append(item)
        elif isinstance(item, type) and issubclass(item, AbstractAdapter):
            raise FrameworkError(
                f"got the adapter class {item.__name__}; pass an instance: {item.__name__}()"
            )
        elif isinstance(item, str):
            adapters.append(get_adapter(item))
        else:
            raise FrameworkError(
                f"a framework is a name or an AbstractAdapter instance, got "
                f"{type(item).__name__} {item!r}"
            )
    if not adapters:
        raise FrameworkError("no framework to compare; name at least one, e.g. 'numpy,jax'")
    names = [a.name for a in adapters]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FrameworkError(f"framework {repeated[0]!r} is named more than once in {names}")
    return adapters


def _entry(
    name: str,
    kind: str,
    shape,
    native: Mapping[str, str],
    arrays: Mapping[str, np.ndarray],
    reference: np.ndarray,
    dtype: str,
    tol: float,
    scale: float | None = None,
) -> Entry:
    # one prepared reference, shared by the frameworks
    prepared = PreparedReference(reference, dtype=dtype, tol=tol, scale=scale)
    results = {fw: prepared.compare(arr) for fw, arr in arrays.items()}
    return Entry(name=name, kind=kind, shape=tuple(shape), native=dict(native), results=results)


def _pairwise(
    names: Sequence[str], grads: Mapping[str, Gradients], ref: Gradients
) -> list[Pairwise]:
    """Largest ``||g_a - g_b|| / ||ref||`` over the entries, for each pair of frameworks.

    The difference is taken in the run dtype: two nearby floats subtract exactly there
    (Sterbenz), so no float64 copies of whole gradients are made.
    """
    keys = [(k, ref.params[k]) for k in ref.params]
    keys += [("input", ref.input), ("output", ref.output)]
    norms = {k: float(np.linalg.norm(r)) for k, r in keys}

    def pick(g: Gradients, key: str) -> np.ndarray:
        return g.input if key == "input" else g.output if key == "output" else g.params[key]

    pairs = []
    for a, b in itertools.combinations(names, 2):
        worst, worst_name = -1.0, ""
        with np.errstate(all="ignore"):
            for key, _ in keys:
                ga, gb = pick(grads[a], key), pick(grads[b], key)
                num = float(np.linalg.norm(np.subtract(ga, gb)))
                den = norms[key]
                value = num / den if den else (0.0 if num == 0 else np.inf)
                if np.isnan(value):
                    value = np.inf
                if value > worst:
                    worst, worst_name = value, key
        pairs.append(Pairwise(frameworks=(a, b), rel_norm=float(worst), entry=worst_name))
    return pairs


def compare(
    model: MLP,
    x,
    y=None,
    *,
    loss: str = "sum",
    frameworks: str | Iterable[str | AbstractAdapter] | None = None,
    dtype: str = "float32",
    params: Mapping[str, np.ndarray] | None = None,
    seed: int = 0,
    cotangent=None,
    rtol: float | None = None,
    title: str | None = None,
    explain: bool | None = None,
) -> Report:
    """Compare every framework's gradients of ``model`` against a float64 NumPy reference.

    The canonical float64 params are cast once to ``dtype`` by each adapter and loaded into
    its framework; the reference is the hand-written NumPy backprop in float64 from the same
    params. Frameworks run one after another; each built model is released before the next.

    Args:
        model: the :class:`~xgrad.MLP` spec.
        x: inputs, shape ``(batch, input_dim)``.
        y: targets for the losses that need them (see :mod:`xgrad.losses`).
        loss: a loss name; ignored when ``cotangent`` is given.
        frameworks: names (``"numpy,jax"`` or a list) and/or adapter objects; ``None``
            means every installed framework.
        dtype: the dtype every framework computes in, ``"float32"`` or ``"float64"``.
        params: canonical params (kernel ``(in, out)``, bias ``(out,)``); ``None`` draws
            them with :func:`xgrad.init_params` ``(model, seed)``.
        seed: the seed for ``params=None``.
        cotangent: a ``grad_output = dL/doutput`` of shape ``(batch, units)`` to
            back-propagate instead of a loss (the seed article's gradient "received from
            the subsequent layer").
        rtol: overrides the per-dtype normwise tolerance (:data:`xgrad.metrics.TOLERANCES`).
        title: a heading for the report.
        explain: test the known causes of any mismatch (:mod:`xgrad.diagnose`) and put
            the result in ``report.diagnoses``. ``None`` (default): only when something
            mismatches; ``True``: always; ``False``: never.

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
    dtype = check_dtype(dtype)
    tol = tolerance(dtype, rtol)
    xs = check_input(model, x)
    batch = xs.shape[0]
    if cotangent is not None:
        cot = check_cotangent(model, cotangent, batch)
        loss_name, ys = None, None
    else:
        loss_obj = get_loss(loss)
        ys = loss_obj.prepare_target(y, (batch, model.output_dim))
        loss_name, cot = loss_obj.name, None
    checked = init_params(model, seed) if params is None else check_params(model, params)
    adapters = resolve_frameworks(frameworks)
    names = [a.name for a in adapters]

    def run(adapter: AbstractAdapter, run_dtype: str):
        # params were checked once above: each adapter builds from them without a copy
        built = adapter._build(model, checked, run_dtype)
        if cot is not None:
            grads = built.vjp(xs, cot)
        else:
            grads = built.gradients(xs, ys, loss=loss_name)
        return grads, built

    start = time.perf_counter()
    ref, _ = run(get_adapter("numpy"), "float64")
    reference_s = time.perf_counter() - start
    grads: dict[str, Gradients] = {}
    native: dict[str, dict[str, str]] = {}
    values: dict[str, list] = {}
    timing: dict[str, float] = {}
    for adapter in adapters:
        start = time.perf_counter()
        grads[adapter.name], built = run(adapter, dtype)
        timing[adapter.name] = time.perf_counter() - start
        native[adapter.name] = built.native_names
        if explain is not False and _mismatched(grads[adapter.name], ref, tol):
            values[adapter.name] = built.layer_values(xs)  # for the diagnosis, before release
        del built

    start = time.perf_counter()
    shapes = model.param_shapes()
    parameters = tuple(
        _entry(
            pname,
            "parameter",
            shape,
            {fw: native[fw][pname] for fw in names},
            {fw: grads[fw].params[pname] for fw in names},
            ref.params[pname],
            dtype,
            tol,
        )
        for pname, shape in shapes.items()
    )
    input_entry = _entry(
        "input",
        "input",
        xs.shape,
        {fw: "input" for fw in names},
        {fw: grads[fw].input for fw in names},
        ref.input,
        dtype,
        tol,
    )
    output_entry = _entry(
        "output",
        "output",
        ref.output.shape,
        {fw: "output" for fw in names},
        {fw: grads[fw].output for fw in names},
        ref.output,
        dtype,
        tol,
    )
    loss_entry = None
    losses: dict[str, float] = {}
    if loss_name is not None:
        losses = {fw: grads[fw].loss for fw in names}
        loss_entry = _entry(
            "loss",
            "loss",
            (),
            {fw: loss_name for fw in names},
            {fw: np.asarray(grads[fw].loss) for fw in names},
            np.asarray(ref.loss),
            dtype,
            tol,
            scale=loss_scale(loss_name, ref.output),
        )
    pairwise = tuple(_pairwise(names, grads, ref))
    timing["reference (numpy float64)"] = reference_s
    timing["metrics and report"] = time.perf_counter() - start
    report = Report(
        model=model.describe(),
        dtype=dtype,
        loss=loss_name,
        frameworks=tuple(names),
        reference=dict(REFERENCE),
        tolerance=tol,
        batch=batch,
        seed=seed if params is None else None,
        losses=losses,
        reference_loss=ref.loss,
        parameters=parameters,
        input=input_entry,
        output=output_entry,
        loss_value=loss_entry,
        pairwise=pairwise,
        timing=timing,
        title=title,
    )
    if explain is False or (explain is None and report.ok):
        return report
    diagnoses = []
    for fw in names:
        if fw in values:
            diagnoses += _explain(
                model, checked, xs, ys, cot, loss_name, fw, grads[fw], values[fw], dtype, tol
            )
    return dataclasses.replace(report, diagnoses=tuple(diagnoses))


def _mismatched(grads: Gradients, ref: Gradients, tol: float) -> bool:
    """A cheap first look (normwise only), to keep layer values for a diagnosis."""
    pairs = [(grads.input, ref.input), (grads.output, ref.output)]
    pairs += [(grads.params[k], ref.params[k]) for k in ref.params]
    return any(quick_rel_norm(g, r) > tol for g, r in pairs)


def _explain(model, params, xs, ys, cot, loss_name, fw, grads, values, dtype, tol):
    """Evidence for one mismatching framework from its layer values, then diagnose it."""
    from xgrad.adapters.numpy import backward, forward
    from xgrad.diagnose import Evidence, LayerEvidence, diagnose

    with np.errstate(all="ignore"):
        ref_values = forward(model, params, xs)
        if cot is not None:
            grad_out = cot
        else:
            grad_out = get_loss(loss_name).value_and_grad(ref_values[-1].a, ys)[1]
        layer_grads: list[np.ndarray] = []
        ref_params, ref_dx = backward(
            model, params, xs, ref_values, grad_out, layer_grads=layer_grads
        )
    layers = []
    for i, layer in enumerate(model.layers):
        kernel, bias = params[f"layers.{i}.kernel"], params.get(f"layers.{i}.bias")
        cand_bias = grads.params.get(f"layers.{i}.bias")
        layers.append(
            LayerEvidence(
                index=i,
                label=f"layer {i}",
                activation=layer.activation,
                kernel_ref=kernel,
                bias_ref=bias,
                kernel_cand=kernel,
                bias_cand=bias,
                input_ref=xs if i == 0 else ref_values[i - 1].a,
                input_cand=xs if i == 0 else np.asarray(values[i - 1].a, dtype=np.float64),
                act_ref=ref_values[i].a,
                act_cand=np.asarray(values[i].a, dtype=np.float64),
                grad_ref=layer_grads[i],
                grad_cand=None,
                dkernel_ref=ref_params[f"layers.{i}.kernel"],
                dkernel_cand=np.asarray(grads.params[f"layers.{i}.kernel"], dtype=np.float64),
                dbias_ref=ref_params.get(f"layers.{i}.bias"),
                dbias_cand=None if cand_bias is None else np.asarray(cand_bias, dtype=np.float64),
            )
        )
    evidence = Evidence(
        framework=fw,
        layers=layers,
        dinput_ref=ref_dx,
        dinput_cand=np.asarray(grads.input, dtype=np.float64),
        output_ref=ref_values[-1].a,
        output_cand=np.asarray(grads.output, dtype=np.float64),
        loss=loss_name,
        y=ys,
        dtype=dtype,
        dtype_ref="float64",
        dtype_cand=str(np.asarray(grads.output).dtype),
        tol=tol,
    )
    return diagnose(evidence)
