"""PyTorch optimizers for :func:`xgrad.compare_training`, given as factories.

A factory ``params -> torch.optim.Optimizer`` (``lambda p: torch.optim.Adam(p, lr=1e-3)``,
or ``torch.optim.SGD`` itself) gets a list of fresh ``torch.nn.Parameter`` tensors holding
the weights in canonical layout, in the run's dtype; before each ``step()`` their ``.grad``
is set. The rule is read from the optimizer the factory returns: its class and its
``param_groups``. Nothing global is changed: the default dtype is never set (the tensors
are made from NumPy arrays of the run's dtype) and ``step()`` restores grad mode itself.

Learning-rate schedulers are objects apart in PyTorch and are not stepped here.

Importing this module imports torch.
"""

from __future__ import annotations

import torch

from xgrad.errors import InputError
from xgrad.frameworks.torch.model import numpy_tensor, tensor_numpy, torch_dtype
from xgrad.optim import (
    SGD,
    AbstractOptimizer,
    AbstractRun,
    Adam,
    AdamW,
    OptimizerSpec,
    RMSprop,
    Rule,
)

__all__ = ["TORCH_OPTIONS", "TorchOptimizer", "from_spec", "read_rule"]

TORCH_OPTIONS: dict[str, dict[str, str]] = {
    "sgd": {
        "learning_rate": "lr",
        "momentum": "momentum",
        "dampening": "dampening",
        "nesterov": "nesterov",
        "weight_decay": "weight_decay",
    },
    "adam": {
        "learning_rate": "lr",
        "b1": "betas",
        "b2": "betas",
        "eps": "eps",
        "weight_decay": "weight_decay",
        "amsgrad": "amsgrad",
    },
    "rmsprop": {
        "learning_rate": "lr",
        "decay": "alpha",
        "eps": "eps",
        "weight_decay": "weight_decay",
        "momentum": "momentum",
        "centered": "centered",
    },
}
"""xgrad option -> the argument of ``torch.optim.SGD``, ``Adam`` (and ``AdamW``), ``RMSprop``."""

CLASSES = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}


def _takes(names: dict[str, str]) -> list[str]:
    """PyTorch's argument names, as ``--optimizer`` takes them (``betas`` as beta1, beta2)."""
    out = []
    for native in names.values():
        for key in ("beta1", "beta2") if native == "betas" else (native,):
            if key not in out:
                out.append(key)
    return out


def from_spec(spec: OptimizerSpec):
    """A factory ``params -> torch.optim.Optimizer`` for ``spec``, PyTorch's defaults for the
    options not given.

    Raises:
        InputError: an option PyTorch's optimizer does not have.
    """
    names = TORCH_OPTIONS["adam" if spec.name == "adamw" else spec.name]
    unknown = sorted(set(spec.options) - set(names))
    if unknown:
        raise InputError(
            f"optimizer {spec.text()!r}: torch.optim.{CLASSES[spec.name]} has no option "
            f"{spec.keys(unknown)}; it takes {', '.join(_takes(names))}"
        )
    cls = getattr(torch.optim, CLASSES[spec.name])
    kwargs = {names[k]: v for k, v in spec.options.items() if names[k] != "betas"}
    if "b1" in spec.options or "b2" in spec.options:
        kwargs["betas"] = (spec.options.get("b1", 0.9), spec.options.get("b2", 0.999))

    def factory(params):
        return cls(params, **kwargs)

    factory.__name__ = f"torch.optim.{cls.__name__}"
    return factory


def _float(value) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def read_rule(opt: torch.optim.Optimizer) -> tuple[Rule | None, str | None]:
    """``(rule, None)`` for ``torch.optim.SGD``, ``Adam``, ``AdamW`` and ``RMSprop`` with one
    set of hyperparameters for every parameter, else ``(None, why not)``. PyTorch's
    conventions: Adam's epsilon is added to ``sqrt(v_hat)`` (``torch/optim/adam.py``),
    ``Adam(weight_decay=)`` is L2 and ``AdamW`` decoupled; SGD's ``dampening`` and its
    undampened first step (``sgd.py``); RMSprop's epsilon outside the root (``rmsprop.py``)."""
    kind = type(opt).__name__
    if kind not in CLASSES.values() or type(opt).__module__.split(".")[0] != "torch":
        return None, f"xgrad's referee knows torch.optim {', '.join(CLASSES.values())}, not {kind}"
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    if any(g != groups[0] for g in groups[1:]):
        return None, "the parameter groups have different hyperparameters"
    group = groups[0]
    if group.get("maximize"):
        return None, "xgrad's referee does not model maximize=True"
    lr = _float(group["lr"])
    wd = _float(group.get("weight_decay", 0.0))
    if kind == "SGD":
        return SGD(
            learning_rate=lr,
            weight_decay=wd,
            decoupled=False,
            momentum=_float(group["momentum"]),
            nesterov=bool(group["nesterov"]),
            dampening=_float(group["dampening"]),
        ), None
    if kind in ("Adam", "AdamW"):
        decoupled = kind == "AdamW" or bool(group.get("decoupled_weight_decay", False))
        b1, b2 = (_float(b) for b in group["betas"])
        return (AdamW if kind == "AdamW" else Adam)(
            learning_rate=lr,
            weight_decay=wd,
            decoupled=decoupled,
            b1=b1,
            b2=b2,
            eps=_float(group["eps"]),
            amsgrad=bool(group["amsgrad"]),
        ), None
    return RMSprop(
        learning_rate=lr,
        weight_decay=wd,
        decoupled=False,
        decay=_float(group["alpha"]),
        eps=_float(group["eps"]),
        eps_in_sqrt=False,
        centered=bool(group["centered"]),
        momentum=_float(group["momentum"]),
        lr_in_momentum=False,
    ), None


class _TorchRun(AbstractRun):
    def __init__(self, factory, params, dtype: str) -> None:
        self._names = list(params)
        self._dtype = dtype
        self._params = [
            torch.nn.Parameter(numpy_tensor(params[n]).to(torch_dtype(dtype), copy=True))
            for n in self._names
        ]
        opt = factory(self._params)
        if not isinstance(opt, torch.optim.Optimizer):
            raise InputError(
                "a PyTorch optimizer is given as a factory params -> torch.optim.Optimizer, "
                f"e.g. lambda params: torch.optim.Adam(params, lr=1e-3); {factory!r} returned "
                f"{type(opt).__name__}"
            )
        self._opt = opt
        self.description = f"torch {type(opt).__name__}"
        self.rule, self.rule_note = read_rule(opt)

    def step(self, grads):
        for n, p in zip(self._names, self._params, strict=True):
            p.grad = numpy_tensor(grads[n]).to(torch_dtype(self._dtype), copy=True)
        self._opt.step()
        return {n: tensor_numpy(p) for n, p in zip(self._names, self._params, strict=True)}


class TorchOptimizer(AbstractOptimizer):
    """A factory ``params -> torch.optim.Optimizer`` (see the module docstring)."""

    framework = "torch"

    def __init__(self, factory) -> None:
        if isinstance(factory, torch.optim.Optimizer):
            raise InputError(
                "pass a factory, not an optimizer built on other parameters: e.g. "
                f"lambda params: torch.optim.{type(factory).__name__}(params, lr=...)"
            )
        self._factory = factory

    def start(self, params, dtype):
        return _TorchRun(self._factory, params, dtype)
