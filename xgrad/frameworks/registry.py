"""The registry of frameworks: one line each. Nothing here imports a framework.

Each entry names the package that holds the framework (its builder and its reader) and
exports ``FRAMEWORK``, an :class:`~xgrad.frameworks.base.AbstractFramework`. A framework's
package is imported when it is first asked for; its ``claims`` recognises the framework's
objects by their classes' module names, so reading a model imports only its framework.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable

from xgrad.errors import FrameworkError, FrameworkNotInstalledError, InputError
from xgrad.frameworks.base import AbstractFramework, AbstractModel, is_from
from xgrad.optim import AbstractOptimizer

__all__ = [
    "REGISTRY",
    "available_frameworks",
    "capture_model",
    "foreign",
    "get_framework",
    "known_frameworks",
    "lookup_framework",
    "read_model",
    "read_optimizer",
    "resolve_frameworks",
]

REGISTRY: dict[str, str] = {
    "numpy": "xgrad.frameworks.numpy",
    "jax": "xgrad.frameworks.jax",
    "flax": "xgrad.frameworks.flax",
    "tensorflow": "xgrad.frameworks.tensorflow",
    "torch": "xgrad.frameworks.torch",
}
"""Framework name -> the package holding it, in the order reports list them."""


def _entry(name: str) -> AbstractFramework:
    return importlib.import_module(REGISTRY[name]).FRAMEWORK


def _installed(fw: AbstractFramework) -> bool:
    return all(importlib.util.find_spec(p) is not None for p in fw.requires)


def known_frameworks() -> list[str]:
    """Every framework name xgrad knows, installed or not."""
    return list(REGISTRY)


def available_frameworks() -> list[str]:
    """The framework names whose packages are installed (no framework is imported)."""
    return [name for name in REGISTRY if _installed(_entry(name))]


def _aliases() -> dict[str, str]:
    return {alias: name for name in REGISTRY for alias in _entry(name).aliases}


def lookup_framework(name: str) -> AbstractFramework:
    """The framework called ``name`` (aliases accepted), installed here or not: for checking
    names that other processes will use (no framework is imported).

    Raises:
        FrameworkError: the name is unknown, or not a string.
    """
    if not isinstance(name, str):
        raise FrameworkError(
            f"a framework is a name or a framework object, got {type(name).__name__} {name!r}"
        )
    key = name.strip().lower()
    key = _aliases().get(key, key)
    if key not in REGISTRY:
        raise FrameworkError(f"unknown framework {name!r}; known frameworks: {', '.join(REGISTRY)}")
    return _entry(key)


def get_framework(name: str) -> AbstractFramework:
    """The framework called ``name`` (``numpy``, ``jax``, ``flax``, ``tensorflow``, ...).

    ``tf`` and ``keras`` are accepted for ``tensorflow``, ``np`` for ``numpy``.

    Raises:
        FrameworkError: the name is unknown.
        FrameworkNotInstalledError: its package is not installed; the message names the
            pip extra to install.

    Example:
        >>> get_framework("numpy").name
        'numpy'
    """
    fw = lookup_framework(name)
    key = fw.name
    missing = [p for p in fw.requires if importlib.util.find_spec(p) is None]
    if missing:
        raise FrameworkNotInstalledError(
            f"framework {key!r} needs {', '.join(missing)}, which is not installed; "
            f"install it with: pip install 'xgrad[{fw.extra}]'"
        )
    return fw


SUPPORTED = (
    "a keras.Model (Sequential, Functional or subclassed), a torch.nn.Module, a "
    "flax.nnx.Module, a (flax.linen.Module, variables) pair, a pure-JAX (apply_fn, params) "
    "pair or an (xgrad.MLP, params) pair"
)


def read_model(obj, *, input_shape=None) -> AbstractModel:
    """Read a user's model with the framework that claims it (only that one is imported).

    Raises:
        InputError: no framework recognises the object.
        FrameworkNotInstalledError: it belongs to a framework that is not installed.
    """
    if isinstance(obj, AbstractModel):
        return obj
    for name in REGISTRY:
        fw = _entry(name)
        if fw.claims(obj):
            return get_framework(name).read(obj, input_shape=input_shape)
    raise InputError(f"cannot read a model of type {type(obj).__name__}; pass {SUPPORTED}")


SUPPORTED_OPTIMIZERS = (
    "a keras.optimizers.Optimizer, an optax.GradientTransformation (or a (tx, "
    "xgrad.training.Adam(...)) pair naming its rule), a PyTorch factory params -> "
    "torch.optim.Optimizer, or an xgrad.training rule"
)


def read_optimizer(obj, *, side: str = "reference") -> AbstractOptimizer:
    """The optimizer ``obj`` as the framework that claims it wraps it (only that one is
    imported): a Keras optimizer, an optax transformation, a PyTorch factory, an xgrad rule.

    Args:
        obj: the user's optimizer (an :class:`~xgrad.optim.AbstractOptimizer` is returned
            as it is).
        side: ``reference`` or ``candidate``, for messages.

    Raises:
        InputError: no framework recognises the object, or the one that does refuses it as
            it is (the message says what to pass).
        FrameworkNotInstalledError: it belongs to a framework that is not installed.
    """
    if isinstance(obj, AbstractOptimizer):
        return obj
    for name in REGISTRY:
        if _entry(name).claims_optimizer(obj):
            return get_framework(name).read_optimizer(obj, side=side)
    raise InputError(
        f"the {side} optimizer must be {SUPPORTED_OPTIMIZERS}; got {type(obj).__name__} {obj!r}"
    )


def resolve_frameworks(
    frameworks: str | Iterable[str | AbstractFramework] | None,
) -> list[AbstractFramework]:
    """Turn names and framework objects into frameworks, importing only those named.

    Args:
        frameworks: ``None`` for every installed framework; a comma-separated string; or
            a sequence of names and :class:`~xgrad.frameworks.AbstractFramework` instances.

    Raises:
        FrameworkError: an unknown name, a non-framework object, a repeated name, or none.
        FrameworkNotInstalledError: a named framework is not installed.
    """
    if frameworks is None:
        items: list = available_frameworks()
    elif isinstance(frameworks, str):
        items = [f for f in (p.strip() for p in frameworks.split(",")) if f]
    elif isinstance(frameworks, AbstractFramework):
        items = [frameworks]
    elif isinstance(frameworks, Iterable):
        items = list(frameworks)
    else:
        raise FrameworkError(
            f"frameworks must be names or framework objects, got {type(frameworks).__name__}"
        )
    out: list[AbstractFramework] = []
    for item in items:
        if isinstance(item, AbstractFramework):
            out.append(item)
        elif isinstance(item, type) and issubclass(item, AbstractFramework):
            raise FrameworkError(
                f"got the framework class {item.__name__}; pass an instance: {item.__name__}()"
            )
        elif isinstance(item, str):
            out.append(get_framework(item))
        else:
            raise FrameworkError(
                f"a framework is a name or an AbstractFramework instance, got "
                f"{type(item).__name__} {item!r}"
            )
    if not out:
        raise FrameworkError("no framework to compare; name at least one, e.g. 'numpy,jax'")
    names = [fw.name for fw in out]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise FrameworkError(f"framework {repeated[0]!r} is named more than once in {names}")
    return out


def foreign(obj, name: str) -> bool:
    """Whether ``obj`` (or, for a pair, its first item) comes from the packages of a
    registered framework other than ``name`` (decided from class modules, importing none)."""
    head = obj[0] if isinstance(obj, tuple) and obj else obj
    return any(
        is_from(item, package)
        for other in REGISTRY
        if other != name
        for package in _entry(other).packages
        for item in (obj, head)
    )


def capture_model(obj, batch, *, output=None, training=None, apply_kwargs=None) -> AbstractModel:
    """Read a user's model module by module (tier (a)) with the framework that claims it.

    Args:
        obj: the model (what :func:`read_model` takes).
        batch: its inputs (a :class:`~xgrad.frameworks.capture.Batch`).
        output: which of its outputs the loss sees (``None``: the first floating tensor).
        training: ``None`` keeps modes as the user set them; ``True``/``False`` forces one.
        apply_kwargs: keyword arguments of the model's call beside its inputs (Flax: Linen's
            ``apply(..., train=False)``), for the frameworks whose ``capture`` takes them.

    Raises:
        InputError: no framework recognises the object, or ``apply_kwargs`` for one whose
            models take no such arguments.
        FrameworkError: its framework does not read models module by module.
    """
    import inspect

    if isinstance(obj, AbstractModel):
        return obj
    for name in REGISTRY:
        if _entry(name).claims(obj):
            fw = get_framework(name)
            options = {}
            if apply_kwargs is not None:
                if "apply_kwargs" not in inspect.signature(fw.capture).parameters:
                    raise InputError(
                        f"apply_kwargs is for models whose call takes keyword arguments beside "
                        f"its inputs (Flax Linen's apply); for a {name} model pass extra "
                        "inputs in x (a dict of inputs by name)"
                    )
                options["apply_kwargs"] = dict(apply_kwargs)
            return fw.capture(obj, batch, output=output, training=training, **options)
    raise InputError(f"cannot read a model of type {type(obj).__name__}; pass {SUPPORTED}")
