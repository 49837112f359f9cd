"""JAX: a spec as a pure ``jax.numpy`` function (:mod:`.builder`), and users' pure-JAX models
``(apply_fn, params)`` read through their jaxpr (:mod:`.reader`, :mod:`.jaxpr`).

Importing this package imports no framework; JAX is imported when a model is built or read.
"""

from __future__ import annotations

from xgrad.errors import InputError
from xgrad.frameworks.base import ALL_DTYPES, AbstractFramework, AbstractModel, is_from
from xgrad.params import Params
from xgrad.spec import MLP

__all__ = ["FRAMEWORK", "JaxFramework"]


def _other_framework(obj) -> bool:
    """Whether ``obj`` comes from another registered framework's packages (a Keras model or
    a torch module is callable too)."""
    from xgrad.frameworks.registry import foreign

    return foreign(obj, "jax")


class JaxFramework(AbstractFramework):
    """Pure ``jax.numpy`` models; ``jax.value_and_grad`` for losses, ``jax.vjp`` for cotangents.

    Reads ``(apply_fn, params)`` pairs: ``apply_fn(params, x) -> output`` with ``params`` any
    pytree (dicts, lists, tuples) of float arrays, in any layout (``x @ W``, ``x @ W.T``,
    ``jnp.dot(W, x)`` under ``jax.vmap``, ``jnp.einsum``), with layer norms written by hand
    and residual additions.
    """

    name = "jax"
    requires = ("jax",)
    packages = ("jax", "optax")
    extra = "jax"
    dtypes = ALL_DTYPES

    def _build(self, spec: MLP, params: Params, dtype: str) -> AbstractModel:
        from xgrad.frameworks.jax.builder import JaxSpecModel

        return JaxSpecModel(spec, params, dtype)

    def kinds(self):
        """The layer kinds jax builds: :data:`xgrad.frameworks.jax.kinds.KINDS` (imports JAX)."""
        from xgrad.frameworks.jax.kinds import KINDS

        return KINDS

    def native_weights(self, model: AbstractModel):
        """The params pytree of the ``(apply_fn, params)`` pair."""
        return model.native[1]

    @classmethod
    def claims(cls, obj) -> bool:
        return (
            isinstance(obj, tuple)
            and len(obj) == 2
            and callable(obj[0])
            and not isinstance(obj[0], type)
            and not _other_framework(obj[0])
            and not isinstance(obj[0], MLP)
        )

    def read(self, obj, *, input_shape=None) -> AbstractModel:
        from xgrad.frameworks.jax.reader import function_model

        apply, params = obj
        return function_model(apply, params, input_shape=input_shape)

    @classmethod
    def claims_optimizer(cls, obj) -> bool:
        """An ``optax.GradientTransformation``, a ``(transformation, xgrad rule)`` pair naming
        its rule, or an optax function passed uncalled (``optax.adam``)."""
        head = obj[0] if isinstance(obj, tuple) and len(obj) == 2 else None
        return is_from(obj, "optax") or is_from(head, "optax") or cls._uncalled_optax(obj)

    @staticmethod
    def _uncalled_optax(obj) -> bool:
        module = getattr(obj, "__module__", None) or ""
        return module.split(".")[0] == "optax" and callable(obj) and not isinstance(obj, type)

    def read_optimizer(self, obj, *, side: str = "reference"):
        """An :class:`~xgrad.frameworks.jax.optim.OptaxOptimizer` (imports JAX and optax).

        Raises:
            InputError: an optax function passed uncalled, or a pair whose second item is
                not an xgrad rule.
        """
        from xgrad.optim import Rule

        if is_from(obj, "optax"):
            tx, rule = obj, None
        elif self._uncalled_optax(obj):
            name = getattr(obj, "__name__", "")
            raise InputError(
                f"the {side} optimizer is the function optax.{name}, not a transformation: "
                f"call it, e.g. optax.{name}(1e-3)"
            )
        else:
            tx, rule = obj
            if not isinstance(rule, Rule):
                raise InputError(
                    f"the {side} optimizer is an (optax transformation, {type(rule).__name__}) "
                    "pair; the second item names the rule: an xgrad.training.Adam, AdamW, SGD "
                    "or RMSprop with the transformation's hyperparameters"
                )
        from xgrad.frameworks.jax.optim import OptaxOptimizer

        return OptaxOptimizer(tx, rule=rule)

    def native_optimizer(self, spec):
        """``(optax transformation, its xgrad rule)`` for ``spec``, optax's defaults."""
        from xgrad.frameworks.jax.optim import from_spec

        return from_spec(spec)


FRAMEWORK = JaxFramework()
