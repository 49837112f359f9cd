"""What a module of a captured Flax model is (for :mod:`xgrad.frameworks.flax.capture`): a
layer kind read from its class, an activation or a norm read from its values, or opaque.

* A module of a class :data:`~xgrad.frameworks.flax.kinds.KINDS` reads (an entry's
  ``modules`` for NNX, the Linen class its ``linen`` names, and ``nn.Dropout``) gets the
  kind's configuration from the module (``hints``), its weights (their presence, the
  kernel's shape) and its mode (``deterministic`` / ``use_running_average``, as the call or
  the module states it); Flax stores kernels ``(in, out)``, so no layout. A norm over other
  axes than the last, or a subclass holding other weights, stays opaque.
* A weight-free module of another class is named from its values when one of xgrad's
  activations reproduces them (:func:`~xgrad.identify.fit_activation`); one holding a single
  weight vector when one of xgrad's norms does (:func:`~xgrad.identify.fit_norm`, LLaMA's
  RMSNorm).

Importing this module imports Flax.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from flax import linen as nn

from xgrad.errors import SpecError
from xgrad.frameworks.flax.kinds import KINDS
from xgrad.frameworks.flax.taps import Call
from xgrad.identify import fit_activation, fit_norm
from xgrad.layers import LAYERS, Activation

__all__ = ["DROPOUT_NOTE", "Weights", "by_values", "known", "own_dropout"]

DROPOUT_NOTE = (
    "dropout in training mode: a random mask (the same in every evaluation); pass "
    "training=False (or call model.eval()) to compare without it"
)
BATCHNORM_NOTE = (
    "BatchNorm in training mode (batch statistics; the running ones are not updated here); "
    "pass training=False (or call model.eval()) to use the running statistics"
)
_MODES = {"batchnorm": ("use_running_average", "training"), "dropout": ("deterministic", "active")}
"""kind -> (the flag a Flax module or call states its mode by, the xgrad field it negates)."""


@dataclass
class Weights:
    """A module's own weights: local name -> native name, trainable and not."""

    params: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)


def _kind_classes(linen: bool) -> dict[str, tuple[type, ...]]:
    """kind -> the module classes read as it: an entry's ``modules`` (NNX) or the Linen
    class its ``linen`` names, and ``nn.Dropout``."""
    if not linen:
        return {kind: entry.modules for kind, entry in KINDS.items() if entry.modules}
    table = {
        kind: (getattr(nn, entry.linen),)
        for kind, entry in KINDS.items()
        if entry.linen and isinstance(getattr(nn, entry.linen, None), type)
    }
    table.setdefault("dropout", (nn.Dropout,))
    return table


def _feature_axes_last(module) -> bool:
    """A norm over the last axis only, a dropout without broadcast axes."""
    axes = [getattr(module, a, -1) for a in ("reduction_axes", "feature_axes", "axis")]
    return all(a in (-1, (-1,)) for a in axes) and not getattr(module, "broadcast_dims", ())


def known(call: Call, own: Weights, shapes: dict, *, linen: bool, rng_note: str | None):
    """``(layer, kind, params, state, note)`` of a module whose class the kind table reads,
    or ``None`` (another class, or one configured beyond what xgrad's kind computes)."""
    module = call.module
    kind = next(
        (k for k, classes in _kind_classes(linen).items() if isinstance(module, classes)),
        None,
    )
    if kind is None or not _feature_axes_last(module):
        return None
    entry = KINDS[kind]
    params = {loc: own.params[attr] for loc, attr in entry.weights.items() if attr in own.params}
    state = {loc: own.state[attr] for loc, attr in entry.weights.items() if attr in own.state}
    if len(params) != len(own.params) or len(state) != len(own.state):
        return None  # weights the kind has no place for
    fields: dict = {"use_bias": "bias" in params, "center": "bias" in params}
    fields["scale"] = "scale" in params
    if "kernel" in params:
        if len(shapes[params["kernel"]]) != 2:
            return None
        fields["units"] = int(shapes[params["kernel"]][1])
    try:
        fields.update(entry.hints(module) if entry.hints else {})
        if kind in _MODES:
            flag, name = _MODES[kind]
            value = call.flags.get(flag, getattr(module, flag, None))
            if value is None:
                return None
            fields[name] = not value
        cls = LAYERS[kind]
        allowed = {f.name for f in dataclasses.fields(cls)}
        layer = cls(**{k: v for k, v in fields.items() if k in allowed})
    except (SpecError, TypeError, ValueError, AttributeError):
        return None
    note = None
    if kind == "dropout" and fields["active"] and fields.get("rate", 0) > 0:
        note = DROPOUT_NOTE if rng_note is None else f"{DROPOUT_NOTE}; {rng_note}"
    elif kind == "batchnorm" and fields["training"]:
        note = BATCHNORM_NOTE
    return layer, kind, params, state, note


def _fit_dtype(dtype: str) -> str:
    return dtype if dtype in ("float32", "float64") else "bfloat16"


def by_values(call: Call, own: Weights, arrays: dict, dtype: str):
    """A module of another class named from its values: a weight-free one as the activation
    of xgrad's reproducing it, one holding a single weight vector as the norm reproducing
    it (LLaMA's RMSNorm); else ``None``."""
    if (
        len(call.inputs) != 1
        or call.output is None
        or call.inputs[0].shape != call.output.shape
        or own.state
    ):
        return None
    x = np.asarray(call.inputs[0], dtype=np.float64)
    out = np.asarray(call.output, dtype=np.float64)
    if not own.params:
        name, err = fit_activation(x, out, _fit_dtype(dtype))
        if name is None:
            return None
        note = f"identified numerically as {name} ({err:.1e})"
        return Activation(name), "activation", {}, {}, note
    if len(own.params) != 1:
        return None
    ((local, native),) = own.params.items()
    w = np.asarray(arrays[native], dtype=np.float64)
    if w.ndim != 1 or w.shape[0] != out.shape[-1]:
        return None
    found, _ = fit_norm(x, out, {"scale": w}, dtype=_fit_dtype(dtype))
    if (
        found is None
        or found.kind not in ("rmsnorm", "layernorm")
        or found.param_names() != ("scale",)
    ):
        return None
    note = f"identified numerically as {found.describe()}"
    return found, found.kind, {"scale": native}, {}, note


def own_dropout(call: Call, rng_note: str | None) -> str | None:
    """What an opaque module's own dropout (attention's ``dropout_rate``) does, if active."""
    rate = getattr(call.module, "dropout_rate", 0)
    active = call.flags.get("deterministic", getattr(call.module, "deterministic", None)) is False
    if not isinstance(rate, int | float) or rate <= 0 or not active:
        return None
    note = f"its own dropout (dropout_rate={rate:g}) is active; {DROPOUT_NOTE}"
    return note if rng_note is None else f"{note}; {rng_note}"
