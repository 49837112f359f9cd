"""Layers written as text, for the command line and TOML grids.

``64:gelu,layernorm,residual(64:relu,64),dropout(0.1),10`` reads as::

    [Dense(64, "gelu"), LayerNorm(), Residual([Dense(64, "relu"), Dense(64)]),
     Dropout(0.1), Dense(10)]

Items are separated by commas outside parentheses. An item is

* ``UNITS[:ACTIVATION]``: a :class:`~xgrad.Dense` (``16:leaky_relu:0.01``);
* ``KIND`` or ``KIND(ARGS)`` for any layer kind of :data:`xgrad.layers.LAYERS`: positional
  arguments in the order of the class's fields, ``name=value`` for the others, and a bare
  flag name for ``True`` (``batchnorm(eps=1e-5, momentum=0.9, training)``,
  ``dropout(0.5, active)``); ``eps`` stands for ``epsilon``; ``residual(...)`` takes layers;
* an activation name alone (``relu``, ``gelu_tanh``): an :class:`~xgrad.Activation` layer.
"""

from __future__ import annotations

from dataclasses import fields

from xgrad.activations import get_activation
from xgrad.errors import SpecError
from xgrad.layers import LAYERS, AbstractLayer, Activation, Dense, Residual

__all__ = ["parse_layers"]

_ALIASES = {"eps": "epsilon", "bias": "use_bias"}


def _split(text: str) -> list[str]:
    items, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced ')' in layers {text!r}")
        if ch == "," and depth == 0:
            items.append(current.strip())
            current = ""
        else:
            current += ch
    if depth:
        raise SpecError(f"unbalanced '(' in layers {text!r}")
    items.append(current.strip())
    return items


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _layer(item: str, use_bias: bool) -> AbstractLayer:
    if not item:
        raise SpecError("an empty layer item; write e.g. 8:relu,5:sigmoid")
    head = item.split(":", 1)[0]
    if head.strip().lstrip("-").isdigit():  # isdigit: '²' too, which int() refuses
        units_text, _, activation = item.partition(":")
        try:
            return Dense(int(units_text), activation or "linear", use_bias=use_bias)
        except SpecError as exc:
            raise SpecError(f"layer {item!r}: {exc}") from None
        except ValueError:
            raise SpecError(
                f"layer {item!r}: {units_text.strip()!r} is no number of units; write e.g. 8:relu"
            ) from None
    name, _, rest = item.partition("(")
    name = name.strip().lower()
    if rest and not rest.endswith(")"):
        raise SpecError(f"layer {item!r}: arguments go in parentheses, e.g. layernorm(eps=1e-5)")
    args = _split(rest[:-1]) if rest[:-1].strip() else []
    if name == "residual":
        return Residual([_layer(a, use_bias) for a in args])
    if name not in LAYERS:
        try:
            get_activation(item)
        except SpecError:
            known = ", ".join(sorted(LAYERS))
            raise SpecError(
                f"layer {item!r} is neither UNITS[:ACTIVATION], an activation name nor a layer "
                f"kind ({known})"
            ) from None
        return Activation(item)
    cls = LAYERS[name]
    names = [f.name for f in fields(cls)]
    positional, keywords = [], {}
    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.strip()
        if eq:
            keywords[_ALIASES.get(key, key)] = _value(value.strip())
        elif _ALIASES.get(key, key) in names and isinstance(_value(key), str):
            keywords[_ALIASES.get(key, key)] = True  # a bare flag: training, active, ...
        else:
            positional.append(_value(key))
    unknown = sorted(set(keywords) - set(names))
    if unknown:
        raise SpecError(f"layer {item!r}: {name} has no setting {unknown}; it takes {names}")
    try:
        return cls(*positional, **keywords)
    except TypeError as exc:
        raise SpecError(f"layer {item!r}: {exc}; {name} takes {names}") from None
    except SpecError as exc:
        raise SpecError(f"layer {item!r}: {exc}") from None


def parse_layers(text: str, *, use_bias: bool = True) -> list[AbstractLayer]:
    """Layers from their text form (see the module documentation).

    Raises:
        SpecError: an empty item, an unknown kind or setting, unbalanced parentheses.

    Example:
        >>> parse_layers("8:relu,layernorm(eps=1e-5),residual(8:gelu),3")[1]
        LayerNorm(epsilon=1e-05, center=True, scale=True)
    """
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"layers {text!r} is empty; write e.g. 8:relu,5:sigmoid")
    return [_layer(item, use_bias) for item in _split(text)]
