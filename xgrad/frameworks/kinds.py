"""Where a layer kind meets a framework: parameter layouts and per-framework kind tables.

A layer kind (:mod:`xgrad.layers`) says what a layer computes, in canonical names and layout.
Each framework says, in **one table** (:class:`KindTable`, ``KINDS`` in its package's
``kinds`` module), how it builds each kind from its own modules and how it reads its own
modules back as that kind: one entry per kind, of a type the framework defines (a torch entry
holds a module factory, a Keras entry a layer factory, ...). A kind missing from a
framework's table is refused when a spec is built there, by :class:`KindNotSupportedError`
naming the kind and the framework.

Layouts are stated per parameter, as an axis permutation (:data:`Layout`): the native array
is the canonical one with its axes in the order ``layout`` gives, ``native =
np.transpose(canonical, layout)``. PyTorch's ``nn.Linear`` weight ``(out, in)`` is the
canonical kernel ``(in, out)`` with layout ``(1, 0)``; a torch convolution kernel
``(out, in, kh, kw)`` against a canonical ``(kh, kw, in, out)`` has layout ``(3, 2, 0, 1)``.
A parameter stored canonically has no entry (the identity).

Where no axis permutation says it, a :class:`NativeParts` does: a canonical weight held by
two native arrays (torch's LSTM bias ``bias_ih_l0 + bias_hh_l0``; a GRU's ``(2, 3u)`` bias as
``bias_ih_l0`` and ``bias_hh_l0``), or by one whose gate blocks come in another order (torch's
GRU ``r, z, n`` against the canonical ``z, r, h``). Code that moves weights between a native
module and canonical arrays (torch's :mod:`~xgrad.frameworks.torch.model`) handles it; the
functions :func:`to_native` and :func:`to_canonical` handle permutations only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from xgrad.errors import FrameworkError, XgradError
from xgrad.layers import LAYERS
from xgrad.spec import MLP

__all__ = [
    "TRANSPOSED",
    "KindNotSupportedError",
    "KindTable",
    "Layout",
    "NativeParts",
    "inverse",
    "to_canonical",
    "to_native",
]

Layout = tuple[int, ...]  # native axes as canonical axes: native = np.transpose(canonical, layout)

TRANSPOSED: Layout = (1, 0)
"""The layout of a 2-D weight stored transposed (``nn.Linear``'s ``(out, in)`` kernel)."""


def inverse(layout: Layout) -> Layout:
    """The permutation that undoes ``layout``: ``np.transpose(native, inverse(layout))`` is
    the canonical array."""
    return tuple(int(i) for i in np.argsort(layout))


def to_native(array, layout: Layout | None):
    """The canonical ``array`` in a native ``layout`` (a view; ``None``: unchanged)."""
    return array if not layout else np.transpose(array, layout)


def to_canonical(array, layout: Layout | None):
    """A native ``array`` stored in ``layout`` in canonical order (a view; ``None``:
    unchanged)."""
    return array if not layout else np.transpose(array, inverse(layout))


@dataclass(frozen=True)
class NativeParts:
    """A canonical weight stored natively as parts, where an axis permutation cannot say it.

    Part 0 is the native array the kind's ``weights`` entry names; ``others`` name the other
    parts, siblings in the same module (the native name's last component replaced: part 0
    ``3.bias_ih_l0`` and other ``bias_hh_l0`` give ``3.bias_hh_l0``). Each part is the
    canonical array (``"sum"``) or its slice ``[i]`` (``"stack"``), axes permuted by
    ``layout`` and then, with ``blocks = (axis, order)``, cut along native ``axis`` into
    ``len(order)`` equal blocks, native block ``j`` holding canonical block ``order[j]``.

    Attributes:
        others: the other parts' sibling names, in order.
        combine: ``"sum"``: the canonical array is the parts' sum; written as ``(value, 0,
            ...)``; its gradient is each part's gradient (they are equal). ``"stack"``:
            canonical axis 0 indexes the parts; gradients stack the same way.
        layout: each part's axis permutation (:data:`Layout`), ``None``: none.
        blocks: ``(native axis, order)`` of gate blocks, ``None``: same order.

    Example:
        >>> import numpy as np
        >>> lstm_bias = NativeParts(("bias_hh_l0",), "sum")
        >>> lstm_bias.names("0.bias_ih_l0")
        ('0.bias_ih_l0', '0.bias_hh_l0')
        >>> [a.tolist() for a in lstm_bias.to_native(np.array([1.0, 2.0]))]
        [[1.0, 2.0], [0.0, 0.0]]
        >>> gru_bias = NativeParts(("bias_hh_l0",), "stack", blocks=(0, (1, 0, 2)))
        >>> gru_bias.to_canonical([np.array([1.0, 2, 3]), np.array([4.0, 5, 6])]).tolist()
        [[2.0, 1.0, 3.0], [5.0, 4.0, 6.0]]
    """

    others: tuple[str, ...] = ()
    combine: str = "sum"
    layout: Layout | None = None
    blocks: tuple[int, tuple[int, ...]] | None = None

    def names(self, native: str) -> tuple[str, ...]:
        """The parts' native names, part 0 ``native`` first."""
        head = native.rsplit(".", 1)[0] + "." if "." in native else ""
        return (native, *(head + other for other in self.others))

    def _reorder(self, arr, order: Sequence[int]):
        axis = self.blocks[0]
        pieces = np.split(arr, len(order), axis=axis)
        return np.concatenate([pieces[i] for i in order], axis=axis)

    def _part_to_native(self, canonical):
        arr = to_native(canonical, self.layout)
        return arr if self.blocks is None else self._reorder(arr, self.blocks[1])

    def _part_to_canonical(self, native):
        arr = native
        if self.blocks is not None:
            arr = self._reorder(arr, inverse(self.blocks[1]))
        return to_canonical(arr, self.layout)

    def to_native(self, canonical) -> tuple[np.ndarray, ...]:
        """The native parts of a canonical array, in the order of :meth:`names`."""
        canonical = np.asarray(canonical)
        if self.combine == "stack":
            return tuple(self._part_to_native(part) for part in canonical)
        first = self._part_to_native(canonical)
        return (first, *(np.zeros_like(first) for _ in self.others))

    def to_canonical(self, parts: Sequence) -> np.ndarray:
        """The canonical array held by native ``parts`` (in the order of :meth:`names`)."""
        arrays = [self._part_to_canonical(np.asarray(p)) for p in parts]
        if self.combine == "stack":
            return np.stack(arrays)
        return np.sum(arrays, axis=0) if len(arrays) > 1 else arrays[0]

    def grad_to_canonical(self, grads: Sequence) -> np.ndarray:
        """The canonical array's gradient from its parts' gradients: a sum's is part 0's
        (every part's is the same), a stack's is the parts' stacked."""
        if self.combine == "stack":
            return self.to_canonical(grads)
        return self._part_to_canonical(np.asarray(grads[0]))


class KindNotSupportedError(FrameworkError):
    """A spec holds a layer kind that a framework does not build."""


E = TypeVar("E")


class KindTable(Generic[E]):
    """One framework's entries, by layer kind (:data:`xgrad.layers.LAYERS`).

    Args:
        framework: the framework's name, for error messages.
        entries: kind -> the framework's entry for it.

    Example:
        >>> table = KindTable("toy", {"dense": "a dense entry"})
        >>> table["dense"], "layernorm" in table
        ('a dense entry', False)
    """

    def __init__(
        self,
        framework: str,
        entries: Mapping[str, E] | None = None,
        *,
        entry_type: type | None = None,
    ) -> None:
        self.framework = framework
        self.entry_type = entry_type
        self._entries: dict[str, E] = {}
        for kind, entry in (entries or {}).items():
            self.register(kind, entry)

    def register(self, kind: str, entry: E) -> None:
        """Add (or replace) the entry of ``kind``, a kind of :data:`xgrad.layers.LAYERS`.

        Raises:
            FrameworkError: ``kind`` is not a registered layer kind, or ``entry`` is not of
                this table's entry type.
        """
        if kind not in LAYERS:
            raise FrameworkError(
                f"{kind!r} is not a layer kind; register the layer first "
                f"(xgrad.layers.register_layer), known kinds: {', '.join(LAYERS)}"
            )
        if self.entry_type is not None and not isinstance(entry, self.entry_type):
            raise FrameworkError(
                f"the {self.framework} entry of {kind!r} must be a {self.entry_type.__name__} "
                f"({self.entry_type.__module__}), got {type(entry).__name__} {entry!r}"
            )
        self._entries[kind] = entry

    def unregister(self, kind: str) -> E | None:
        """Remove the entry of ``kind`` (a plugin unloading); returns it, ``None`` if absent."""
        return self._entries.pop(kind, None)

    def __getitem__(self, kind: str) -> E:
        entry = self._entries.get(kind)
        if entry is None:
            raise KindNotSupportedError(
                f"xgrad cannot build a {kind} layer in {self.framework}: {self.framework} has "
                f"no entry for it (it builds {', '.join(self._entries) or 'no kind'}); compare "
                f"this spec without {self.framework}"
            )
        return entry

    def __contains__(self, kind: object) -> bool:
        return kind in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def items(self):
        return self._entries.items()

    def check(self, spec: MLP) -> None:
        """Refuse a spec holding a kind this table lacks, before anything is built.

        Raises:
            KindNotSupportedError: naming the first such layer, its kind and the framework.
        """
        for path, layer in spec.walk():
            if layer.kind not in self._entries:
                try:
                    self[layer.kind]
                except KindNotSupportedError as exc:
                    raise KindNotSupportedError(f"layer {path}: {exc}") from None
            names = getattr(self._entries[layer.kind], "weights", None)
            if names is not None:
                missing = [
                    n for n in (*layer.param_names(), *layer.state_names()) if n not in names
                ]
                if missing:
                    raise FrameworkError(
                        f"layer {path}: the {self.framework} entry of {layer.kind!r} names no "
                        f"native weight for {', '.join(map(repr, missing))}; give its weights "
                        f"mapping (local name -> name in the module) every weight of the layer"
                    )

    @contextlib.contextmanager
    def building(self, kind: str, path: str) -> Iterator[None]:
        """Run an entry's code for the layer at ``path``: an error it raises that is not
        xgrad's (a mistake in the entry, or the framework refusing its arguments) becomes a
        :class:`~xgrad.errors.FrameworkError` naming the kind, the framework and the layer."""
        try:
            yield
        except XgradError:
            raise
        except (TypeError, ValueError, KeyError, AttributeError, IndexError) as exc:
            raise FrameworkError(
                f"layer {path}: the {self.framework} entry of layer kind {kind!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"<KindTable {self.framework}: {', '.join(self._entries)}>"
