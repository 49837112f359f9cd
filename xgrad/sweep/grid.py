"""The grid of a sweep: its axes, the model around them, every setting checked on
construction, and the stable key of each cell (:meth:`SweepGrid.cell_key`)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import NamedTuple

import numpy as np

from xgrad._version import __version__
from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.errors import FrameworkError, InputError
from xgrad.frameworks.base import ALL_DTYPES, AbstractFramework
from xgrad.frameworks.registry import available_frameworks, known_frameworks, lookup_framework
from xgrad.losses import get_loss
from xgrad.metrics import rtol_note

__all__ = ["CELL_SCHEMA", "HEADS", "CellConfig", "SweepGrid", "canonical"]

CELL_SCHEMA = "xgrad.sweep-cell/1"
"""The schema of one finished cell's file in ``out/cells/``; part of every cell's key."""

HEADS = {"bce": "sigmoid", "cce": "softmax"}  # the output activation a loss expects; else linear


def _default_activations() -> tuple[str, ...]:
    return (*ACTIVATIONS, "leaky_relu")


class CellConfig(NamedTuple):
    """One point of the grid (a tuple, as :meth:`SweepGrid.cells` always returned)."""

    activation: str
    loss: str
    dtype: str
    batch: int
    seed: int

    @property
    def title(self) -> str:
        return (
            f"{self.activation} / {self.loss} / {self.dtype} / batch {self.batch} / "
            f"seed {self.seed}"
        )


_LISTS = {  # list setting -> (kind of item, smallest integer, what one item is)
    "activations": (str, None, "activation"),
    "losses": (str, None, "loss"),
    "dtypes": (str, None, "dtype"),
    "batch_sizes": (int, 1, "batch size"),
    "seeds": (int, 0, "seed"),
    "hidden": (int, 1, "width"),
}


def _setting(key: str) -> str:
    """``batch_sizes (--batch-sizes)``: a setting as Python and TOML, and the CLI, name it."""
    return f"sweep {key} (--{key.replace('_', '-')})"


def _integer(key: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        what = "positive integers" if low == 1 else "non-negative integers (0, 1, ...)"
        raise InputError(f"{_setting(key)} must hold {what}, got {value!r}")
    return int(value)


def _list_setting(key: str, value) -> tuple:
    """One axis (or ``hidden``) as a tuple, checked: a string is split on commas."""
    kind, low, what = _LISTS[key]
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",") if p.strip()]
        if kind is int:
            try:
                parts = [int(p) for p in parts]
            except ValueError:
                raise InputError(
                    f"{_setting(key)} takes comma-separated integers, got {value!r}"
                ) from None
        value = parts
    if not isinstance(value, list | tuple | range):
        example = "['relu', 'tanh']" if kind is str else "[1, 4]"
        raise InputError(f"{_setting(key)} must be a list, got {value!r}; write e.g. {example}")
    if not value:
        raise InputError(f"{_setting(key)} is empty; give at least one {what}")
    out: list = []
    for item in value:
        if kind is str:
            if not isinstance(item, str) or not item.strip():
                raise InputError(f"{_setting(key)} must hold {what} names, got {item!r}")
            item = item.strip()
        else:
            item = _integer(key, item, low)
        if item in out and key != "hidden":  # an axis: a repeated value repeats cells
            raise InputError(f"{_setting(key)} lists {item!r} twice; give each {what} once")
        out.append(item)
    return tuple(out)


def _frameworks_setting(value) -> tuple[str | AbstractFramework, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, AbstractFramework):
        value = [value]
    if not isinstance(value, list | tuple):
        raise InputError(
            f"{_setting('frameworks')} must be a list of names, got {value!r}; write e.g. "
            "['numpy', 'jax']"
        )
    if not value:
        raise InputError(
            f"{_setting('frameworks')} is empty; name at least one framework, or leave it out "
            "for every installed one"
        )
    return tuple(value)


def _framework(entry) -> AbstractFramework:
    """The framework an entry of ``frameworks`` names, whether or not it is installed here
    (importing no framework)."""
    if isinstance(entry, AbstractFramework):
        return entry
    try:
        return lookup_framework(entry)
    except FrameworkError as exc:
        raise FrameworkError(f"{_setting('frameworks')}: {exc}") from None


def _check_rtol(value) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not (math.isfinite(value) and value > 0)
    ):
        raise InputError(
            f"{_setting('rtol')} must be a positive finite number such as 1e-5, got {value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class SweepGrid:
    """The axes of a sweep and the fixed model shape around them, checked on construction.

    Attributes:
        activations, losses, dtypes, batch_sizes, seeds: the axes; the cells are their
            product (:meth:`cells`). Each is a list (a tuple once built) of distinct
            values; a string is split on commas (``"relu,tanh"``).
        input_dim, hidden, output_dim: the model of each cell (``hidden`` widths use the
            cell's activation), unless ``layers`` gives a template (see the module).
        frameworks: names (``"numpy"``, ``"jax"``, ...) or
            :class:`~xgrad.frameworks.AbstractFramework` instances, as for
            :func:`xgrad.compare`; ``None`` means every installed framework. Instances must
            pickle (a class importable by name) to run in worker processes.
        rtol: overrides the per-dtype normwise tolerance.

    Raises:
        InputError: an empty axis, a repeated value, a value of the wrong kind or out of
            range, a dtype not every framework computes in.
        SpecError: an unknown activation or loss, or a template that does not build.
        FrameworkError: an unknown framework name.
    """

    activations: tuple[str, ...] = field(default_factory=_default_activations)
    losses: tuple[str, ...] = ("sum", "mse")
    dtypes: tuple[str, ...] = ("float32", "float64")
    batch_sizes: tuple[int, ...] = (1, 4)
    seeds: tuple[int, ...] = (0,)
    input_dim: int = 6
    hidden: tuple[int, ...] = (8, 8)
    output_dim: int = 4
    layers: str | None = None
    frameworks: tuple[str | AbstractFramework, ...] | None = None
    rtol: float | None = None

    def __post_init__(self) -> None:
        values = {key: _list_setting(key, getattr(self, key)) for key in _LISTS}
        for key in ("input_dim", "output_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise InputError(f"{_setting(key)} must be a positive integer, got {value!r}")
            values[key] = int(value)
        if self.layers is not None and (not isinstance(self.layers, str) or not self.layers):
            raise InputError(
                f"{_setting('layers')} must be a text template such as "
                f"'8:ACT,layernorm,4:HEAD', got {self.layers!r}"
            )
        values["frameworks"] = _frameworks_setting(self.frameworks)
        values["rtol"] = _check_rtol(self.rtol)
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self.validate()

    @classmethod
    def from_mapping(cls, values: Mapping) -> SweepGrid:
        """Build and validate a grid from flag values or a TOML table.

        Raises:
            InputError: an unknown key, an empty axis, or a value of the wrong kind.
            SpecError: an unknown activation or loss.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown sweep setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def validate(self) -> None:
        """Check every name and build every cell's model (no framework is imported; the
        values themselves were checked on construction).

        Raises:
            InputError: a dtype xgrad does not compute in, or one a framework lacks.
            SpecError: an unknown activation or loss, or a template that does not build.
            FrameworkError: an unknown framework name.
        """
        for name in self.activations:
            get_activation(name)
        for name in self.losses:
            get_loss(name)
        for dtype in self.dtypes:
            if dtype not in ALL_DTYPES:
                raise InputError(
                    f"{_setting('dtypes')}: {dtype!r} is not a dtype xgrad computes in; use "
                    f"{', '.join(ALL_DTYPES)}"
                )
        frameworks = [_framework(e) for e in self._framework_entries()]
        names = [fw.name for fw in frameworks]
        for name in names:
            if names.count(name) > 1:
                raise InputError(
                    f"{_setting('frameworks')} lists {name!r} twice; name each framework once"
                )
        for dtype in self.dtypes:
            lacking = [fw.name for fw in frameworks if dtype not in fw.dtypes]
            if lacking:
                having = [n for n in known_frameworks() if dtype in _framework(n).dtypes]
                raise InputError(
                    f"dtype {dtype!r} is not supported by {', '.join(lacking)}; drop it from "
                    f"{_setting('dtypes')} or run it on frameworks that have it "
                    f"({', '.join(having)})"
                )
        for activation in self.activations:
            for loss in self.losses:
                self.spec(activation, loss)

    def notes(self) -> list[str]:
        """Settings that run but cannot mean what they seem: an ``rtol`` below the unit
        roundoff of one of the dtypes, whose cells then mismatch on rounding alone."""
        notes = (rtol_note(self.rtol, dtype, "cells") for dtype in self.dtypes)
        return [note for note in notes if note is not None]

    def spec(self, activation: str, loss: str):
        """The model of the cells with this activation and loss."""
        from xgrad.layers.text import parse_layers
        from xgrad.spec import MLP, Dense

        head = HEADS.get(get_loss(loss).name, "linear")
        if self.layers is None:
            layers = [*(Dense(h, activation) for h in self.hidden), Dense(self.output_dim, head)]
        else:
            text = re.sub(r"\bHEAD\b", head, re.sub(r"\bACT\b", activation, self.layers))
            layers = parse_layers(text)
        return MLP(self.input_dim, layers)

    def cells(self) -> list[CellConfig]:
        """Every cell, in grid order: activations, then losses, dtypes, batch sizes, seeds."""
        return [
            CellConfig(*c)
            for c in itertools.product(
                self.activations, self.losses, self.dtypes, self.batch_sizes, self.seeds
            )
        ]

    def _framework_entries(self) -> list[str | AbstractFramework]:
        return available_frameworks() if self.frameworks is None else list(self.frameworks)

    def framework_names(self) -> list[str]:
        """The frameworks' names, in order (``None`` lists the installed ones)."""
        return [
            e.name if isinstance(e, AbstractFramework) else str(e)
            for e in self._framework_entries()
        ]

    def resolved(self) -> SweepGrid:
        """This grid with ``frameworks`` checked and spelled out (``None`` -> the installed
        ones, ``tf`` -> ``tensorflow``), importing none of them.

        Raises:
            FrameworkError: an unknown or repeated name, or none.
            FrameworkNotInstalledError: a named framework is not installed here.
        """
        from xgrad.runner import resolve_frameworks

        entries = self._framework_entries()
        checked = resolve_frameworks(entries)
        names = tuple(
            e if isinstance(e, AbstractFramework) else fw.name
            for e, fw in zip(entries, checked, strict=True)
        )
        return replace(self, frameworks=names)

    def model_config(self) -> dict:
        """What every cell's result depends on besides its own axes (JSON-ready)."""
        return {
            "input_dim": self.input_dim,
            "hidden": list(self.hidden),
            "output_dim": self.output_dim,
            "layers": self.layers,
            "frameworks": self.framework_names(),
            "rtol": self.rtol,
        }

    def to_dict(self) -> dict:
        """The grid as JSON-ready data (the merged report's ``grid``)."""
        return {
            "activations": list(self.activations),
            "losses": list(self.losses),
            "dtypes": list(self.dtypes),
            "batch_sizes": list(self.batch_sizes),
            "seeds": list(self.seeds),
            **self.model_config(),
        }

    def cell_key(self, cell: CellConfig) -> str:
        """A stable name for ``cell`` of this grid: a hash of everything its result depends
        on (the cell's axes, :meth:`model_config`, the xgrad version and :data:`CELL_SCHEMA`),
        the same in every process and on every machine. The other axes are not part of it,
        so a cell keeps its key when the grid around it grows."""
        digest = hashlib.sha256(canonical(self.key_payload(cell)).encode()).hexdigest()
        return digest[:20]

    def key_payload(self, cell: CellConfig) -> dict:
        """What :meth:`cell_key` is a hash of (JSON-ready); a cell's file keeps it beside the
        cell, to check that the file holds exactly this cell."""
        return {
            "schema": CELL_SCHEMA,
            "xgrad": __version__,
            "model": self.model_config(),
            "cell": dict(cell._asdict()),
        }


def canonical(data) -> str:
    """``data`` as JSON text that is the same for equal data (sorted keys, no spaces)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
