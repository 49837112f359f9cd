"""The adapter interface, stated once, and the registry of frameworks.

An adapter turns ``(spec, canonical params, dtype)`` into a model of its framework
(:meth:`AbstractAdapter.build`); the built :class:`AbstractModel` answers in canonical names
and layout, with NumPy arrays:

* :meth:`AbstractModel.gradients`: loss, ``dL/dparams`` and ``dL/dinput`` for a named loss;
* :meth:`AbstractModel.vjp`: the same for a given ``grad_output`` (the cotangent of the
  model output) instead of a loss;
* :meth:`AbstractModel.layer_values`: every layer's pre-activation ``z`` and activation ``a``;
* :meth:`AbstractModel.export_params`: the native weights back in canonical names and
  layout, and :attr:`AbstractModel.native_names`, the framework's own name of each one.

The public methods validate their inputs here, once, and call the framework-specific
``_``-methods with checked NumPy arrays of the model's dtype. Canonical layout: kernel
``(in, out)`` under ``layers.{i}.kernel``, bias ``(out,)`` under ``layers.{i}.bias``.
"""

from __future__ import annotations

import abc
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from xgrad._checks import require_finite
from xgrad.errors import FrameworkError, FrameworkNotInstalledError, InputError
from xgrad.losses import Loss, get_loss
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = [
    "DTYPES",
    "AbstractAdapter",
    "AbstractModel",
    "Gradients",
    "LayerValues",
    "available_frameworks",
    "check_dtype",
    "check_input",
    "get_adapter",
    "known_frameworks",
]

DTYPES = ("float32", "float64")
"""The dtypes every adapter computes in."""


@dataclass(frozen=True)
class Gradients:
    """What one gradient evaluation returns, in canonical names and layout.

    Attributes:
        loss: the loss value, or ``None`` when a cotangent was back-propagated instead.
        params: ``dL/dparams`` by canonical name; kernel ``(in, out)``, bias ``(out,)``.
        input: ``dL/dinput``, shape ``(batch, input_dim)``.
        output: the model output, shape ``(batch, units)``.

    All arrays are NumPy arrays in the model's dtype.
    """

    loss: float | None
    params: dict[str, np.ndarray]
    input: np.ndarray
    output: np.ndarray


@dataclass(frozen=True)
class LayerValues:
    """One layer's forward values: ``z = a_prev @ kernel + bias`` and ``a = act(z)``.

    Both are NumPy arrays of shape ``(batch, units)`` in the model's dtype.
    """

    z: np.ndarray
    a: np.ndarray


def check_dtype(dtype) -> str:
    """Return the dtype's name if xgrad computes in it, else raise :class:`InputError`."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise InputError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}")
    return name


def _check_finite_float(arr: np.ndarray, what: str, fix: str) -> None:
    if arr.dtype.kind == "f" and np.isfinite(arr).all():
        return
    if arr.dtype.kind in "iub":
        raise InputError(f"{what} has {arr.dtype} dtype; pass floats, {fix}")
    if arr.dtype.kind != "f":
        raise InputError(f"{what} must be a real floating-point array, got dtype {arr.dtype}")
    require_finite(
        arr, f"{what} contains", InputError, "xgrad compares gradients at finite points only"
    )


def check_input(spec: MLP, x) -> np.ndarray:
    """Validate a batch of inputs for ``spec``; returns it as a float array (batch, in).

    Python lists of numbers become float64; NumPy arrays must have a float dtype and are
    returned as they are (no copy), for each adapter to cast once to its own dtype.

    Raises:
        InputError: ``x`` is not 2-D, has the wrong width, an empty batch, a non-float dtype,
            or NaN/Inf values.
    """
    return check_input_width(spec.input_dim, x)


def check_input_width(input_dim: int, x) -> np.ndarray:
    """:func:`check_input` for a model that takes ``input_dim`` features."""
    is_array = hasattr(x, "dtype") and hasattr(x, "shape")
    try:
        arr = np.asarray(x) if is_array else np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"x must be a 2-D array of numbers, got {type(x).__name__}: {exc}"
        ) from None
    if arr.ndim != 2:
        hint = (
            f"; for one sample write x[None, :] (shape (1, {arr.shape[0]}))"
            if arr.ndim == 1
            else ""
        )
        raise InputError(f"x must be 2-D (batch, {input_dim}), got shape {arr.shape}{hint}")
    if arr.shape[1] != input_dim:
        raise InputError(
            f"x has shape {arr.shape} but the model takes {input_dim} input features "
            f"(input_dim={input_dim})"
        )
    if arr.shape[0] == 0:
        raise InputError(f"x has an empty batch (shape {arr.shape}); give at least one row")
    _check_finite_float(arr, "x", "e.g. x.astype('float32')")
    return arr


def check_cotangent(spec: MLP, cotangent, batch: int) -> np.ndarray:
    """Validate a grad_output of shape ``(batch, output_dim)``; returns a float64 copy."""
    return check_cotangent_shape(spec.output_dim, cotangent, batch)


def check_cotangent_shape(units: int, cotangent, batch: int) -> np.ndarray:
    """:func:`check_cotangent` for a model with ``units`` outputs."""
    arr = np.asarray(cotangent)
    want = (batch, units)
    if arr.shape != want:
        raise InputError(
            f"cotangent (grad_output) has shape {arr.shape} but the model output has shape {want}"
        )
    _check_finite_float(arr, "cotangent", "e.g. cotangent.astype('float32')")
    return np.array(arr, dtype=np.float64)


class AbstractModel(abc.ABC):
    """A model built in one framework from canonical params; answers in canonical form.

    Subclasses implement the ``_``-methods; the public ones check inputs first.
    """

    def __init__(self, spec: MLP, dtype: str) -> None:
        self.spec = spec
        self.dtype = dtype

    @property
    @abc.abstractmethod
    def native(self) -> object:
        """The framework's own model object (a Keras model, an nnx module, a pytree...)."""

    @property
    @abc.abstractmethod
    def native_names(self) -> dict[str, str]:
        """Canonical name -> the framework's own name of that parameter."""

    @abc.abstractmethod
    def export_params(self) -> Params:
        """The native weights in canonical names and layout, as arrays of the model's dtype."""

    @abc.abstractmethod
    def _value_and_grad(self, x: np.ndarray, y: np.ndarray | None, loss: Loss) -> Gradients:
        """Loss, dL/dparams, dL/dx, output; ``x`` and ``y`` already in the model's dtype."""

    @abc.abstractmethod
    def _vjp(self, x: np.ndarray, cotangent: np.ndarray) -> Gradients:
        """Back-propagate ``cotangent`` (shape of the output); ``loss`` is ``None``."""

    @abc.abstractmethod
    def _layer_values(self, x: np.ndarray) -> list[LayerValues]:
        """``z`` and ``a`` of every layer."""

    def _cast(self, arr: np.ndarray) -> np.ndarray:
        return np.asarray(arr, dtype=self.dtype)

    def gradients(self, x, y=None, *, loss: str = "sum") -> Gradients:
        """Loss value, ``dL/dparams`` and ``dL/dinput`` for the named loss.

        Args:
            x: inputs of shape ``(batch, input_dim)``.
            y: targets of shape ``(batch, units)`` (class labels ``(batch,)`` for the
                categorical losses); ignored by ``sum`` and ``mean``.
            loss: a loss name from :data:`xgrad.losses.LOSSES`.

        Raises:
            InputError: ``x`` or ``y`` do not fit the spec or the loss.
            SpecError: the loss is unknown.
        """
        loss_obj = get_loss(loss)
        xs = check_input(self.spec, x)
        ys = loss_obj.prepare_target(y, (xs.shape[0], self.spec.output_dim))
        return self._value_and_grad(
            self._cast(xs), None if ys is None else self._cast(ys), loss_obj
        )

    def vjp(self, x, cotangent) -> Gradients:
        """``dL/dparams`` and ``dL/dinput`` for a given ``grad_output = dL/doutput``.

        Raises:
            InputError: ``x`` or ``cotangent`` do not fit the spec.
        """
        xs = check_input(self.spec, x)
        cot = check_cotangent(self.spec, cotangent, xs.shape[0])
        return self._vjp(self._cast(xs), self._cast(cot))

    def layer_values(self, x) -> list[LayerValues]:
        """Every layer's pre-activation ``z`` and activation ``a`` for the batch ``x``."""
        return self._layer_values(self._cast(check_input(self.spec, x)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.describe()} {self.dtype}>"


class AbstractAdapter(abc.ABC):
    """One framework: builds :class:`AbstractModel` objects from canonical params.

    Attributes:
        name: the framework name used in reports and on the command line.
        requires: the Python packages it imports.
        extra: the pip extra that installs them (``pip install 'xgrad[extra]'``).
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None

    @classmethod
    def available(cls) -> bool:
        """Whether the packages it needs are installed (checked without importing them)."""
        return all(importlib.util.find_spec(pkg) is not None for pkg in cls.requires)

    def build(
        self,
        spec: MLP,
        params: Mapping[str, np.ndarray] | None = None,
        *,
        dtype: str = "float32",
        seed: int = 0,
    ) -> AbstractModel:
        """Build this framework's model for ``spec`` holding ``params`` cast to ``dtype``.

        Args:
            spec: the model.
            params: canonical params (kernel ``(in, out)``, bias ``(out,)``); ``None`` means
                :func:`xgrad.init_params` ``(spec, seed)``.
            dtype: ``"float32"`` or ``"float64"``.
            seed: used only when ``params`` is ``None``.

        Raises:
            ParamsError: params do not match the spec.
            InputError: the dtype is not supported.
        """
        from xgrad.params import init_params

        if not isinstance(spec, MLP):
            raise InputError(f"build needs an xgrad.MLP spec, got {type(spec).__name__}")
        checked = init_params(spec, seed) if params is None else check_params(spec, params)
        return self._build(spec, checked, check_dtype(dtype))

    @abc.abstractmethod
    def _build(self, spec: MLP, params: Params, dtype: str) -> AbstractModel:
        """Build from checked float64 canonical params."""

    def __repr__(self) -> str:
        return f"<xgrad adapter {self.name!r}>"


_REGISTRY: dict[str, tuple[str, str, tuple[str, ...], str | None]] = {
    # name: (module, class, packages, pip extra); modules are imported on first use only.
    "numpy": ("xgrad.adapters.numpy", "NumpyAdapter", (), None),
    "jax": ("xgrad.adapters.jax", "JaxAdapter", ("jax",), "jax"),
    "flax": ("xgrad.adapters.flax", "FlaxAdapter", ("jax", "flax"), "jax"),
    "tensorflow": ("xgrad.adapters.tensorflow", "TensorflowAdapter", ("tensorflow",), "tensorflow"),
}
_ALIASES = {"np": "numpy", "tf": "tensorflow", "keras": "tensorflow"}


def known_frameworks() -> list[str]:
    """Every framework name xgrad has an adapter for, installed or not."""
    return list(_REGISTRY)


def available_frameworks() -> list[str]:
    """The framework names whose packages are installed (nothing is imported)."""
    return [
        name
        for name, (_, _, pkgs, _) in _REGISTRY.items()
        if all(importlib.util.find_spec(p) is not None for p in pkgs)
    ]


def get_adapter(name: str) -> AbstractAdapter:
    """Return the adapter for a framework name (``numpy``, ``jax``, ``flax``, ``tensorflow``).

    The framework is imported now, not before. ``tf`` and ``keras`` are accepted for
    ``tensorflow``, ``np`` for ``numpy``.

    Raises:
        FrameworkError: the name is unknown.
        FrameworkNotInstalledError: the framework's package is not installed; the message
            names the pip extra to install.

    Example:
        >>> get_adapter("numpy").name
        'numpy'
    """
    if not isinstance(name, str):
        raise FrameworkError(
            f"a framework is a name or an adapter object, got {type(name).__name__} {name!r}"
        )
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in _REGISTRY:
        raise FrameworkError(
            f"unknown framework {name!r}; known frameworks: {', '.join(_REGISTRY)}"
        )
    module, cls, pkgs, extra = _REGISTRY[key]
    missing = [p for p in pkgs if importlib.util.find_spec(p) is None]
    if missing:
        raise FrameworkNotInstalledError(
            f"framework {key!r} needs {', '.join(missing)}, which is not installed; "
            f"install it with: pip install 'xgrad[{extra}]'"
        )
    return getattr(importlib.import_module(module), cls)()
