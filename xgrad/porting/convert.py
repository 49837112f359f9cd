"""Convert a model's weights to another framework's native form, and name activations.

:func:`convert` reads any supported model (see :mod:`xgrad.porting.source`) and returns
its weights as the target expects them. Where the target needs a whole model (Keras), the
activations must be known: Keras states them, and for JAX code
:func:`identify_activations` finds them by evaluating every known activation on the
layer's pre-activations and keeping the one that reproduces the captured activations to
rounding level.
"""

from __future__ import annotations

import numpy as np

from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.errors import InputError
from xgrad.params import Params
from xgrad.porting.source import ModelSource, model_source
from xgrad.spec import MLP, Dense

__all__ = ["TARGETS", "convert", "identify_activations", "pre_activations"]

TARGETS = ("numpy", "jax", "flax", "flax.linen", "tensorflow")

_FIT = {"float64": 1e-12, "float32": 1e-5}


def pre_activations(params: Params, layers, x: np.ndarray, acts: list[np.ndarray]):
    """``z_i = a_{i-1} @ kernel_i + bias_i`` in float64 from captured activations."""
    out = []
    prev = np.asarray(x, dtype=np.float64)
    for i, layer in enumerate(layers):
        z = prev @ params[f"layers.{i}.kernel"]
        if layer.bias is not None:
            z = z + params[f"layers.{i}.bias"]
        out.append(z)
        prev = np.asarray(acts[i], dtype=np.float64)
    return out


def _leaky_slope(z: np.ndarray, a: np.ndarray) -> float | None:
    # Only clearly negative z: near 0, float32 rounding of z makes a / z noisy.
    neg = z < -1e-2 * max(float(np.abs(z).max()), 1e-30)
    if not neg.any():
        return None
    slopes = a[neg] / z[neg]
    slope = float(np.median(slopes))
    return slope if np.allclose(slopes, slope, rtol=1e-4, atol=0) else None


def fit_activation(z: np.ndarray, a: np.ndarray, dtype: str) -> tuple[str | None, float]:
    """The known activation that maps ``z`` to ``a`` best: ``(name or None, rel error)``.

    Returns ``None`` when nothing fits within the dtype's rounding level.
    """
    candidates = list(ACTIVATIONS)
    slope = _leaky_slope(z, a)
    if slope is not None:
        candidates.append(f"leaky_relu:{round(slope, 6)!r}")
    best, best_err = None, np.inf
    scale = float(np.linalg.norm(a)) or 1.0
    with np.errstate(all="ignore"):
        for name in candidates:
            err = float(np.linalg.norm(get_activation(name)(z) - a)) / scale
            if err < best_err:
                best, best_err = name, err
    return (best if best_err <= _FIT.get(dtype, 1e-5) else None), best_err


def identify_activations(source: ModelSource, x: np.ndarray | None = None) -> list[str | None]:
    """Name each dense layer's activation (None where no known one fits).

    Keras states its activations; for other sources the layers are evaluated on ``x``
    (default: a seeded standard-normal batch scaled by 4, wide enough to tell relu from
    relu6 and to see a leaky slope) and each activation is fitted.
    """
    if all(layer.activation is not None for layer in source.layers):
        return [layer.activation for layer in source.layers]
    if x is None:
        x = 4 * np.random.default_rng(0).standard_normal((64, source.input_dim))
    x = np.asarray(x, dtype=np.float64)
    cot = np.ones((x.shape[0], source.layers[-1].out_dim))
    acts = source.capture(x, None, None, cot).activations
    zs = pre_activations(source.native_params(), source.layers, x, acts)
    return [
        layer.activation or fit_activation(z, np.asarray(a, np.float64), source.dtype)[0]
        for layer, z, a in zip(source.layers, zs, acts, strict=True)
    ]


def _spec(source: ModelSource, x) -> MLP:
    names = identify_activations(source, x)
    unknown = [layer.name for layer, name in zip(source.layers, names, strict=True) if name is None]
    if unknown:
        raise InputError(
            f"cannot tell the activation of layer(s) {unknown} of {source.description}: none "
            "of xgrad's activations reproduces them; converting to Keras needs them"
        )
    return MLP(
        source.input_dim,
        [
            Dense(layer.out_dim, name, use_bias=layer.bias is not None)
            for layer, name in zip(source.layers, names, strict=True)
        ],
    )


def convert(model, *, to: str, x=None):
    """A model's weights in another framework's native form.

    Args:
        model: any model :func:`xgrad.compare_models` accepts.
        to: ``"numpy"`` (canonical dict, float64, kernel ``(in, out)``), ``"jax"`` (the
            pytree ``[{"kernel", "bias"}, ...]`` of the JAX adapter, in the model's dtype),
            ``"flax"`` (an ``nnx.State`` with paths ``layers/{i}/kernel``, for
            ``nnx.update`` on a module that keeps ``nnx.Linear`` layers in
            ``self.layers``), ``"flax.linen"`` (variables ``{"params": {"Dense_{i}":
            {"kernel", "bias"}}}``, the auto-names of ``nn.Dense`` in a compact module) or
            ``"tensorflow"`` (a built ``keras.Sequential`` with the weights set).
        x: an example input; needed for JAX functions whose input width cannot be told from
            their params, and used to identify activations for ``"tensorflow"``.

    Raises:
        InputError: ``to`` is unknown, or an activation cannot be identified for Keras.
        AlignmentError: the model holds layers xgrad cannot port.
    """
    if to not in TARGETS:
        raise InputError(f"unknown conversion target {to!r}; choose one of {', '.join(TARGETS)}")
    width = None if x is None else np.shape(x)[1]
    source = model_source(model, input_dim=width)
    params = source.native_params()
    if to == "numpy":
        return params
    placeholder = MLP(
        source.input_dim,
        [
            Dense(layer.out_dim, "linear", use_bias=layer.bias is not None)
            for layer in source.layers
        ],
    )
    dtype = source.dtype if source.dtype in ("float32", "float64") else "float32"
    if to == "jax":
        from xgrad.adapters.base import get_adapter

        return get_adapter("jax").build(placeholder, params, dtype=dtype).native
    if to == "flax":
        from xgrad.adapters.base import get_adapter

        return get_adapter("flax").build(placeholder, params, dtype=dtype).state
    if to == "flax.linen":
        import jax.numpy as jnp

        from xgrad.adapters._jax_ops import x64

        with x64(dtype):
            tree = {}
            for i, layer in enumerate(source.layers):
                entry = {"kernel": jnp.asarray(params[f"layers.{i}.kernel"], dtype=dtype)}
                if layer.bias is not None:
                    entry["bias"] = jnp.asarray(params[f"layers.{i}.bias"], dtype=dtype)
                tree[f"Dense_{i}"] = entry
        return {"params": tree}
    from xgrad.adapters.tensorflow import build_keras_model

    return build_keras_model(_spec(source, x), params, dtype)
