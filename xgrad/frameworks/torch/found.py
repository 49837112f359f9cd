"""One layer as torch's readers find it (:class:`Found`): its xgrad configuration and where
its weights are in the torch module. Used by :mod:`.kinds` and the kinds' own modules
(:mod:`.cnn`, :mod:`.recurrent`); it imports no framework."""

from __future__ import annotations

from dataclasses import dataclass, field

from xgrad.frameworks.kinds import Layout
from xgrad.layers import AbstractLayer

__all__ = ["Found"]


@dataclass
class Found:
    """One layer as read from torch.

    Attributes:
        layer: its xgrad configuration.
        params: local name -> state-dict name of each parameter.
        state: local name -> state-dict name of each state buffer.
        layouts: local name -> the layout torch stores it in (``kernel`` of a Linear:
            ``(1, 0)``).
        note: a torch convention that differs from xgrad's definition, or a training mode.
    """

    layer: AbstractLayer | None
    params: dict[str, str] = field(default_factory=dict)
    state: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, Layout] = field(default_factory=dict)
    note: str | None = None

    @property
    def kind(self) -> str:
        # an elementwise function none of xgrad's activations reproduces: compared as computed
        return self.layer.kind if self.layer is not None else "activation"
