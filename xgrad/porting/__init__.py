"""Porting: compare a user's own models across frameworks, convert their weights.

Importing this package imports no framework; each model source imports its framework when
a model of that kind is first passed in.
"""

from xgrad.porting.compare import align, compare_models
from xgrad.porting.convert import convert, identify_activations
from xgrad.porting.source import DenseLayer, LayerCapture, ModelSource, model_source

__all__ = [
    "DenseLayer",
    "LayerCapture",
    "ModelSource",
    "align",
    "compare_models",
    "convert",
    "identify_activations",
    "model_source",
]
