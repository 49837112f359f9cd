"""Which parameters each module's own code uses (for :mod:`xgrad.frameworks.torch.capture`).

A weight is tied when one array serves two uses. PyTorch code writes that in two ways: the
same ``nn.Parameter`` registered on two modules (``self.head.weight = self.emb.weight``),
which the parameters' names show; or a module's own ``forward`` using another module's
weight directly (a tied autoencoder's ``F.linear(h, self.enc.weight.t())``, a tied head's
``x @ self.wte.weight.T``), which only a run shows. :class:`ParamUses` watches that run: a
torch function mode seeing every torch operation, with the module whose call is running
innermost, and records ``(module path, parameter)`` whenever an operation producing a tensor
takes a parameter as it stands (metadata such as ``.shape`` or ``.dtype`` is no use).

Importing this module imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["ParamUses", "used_elsewhere"]


class ParamUses(TorchFunctionMode):
    """Records ``(module path, native parameter name)`` for every operation that takes a
    parameter directly and returns a tensor, while the module ``running[-1]`` is innermost.

    Args:
        tensors: native name -> the tensor the run uses for that parameter.
        running: the paths of the modules whose calls have started and not finished (kept
            by the caller's forward pre-hooks and hooks).
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor], running: Sequence[str]):
        super().__init__()
        self._ids = {id(t): name for name, t in tensors.items()}
        self._running = running
        self.found: set[tuple[str, str]] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if isinstance(out, torch.Tensor) and self._ids:
            for arg in (*args, *kwargs.values()):
                for leaf in arg if isinstance(arg, (list, tuple)) else (arg,):
                    name = self._ids.get(id(leaf))
                    if name is not None:
                        self.found.add((self._running[-1] if self._running else "", name))
        return out


def used_elsewhere(
    found: set[tuple[str, str]], owner_of: Mapping[str, str], called: set[str]
) -> dict[str, dict[str, str]]:
    """``module path -> {local alias: native}``: the parameters a called module's own code
    uses although another module owns them (``owner_of``: native -> owner path). The alias
    is the parameter's native name (``enc.weight``, used in the model's own code)."""
    out: dict[str, dict[str, str]] = {}
    for path, native in sorted(found):
        owner = owner_of.get(native)
        if owner is None or owner == path or path not in called:
            continue
        out.setdefault(path, {})[native] = native
    return out
