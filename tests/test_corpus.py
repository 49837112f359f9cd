"""The randomized corpus of hand-written ports (scripts/corpus.py), small and seeded: no false
alarm on an exact port, no wrong confirmed cause, and the planted bugs named at their layer.
`make fuzz` runs a larger one."""

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import INSTALLED

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif("jax" not in INSTALLED, reason="the ports are written in JAX")


def _corpus():
    spec = importlib.util.spec_from_file_location("corpus", ROOT / "scripts" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["corpus"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_seeded_corpus_scores():
    corpus = _corpus()
    rows = [corpus.run_case(case) for case in corpus.corpus(len(corpus.CYCLE), seed=1)]
    scores = corpus.scores(rows)  # one of each planted bug, and four exact ports
    assert scores["exact"] == 4 and scores["visible"] >= 9
    assert scores["false_alarms"] == 0, [r for r in rows if r["outcome"] == "false-alarm"]
    assert scores["wrong_causes"] == 0, [r for r in rows if r["outcome"] == "wrong-cause"]
    assert scores["named_rate"] >= 0.95, [r for r in rows if r["outcome"] == "unnamed"]


def test_an_activation_that_zeroes_where_the_other_does_not_is_no_dropout():
    # make fuzz found it: relu against the port's elu zeroes about half the values and keeps
    # the rest at a factor 1 + 6e-8 (float32 rounding), which read as dropout with rate 6e-8
    corpus = _corpus()
    row = corpus.run_case(corpus.make_case(66, "activation-mismatch"))
    assert row["outcome"] == "named", row
    assert row["causes"] == ["activation-mismatch@layers.2"]


@pytest.mark.parametrize(
    ("seed", "family", "bug", "outcome"),
    [
        (50026, "saturated", "exact", "pass"),  # a sigmoid head and bce near saturation
        (50003, "batchnorm", "exact", "pass"),  # moving statistics closed over in pure JAX
        (50005, "batchnorm", "batchnorm-epsilon", "named"),
        (50001, "dtype16", "dtype", "named"),  # one layer computed in float16
    ],
)
def test_cases_of_the_new_families(seed, family, bug, outcome):
    corpus = _corpus()
    row = corpus.run_case(corpus.make_family_case(seed, family, bug))
    assert row["outcome"] == outcome, row
    assert row["family"] == family


def test_an_exception_out_of_compare_models_is_a_crash_with_its_message():
    corpus = _corpus()
    case = corpus.make_case(0, "exact")

    def broken(params, x):
        raise RuntimeError("the port broke")

    case.port = (broken, case.port[1])
    row = corpus.run_case(case)
    assert row["outcome"] == "crash" and "the port broke" in row["error"], row
    scores = corpus.family_scores([row])["mlp"]
    assert scores["crashes"] == 1 and scores["false_alarms"] == 0
