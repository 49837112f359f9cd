"""Position ids in the batch and the RoPE causes (issue 21): the re-runs place tokens at
0..T-1, which RoPE cannot tell from consecutive positions p..p+T-1 (its scores see position
differences only), so those are diagnosed as usual; other positions (a packed row) leave the
RoPE causes not re-run, said in the report, neither named nor ruled out.

The models: Hugging Face's tiny LLaMA against a copy of it whose attention rotates
interleaved pairs (``tests/_transformer_ports.py``), both called with ``position_ids``.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
from conftest import INSTALLED

from xgrad.diagnosis.positions import other_positions
from xgrad.frameworks.capture import as_batch

IDS = np.random.default_rng(0).integers(0, 32, size=(2, 6))
PACKED = np.array([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]])  # two sequences in row 0


def test_only_rows_that_are_not_consecutive_count_as_other_positions():
    consecutive = np.tile(np.arange(6), (2, 1))
    for pos in (consecutive, consecutive + 5):
        assert other_positions(as_batch({"input_ids": IDS, "position_ids": pos})) is None
    assert other_positions(as_batch(IDS)) is None and other_positions(None) is None
    words = other_positions(as_batch({"input_ids": IDS, "position_ids": PACKED}))
    assert words is not None and "position_ids row 0 is [0, 1, 2, 0, 1, 2]" in words


needs_hf = pytest.mark.skipif(
    "torch" not in INSTALLED or importlib.util.find_spec("transformers") is None,
    reason="torch and transformers are needed",
)


@pytest.fixture(scope="module")
def llamas():
    from _transformer_ports import hf_llama, plant_llama

    with warnings.catch_warnings():  # transformers' own notices on tiny configs
        warnings.simplefilter("ignore")
        reference = hf_llama()
        return reference, plant_llama(reference, rope="interleaved")


def _diagnoses(llamas, positions):
    import xgrad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = {"input_ids": IDS, "position_ids": positions}
        report = xgrad.compare_models(*llamas, batch)
    assert not report.ok
    return report.diagnoses


@needs_hf
def test_consecutive_positions_after_an_offset_still_name_the_rope_layout(llamas):
    (d, *_) = _diagnoses(llamas, np.tile(np.arange(6), (2, 1)) + 3)
    assert (d.cause, d.confirmed, d.layer) == ("rope-layout", True, "model.layers.0.self_attn")


@needs_hf
def test_packed_positions_leave_the_rope_causes_not_re_run_and_say_so(llamas):
    (d, *_) = _diagnoses(llamas, PACKED)
    assert (d.cause, d.confirmed, d.layer) == ("unexplained", False, "model.layers.0.self_attn")
    assert "rope-layout not re-run: positions other than 0..T-1" in d.detail
    assert "position_ids row 0 is [0, 1, 2, 0, 1, 2]" in d.detail
