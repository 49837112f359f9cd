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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
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
