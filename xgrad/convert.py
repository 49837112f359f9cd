"""Convert a model's weights: into another framework's native form, or into your own model.

* ``convert(model, to="flax")``: the weights as the target framework's model of the same
  spec holds them (see :data:`TARGETS`).
* ``convert(model, into=my_module)``: a copy of *your* model (an NNX module, a Linen
  ``(module, variables)`` pair, a pure-JAX ``(apply_fn, params)`` pair, a Keras model, a
  PyTorch module) holding the weights, under its own names and layout, paired layer by layer
  exactly as :func:`xgrad.compare_models` pairs them. Your object is not changed.
"""

from __future__ import annotations

import numpy as np

from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractModel, LayerInfo
from xgrad.frameworks.registry import get_framework, known_frameworks, lookup_framework, read_model
from xgrad.layers import Activation, Dense, Residual
from xgrad.spec import MLP

__all__ = ["TARGETS", "convert", "spec_of"]


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

        return transfer(read_pair(model, into, x, mapping=mapping), True).candidate.native
    shape = None if x is None else tuple(np.shape(x)[1:])
    source = read_model(model, input_shape=shape)
    if to not in TARGETS:
        raise InputError(f"unknown conversion target {to!r}; choose one of {', '.join(TARGETS)}")
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in source.weights().items()}
    if to == "numpy":
        return weights
    framework = get_framework(to.split(".")[0])
    spec = spec_of(source, exact=framework.exact_spec)
    ordered = {name: weights[name] for name in spec.weight_shapes()}
    dtype = source.dtype if source.dtype in ("float32", "float64") else "float32"
    if to != framework.name:
        return framework.native_form(to, spec, ordered, dtype)
    return framework.native_weights(framework.build(spec, ordered, dtype=dtype))
