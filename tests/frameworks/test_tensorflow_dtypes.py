"""Keras layers whose outputs NumPy or TensorFlow's CPU kernels hold only in part (float8)
get a verdict: the module-by-module capture taps a float8 output through float32."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad

pytestmark = pytest.mark.skipif("tensorflow" not in INSTALLED, reason="needs tensorflow")

X = np.random.default_rng(0).standard_normal((8, 6)).astype(np.float32)


def _model(quantize: bool):
    """A Dense, a fake-quantisation to float8 and back (two layers of the user's own), a
    Dense: the same weights on both sides (Keras' seeded initialisers)."""
    from xgrad.frameworks.tensorflow.ops import keras

    class Quantize(keras.layers.Layer):
        def call(self, x):
            return keras.ops.cast(x, "float8_e4m3fn")

    class Dequantize(keras.layers.Layer):
        def call(self, x):
            return keras.ops.cast(x, "float32")

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(16, activation="relu")(inputs)
    h = Dequantize()(Quantize()(h) if quantize else h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def test_a_float8_layer_output_gets_a_verdict():
    report = xgrad.compare_models(_model(False), _model(True), X)
    assert not report.ok
    (output,) = [e for e in report.entries if e.kind == "output"]
    (metrics,) = output.results.values()
    # float8_e4m3fn keeps 3 bits of mantissa: the outputs differ, by less than its rounding
    assert 1e-4 < metrics.rel_norm < 2**-3
