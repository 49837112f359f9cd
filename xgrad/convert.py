"""Convert a model's weights: into another framework's native form, or into your own model.

* ``convert(model, to="flax")``: the weights as the target framework's model of the same
  spec holds them (see :data:`TARGETS`).
* ``convert(model, into=my_module)``: a copy of *your* model (an NNX module, a Linen
  ``(module, variables)`` pair, a pure-JAX ``(apply_fn, params)`` pair, a Keras model, a
  PyTorch module, or one of xgrad's own built models) holding the weights, under its own
  names and layout: read as layers of xgrad's kinds where both read so, else paired as
  :func:`xgrad.compare_models` pairs them. Every parameter of the target is written, or none
  (:class:`IncompleteConversion`). Your object is not changed.

Every weight is carried bit-exactly (convolution kernels ``(*k, in/groups, out)`` against
PyTorch's ``(out, in/groups, *k)``, LSTM/GRU kernels transposed and GRU gates reordered
``z, r, h`` against PyTorch's ``r, z, n``), with one convention that is not a copy: PyTorch's
``nn.LSTM`` adds two biases, ``bias_ih_l0 + bias_hh_l0``, where Keras and Flax hold one.
Converting to PyTorch writes the one bias as ``(bias, 0)`` (logged at INFO); converting from
PyTorch gives their sum, and where both are non-zero (a checkpoint trained in PyTorch) a
warning on the ``xgrad.convert`` logger says so: converting back gives ``(sum, 0)``, the same
function but not the original split. :func:`split_notes` and :func:`read_sum_notes` give
these notes for a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from xgrad.errors import AlignmentError, InputError, XgradError
from xgrad.frameworks.base import AbstractModel, LayerInfo
from xgrad.frameworks.capture import CapturedModel
from xgrad.frameworks.kinds import NativeParts
from xgrad.frameworks.registry import get_framework, known_frameworks, lookup_framework, read_model
from xgrad.layers import Activation, Dense, Residual
from xgrad.spec import MLP

__all__ = [
    "TARGETS",
    "IncompleteConversion",
    "convert",
    "read_sum_notes",
    "spec_of",
    "split_notes",
    "summed_weights",
]

_log = logging.getLogger(__name__)


def targets() -> tuple[str, ...]:
    """Every target of ``convert(..., to=...)``: each registered framework's name, then its
    further forms (:attr:`~xgrad.AbstractFramework.native_forms`)."""
    out = []
    for name in known_frameworks():
        out += [name, *lookup_framework(name).native_forms]
    return tuple(out)


TARGETS = targets()
"""What ``convert(..., to=...)`` returns for each target:

* ``numpy``: canonical float64 weights, a dict (``layers.{i}.kernel`` ``(in, out)``, ...);
* ``jax``: the pytree of xgrad's pure-JAX model, ``[{"kernel", "bias"}, ...]``;
* ``flax``: the ``nnx.State`` of xgrad's NNX model (``layers/{i}/kernel``, ...);
* ``flax.linen``: Linen variables ``{"params": {"Dense_0": ...}, "batch_stats": ...}``, the
  auto-names of ``nn.Dense``/``nn.LayerNorm``/... in a compact module;
* ``tensorflow``: a built Keras model of the spec holding the weights;
* ``torch``: the ``state_dict`` of xgrad's PyTorch model.
"""


def _placeholder(info: LayerInfo):
    if info.children:
        return Residual([_placeholder(c) for c in info.children])
    if info.layer is not None:
        return info.layer
    if info.kind == "dense":
        return Dense(info.output_shape[-1], "linear", use_bias="bias" in info.params)
    if info.kind == "activation":
        return Activation("linear")
    raise InputError(
        f"cannot tell what layer {info.path} ({info.name!r}, a {info.kind}) computes, so its "
        "weights cannot be laid out for another framework"
    )


def spec_of(model: AbstractModel, *, exact: bool = True) -> MLP:
    """The model's spec; with ``exact=False``, unknown activations become ``linear`` (for
    targets that only hold weights).

    Raises:
        InputError: a layer's configuration is unknown (``exact=True``) or not a weight
            layout xgrad can place.
    """
    spec = model.spec()
    if spec is not None:
        return spec
    unknown = [info.path for info in model.walk() if info.layer is None and not info.children]
    if exact:
        raise InputError(
            f"cannot tell what layer(s) {unknown} of {model.description} compute (an activation "
            "none of xgrad's definitions reproduces?); building the model in another framework "
            "needs them"
        )
    shape = model.input_shape
    return MLP(shape if len(shape) > 1 else shape[0], [_placeholder(i) for i in model.layers])


def summed_weights(model: AbstractModel) -> dict[str, tuple[str, ...]]:
    """Canonical name -> native names of each weight ``model`` holds as a sum of native
    arrays (a :class:`~xgrad.frameworks.kinds.NativeParts` ``"sum"`` of several parts:
    PyTorch's LSTM ``bias_ih_l0 + bias_hh_l0`` against the one bias of Keras and Flax)."""
    out = {}
    for info in model.walk():
        for local, native in info.weights.items():
            parts = info.layouts.get(local)
            if isinstance(parts, NativeParts) and parts.combine == "sum" and parts.others:
                out[f"{info.path}.{local}"] = parts.names(native)
    return out


def split_notes(model: AbstractModel) -> tuple[str, ...]:
    """What writing canonical weights into ``model`` did to the weights it holds as a sum:
    one note per such weight (the first part holds the canonical array, the others zeros)."""
    return tuple(
        f"{name} is held by {model.framework} as the sum {' + '.join(parts)}: written as "
        f"{parts[0]} = {name} and {', '.join(parts[1:])} = 0 (PyTorch's two LSTM biases "
        "against one)"
        for name, parts in summed_weights(model).items()
    )


def read_sum_notes(model: AbstractModel) -> tuple[str, ...]:
    """One note per weight read from ``model`` as the sum of native arrays of which more
    than one is non-zero (a PyTorch checkpoint whose ``bias_ih_l0`` and ``bias_hh_l0`` both
    hold values): the canonical weight is their sum, and writing it back gives ``(sum, 0)``,
    not the original split. Parts that are zeros but the first (xgrad's own ``(b, 0)``) need
    no note."""
    summed = summed_weights(model)
    if not summed:
        return ()
    from xgrad.frameworks.registry import get_framework

    native = get_framework(model.framework.split(".")[0]).native_weights(model)
    if not isinstance(native, Mapping):
        return ()
    notes = []
    for name, parts in summed.items():
        if any(np.any(np.asarray(native[p]) != 0) for p in parts[1:] if p in native):
            notes.append(
                f"{name} is the sum {' + '.join(parts)} of {model.framework}'s biases (both "
                f"non-zero; one bias holds what it adds); written back to {model.framework} "
                f"it is {parts[0]} = the sum, {', '.join(parts[1:])} = 0"
            )
    return tuple(notes)


class IncompleteConversion(AlignmentError):
    """``convert(into=...)`` would leave some of the target's parameters holding their own
    values (no parameter of the source pairs with them): nothing is written, the target is
    not returned half-filled.

    Attributes:
        unwritten: ``{target parameter: why it pairs with nothing}``.
    """

    def __init__(self, message: str, unwritten: Mapping[str, str]) -> None:
        super().__init__(message)
        self.unwritten = dict(unwritten)


def _unwritten(pair) -> dict[str, str]:
    """The candidate's parameters the reference's weights do not reach through the pairing,
    each with the pairing's reason where it gave one."""
    written = pair.alignment.to_candidate(pair.reference.weights())
    reasons = {
        name: why
        for side, name, why in getattr(pair.alignment, "unpaired", ())
        if side != "reference"
    }
    return {
        name: reasons.get(name, "no parameter of the source pairs with it")
        for name in pair.candidate.weights()
        if name not in written
    }


def _built(obj) -> bool:
    """Whether ``obj`` is one of xgrad's own models (read as layers already, never module by
    module)."""
    return isinstance(obj, AbstractModel) and not isinstance(obj, CapturedModel)


def _read_into(model, into, x, mapping, layout=None):
    """Read ``model`` and ``into`` for :func:`convert`, paired so that, where it can be, every
    parameter of ``into`` is written.

    Both are read as layers of xgrad's kinds first: each reader knows its framework's layout
    of each kind (torch's two LSTM biases as one sum, a GRU's gate order and ``(2, 3u)``
    bias), where pairing modules infers layouts from shapes and values, which a target of
    another initialisation cannot show. Where that fails or leaves a parameter of ``into``
    unpaired, they are read as :func:`xgrad.compare_models` reads them (module by module for
    users' models on token ids). xgrad's own built models are read as layers only. A
    ``layout`` giving the two sides different layouts (a torch CNN's NCHW into a Keras
    port's NHWC) reads them module by module as :func:`xgrad.compare_models` does."""
    from xgrad.comparison import read_pair
    from xgrad.pairing.layouts import layouts_of

    layouts = layouts_of(layout)
    if layouts is not None and layouts.differ:
        from xgrad.runner import _read

        options = {"output": None, "training": None, "apply_kwargs": None}
        return _read(model, into, x, layouts, mapping=mapping, read="modules", **options)

    try:
        layers = read_pair(model, into, x, mapping=mapping, read="layers")
    except XgradError:
        if _built(model) or _built(into):
            raise
        layers = None
    if layers is not None and (_built(model) or _built(into) or not _unwritten(layers)):
        return layers
    try:
        return read_pair(model, into, x, mapping=mapping)
    except XgradError:
        if layers is None:
            raise
        return layers  # refused by the caller, naming what it leaves unwritten


def _refusal(into, unwritten: Mapping[str, str]) -> IncompleteConversion:
    listed = "; ".join(f"{name} ({why})" for name, why in list(unwritten.items())[:6])
    more = f" and {len(unwritten) - 6} more" if len(unwritten) > 6 else ""
    return IncompleteConversion(
        f"xgrad.convert: {len(unwritten)} parameter(s) of the target {type(into).__name__} "
        f"pair with nothing of the source, so they would keep their own values: {listed}"
        f"{more}. Nothing was written. Fix: where the source holds them under other names "
        "or layouts, pass mapping={source parameter: target parameter}, or convert from a "
        "spec and its canonical weights (into= from (spec, params), or to=<framework>: laid "
        "out by xgrad's kinds) and load that; where the source has no such parameter, the "
        "two models differ: make them equal",
        unwritten,
    )


def _say(notes) -> None:
    for note in notes:
        _log.warning("xgrad.convert: %s", note)


def convert(model, *, to: str | None = None, into=None, x=None, mapping="auto", layout=None):
    """A model's weights in another framework's native form, or inside your own model.

    Args:
        model: any model :func:`xgrad.compare_models` accepts.
        to: a target of :data:`TARGETS`.
        into: your own model (any kind :func:`xgrad.compare_models` accepts, or one of
            xgrad's built models); a copy of it holding ``model``'s weights is returned
            (xgrad's model: a model of its framework, else the native object), paired as
            layers of xgrad's kinds where both read so (each reader knows its framework's
            layout: torch's two LSTM biases, a GRU's gate order), else as ``compare_models``
            pairs them (``mapping`` as there).
        x: an example input, for JAX functions whose input shape cannot be told from their
            params.
        mapping: how to pair the layers with ``into`` (``"auto"``: in call order).
        layout: with ``into``, the layout of ``x``'s axes as :func:`xgrad.compare_models`
            takes it (``{"reference": "NCHW", "candidate": "NHWC"}``: ``model``'s and
            ``into``'s), ``x`` in ``model``'s layout; kernels and a classifier after a flatten
            are then carried across the layouts, or refused by name where they cannot be.

    Raises:
        InputError: neither or both of ``to`` and ``into``, an unknown target, or a layer
            whose configuration is unknown where the target needs it.
        AlignmentError: ``into`` does not pair with ``model`` (depth, widths, kinds).
        IncompleteConversion: some parameter of ``into`` pairs with nothing of ``model``;
            nothing is written (an :class:`~xgrad.errors.AlignmentError`).
    """
    if (to is None) == (into is None):
        raise InputError(
            "convert takes exactly one of to=... (a framework) and into=... (your model)"
        )
    if layout is not None and into is None:
        raise InputError("convert takes layout= with into=... only (to= converts a spec)")
    if into is not None:
        pair = _read_into(model, into, x, mapping, layout)
        unwritten = _unwritten(pair)
        if unwritten:
            raise _refusal(into, unwritten)
        filled = pair.candidate.with_weights(pair.alignment.to_candidate(pair.reference.weights()))
        _say(read_sum_notes(pair.reference))
        for note in split_notes(filled):
            _log.info("xgrad.convert: %s", note)
        return filled if _built(into) else filled.native
    shape = None if x is None else tuple(np.shape(x)[1:])
    source = read_model(model, input_shape=shape)
    if to not in TARGETS:
        raise InputError(f"unknown conversion target {to!r}; choose one of {', '.join(TARGETS)}")
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in source.weights().items()}
    _say(read_sum_notes(source))
    if to == "numpy":
        return weights
    framework = get_framework(to.split(".")[0])
    spec = spec_of(source, exact=framework.exact_spec)
    ordered = {name: weights[name] for name in spec.weight_shapes()}
    dtype = source.dtype if source.dtype in ("float32", "float64") else "float32"
    if to != framework.name:
        return framework.native_form(to, spec, ordered, dtype)
    built = framework.build(spec, ordered, dtype=dtype)
    for note in split_notes(built):
        _log.info("xgrad.convert: %s", note)
    return framework.native_weights(built)
