"""Identification never lets a raw NumPy error escape (issue 21's newcomer trial): values that
cannot be what a step was read as (a norm's weight of another size than its input's features,
an "activation" whose output has another shape) raise an AlignmentError that names the step,
the parameter and both shapes, and says what to do; before, ``ValueError: operands could not
be broadcast together`` (layernorm.py) and ``IndexError: boolean index did not match``
(leaky_slope) reached the user from a pure JAX function's reader."""

from __future__ import annotations

import re

import numpy as np
import pytest

from xgrad import AlignmentError, XgradError
from xgrad.identify import fit_activation, fit_norm, leaky_slope

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 8, 16))  # (batch, tokens, features)


def _layer_norm(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_a_norm_weight_of_another_size_names_the_parameter_and_shapes():
    scale = np.ones(128)  # (tokens * features,): a weight flattened by a reader
    with pytest.raises(AlignmentError) as info:
        fit_norm(X, _layer_norm(X), {"scale": scale}, name="ln_f")
    text = str(info.value)
    assert "cannot identify 'ln_f' as a normalisation" in text, text
    assert re.search(r"'scale' has shape \(128,\).*\(2, 8, 16\).*\(16,\)", text), text
    assert "Fix: " in text and "mapping=" in text


def test_a_norm_whose_output_has_another_shape_is_refused_by_name():
    with pytest.raises(AlignmentError, match=r"input has shape \(2, 8, 16\) and its output"):
        fit_norm(X, _layer_norm(X)[:, :4], {}, name="norm")


def test_an_activation_whose_output_has_another_shape_is_refused_by_name():
    z = X[..., :2]  # (2, 8, 2) against (2, 2, 8), as heads and tokens swapped
    a = np.swapaxes(np.where(z > 0, z, 0.01 * z), 1, 2)
    with pytest.raises(AlignmentError, match="cannot identify 'attn' as an activation"):
        fit_activation(z, a, name="attn")
    with pytest.raises(AlignmentError, match=r"\(2, 8, 2\) and its output \(2, 2, 8\)"):
        leaky_slope(z, a)


def test_fitting_values_are_still_named():
    y = _layer_norm(X) * 2.0 + 0.5  # scale 2, bias 0.5, eps 1e-5 by hand
    found, err = fit_norm(X, y, {"scale": np.full(16, 2.0), "bias": np.full(16, 0.5)})
    assert (found.kind, found.epsilon) == ("layernorm", 1e-5) and err < 1e-12
    z = np.linspace(-3, 3, 13)
    assert leaky_slope(z, np.where(z > 0, z, 0.2 * z)) == 0.2
    assert leaky_slope(np.zeros(0), np.zeros(0)) is None


@pytest.mark.parametrize("seed", range(3))
def test_no_raw_error_escapes_on_mismatched_shapes(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        x = rng.standard_normal(tuple(rng.integers(1, 5, size=rng.integers(1, 4))))
        y = rng.standard_normal(tuple(rng.integers(1, 5, size=rng.integers(1, 4))))
        w = {"scale": rng.standard_normal(int(rng.integers(1, 6)))}
        for fit, args in ((fit_norm, (x, y, w)), (fit_activation, (x, y)), (leaky_slope, (x, y))):
            try:
                fit(*args)
            except XgradError:
                pass
