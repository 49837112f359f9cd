"""xgrad: do these models compute the same gradients in NumPy, JAX, Flax and Keras, and if
not, where and why not?

The public API, re-exported by name. Importing xgrad imports no framework; each one is
imported when it is first asked for.
"""

from xgrad import testing
from xgrad._version import __version__
from xgrad.activations import ACTIVATIONS, get_activation
from xgrad.align import align
from xgrad.backends import compare_backends
from xgrad.convert import convert
from xgrad.errors import (
    AlignmentError,
    FrameworkError,
    FrameworkNotInstalledError,
    GradientMismatchError,
    InputError,
    ModelFileError,
    OutputError,
    ParamsError,
    SpecError,
    XgradError,
)
from xgrad.frameworks import (
    DTYPES,
    AbstractFramework,
    AbstractModel,
    Gradients,
    LayerInfo,
    available_frameworks,
    get_framework,
    known_frameworks,
    read_model,
)
from xgrad.layers import (
    GRU,
    LAYERS,
    LSTM,
    Activation,
    Attention,
    AvgPool,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GatedMLP,
    GlobalAvgPool,
    GroupNorm,
    LayerNorm,
    MaxPool,
    Residual,
    RMSNorm,
    transformer_block,
)
from xgrad.losses import LOSSES, Loss, get_loss
from xgrad.metrics import TOLERANCES, Metrics
from xgrad.params import Params, check_params, init_params, load_params, save_params
from xgrad.report import Entry, LayerEntry, Report
from xgrad.runner import compare, compare_models
from xgrad.spec import MLP
from xgrad.training import TrainingReport, compare_training

get_adapter = get_framework  # the 0.1 name
AbstractAdapter = AbstractFramework  # the 0.1 name

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "LAYERS",
    "LOSSES",
    "MLP",
    "TOLERANCES",
    "AbstractAdapter",
    "AbstractFramework",
    "AbstractModel",
    "Activation",
    "Attention",
    "AlignmentError",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "Dense",
    "Dropout",
    "Embedding",
    "Entry",
    "Flatten",
    "FrameworkError",
    "FrameworkNotInstalledError",
    "GatedMLP",
    "GroupNorm",
    "GlobalAvgPool",
    "GradientMismatchError",
    "Gradients",
    "GRU",
    "InputError",
    "LayerEntry",
    "LayerInfo",
    "LayerNorm",
    "Loss",
    "LSTM",
    "MaxPool",
    "Metrics",
    "ModelFileError",
    "OutputError",
    "Params",
    "ParamsError",
    "RMSNorm",
    "Report",
    "Residual",
    "SpecError",
    "TrainingReport",
    "XgradError",
    "__version__",
    "align",
    "available_frameworks",
    "check_params",
    "compare",
    "compare_backends",
    "compare_models",
    "compare_training",
    "convert",
    "get_activation",
    "get_adapter",
    "get_framework",
    "get_loss",
    "init_params",
    "known_frameworks",
    "load_params",
    "read_model",
    "save_params",
    "testing",
    "transformer_block",
]
