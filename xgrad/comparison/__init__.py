"""The comparison pipeline, in named phases, shared by every entry point.

=================  =====================================================  ==================
phase              what it does                                           module
=================  =====================================================  ==================
read a pair        read two users' models, pair them, transfer weights    :mod:`.pair`
inputs             check the batch, targets or cotangent; judged dtype    :mod:`.inputs`
evaluate           each model evaluated once, with capture                :mod:`.sides`
entries            every side measured against the reference              :mod:`.entries`
verdicts           uninformative losses, ill-conditioned losses,          :mod:`.verdicts`
                   cancelling sums (a gradient's measured rounding)       :mod:`.spread`
report             entries, verdicts, divergences into a Report           :mod:`.assemble`
explain            rounding explanations, then diagnosis                  :mod:`.assemble`
=================  =====================================================  ==================

:func:`xgrad.compare` and :func:`xgrad.compare_models` (:mod:`xgrad.runner`),
:func:`xgrad.compare_backends`, :func:`xgrad.convert` and :func:`xgrad.compare_training` are
sequences of these phases. Each phase is a function of plain data, testable alone.
"""

from xgrad.comparison.assemble import (
    Description,
    assemble,
    explain,
    explain_report,
    finish,
    with_config_diffs,
)
from xgrad.comparison.entries import Comparison
from xgrad.comparison.inputs import Inputs, judged_dtype, loss_scale, prepare_inputs
from xgrad.comparison.pair import ModelPair, model_text, read_pair, transfer
from xgrad.comparison.sides import Side, evaluate
from xgrad.comparison.verdicts import wants_explanation

__all__ = [
    "Comparison",
    "Description",
    "Inputs",
    "ModelPair",
    "Side",
    "assemble",
    "evaluate",
    "explain",
    "explain_report",
    "finish",
    "judged_dtype",
    "loss_scale",
    "model_text",
    "prepare_inputs",
    "read_pair",
    "transfer",
    "wants_explanation",
    "with_config_diffs",
]
