"""Shared pieces of the diagnosis tests: a float32 xgrad reference and hand-written ports."""

from __future__ import annotations

import numpy as np

import xgrad


def reference(layers, input_dim, seed=0):
    """``(spec, float32 params)``: an xgrad model computing in float32."""
    spec = xgrad.MLP(input_dim, layers)
    params = {k: v.astype(np.float32) for k, v in xgrad.init_params(spec, seed=seed).items()}
    return spec, params


def x(n_in, rows=8, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).normal(size=(rows, n_in))).astype(np.float32)


def one(report):
    assert len(report.diagnoses) == 1, [d.text() for d in report.diagnoses]
    return report.diagnoses[0]
