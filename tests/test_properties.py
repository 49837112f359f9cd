"""Property-based tests: on random specs every adapter agrees with the others to 1e-10 and
with central finite differences. Hypothesis shrinks a failure to a minimal spec.

Inputs and weights are drawn from a seed (not element by element), so that pre-activations
are generic: a kink hit exactly, or within the finite-difference step, is rejected with
``assume`` rather than tested, since there the derivative is a convention (tested
separately in tests/frameworks/test_contract.py). The probability losses get the head they expect
(sigmoid for bce, softmax for cce); any other activation may come before it.
"""

from __future__ import annotations

import os

import numpy as np
from _util import ACTIVATION_NAMES, LOSS_NAMES, finite_differences, kink_distance, make_target
from conftest import INSTALLED
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import xgrad

FRAMEWORKS = [f for f in xgrad.known_frameworks() if f in INSTALLED]
HEADS = {"bce": "sigmoid", "cce": "softmax"}


@st.composite
def cases(draw):
    depth = draw(st.integers(1, 4))
    input_dim = draw(st.integers(1, 16))
    widths = draw(st.lists(st.integers(1, 16), min_size=depth, max_size=depth))
    acts = draw(st.lists(st.sampled_from(ACTIVATION_NAMES), min_size=depth, max_size=depth))
    biases = draw(st.lists(st.booleans(), min_size=depth, max_size=depth))
    loss = draw(st.sampled_from(LOSS_NAMES))
    if loss in HEADS:
        acts[-1] = HEADS[loss]
    batch = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    spec = xgrad.MLP(
        input_dim,
        [xgrad.Dense(w, a, use_bias=b) for w, a, b in zip(widths, acts, biases, strict=True)],
    )
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, input_dim))
    y = make_target(loss, rng, (batch, spec.output_dim))
    return spec, xgrad.init_params(spec, seed=seed), x, y, loss


def _close(a, b, rtol, atol=1e-13):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) <= rtol * np.linalg.norm(b) + atol * np.sqrt(b.size)


EXAMPLES = int(os.environ.get("XGRAD_PROPERTY_EXAMPLES", "8"))
"""Hypothesis examples per property: 8 in ``make test`` (its time budget), many more in
``make fuzz``."""


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(cases())
def test_frameworks_agree_and_match_finite_differences(case):
    spec, params, x, y, loss = case
    assume(kink_distance(spec, params, x) > 1e-4)
    results = {
        fw: xgrad.get_framework(fw).build(spec, params, dtype="float64").gradients(x, y, loss=loss)
        for fw in FRAMEWORKS
    }
    ref = results["numpy"]
    for fw, got in results.items():
        for name in spec.param_shapes():
            assert _close(got.params[name], ref.params[name], 1e-10), (fw, name, spec)
        assert _close(got.input, ref.input, 1e-10), (fw, "input", spec)
        assert abs(got.loss - ref.loss) <= 1e-10 * max(1.0, abs(ref.loss)), (fw, "loss", spec)
    fd_params, fd_x = finite_differences(spec, params, x, y, loss)
    for name, expected in fd_params.items():
        assert _close(ref.params[name], expected, 1e-6, atol=1e-9), (name, spec)
    assert _close(ref.input, fd_x, 1e-6, atol=1e-9), ("input", spec)
