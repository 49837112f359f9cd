"""xgrad: do these dense models compute the same gradients in NumPy, JAX, Flax and Keras?

The public API, re-exported by name. Importing xgrad imports no framework; each one is
imported when its adapter is first asked for.
"""

from xgrad import testing
from xgrad.activations import ACTIVATIONS, Activation, get_activation
from xgrad.adapters import (
    DTYPES,
    AbstractAdapter,
    AbstractModel,
    Gradients,
    LayerValues,
    available_frameworks,
    get_adapter,
    known_frameworks,
)
from xgrad.compare import compare
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
from xgrad.losses import LOSSES, Loss, get_loss
from xgrad.metrics import TOLERANCES, Metrics
from xgrad.params import Params, check_params, init_params, load_params, save_params
from xgrad.porting import compare_models, convert
from xgrad.report import Entry, Report
from xgrad.spec import MLP, Dense

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "DTYPES",
    "LOSSES",
    "TOLERANCES",
    "MLP",
    "AbstractAdapter",
    "AbstractModel",
    "Activation",
    "AlignmentError",
    "Dense",
    "Entry",
    "FrameworkError",
    "FrameworkNotInstalledError",
    "GradientMismatchError",
    "Gradients",
    "InputError",
    "LayerValues",
    "Loss",
    "Metrics",
    "ModelFileError",
    "OutputError",
    "Params",
    "ParamsError",
    "Report",
    "SpecError",
    "XgradError",
    "__version__",
    "testing",
    "available_frameworks",
    "check_params",
    "compare",
    "compare_models",
    "convert",
    "get_activation",
    "get_adapter",
    "get_loss",
    "init_params",
    "known_frameworks",
    "load_params",
    "save_params",
]
