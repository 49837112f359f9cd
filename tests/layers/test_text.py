"""The text form of layers (command line and TOML grids)."""

from __future__ import annotations

import pytest

import xgrad
from xgrad.layers.text import parse_layers


def test_every_kind_reads_from_text():
    layers = parse_layers(
        "64:gelu,layernorm,residual(64:relu,64),dropout(0.1),"
        "batchnorm(eps=1e-5,momentum=0.9,training),dropout(0.5,active),"
        "16:leaky_relu:0.01,rmsnorm(1e-5),relu,10"
    )
    assert layers == [
        xgrad.Dense(64, "gelu"),
        xgrad.LayerNorm(),
        xgrad.Residual([xgrad.Dense(64, "relu"), xgrad.Dense(64)]),
        xgrad.Dropout(0.1),
        xgrad.BatchNorm(1e-5, 0.9, training=True),
        xgrad.Dropout(0.5, active=True),
        xgrad.Dense(16, "leaky_relu:0.01"),
        xgrad.RMSNorm(1e-5),
        xgrad.Activation("relu"),
        xgrad.Dense(10),
    ]
    assert parse_layers("flatten,3")[0] == xgrad.Flatten()


@pytest.mark.parametrize(
    "text,pattern",
    [
        ("8:relu,,3", "empty layer item"),
        ("foo", "neither UNITS"),
        ("layernorm(bogus=1)", r"no setting \['bogus'\]"),
        ("residual(8", "unbalanced"),
        ("8)", "unbalanced"),
        ("dropout(2)", r"rate must be in \[0, 1\)"),
        ("x:relu", "neither UNITS"),
        ("", "empty"),
    ],
)
def test_bad_text_is_a_spec_error(text, pattern):
    with pytest.raises(xgrad.SpecError, match=pattern):
        parse_layers(text)


@pytest.mark.parametrize("item", ["²", "3²:relu", "-¹"])
def test_a_digit_that_is_no_number_is_a_spec_error_not_a_crash(item):
    """str.isdigit() holds for superscripts, which int() refuses (found by the property test)."""
    with pytest.raises(xgrad.SpecError, match="no number of units"):
        parse_layers(item)
