"""Training parity: N optimizer steps of a model and its port, and why their weights part.

:func:`compare_training` runs both sides' own optimizers (Keras, optax, PyTorch) step by
step beside a float64 NumPy referee (:mod:`xgrad.optim.rules`), and reports where the
weights first part and which optimizer convention explains it (:data:`OPTIMIZER_CAUSES`).
Importing this package imports no framework.
"""

from xgrad.optim import OptimizerSpec
from xgrad.optim.rules import SGD, Adam, AdamW, RMSprop, Rule
from xgrad.training.causes import OPTIMIZER_CAUSES, OptimizerCause
from xgrad.training.report import (
    SCHEMA,
    Divergence,
    OptimizerDiagnosis,
    PrecisionNote,
    Step,
    TrainingReport,
    WeightInfo,
    WeightStep,
)
from xgrad.training.runner import compare_training

__all__ = [
    "OPTIMIZER_CAUSES",
    "SCHEMA",
    "SGD",
    "Adam",
    "AdamW",
    "Divergence",
    "OptimizerCause",
    "OptimizerDiagnosis",
    "OptimizerSpec",
    "PrecisionNote",
    "RMSprop",
    "Rule",
    "Step",
    "TrainingReport",
    "WeightInfo",
    "WeightStep",
    "compare_training",
    "keras_adam",
]


def keras_adam(
    learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7
):
    """Keras' ``Adam`` as an ``optax.GradientTransformation``, for a Flax or JAX port that
    must train exactly as its Keras original (imports JAX and optax; see
    :func:`xgrad.frameworks.jax.optim.keras_adam`)."""
    from xgrad.frameworks.jax.optim import keras_adam as make

    return make(learning_rate, beta_1, beta_2, epsilon)
