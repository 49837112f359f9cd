"""TensorFlow / Keras 3: a spec as a Keras model of Keras' own layers (:mod:`.builder`), users'
Keras models read layer by layer (:mod:`.reader`), both evaluated under ``tf.GradientTape``
(:mod:`.model`); how each layer kind is built, called and read, in one table
(:data:`.kinds.KINDS`); xgrad's activations and losses in TensorFlow (:mod:`.ops`);
``.keras`` files loaded in safe mode (:mod:`.files`).

Importing this package imports neither TensorFlow nor Keras; they are imported (quietly, see
:mod:`.ops`) when a model is first built or read.
"""

from __future__ import annotations

from xgrad.errors import InputError
from xgrad.frameworks.base import ALL_DTYPES, AbstractFramework, AbstractModel, is_from
from xgrad.frameworks.tensorflow.files import load_keras_file
from xgrad.layers import Shape
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["FRAMEWORK", "TensorflowFramework", "load_keras_file"]


class TensorflowFramework(AbstractFramework):
    """Keras 3 layers on the TensorFlow backend (float32, float64, bfloat16, float16);
    ``tf.GradientTape``
    gradients. Reads ``keras.Model`` objects: ``Sequential``, Functional and subclassed.

    Raises:
        FrameworkError: Keras runs on another backend than TensorFlow.
    """

    name = "tensorflow"
    aliases = ("tf", "keras")
    requires = ("tensorflow",)
    packages = ("keras", "tensorflow")
    exact_spec = True
    extra = "tensorflow"
    dtypes = ALL_DTYPES
    model_files = (".keras",)

    def _build(self, spec: MLP, params: Params, dtype: str) -> AbstractModel:
        from xgrad.frameworks.tensorflow.builder import SpecModel
        from xgrad.frameworks.tensorflow.ops import check_backend

        check_backend()
        return SpecModel(spec, params, dtype)

    def kinds(self):
        """The layer kinds tensorflow builds and reads: :data:`.kinds.KINDS` (imports
        TensorFlow and Keras)."""
        from xgrad.frameworks.tensorflow.kinds import KINDS

        return KINDS

    @classmethod
    def claims(cls, obj) -> bool:
        return is_from(obj, "keras")

    def read(self, obj, *, input_shape: Shape | None = None) -> AbstractModel:
        """A user's built ``keras.Model`` (see :func:`~.reader.read_keras_model`)."""
        from xgrad.frameworks.tensorflow.reader import read_keras_model

        return read_keras_model(obj, input_shape=input_shape)

    def capture(self, obj, batch, *, output=None, training=None) -> AbstractModel:
        """A built ``keras.Model`` read layer by layer, nested and subclassed layers
        included (each layer's ``call`` wrapped while it runs; see
        :mod:`xgrad.frameworks.tensorflow.capture`)."""
        from xgrad.frameworks.tensorflow.capture import capture_keras

        return capture_keras(obj, batch, output=output, training=training)

    def load_model_file(self, path):
        """A ``.keras`` file (Keras 3 format) loaded in safe mode: see
        :func:`~xgrad.frameworks.tensorflow.files.load_keras_file`."""
        return load_keras_file(path)

    @classmethod
    def claims_optimizer(cls, obj) -> bool:
        """A ``keras.optimizers.Optimizer``, or a Keras class passed uncalled."""
        return is_from(obj, "keras") or cls._keras_class(obj)

    @staticmethod
    def _keras_class(obj) -> bool:
        module = getattr(obj, "__module__", None) or ""
        return isinstance(obj, type) and module.split(".")[0] == "keras"

    def read_optimizer(self, obj, *, side: str = "reference"):
        """A :class:`~xgrad.frameworks.tensorflow.optim.KerasOptimizer` (imports Keras).

        Raises:
            InputError: a class passed uncalled, or an object that is not an optimizer.
        """
        if self._keras_class(obj):
            raise InputError(
                f"the {side} optimizer is the class keras.optimizers.{obj.__name__}, not an "
                f"optimizer: call it, e.g. {obj.__name__}()"
            )
        from xgrad.frameworks.tensorflow.optim import KerasOptimizer

        return KerasOptimizer(obj)

    def native_optimizer(self, spec):
        """The ``keras.optimizers`` optimizer for ``spec``, Keras' defaults."""
        from xgrad.frameworks.tensorflow.optim import from_spec

        return from_spec(spec)


FRAMEWORK = TensorflowFramework()
