"""The one diagnosis vocabulary: causes, findings and explanations, gradient and training."""

from __future__ import annotations

import math
import re

import pytest

import xgrad.diagnosis
from xgrad.diagnosis.records import UNEXPLAINED, Diagnosis, Explanation, Finding, in_order
from xgrad.training import OptimizerDiagnosis


def test_a_diagnosis_keeps_its_json_keys_in_order():
    d = Diagnosis.of(
        "gelu-approximation",
        Finding("tanh form", 0.0, math.inf),
        layer="layers.0",
        where="forward",
        framework="jax",
    )
    assert list(d.to_dict()) == [
        "cause",
        "layer",
        "detail",
        "confirmed",
        "residual",
        "before",
        "where",
        "framework",
    ]
    assert d.to_dict()["before"] == "inf" and d.confirmed
    assert (
        d.text()
        == "layers.0 [jax]: forward diverges; confirmed cause: gelu-approximation: tanh form"
    )


def test_unexplained_is_one_constructor_for_both_families():
    grad = Diagnosis.unexplained(
        "nothing fits", before=0.5, layer=None, where=None, framework="jax"
    )
    train = OptimizerDiagnosis.unexplained("nothing fits", before=0.5, step=3)
    for d in (grad, train):
        assert isinstance(d, Explanation)
        assert (d.cause, d.confirmed, d.residual, d.before) == (UNEXPLAINED, False, None, 0.5)
    assert train.to_dict() == {
        "cause": "unexplained",
        "step": 3,
        "detail": "nothing fits",
        "confirmed": False,
        "residual": None,
        "before": 0.5,
    }
    assert train.text() == "step 3: no cause confirmed: unexplained: nothing fits"


def test_the_gradient_causes_follow_the_order_of_their_ids():
    order = [(where, i) for where, ids in xgrad.diagnosis.ORDER.items() for i in ids]
    assert [(c.where, c.id) for c in xgrad.diagnosis.CAUSES] == order


class _Cause:
    def __init__(self, id):
        self.id = id


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (["a", "b", "c"], "names unknown ['c'], twice [], and leaves out []"),
        (["a", "b", "a"], "names unknown [], twice [\"'a'\"], and leaves out []"),
        (["a"], "names unknown [], twice [], and leaves out ['b']"),
    ],
)
def test_an_order_must_name_every_cause_once(order, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        in_order(order, [_Cause("a"), _Cause("b")])
    assert [c.id for c in in_order(["b", "a"], [_Cause("a"), _Cause("b")])] == ["b", "a"]
