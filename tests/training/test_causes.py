"""The optimizer causes: records of the diagnosis vocabulary, one module per family, tried in
the order of one explicit list of ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from xgrad.diagnosis.records import AbstractCause
from xgrad.training import OPTIMIZER_CAUSES, SGD, Adam, RMSprop
from xgrad.training.causes import ORDER, Context, alternatives

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_every_cause_is_a_record_and_documented():
    docs = DOCS.read_text()
    ids = [c.id for c in OPTIMIZER_CAUSES]
    assert len(set(ids)) == len(ids)
    for cause in OPTIMIZER_CAUSES:
        assert isinstance(cause, AbstractCause)
        assert f"| `{cause.id}` |" in docs, cause.id
        assert cause.summary and cause.needs and callable(cause.propose)


def test_the_causes_are_tried_in_the_order_of_their_ids():
    assert tuple(c.id for c in OPTIMIZER_CAUSES) == ORDER


@pytest.mark.parametrize(
    "rule",
    [SGD(0.1, momentum=0.9), Adam(1e-3), RMSprop(1e-3, momentum=0.9)],
    ids=["sgd", "adam", "rmsprop"],
)
def test_alternatives_come_cause_by_cause_in_order(rule):
    causes = [a.cause for a in alternatives(Context(rule))]
    applying = [c.id for c in OPTIMIZER_CAUSES if c.applies(rule)]
    assert list(dict.fromkeys(causes)) == [c for c in applying if c in causes]
