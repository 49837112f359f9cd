"""Any model, module by module: inputs as users pass them, and a model captured at the
boundaries of its modules (tier (a) of the comparison).

A user's model that xgrad cannot read completely into its layer kinds (attention, a custom
module, several inputs, a dict output, token ids) is still compared: each framework runs it
once with every module's call intercepted (torch forward hooks, Keras layer calls, NNX and
Linen method interception) and reports it as a :class:`CapturedModel`:

* :attr:`CapturedModel.modules`: one :class:`ModuleInfo` per module called, in the order the
  calls *finish* (children before their parent), with its attribute path (``blocks.3.attn``),
  its class, the module it is called from (:attr:`ModuleInfo.scope`), its own parameters
  (not its children's), the shapes of its floating inputs and of its output, and, where the
  framework's kind table reads its class, its layer kind and configuration (tier (b): such
  modules are diagnosed; the others are opaque units, compared and localised only);
* an evaluation returns, beside the usual gradients, every module's output and ``dL/d``
  output by path, and its floating inputs (``Gradients.module_inputs``), which localisation
  and diagnosis read.

Inputs travel as a :class:`Batch`: one array, a tuple or list (positional arguments) or a
dict (keyword arguments) of arrays, any rank, integer ids allowed (no ``dL/dinput`` for
them). Outputs may be any pytree (tuple, dict, dataclass, a ``transformers`` ``ModelOutput``);
``output=`` picks what the loss sees (:func:`pick_output`), by default the first floating
tensor.

Canonical names in a captured model are ``{module path}.{local}``: ``local`` is xgrad's name
for a module of a known kind (``kernel`` of an ``nn.Linear``, stored ``(1, 0)``) and the
framework's own attribute name otherwise (``in_proj_weight``), stored as the framework stores
it. A parameter of the model's own (no module of its own) is named by its attribute alone.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from xgrad._checks import require_finite
from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractModel, Gradients, LayerInfo
from xgrad.layers import Shape

__all__ = [
    "Batch",
    "CapturedModel",
    "ModuleInfo",
    "as_batch",
    "canonical_name",
    "input_grads",
    "leaf_paths",
    "pick_output",
    "replace_leaf",
]


# -- inputs as users pass them ------------------------------------------------------------------


def _to_numpy(value, what: str) -> np.ndarray:
    """A framework's array (torch tensor, jax or tf array) or a list as a NumPy array, with no
    gradient attached and without changing the user's object."""
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if callable(detach):  # a torch tensor, requires_grad or not
        value = detach()
        cpu = getattr(value, "cpu", None)
        if callable(cpu):
            value = cpu()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":
            value = value.float()
    numpy = getattr(value, "numpy", None)
    if callable(numpy) and not isinstance(value, np.generic):
        try:
            return np.asarray(numpy())
        except (TypeError, ValueError, RuntimeError):
            pass
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be an array, got {type(value).__name__}: {exc}") from None
    if arr.dtype == object:
        raise InputError(f"{what} must be an array of numbers, got {type(value).__name__}")
    return arr


def _check_leaf(arr: np.ndarray, what: str) -> np.ndarray:
    if arr.ndim == 0:
        raise InputError(f"{what} is a scalar; inputs have a batch axis first, e.g. shape (4, 3)")
    if arr.shape[0] == 0:
        raise InputError(f"{what} has an empty batch (shape {arr.shape}); give at least one row")
    if arr.dtype.kind == "f" or arr.dtype.name == "bfloat16":
        require_finite(
            arr.astype(np.float64),
            f"{what} contains",
            InputError,
            "xgrad compares gradients at finite points only",
        )
    elif arr.dtype.kind not in "iub":
        raise InputError(f"{what} has dtype {arr.dtype}; pass numbers (floats, or integer ids)")
    return arr


@dataclass(frozen=True)
class Batch:
    """A model's inputs, as the user passes them, in NumPy.

    Attributes:
        args: positional inputs, each an array.
        kwargs: keyword inputs, each an array.
        names: the name of each input in reports, in the order ``args`` then ``kwargs``:
            ``input`` for a single array, ``input.0``, ``input.1`` for positional ones,
            ``input.ids`` for a keyword one.

    Example:
        >>> b = as_batch({"ids": np.zeros((2, 5), int), "mask": np.ones((2, 5))})
        >>> b.names, b.size, b.floating
        (('input.ids', 'input.mask'), 2, ('input.mask',))
    """

    args: tuple[np.ndarray, ...] = ()
    kwargs: dict[str, np.ndarray] = field(default_factory=dict)
    names: tuple[str, ...] = ()

    @property
    def leaves(self) -> dict[str, np.ndarray]:
        """Every input by its name, in order."""
        return dict(zip(self.names, (*self.args, *self.kwargs.values()), strict=True))

    @property
    def size(self) -> int:
        """The batch size: the first axis of the first input."""
        return int(next(iter(self.leaves.values())).shape[0])

    @property
    def floating(self) -> tuple[str, ...]:
        """The names of the floating inputs (those with a ``dL/dinput``)."""
        return tuple(n for n, a in self.leaves.items() if _floating(a))

    @property
    def first(self) -> np.ndarray:
        """The first floating input, else the first input (what a report calls ``input``)."""
        leaves = self.leaves
        for name in self.floating:
            return leaves[name]
        return next(iter(leaves.values()))

    def with_leaves(self, arrays: Mapping[str, np.ndarray]) -> Batch:
        """The batch with the named inputs replaced (cast, for one framework)."""
        new = [arrays.get(n, a) for n, a in self.leaves.items()]
        k = len(self.args)
        return Batch(tuple(new[:k]), dict(zip(self.kwargs, new[k:], strict=True)), self.names)

    def describe(self) -> str:
        """``(6, 12) float32`` or ``input.ids (2, 5) int64, input.mask (2, 5) float32``."""
        if self.names == ("input",):
            a = self.args[0]
            return f"{tuple(a.shape)} {a.dtype}"
        return ", ".join(f"{n} {tuple(a.shape)} {a.dtype}" for n, a in self.leaves.items())


def _floating(arr: np.ndarray) -> bool:
    return arr.dtype.kind == "f" or arr.dtype.name == "bfloat16"


def as_batch(x) -> Batch:
    """``x`` as a :class:`Batch`: an array (NumPy, torch, JAX, TensorFlow; any rank; integer
    ids allowed), a tuple or list of them (positional inputs), or a dict of them (keyword
    inputs). The user's objects are not changed (a torch tensor that requires grad is read
    through ``detach``).

    Raises:
        InputError: an empty structure, a nested one, a scalar, an empty batch, NaN/Inf,
            inputs whose batch sizes differ, or something that is not an array.
    """
    if isinstance(x, Batch):
        return x
    if isinstance(x, Mapping):
        if not x:
            raise InputError("x is an empty dict; give the model's inputs by name")
        kwargs = {}
        for key, value in x.items():
            if not isinstance(key, str):
                raise InputError(f"x's keys must be the model's argument names, got {key!r}")
            kwargs[key] = _check_leaf(_to_numpy(value, f"x[{key!r}]"), f"input {key!r}")
        batch = Batch((), kwargs, tuple(f"input.{k}" for k in kwargs))
    elif isinstance(x, tuple | list) and x and not isinstance(x[0], numbers.Number):
        if any(isinstance(v, tuple | list | Mapping) for v in x):
            raise InputError(
                "x holds a nested structure; give the model's inputs as one array, a tuple of "
                "arrays (positional) or a dict of arrays (by name)"
            )
        args = tuple(_check_leaf(_to_numpy(v, f"x[{i}]"), f"input {i}") for i, v in enumerate(x))
        batch = Batch(args, {}, tuple(f"input.{i}" for i in range(len(args))))
    else:
        arr = _check_leaf(_to_numpy(x, "x"), "x")
        batch = Batch((arr,), {}, ("input",))
    sizes = {n: int(a.shape[0]) for n, a in batch.leaves.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(
            f"the inputs' batch sizes differ ({', '.join(f'{n} {s}' for n, s in sizes.items())});"
            " every input has the batch on its first axis"
        )
    return batch


# -- outputs --------------------------------------------------------------------------------------


def leaf_paths(tree, prefix: str = "") -> list[tuple[str, object]]:
    """``(path, leaf)`` of every leaf of a pytree of arrays, in order: tuples and lists by index
    (``0``), mappings by key (``logits``), dataclasses and ``ModelOutput`` by field; a leaf is
    anything else that has a ``shape``. ``None`` values are skipped."""
    if tree is None:
        return []
    if isinstance(tree, Mapping):
        items = list(tree.items())
    elif dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        items = [(f.name, getattr(tree, f.name)) for f in dataclasses.fields(tree)]
    elif isinstance(tree, tuple | list):
        items = list(enumerate(tree))
    elif hasattr(tree, "shape"):
        return [(prefix, tree)]
    else:
        return []
    out = []
    for key, value in items:
        out += leaf_paths(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def replace_leaf(tree, key: str, new):
    """``tree`` with the leaf at ``key`` (a path of :func:`leaf_paths`) replaced by ``new``.

    Tuples, lists, namedtuples, dicts, dataclasses and ``ModelOutput`` are rebuilt, never
    changed; a mapping whose class cannot be rebuilt from its items becomes a ``dict``.

    Example:
        >>> replace_leaf({"logits": 1, "aux": (2, 3)}, "aux.1", 4)
        {'logits': 1, 'aux': (2, 4)}
    """
    if key == "":
        return new
    head, _, rest = key.partition(".")
    if isinstance(tree, Mapping):
        items = {k: (replace_leaf(v, rest, new) if str(k) == head else v) for k, v in tree.items()}
        try:
            return type(tree)(**items) if dataclasses.is_dataclass(tree) else type(tree)(items)
        except TypeError:
            return dict(items)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, type):
        return dataclasses.replace(tree, **{head: replace_leaf(getattr(tree, head), rest, new)})
    if isinstance(tree, tuple | list):
        items = [replace_leaf(v, rest, new) if str(i) == head else v for i, v in enumerate(tree)]
        if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a namedtuple
            return type(tree)(*items)
        return type(tree)(items)
    return tree


def _is_floating(leaf) -> bool:
    dtype = str(getattr(leaf, "dtype", ""))
    return any(t in dtype for t in ("float", "bfloat16", "half", "double"))


def pick_output(tree, output: str | int | None, *, what: str) -> tuple[object, str]:
    """``(leaf, its path)``: the model output the loss sees.

    Args:
        tree: what the model returned (a tensor, a tuple, a dict, a dataclass).
        output: ``None`` for the first floating leaf; else its key or index (``"logits"``,
            ``0``) or path (``"hidden.2"``).
        what: how messages name the model.

    Raises:
        OutputError-like InputError: no floating leaf, or ``output`` names none; the message
            lists the leaves there are.
    """
    leaves = leaf_paths(tree)
    if not leaves:
        raise InputError(
            f"{what} returned {type(tree).__name__}, which holds no tensor; return the output "
            "(a tensor, or a tuple or dict holding it)"
        )
    listing = ", ".join(
        f"{p or '(the output)'} {tuple(getattr(v, 'shape', ()))}" for p, v in leaves
    )
    if output is None:
        for path, leaf in leaves:
            if _is_floating(leaf):
                return leaf, path
        raise InputError(f"{what} returned no floating tensor ({listing}); pass output=")
    key = str(output)
    for path, leaf in leaves:
        if path == key or path.split(".")[0] == key and len(leaves) == 1:
            return leaf, path
    raise InputError(f"output={output!r} names no output of {what}; its outputs are: {listing}")


# -- the captured model -------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleInfo(LayerInfo):
    """One module of a captured model (a :class:`~xgrad.frameworks.base.LayerInfo` whose
    ``path`` is the module's attribute path and ``kind`` its layer kind, or ``module`` when
    it is of no kind xgrad knows).

    Attributes:
        scope: the path of the module it is called from (``""``: the model; ``None``: it is
            the model itself).
        type: the framework's class name (``MultiheadAttention``).
        input_shapes: the shapes of its floating inputs, batch axis excluded.
        calls: how many times it was called in one evaluation (> 1: its weights are shared
            by its calls; only the first call's values are compared).
        shared: local name -> the canonical name of the parameter this one is (the same
            array used by another module: a tied weight); its gradient is compared there.
    """

    scope: str | None = ""
    type: str = ""
    input_shapes: tuple[Shape, ...] = ()
    calls: int = 1
    shared: dict[str, str] = field(default_factory=dict)

    @property
    def opaque(self) -> bool:
        """Of no layer kind xgrad knows: compared and localised, not diagnosed."""
        return self.layer is None

    def describe(self) -> str:
        if self.layer is not None:
            return self.layer.describe()
        return self.type or self.kind


class CapturedModel(AbstractModel):
    """A user's model captured at its modules' boundaries (see the module docstring).

    Frameworks implement :meth:`_evaluate_batch`; :attr:`layers` are the modules, flat, in
    the order their calls finish. ``evaluate`` takes the inputs as users pass them (anything
    :func:`as_batch` takes).

    Attributes:
        batch: the inputs the model was read with (their names, dtypes and example shapes).
        output_path: the path of the output the loss sees within what the model returns.
        output_note: what the report should say about the output chosen, or ``None``.
    """

    batch: Batch
    output_path: str = ""
    output_note: str | None = None

    @property
    def modules(self) -> tuple[ModuleInfo, ...]:
        return self.layers  # type: ignore[return-value]

    def native_names(self) -> dict[str, str]:
        """Canonical name -> the framework's own name, for every parameter and state array
        (the model's own ones, of path ``""``, are named by their local name alone)."""
        return {
            canonical_name(info.path, local): native
            for info in self.walk()
            for local, native in info.weights.items()
        }

    @property
    def param_names(self) -> tuple[str, ...]:
        """Canonical names of the trainable parameters (those with a gradient), in order."""
        return tuple(
            canonical_name(info.path, local) for info in self.walk() for local in info.params
        )

    def module(self, path: str) -> ModuleInfo:
        for info in self.layers:
            if info.path == path:
                return info  # type: ignore[return-value]
        raise KeyError(path)

    def evaluate(self, x, y=None, *, loss="sum", cotangent=None, capture: bool = False):
        """See :meth:`AbstractModel.evaluate`; ``x`` is anything :func:`as_batch` takes,
        matching the inputs the model was read with."""
        from xgrad.frameworks.base import check_cotangent, prepare_loss
        from xgrad.losses import Loss

        batch = self.check_batch(as_batch(x))
        if cotangent is not None:
            cot = check_cotangent(self.output_shape, cotangent, batch.size)
            return self._evaluate_batch(batch, None, None, self._cast(cot), capture)
        loss_fn, ys = prepare_loss(loss, y, batch.size, self.output_shape)
        if ys is not None and isinstance(loss_fn, Loss):
            ys = self._cast(ys)
        return self._evaluate_batch(batch, ys, loss_fn, None, capture)

    def _evaluate(self, x, y, loss, cotangent, capture) -> Gradients:
        return self._evaluate_batch(as_batch(x), y, loss, cotangent, capture)

    def check_batch(self, batch: Batch) -> Batch:
        """Refuse inputs of other names or example shapes than those the model was read with."""
        want = self.batch
        if batch.names != want.names:
            raise InputError(
                f"{self.description} was read with inputs {', '.join(want.names)}; got "
                f"{', '.join(batch.names)}"
            )
        for name, arr in batch.leaves.items():
            ref = want.leaves[name]
            if arr.shape[1:] != ref.shape[1:]:
                raise InputError(
                    f"{name} has shape {arr.shape} but {self.description} was read with "
                    f"examples of shape {ref.shape[1:]} (batch {batch.size} is fine)"
                )
        return batch

    def _evaluate_batch(self, batch: Batch, y, loss, cotangent, capture: bool) -> Gradients:
        """Evaluate on a checked batch: :class:`~xgrad.frameworks.base.Gradients` whose
        ``input`` is ``dL/d`` the first floating input and ``inputs`` every floating
        input's, and, with ``capture``, every module's output, ``dL/d`` output (by path) and
        floating inputs (``module_inputs``)."""
        raise NotImplementedError


def canonical_name(path: str, local: str) -> str:
    """A captured weight's canonical name: ``{module path}.{local}``, or ``local`` alone for
    a weight of the model's own (path ``""``)."""
    return f"{path}.{local}" if path else local


def input_grads(batch: Batch, grads: Sequence) -> dict[str, np.ndarray]:
    """Floating input name -> its gradient, from gradients in ``batch.floating`` order."""
    return dict(zip(batch.floating, grads, strict=True))
