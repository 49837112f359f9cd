"""Normalisation layers: epsilon, batch vs moving statistics, momentum, missing affine."""

from __future__ import annotations

from dataclasses import replace

from xgrad.diagnosis.evidence import Evidence, UnitEvidence
from xgrad.diagnosis.records import Cause, Finding, check, drop, rerun
from xgrad.identify import EPSILONS, rel
from xgrad.layers import BatchNorm, LayerNorm, RMSNorm

__all__ = ["CAUSES"]

DEFAULT_EPSILONS = {
    "layernorm": "Keras 1e-3, Flax 1e-6, PyTorch 1e-5",
    "rmsnorm": "Keras and Flax 1e-6, PyTorch the dtype's machine epsilon (1.2e-7 in float32)",
    "batchnorm": "Keras 1e-3, Flax and PyTorch 1e-5",
}

FIXES = (
    "model.eval() (PyTorch), model.eval() or use_running_average=True (Flax NNX), "
    "use_running_average=True (Flax Linen), training=False (Keras)"
)


def batchnorm_mode(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The reference's unit re-run in the other mode, with its own weights, statistics and
    input, reproduces the candidate: one side normalises by the batch's statistics, the other
    by the moving ones. The candidate need hold no statistics (a BatchNorm written by hand in
    training mode has none); a reference in training mode that keeps none is re-run in
    inference with the candidate's."""
    main = unit.main_ref
    if not isinstance(main, BatchNorm):
        return None
    flipped = replace(main, training=not main.training)
    weights = dict(unit.weights_ref)
    borrowed = not flipped.training and not {"mean", "var"} <= set(weights)
    if borrowed:
        weights.update({k: v for k, v in unit.weights_cand.items() if k in ("mean", "var")})
        if not {"mean", "var"} <= set(weights):
            return None
    confirmed = rerun(ev, unit, [flipped, *unit.layers_ref[1:]], weights)
    if not confirmed.confirmed:
        return None
    residual = confirmed.residual
    if flipped.training:
        words = (
            "the candidate normalises with the batch's own statistics (training mode), the "
            "reference with the moving ones (inference)"
        )
    else:
        words = (
            "the candidate normalises with the moving statistics (inference mode), the "
            "reference with the batch's own (training)"
        )
        if borrowed:
            words += ", which the reference does not keep: the candidate's were used"
    return Finding(
        f"{words}; with the candidate's mode on both sides {drop(before, residual)}. Put both "
        f"in the same mode: {FIXES}",
        residual,
        before,
    )


def norm_affine(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    main = unit.main_ref
    if not isinstance(main, LayerNorm | RMSNorm | BatchNorm):
        return None
    ref_has = {k for k in ("scale", "bias") if k in unit.weights_ref}
    cand_has = {k for k in ("scale", "bias") if k in unit.weights_cand}
    if ref_has == cand_has:
        return None
    flags = {"scale": "scale" in cand_has}
    if not isinstance(main, RMSNorm):
        flags["center"] = "bias" in cand_has
    variant = replace(main, **flags)
    weights = {k: v for k, v in unit.weights_ref.items() if k in cand_has or k not in ref_has}
    weights.update({k: unit.weights_cand[k] for k in cand_has - ref_has})  # none to take
    confirmed = rerun(ev, unit, [variant, *unit.layers_ref[1:]], weights)
    if not confirmed.confirmed:
        return None
    residual = confirmed.residual
    missing = sorted(ref_has - cand_has)
    extra = sorted(cand_has - ref_has)
    parts = []
    if missing:
        parts.append(f"the candidate has no {' or '.join(missing)} where the reference has one")
    if extra:
        parts.append(f"the candidate has a {' and '.join(extra)} the reference lacks")
    return Finding(
        f"{'; '.join(parts)} (center/scale, elementwise_affine, use_bias/use_scale); with "
        f"the candidate's affine terms on both sides {drop(before, residual)}",
        residual,
        before,
    )


def norm_epsilon(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    main = unit.main_ref
    if not isinstance(main, LayerNorm | RMSNorm | BatchNorm):
        return None
    best = None
    for eps in EPSILONS:
        if abs(eps - main.epsilon) <= 1e-3 * main.epsilon:
            continue
        confirmed = rerun(ev, unit, [replace(main, epsilon=eps), *unit.layers_ref[1:]])
        if best is None or confirmed.residual < best[1].residual:
            best = (eps, confirmed)
    if best is None or not best[1].confirmed:
        return None
    best, best_residual = best[0], best[1].residual
    return Finding(
        f"reference epsilon {main.epsilon:g}, candidate {best:g} "
        f"({DEFAULT_EPSILONS[main.kind]}); with epsilon {best:g} on both sides "
        f"{drop(before, best_residual)}",
        best_residual,
        before,
    )


def batchnorm_momentum(ev: Evidence, unit: UnitEvidence, before: float) -> Finding | None:
    """The updated moving statistics differ: another momentum weighting, or the unbiased
    batch variance (PyTorch), on either side: the reference's own convention is read from
    its updated statistics first."""
    main = unit.main_ref
    if not isinstance(main, BatchNorm) or not unit.state_cand or not unit.state_ref:
        return None
    x = unit.input_ref
    n = x.shape[0]
    mean, var = x.mean(axis=0), x.var(axis=0)
    old_mean, old_var = unit.weights_ref["mean"], unit.weights_ref["var"]
    m = main.momentum
    options = {}
    for momentum in dict.fromkeys((m, 1 - m, 0.9, 0.99, 0.1)):
        for unbiased in (False, True):
            v = var * n / (n - 1) if unbiased and n > 1 else var
            options[momentum, unbiased] = (
                momentum * old_mean + (1 - momentum) * mean,
                momentum * old_var + (1 - momentum) * v,
            )

    def error(state, update) -> float:
        return max(rel(state.get("mean"), update[0]), rel(state.get("var"), update[1]))

    own = min(options, key=lambda k: error(unit.state_ref, options[k]))
    if error(unit.state_ref, options[own]) > ev.fit_tol:
        own = (m, False)
    held = [unit.state_cand.get("mean"), unit.state_cand.get("var")]
    for (momentum, unbiased), update in options.items():
        if (momentum, unbiased) == own:
            continue
        confirmed = check(
            ev,
            held,
            list(update),
            list(options[own]),
            reference=[*map(unit.state_ref.get, ("mean", "var"))],
        )
        if not confirmed.confirmed:
            continue
        residual = confirmed.residual
        parts = []
        if momentum != own[0]:
            parts.append(
                f"the candidate keeps {momentum:g} of the old moving value where the "
                f"reference keeps {own[0]:g} (PyTorch's momentum=0.1 is Keras' and Flax's "
                "momentum=0.9: it weights the new value)"
            )
        if unbiased != own[1]:
            unbiased_side, biased_side = (
                ("candidate", "reference")
                if unbiased
                else (
                    "reference",
                    "candidate",
                )
            )
            parts.append(
                f"the {unbiased_side} updates the moving variance with the unbiased batch "
                f"variance (divided by N - 1 = {n - 1}, as PyTorch does) where the "
                f"{biased_side} uses the biased one (divided by N)"
            )
        return Finding(
            f"{'; '.join(parts)}; with that update {drop(before, residual)}", residual, before
        )
    return None


CAUSES = (
    Cause(
        "batchnorm-mode",
        "forward",
        ("batchnorm",),
        "batch statistics (training mode) on one side, moving statistics on the other",
        batchnorm_mode,
    ),
    Cause(
        "norm-affine",
        "forward",
        ("layernorm", "rmsnorm", "batchnorm"),
        "a norm's scale or bias (center) present on one side only",
        norm_affine,
    ),
    Cause(
        "layernorm-epsilon",
        "forward",
        ("layernorm",),
        "LayerNorm epsilon: Keras 1e-3, Flax 1e-6, PyTorch 1e-5",
        norm_epsilon,
    ),
    Cause(
        "rmsnorm-epsilon",
        "forward",
        ("rmsnorm",),
        "RMSNorm epsilon: Keras and Flax 1e-6, PyTorch eps=None is the dtype's epsilon",
        norm_epsilon,
    ),
    Cause(
        "batchnorm-epsilon",
        "forward",
        ("batchnorm",),
        "BatchNorm epsilon: Keras 1e-3, Flax and PyTorch 1e-5",
        norm_epsilon,
    ),
    Cause(
        "batchnorm-momentum",
        "state",
        ("batchnorm",),
        "moving statistics updated with another momentum weighting, or PyTorch's unbiased "
        "running variance",
        batchnorm_momentum,
    ),
)
