"""Convert a model's weights: into another framework's native form, or into your own model.

* ``convert(model, to="flax")``: the weights as the target framework's model of the same
  spec holds them (see :data:`TARGETS`).
* ``convert(model, into=my_module)``: a copy of *your* model (an NNX module, a Linen
  ``(module, variables)`` pair, a pure-JAX ``(apply_fn, params)`` pair, a Keras model, a
  PyTorch module) holding the weights, under its own names and layout, paired layer by layer
  exactly as :func:`xgrad.compare_models` pairs them. Your object is not changed.

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

from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractModel, LayerInfo
from xgrad.frameworks.kinds import NativeParts
from xgrad.frameworks.registry import get_framework, known_frameworks, lookup_framework, read_model
from xgrad.layers import Activation, Dense, Residual
from xgrad.spec import MLP

__all__ = ["TARGETS", "convert", "read_sum_notes", "spec_of", "split_notes", "summed_weights"]

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


def _say(notes) -> None:
    for note in notes:
        _log.warning("xgrad.convert: %s", note)


def convert(model, *, to: str | None = None, into=None, x=None, mapping="auto"):
    """A model's weights in another framework's native form, or inside your own model.

    Args:
        model: any model :func:`xgrad.compare_models` accepts.
        to: a target of :data:`TARGETS`.
        into: your own model (any kind :func:`xgrad.compare_models` accepts); a copy of it
            holding ``model``'s weights is returned, paired layer by layer as
            ``compare_models`` pairs them (``mapping`` as there).
        x: an example input, for JAX functions whose input shape cannot be told from their
            params.
        mapping: how to pair the layers with ``into`` (``"auto"``: in call order).

    Raises:
        InputError: neither or both of ``to`` and ``into``, an unknown target, or a layer
            whose configuration is unknown where the target needs it.
        AlignmentError: ``into`` does not pair with ``model`` (depth, widths, kinds).
    """
    if (to is None) == (into is None):
        raise InputError(
            "convert takes exactly one of to=... (a framework) and into=... (your model)"
        )
    if into is not None:
        from xgrad.comparison import read_pair, transfer

        pair = transfer(read_pair(model, into, x, mapping=mapping), True)
        _say(read_sum_notes(pair.reference))
        for note in split_notes(pair.candidate):
            _log.info("xgrad.convert: %s", note)
        return pair.candidate.native
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
