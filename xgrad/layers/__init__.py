"""The layer vocabulary: one module per layer kind, one registry.

=============  ===========================================  ==========================
kind           class                                        weights (local names)
=============  ===========================================  ==========================
dense          :class:`Dense` (units, activation, use_bias)  kernel (in, out), bias
activation     :class:`Activation` (name)                   -
layernorm      :class:`LayerNorm` (epsilon=1e-3, ...)        scale, bias
rmsnorm        :class:`RMSNorm` (epsilon=1e-6, scale)        scale
batchnorm      :class:`BatchNorm` (epsilon=1e-3, ...)        scale, bias; state mean, var
dropout        :class:`Dropout` (rate, active=False)         -
flatten        :class:`Flatten` ()                           -
residual       :class:`Residual` (layers)                    those of its layers
=============  ===========================================  ==========================

A new layer kind is its own module here plus one line in :data:`LAYERS`.
"""

from xgrad.layers.activation import Activation
from xgrad.layers.base import AbstractLayer, Shape, Step, forward_sequence, vjp_sequence
from xgrad.layers.batchnorm import BatchNorm
from xgrad.layers.dense import Dense
from xgrad.layers.dropout import Dropout
from xgrad.layers.flatten import Flatten
from xgrad.layers.layernorm import LayerNorm
from xgrad.layers.residual import Residual
from xgrad.layers.rmsnorm import RMSNorm

__all__ = [
    "LAYERS",
    "AbstractLayer",
    "Activation",
    "BatchNorm",
    "Dense",
    "Dropout",
    "Flatten",
    "LayerNorm",
    "RMSNorm",
    "Residual",
    "Shape",
    "Step",
    "forward_sequence",
    "vjp_sequence",
]

LAYERS: dict[str, type[AbstractLayer]] = {
    cls.kind: cls
    for cls in (Dense, Activation, LayerNorm, RMSNorm, BatchNorm, Dropout, Flatten, Residual)
}
"""Every layer kind by name."""
