"""The one model interface, stated once, and the framework interface around it.

A model is whatever xgrad compares: a framework's model of an :class:`~xgrad.MLP` spec
(:meth:`AbstractFramework.build`) or a user's own model read by that framework's reader
(:meth:`AbstractFramework.read`). Both are :class:`AbstractModel` objects and answer the
same questions, in canonical names and layout, with NumPy arrays:

* :attr:`AbstractModel.layers`: its layers in call order (:class:`LayerInfo`), each with
  its kind, configuration when known, and the native name of each weight;
* :meth:`AbstractModel.weights` / :meth:`AbstractModel.with_weights`: weights out and in
  (kernel ``(in, out)``, see :mod:`xgrad.params`); the model itself never changes;
* :meth:`AbstractModel.evaluate`: output, loss, ``dL/dparams``, ``dL/dinput``, updated
  state, and with ``capture=True`` every layer's output and ``dL/d output``, in one pass.

The public methods validate inputs here, once; frameworks implement the ``_``-methods.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from xgrad._checks import require_finite
from xgrad.errors import FrameworkError, InputError
from xgrad.frameworks.kinds import TRANSPOSED, KindTable, Layout, NativeParts
from xgrad.layers import AbstractLayer, Residual, Shape
from xgrad.losses import Loss, get_loss
from xgrad.optim import AbstractOptimizer, OptimizerSpec
from xgrad.params import Params, check_params
from xgrad.spec import MLP

__all__ = [
    "ALL_DTYPES",
    "DTYPES",
    "AbstractFramework",
    "AbstractModel",
    "Gradients",
    "LayerInfo",
    "check_dtype",
    "check_input",
    "module_of",
    "spec_layers",
]

DTYPES = ("float32", "float64")
"""The dtypes every framework builds a spec in."""

ALL_DTYPES = ("float32", "float64", "bfloat16", "float16")
"""Every dtype a framework may build in; 16-bit where the framework says so."""

LossArg = str | Loss | Callable  # a loss name, a Loss, or a function of the model's framework


def module_of(obj) -> tuple[str, ...]:
    """The modules of ``obj``'s class and its bases (to recognise a framework's objects
    without importing the framework)."""
    return tuple(c.__module__ or "" for c in type(obj).__mro__)


def is_from(obj, package: str) -> bool:
    """Whether ``obj``'s class (or a base) comes from ``package`` or a subpackage of it."""
    return any(m == package or m.startswith(package + ".") for m in module_of(obj))


@dataclass(frozen=True)
class LayerInfo:
    """One layer of a model, in call order.

    Attributes:
        path: its canonical path in this model, ``layers.{i}`` (nested:
            ``layers.{i}.layers.{j}``); its weights are ``{path}.{local}``.
        kind: a layer kind of :data:`xgrad.layers.LAYERS` (``dense``, ``layernorm``, ...).
        name: the framework's own name of the layer (``dense_1``, ``layers/0``, ``0``).
        layer: its configuration, or ``None`` where the framework does not state it (an
            activation written as code, read numerically later).
        params: local name -> native name of each trainable parameter.
        state: local name -> native name of each state array (no gradient).
        layouts: local name -> the axis permutation the framework stores it in, for the
            weights not stored canonically (:mod:`xgrad.frameworks.kinds`: ``native =
            np.transpose(canonical, layout)``; PyTorch's ``(out, in)`` kernel is ``(1, 0)``),
            or a :class:`~xgrad.frameworks.kinds.NativeParts` for one held by two native
            arrays or in another gate order (torch's LSTM and GRU; ``params`` names part 0).
        input_shape, output_shape: the shapes of one example in and out.
        children: the layers of a residual block.
        note: what the reader noticed (e.g. a layer left in training mode).
    """

    path: str
    kind: str
    name: str
    layer: AbstractLayer | None
    params: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, Layout] = field(default_factory=dict)
    input_shape: Shape = ()
    output_shape: Shape = ()
    children: tuple[LayerInfo, ...] = ()
    note: str | None = None

    @property
    def weights(self) -> dict[str, str]:
        """Local name -> native name of every parameter, then every state array."""
        return {**self.params, **self.state}

    @property
    def transposed(self) -> frozenset[str]:
        """Local names of the 2-D weights stored transposed (layout ``(1, 0)``)."""
        return frozenset(
            k
            for k, layout in self.layouts.items()
            if not isinstance(layout, NativeParts) and tuple(layout) == TRANSPOSED
        )

    def walk(self) -> Iterator[LayerInfo]:
        """This layer and every nested one, in call order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def describe(self) -> str:
        if self.layer is not None:
            return self.layer.describe()
        if self.children:
            return "residual(" + " -> ".join(c.describe() for c in self.children) + ")"
        return f"{self.kind}(?)"


def spec_layers(
    spec: MLP,
    native_name: Callable[[str, str], str] = lambda path, local: f"{path}.{local}",
    layer_name: Callable[[str, AbstractLayer], str] | None = None,
    layouts: Callable[[AbstractLayer], Mapping[str, Layout]] | None = None,
) -> tuple[LayerInfo, ...]:
    """:class:`LayerInfo` for every layer of a spec, naming weights with
    ``native_name(path, local)``, layers with ``layer_name(path, layer)``, and stating each
    weight's native layout with ``layouts(layer)`` (local name -> :data:`Layout`).

    Frameworks that build a spec use this with their own naming functions.
    """
    inputs = spec.layer_input_shapes()

    def info(path, layer) -> LayerInfo:
        shape = inputs[path]
        children = tuple(info(f"{path}.layers.{j}", c) for j, c in enumerate(layer.children))
        return LayerInfo(
            path=path,
            kind=layer.kind,
            name=layer_name(path, layer) if layer_name else path,
            layer=layer,
            params={n: native_name(path, n) for n in layer.param_names()},
            state={n: native_name(path, n) for n in layer.state_names()},
            layouts=dict(layouts(layer)) if layouts else {},
            input_shape=shape,
            output_shape=layer.output_shape(shape),
            children=children,
        )

    return tuple(info(f"layers.{i}", layer) for i, layer in enumerate(spec.layers))


@dataclass(frozen=True)
class Gradients:
    """What one evaluation returns, in canonical names and layout, in the model's dtype.

    Attributes:
        loss: the loss value, or ``None`` when a cotangent was back-propagated instead.
        params: ``dL/dparam`` by canonical name (trainable parameters only).
        input: ``dL/dinput``, shape ``(batch, *input_shape)``; ``None`` for a model taking
            integer token ids (an :class:`~xgrad.Embedding` first: ids have no gradient).
        output: the model output.
        state: updated state by canonical name (BatchNorm in training mode), else empty.
        activations: with ``capture=True``: layer path -> the layer's output.
        activation_grads: with ``capture=True``: layer path -> ``dL/d`` the layer's output.
        inputs: a model read module by module (:mod:`xgrad.frameworks.capture`): floating
            input name -> its ``dL/dinput`` (``input`` is the first of them); ``None`` for a
            model of one input.
        module_inputs: such a model, with ``capture=True``: module path -> its floating
            inputs.
    """

    loss: float | None
    params: dict[str, np.ndarray]
    input: np.ndarray | None
    output: np.ndarray
    state: dict[str, np.ndarray] = field(default_factory=dict)
    activations: dict[str, np.ndarray] | None = None
    activation_grads: dict[str, np.ndarray] | None = None
    inputs: dict[str, np.ndarray] | None = None
    module_inputs: dict[str, tuple[np.ndarray, ...]] | None = None


# -- input checks ---------------------------------------------------------------------------


def as_numpy_dtype(arr, dtype: str) -> np.ndarray:
    """``arr`` as a NumPy array of ``dtype`` (bfloat16 is ml_dtypes', which JAX brings);
    unchanged when NumPy cannot hold that dtype."""
    if dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - only without jax
            return np.asarray(arr)
        return np.asarray(arr).astype(ml_dtypes.bfloat16)
    try:
        return np.asarray(arr, dtype=dtype)
    except TypeError:
        return np.asarray(arr)


def check_dtype(dtype, allowed: tuple[str, ...] = DTYPES) -> str:
    """The dtype's name if it is one of ``allowed``, else :class:`InputError`."""
    name = getattr(dtype, "name", None) if not isinstance(dtype, str) else dtype
    if name is None:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    if name not in allowed:
        raise InputError(f"dtype {dtype!r} is not supported; use one of {', '.join(allowed)}")
    return name


def _check_finite_float(arr: np.ndarray, what: str, fix: str) -> None:
    if arr.dtype.kind == "f" and np.isfinite(arr).all():
        return
    if arr.dtype.kind in "iub":
        raise InputError(f"{what} has {arr.dtype} dtype; pass floats, {fix}")
    if arr.dtype.kind != "f" and arr.dtype.name != "bfloat16":
        raise InputError(f"{what} must be a real floating-point array, got dtype {arr.dtype}")
    require_finite(
        arr.astype(np.float64),
        f"{what} contains",
        InputError,
        "xgrad compares gradients at finite points only",
    )


def _as_array(x, what: str) -> np.ndarray:
    is_array = hasattr(x, "dtype") and hasattr(x, "shape")
    try:
        return np.asarray(x) if is_array else np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{what} must be an array of numbers, got {type(x).__name__}: {exc}"
        ) from None


def _check_ids(arr: np.ndarray, vocab: int) -> np.ndarray:
    if arr.dtype.kind not in "iu":
        raise InputError(
            f"x must be integer token ids (the model starts with an Embedding of {vocab} "
            f"tokens), got dtype {arr.dtype}; pass an integer array, e.g. x.astype('int64')"
        )
    bad = (arr < 0) | (arr >= vocab)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"x holds token id {int(arr[index])} at index {index}, out of range for the "
            f"model's Embedding of {vocab} tokens (ids must be in [0, {vocab}))"
        )
    return arr.astype(np.int64, copy=False)


def check_input(input_shape: Shape, x, *, vocab: int | None = None) -> np.ndarray:
    """Validate a batch for a model taking examples of ``input_shape``; returns it as an array.

    Python lists of numbers become float64; NumPy arrays must have a float dtype and are
    returned as they are (no copy), for each model to cast once to its own dtype. With
    ``vocab`` (a model whose first layer is an :class:`~xgrad.Embedding`), ``x`` holds integer
    token ids in ``[0, vocab)`` instead, returned as int64.

    Raises:
        InputError: a wrong rank or shape, an empty batch, a non-float dtype, or NaN/Inf;
            with ``vocab``, ids that are not integers or out of range.
    """
    input_shape = tuple(input_shape)
    if vocab is not None and not (hasattr(x, "dtype") and hasattr(x, "shape")):
        x = np.asarray(x)  # a list of ids stays integer
    arr = _as_array(x, "x")
    want = "(batch, " + ", ".join(map(str, input_shape)) + ")"
    if arr.ndim != len(input_shape) + 1:
        hint = ""
        if arr.ndim == len(input_shape) and arr.shape == input_shape:
            hint = f"; for one example write x[None] (shape (1, {', '.join(map(str, arr.shape))}))"
        raise InputError(
            f"x must be {arr.ndim and len(input_shape) + 1}-D {want}, got shape {arr.shape}{hint}"
        )
    if arr.shape[1:] != input_shape:
        what = (
            f"{input_shape[0]} input features (input_dim={input_shape[0]})"
            if len(input_shape) == 1
            else f"examples of shape {input_shape}"
        )
        raise InputError(f"x has shape {arr.shape} but the model takes {what}")
    if arr.shape[0] == 0:
        raise InputError(f"x has an empty batch (shape {arr.shape}); give at least one row")
    if vocab is not None:
        return _check_ids(arr, vocab)
    _check_finite_float(arr, "x", "e.g. x.astype('float32')")
    return arr


def check_cotangent(output_shape: Shape, cotangent, batch: int) -> np.ndarray:
    """Validate a ``grad_output`` of shape ``(batch, *output_shape)``; returns a float64 copy."""
    arr = _as_array(cotangent, "cotangent")
    want = (batch, *output_shape)
    if arr.shape != want:
        raise InputError(
            f"cotangent (grad_output) has shape {arr.shape} but the model output has shape {want}"
        )
    _check_finite_float(arr, "cotangent", "e.g. cotangent.astype('float32')")
    return np.array(arr, dtype=np.float64)


def prepare_loss(loss: LossArg, y, batch: int, output_shape: Shape):
    """``(loss object or function, checked targets)`` for :meth:`AbstractModel.evaluate`."""
    if callable(loss) and not isinstance(loss, Loss):
        return loss, (None if y is None else np.asarray(y))
    loss_obj = loss if isinstance(loss, Loss) else get_loss(loss)
    shape = (batch, *output_shape) if len(output_shape) > 1 else (batch, output_shape[-1])
    return loss_obj, loss_obj.prepare_target(y, shape)


# -- the model interface -----------------------------------------------------------------


class AbstractModel(abc.ABC):
    """One model, in one framework, answering in canonical names and layout.

    Attributes:
        framework: ``numpy``, ``jax``, ``flax.nnx``, ``flax.linen``, ``tensorflow``, ...
        description: a short text naming the model.
        dtype: the dtype it computes in.
        input_shape: the shape of one input example.
        output_shape: the shape of one output example.
        layers: its layers in call order.
    """

    framework: str
    description: str
    dtype: str
    input_shape: Shape
    output_shape: Shape
    layers: tuple[LayerInfo, ...]

    # -- implemented by each framework -----------------------------------------------------

    @property
    @abc.abstractmethod
    def native(self) -> object:
        """The framework's own object holding this model's weights (a Keras model, an NNX
        module, a ``(linen module, variables)`` or ``(apply_fn, params)`` pair, ...)."""

    @abc.abstractmethod
    def weights(self) -> Params:
        """Parameters and state in canonical names and layout, arrays of the model's dtype."""

    @abc.abstractmethod
    def with_weights(self, weights: Mapping[str, np.ndarray]) -> AbstractModel:
        """A new model holding ``weights`` (canonical; names not given keep their value).

        The model itself, and the user's object it was read from, are not changed."""

    @abc.abstractmethod
    def _evaluate(self, x: np.ndarray, y, loss, cotangent, capture: bool) -> Gradients:
        """Evaluate on checked inputs; ``loss`` is a :class:`~xgrad.losses.Loss`, a function
        of the framework's tensors ``(output, y) -> scalar``, or ``None`` with a cotangent."""

    # -- shared ----------------------------------------------------------------------------

    @property
    def vocab(self) -> int | None:
        """The vocabulary of a model whose input is integer token ids (its first layer an
        :class:`~xgrad.Embedding` of known configuration), else ``None`` (it takes floats)."""
        first = self.layers[0] if self.layers else None
        if first is None or first.kind != "embedding" or first.layer is None:
            return None
        return first.layer.vocab

    def walk(self) -> Iterator[LayerInfo]:
        """Every layer, nested ones right after their block, in call order."""
        for info in self.layers:
            yield from info.walk()

    def native_names(self) -> dict[str, str]:
        """Canonical name -> the framework's own name, for every parameter and state array."""
        return {
            f"{info.path}.{local}": native
            for info in self.walk()
            for local, native in info.weights.items()
        }

    @property
    def param_names(self) -> tuple[str, ...]:
        """Canonical names of the trainable parameters (those with a gradient), in order."""
        return tuple(f"{info.path}.{local}" for info in self.walk() for local in info.params)

    def spec(self) -> MLP | None:
        """The equivalent :class:`~xgrad.MLP` when every layer's configuration is known
        (``None`` also for a model read without layers: a pure function paired by a parameter
        mapping)."""

        def config(info: LayerInfo):
            if info.children:
                inner = [config(c) for c in info.children]
                return None if any(c is None for c in inner) else Residual(inner)
            return info.layer

        layers = [config(info) for info in self.layers]
        if not layers or any(layer is None for layer in layers):
            return None
        return MLP(self.input_shape if len(self.input_shape) > 1 else self.input_shape[0], layers)

    def evaluate(
        self, x, y=None, *, loss: LossArg = "sum", cotangent=None, capture: bool = False
    ) -> Gradients:
        """Output, loss, ``dL/dparams``, ``dL/dinput`` (and every layer's values with
        ``capture=True``) for the batch ``x``.

        Args:
            x: inputs of shape ``(batch, *input_shape)``; integer token ids for a model whose
                first layer is an Embedding (:attr:`vocab`): they reach ``_evaluate`` as
                int64, uncast, and ``dL/dinput`` is ``None``.
            y: targets for the losses that need them.
            loss: a loss name (:data:`xgrad.losses.LOSSES`), or a function of this model's
                framework ``(output, y) -> scalar``; ignored when ``cotangent`` is given.
            cotangent: a ``grad_output = dL/doutput`` to back-propagate instead of a loss.
            capture: also return each layer's output and ``dL/d`` output.

        Raises:
            InputError: ``x``, ``y`` or ``cotangent`` do not fit the model or the loss.
            SpecError: the loss name is unknown.
        """
        vocab = self.vocab
        xs = check_input(self.input_shape, x, vocab=vocab)
        xc = xs if vocab is not None else self._cast(xs)  # token ids stay integers
        if cotangent is not None:
            cot = check_cotangent(self.output_shape, cotangent, xs.shape[0])
            return self._evaluate(xc, None, None, self._cast(cot), capture)
        loss_fn, ys = prepare_loss(loss, y, xs.shape[0], self.output_shape)
        if ys is not None and isinstance(loss_fn, Loss):
            ys = self._cast(ys)
        return self._evaluate(xc, ys, loss_fn, None, capture)

    def gradients(self, x, y=None, *, loss: LossArg = "sum") -> Gradients:
        """Loss value, ``dL/dparams`` and ``dL/dinput`` for a loss (see :meth:`evaluate`)."""
        return self.evaluate(x, y, loss=loss)

    def vjp(self, x, cotangent) -> Gradients:
        """``dL/dparams`` and ``dL/dinput`` for a given ``grad_output = dL/doutput``."""
        return self.evaluate(x, cotangent=cotangent)

    def export_params(self) -> Params:
        """The weights in canonical names and layout (same as :meth:`weights`)."""
        return self.weights()

    def _cast(self, arr: np.ndarray) -> np.ndarray:
        return as_numpy_dtype(arr, self.dtype)

    def __repr__(self) -> str:
        return f"<{self.framework} model {self.description} {self.dtype}>"


# -- the framework interface -----------------------------------------------------------------


class AbstractFramework(abc.ABC):
    """One framework: builds models of a spec, and reads users' own models.

    Attributes:
        name: the framework's name in reports and on the command line.
        requires: the Python packages it imports.
        extra: the pip extra that installs them (``pip install 'xgrad[extra]'``).
        aliases: other names accepted for it (``tf``, ``keras``).
        dtypes: the dtypes it builds a spec in.
        packages: the top-level Python packages its models and optimizers come from (by
            which another framework knows such an object is not its own).
        native_forms: further forms :func:`xgrad.convert` gives its weights in, beside
            ``to=name`` (flax: ``"flax.linen"``); see :meth:`native_form`.
        exact_spec: whether what ``xgrad.convert(..., to=name)`` returns needs every layer's
            configuration (a built Keras model does), so that a layer whose activation is
            unknown is refused rather than built as ``linear``.
        model_files, native_files, native_file_kind: the files it reads models from and
            writes its own weights to (see :meth:`load_model_file`,
            :meth:`write_native_file`).
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str | None] = None
    aliases: ClassVar[tuple[str, ...]] = ()
    dtypes: ClassVar[tuple[str, ...]] = DTYPES
    packages: ClassVar[tuple[str, ...]] = ()
    native_forms: ClassVar[tuple[str, ...]] = ()
    exact_spec: ClassVar[bool] = False

    def build(
        self,
        spec: MLP,
        params: Mapping[str, np.ndarray] | None = None,
        *,
        dtype: str = "float32",
        seed: int = 0,
    ) -> AbstractModel:
        """This framework's model of ``spec`` holding ``params`` cast to ``dtype``.

        Args:
            spec: the model.
            params: canonical weights (kernel ``(in, out)``, ...); ``None`` means
                :func:`xgrad.init_params` ``(spec, seed)``.
            dtype: one of :attr:`dtypes`.
            seed: used only when ``params`` is ``None``.

        Raises:
            ParamsError: params do not match the spec.
            InputError: the dtype is not supported.
            KindNotSupportedError: a layer kind this framework does not build.
        """
        from xgrad.params import init_params

        if not isinstance(spec, MLP):
            raise InputError(f"build needs an xgrad.MLP spec, got {type(spec).__name__}")
        checked = init_params(spec, seed) if params is None else check_params(spec, params)
        dtype = check_dtype(dtype, self.dtypes)
        self.kinds().check(spec)
        return self._build(spec, checked, dtype)

    @abc.abstractmethod
    def _build(self, spec: MLP, params: Params, dtype: str) -> AbstractModel:
        """Build from checked float64 canonical weights (every kind in :meth:`kinds`)."""

    def kinds(self) -> KindTable:
        """The layer kinds this framework builds, with how it builds and reads each: the
        table in its package's ``kinds`` module (importing the framework).

        By default every registered kind, with entries ``None``: NumPy builds every kind (a
        NumPy model runs each layer's own forward and VJP), and a framework of your own that
        does not state its kinds is taken at its word (a kind it cannot build then fails in
        its own ``_build``). The other frameworks of xgrad return their own tables.
        """
        from xgrad.layers import LAYERS

        return KindTable(self.name, dict.fromkeys(LAYERS))

    def native_weights(self, model: AbstractModel) -> object:
        """The weights of one of this framework's models in the form the framework keeps them
        (what ``xgrad.convert(..., to=name)`` returns); the native model by default."""
        return model.native

    def native_form(self, form: str, spec: MLP, weights: Params, dtype: str) -> object:
        """Canonical ``weights`` of ``spec`` in one of :attr:`native_forms` (what
        ``xgrad.convert(..., to=form)`` returns).

        Raises:
            FrameworkError: ``form`` is not one of this framework's forms.
        """
        raise FrameworkError(f"{self.name} gives weights in no form {form!r}")

    @classmethod
    def claims(cls, obj) -> bool:
        """Whether ``obj`` is a model of this framework (decided without importing it)."""
        return False

    def read(self, obj, *, input_shape: Shape | None = None) -> AbstractModel:
        """A user's own model of this framework as an :class:`AbstractModel` (never changed).

        Args:
            obj: the framework's model object (see each framework's documentation).
            input_shape: the shape of one input example, when the model does not say it.
        """
        raise FrameworkError(f"xgrad does not read {self.name} models")

    # -- optimizers (training parity) --------------------------------------------------------

    @classmethod
    def claims_optimizer(cls, obj) -> bool:
        """Whether ``obj`` is one of this framework's optimizers, or a slip this framework
        should answer (an optimizer class or function passed uncalled); decided from class
        and module names, without importing the framework. Claims nothing by default."""
        return False

    def read_optimizer(self, obj, *, side: str = "reference") -> AbstractOptimizer:
        """An optimizer :meth:`claims_optimizer` claimed, ready to start on canonical-layout
        weights (see :mod:`xgrad.optim`); the user's object is never built or stepped.

        Args:
            obj: the framework's optimizer object.
            side: ``reference`` or ``candidate``, for messages.

        Raises:
            InputError: ``obj`` cannot be used as it is; the message says what to pass.
        """
        raise FrameworkError(f"xgrad does not train with {self.name} optimizers")

    def native_optimizer(self, spec: OptimizerSpec) -> object:
        """The optimizer this framework's models train with for ``spec``, in the form
        :meth:`read_optimizer` takes, with this framework's defaults for the options the
        spec leaves out.

        Raises:
            InputError: an option this framework's optimizer does not have.
        """
        raise FrameworkError(f"xgrad does not train {self.name} models")

    # -- files -------------------------------------------------------------------------------

    model_files: ClassVar[tuple[str, ...]] = ()
    """Suffixes (lower case) of the model files :meth:`load_model_file` reads (``.keras``);
    none by default."""

    native_files: ClassVar[tuple[str, ...]] = ()
    """Suffixes (lower case, the usual one first) of the files :meth:`write_native_file`
    writes this framework's own weights to, in its names and layout; none by default (weights
    are then written in canonical names only, :func:`xgrad.save_params`)."""

    native_file_kind: ClassVar[str] = "native weights"
    """What such a file holds, as a report says it (``a PyTorch state_dict``)."""

    def load_model_file(self, path: str | os.PathLike) -> object:
        """The framework's model saved at ``path`` (a suffix of :attr:`model_files`), loaded
        without running any code stored in the file.

        Raises:
            FrameworkError: this framework reads no model files (the default).
        """
        raise FrameworkError(f"xgrad reads no {self.name} model files")

    def write_native_file(
        self, path: str | os.PathLike, spec: MLP, weights: Params, *, dtype: str
    ) -> tuple[object, bool, int]:
        """Write this framework's own weights of ``spec`` holding ``weights`` to ``path`` (a
        suffix of :attr:`native_files`), then read the file back, the framework's own way,
        into a model of ``spec`` built from other weights.

        Args:
            path: the file to write.
            spec: the model.
            weights: canonical weights (kernel ``(in, out)``, ...).
            dtype: the dtype the model is built in.

        Returns:
            ``(native, bit_exact, count)``: the framework's native model holding the weights
            read back, whether what was read back is exactly what was written, and the number
            of arrays written.

        Raises:
            FrameworkError: this framework writes no weight files of its own (the default).
        """
        raise FrameworkError(
            f"xgrad writes no {self.name} weight files; write canonical weights instead "
            "(.npz or .safetensors)"
        )

    def capture(self, obj, batch, *, output=None, training=None) -> AbstractModel:
        """A user's model of this framework read module by module (tier (a): a
        :class:`~xgrad.frameworks.capture.CapturedModel`; the object is never changed).

        Args:
            obj: the framework's model object (what :meth:`claims` accepts).
            batch: the inputs, a :class:`~xgrad.frameworks.capture.Batch`.
            output: which output the loss sees (``None``: the first floating tensor).
            training: ``None`` leaves every module's mode as the user set it; ``True`` /
                ``False`` puts a copy in training / inference mode.

        Raises:
            FrameworkError: this framework does not read models module by module.
        """
        raise FrameworkError(f"xgrad does not read {self.name} models module by module")

    def __repr__(self) -> str:
        return f"<xgrad framework {self.name!r}>"
