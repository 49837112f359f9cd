"""Flax: a spec as an NNX module of Flax's own layers (:mod:`.builder`), and users' NNX
modules and Linen ``(module, variables)`` pairs read through their jaxpr (:mod:`.reader`).

Importing this package imports no framework.
"""

from __future__ import annotations

from xgrad.frameworks.base import ALL_DTYPES, AbstractFramework, AbstractModel, is_from
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["FRAMEWORK", "FlaxFramework"]


class FlaxFramework(AbstractFramework):
    """Flax NNX layers (``nnx.Linear``, ``nnx.LayerNorm``, ...); ``jax.value_and_grad`` over
    the split state. Reads ``flax.nnx.Module`` objects and ``(flax.linen.Module, variables)``
    pairs."""

    name = "flax"
    requires = ("jax", "flax")
    packages = ("flax",)
    native_forms = ("flax.linen",)
    extra = "jax"
    dtypes = ALL_DTYPES

    def _build(self, spec: MLP, params: Params, dtype: str) -> AbstractModel:
        from xgrad.frameworks.flax.builder import FlaxSpecModel

        return FlaxSpecModel(spec, params, dtype)

    def kinds(self):
        """The layer kinds flax builds: :data:`xgrad.frameworks.flax.kinds.KINDS` (imports
        Flax)."""
        from xgrad.frameworks.flax.kinds import KINDS

        return KINDS

    def native_weights(self, model: AbstractModel):
        """The module's ``nnx.State`` (``layers/{i}/kernel``, ...), for ``nnx.update``."""
        from flax import nnx

        return nnx.state(model.native)

    def native_form(self, form: str, spec: MLP, weights: Params, dtype: str):
        """``"flax.linen"``: :meth:`linen_variables`."""
        if form != "flax.linen":
            return super().native_form(form, spec, weights, dtype)
        return self.linen_variables(spec, weights, dtype)

    def linen_variables(self, spec: MLP, weights: Params, dtype: str) -> dict:
        """Linen variables ``{"params": {"Dense_0": ...}, "batch_stats": ...}``: the names
        ``nn.Dense``, ``nn.LayerNorm``, ``nn.RMSNorm``, ``nn.BatchNorm`` get in a compact
        module that calls them in the spec's order."""
        from xgrad.frameworks.flax.builder import linen_variables

        return linen_variables(spec, weights, dtype)

    @classmethod
    def claims(cls, obj) -> bool:
        if is_from(obj, "flax.nnx"):
            return True
        return isinstance(obj, tuple) and len(obj) == 2 and is_from(obj[0], "flax.linen")

    def read(self, obj, *, input_shape=None) -> AbstractModel:
        from xgrad.frameworks.flax.reader import linen_model, nnx_model

        if isinstance(obj, tuple):
            return linen_model(obj[0], obj[1], input_shape=input_shape)
        return nnx_model(obj, input_shape=input_shape)

    def capture(
        self, obj, batch, *, output=None, training=None, apply_kwargs=None, rngs=None
    ) -> AbstractModel:
        """An NNX module or a Linen ``(module, variables)`` pair read module by module (every
        ``__call__`` intercepted; see :mod:`xgrad.frameworks.flax.capture`).

        Args:
            obj, batch, output, training: see :meth:`AbstractFramework.capture`.
            apply_kwargs: keyword arguments of the call beside the inputs (Linen's
                ``apply``: ``{"train": False}``; NNX: ``module(x, **apply_kwargs)``).
            rngs: Linen's ``apply`` rngs (``{"dropout": key}``); NNX modules hold their own.
        """
        from xgrad.errors import InputError
        from xgrad.frameworks.flax.capture import capture_linen, capture_nnx

        if isinstance(obj, tuple):
            return capture_linen(
                obj[0],
                obj[1],
                batch,
                output=output,
                training=training,
                apply_kwargs=apply_kwargs,
                rngs=rngs,
            )
        if rngs is not None:
            raise InputError(
                "rngs= is for Linen models; an NNX module holds its own (nnx.Rngs given to "
                "its Dropout)"
            )
        return capture_nnx(obj, batch, output=output, training=training, apply_kwargs=apply_kwargs)

    def native_optimizer(self, spec):
        """Flax models train with optax: as :meth:`JaxFramework.native_optimizer
        <xgrad.frameworks.jax.JaxFramework.native_optimizer>` (optax objects are claimed and
        read by the JAX framework)."""
        from xgrad.frameworks.jax.optim import from_spec

        return from_spec(spec)


FRAMEWORK = FlaxFramework()
