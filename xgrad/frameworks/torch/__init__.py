"""PyTorch: a spec as an ``nn.Sequential`` of torch's own layers (:mod:`.builder`), and users'
``nn.Module`` objects read through ``torch.fx`` or, failing that, forward hooks
(:mod:`.reader`).

Both become a :class:`~xgrad.frameworks.torch.model.TorchModel`: evaluated with
``torch.func.functional_call`` on fresh copies of the weights and buffers, so neither the
user's module nor the model's own is ever changed, and differentiated with
``torch.autograd.grad``. ``nn.Linear`` stores its weight ``(out, in)``; every answer is given
in the canonical layout, kernel ``(in, out)``.

Importing this package imports no framework; torch is imported when a model is built or read.
"""

from __future__ import annotations

from xgrad.errors import InputError
from xgrad.frameworks.base import AbstractFramework, AbstractModel, is_from
from xgrad.frameworks.torch.files import load_state_dict, save_state_dict
from xgrad.layers import Shape
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["FRAMEWORK", "TorchFramework", "load_state_dict", "save_state_dict"]


def _is_module(obj) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module``, decided from its classes without importing
    torch (a tensor or a plain function is not)."""
    return any(
        cls.__module__ == "torch.nn.modules.module" and cls.__name__ == "Module"
        for cls in type(obj).__mro__
    )


class TorchFramework(AbstractFramework):
    """PyTorch modules (``nn.Linear``, ``nn.LayerNorm``, ...) in float32 or float64 on the CPU.

    Builds a spec as an ``nn.Sequential`` (see :mod:`xgrad.frameworks.torch.builder` for the
    native names, ``0.0.weight`` and so on). Reads ``torch.nn.Module`` objects: an
    ``nn.Sequential`` or a module of your own whose ``forward`` calls submodules and
    functional code (``F.gelu``, ``torch.tanh``, ``x + h`` residuals, ``x.flatten(1)``).
    """

    name = "torch"
    aliases = ("pytorch",)
    requires = ("torch",)
    packages = ("torch",)
    exact_spec = True
    extra = "torch"
    dtypes = ("float32", "float64", "bfloat16", "float16")
    native_files = (".pt", ".pth", ".safetensors")
    native_file_kind = "a PyTorch state_dict"

    def _build(self, spec: MLP, params: Params, dtype: str) -> AbstractModel:
        from xgrad.frameworks.torch.builder import build_model

        return build_model(spec, params, dtype)

    def kinds(self):
        """:data:`xgrad.frameworks.torch.kinds.KINDS` (imports torch)."""
        from xgrad.frameworks.torch.kinds import KINDS

        return KINDS

    def capture(self, obj, batch, *, output=None, training=None) -> AbstractModel:
        """A ``torch.nn.Module`` read module by module (forward hooks on every module; see
        :mod:`xgrad.frameworks.torch.capture`)."""
        from xgrad.frameworks.torch.capture import capture_module

        return capture_module(obj, batch, output=output, training=training)

    def native_weights(self, model: AbstractModel):
        """The module's ``state_dict`` (``0.0.weight`` ``(out, in)``, ...)."""
        return model.native.state_dict()

    @classmethod
    def claims(cls, obj) -> bool:
        return _is_module(obj)

    def read(self, obj, *, input_shape: Shape | None = None) -> AbstractModel:
        """A user's ``torch.nn.Module`` (never changed: the model works on a deep copy).

        Args:
            obj: the module. Its layers are read in call order; each module is used as the
                user left it (``.training`` flags included: a BatchNorm or Dropout in
                training mode is read as such, with a note).
            input_shape: the shape of one input example; needed when the first layer does
                not say it (a ``Flatten`` first).

        Raises:
            InputError: ``obj`` is not a module, its dtype is not float32/float64, or the
                input shape cannot be told.
            AlignmentError: a layer xgrad does not read (``nn.Conv2d``, ...), named with its
                class.
        """
        from xgrad.frameworks.torch.reader import read_module

        return read_module(obj, input_shape=input_shape)

    def write_native_file(self, path, spec: MLP, weights: Params, *, dtype: str):
        """The ``state_dict`` of the module of ``spec`` (``0.0.weight`` ``(out, in)``, ...),
        written as ``.pt`` (``torch.save``) or ``.safetensors``, read back with
        ``torch.load(weights_only=True)`` (or safetensors) and loaded with
        ``load_state_dict(strict=True)`` into a module built from other weights."""
        import torch

        from xgrad.params import init_params

        written = self.native_weights(self.build(spec, weights, dtype=dtype))
        save_state_dict(path, written)
        loaded = load_state_dict(path)
        same = set(loaded) == set(written) and all(
            torch.equal(loaded[k], written[k]) for k in written
        )
        fresh = self.build(spec, init_params(spec, seed=1), dtype=dtype).native
        fresh.load_state_dict(loaded, strict=True)
        return fresh, same, len(written)

    @classmethod
    def claims_optimizer(cls, obj) -> bool:
        """A factory ``params -> torch.optim.Optimizer``: one of ``torch.optim``'s classes,
        or any other callable that is not a class or a tuple, nor a Keras or optax object or
        function (which their frameworks claim); and a torch optimizer built already, to
        refuse it with the fix."""
        if isinstance(obj, type):
            return any(c.__module__.startswith("torch.optim") for c in obj.__mro__)
        if cls._built_optimizer(obj):
            return True
        module = (getattr(obj, "__module__", None) or "").split(".")[0]
        foreign = module in ("keras", "optax") or is_from(obj, "keras") or is_from(obj, "optax")
        return callable(obj) and not isinstance(obj, tuple) and not foreign

    @staticmethod
    def _built_optimizer(obj) -> bool:
        return is_from(obj, "torch") and any(c.__name__ == "Optimizer" for c in type(obj).__mro__)

    def read_optimizer(self, obj, *, side: str = "reference"):
        """A :class:`~xgrad.frameworks.torch.optim.TorchOptimizer` (imports torch).

        Raises:
            InputError: an optimizer built already on other parameters.
        """
        if self._built_optimizer(obj):
            raise InputError(
                f"the {side} optimizer is a torch.optim.{type(obj).__name__} built on other "
                "parameters; pass a factory instead, e.g. lambda params: "
                f"torch.optim.{type(obj).__name__}(params, lr=...)"
            )
        from xgrad.frameworks.torch.optim import TorchOptimizer

        return TorchOptimizer(obj)

    def native_optimizer(self, spec):
        """A factory ``params -> torch.optim.Optimizer`` for ``spec``, PyTorch's defaults."""
        from xgrad.frameworks.torch.optim import from_spec

        return from_spec(spec)


FRAMEWORK = TorchFramework()
