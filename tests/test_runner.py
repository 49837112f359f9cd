"""The runner: planted bugs are caught on exactly the entries they reach, per-layer values
localise them, formats carry the documented keys, results are deterministic."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _util import EVERY_LAYER
from conftest import INSTALLED
from planted import nan_gradient, no_transpose, tanh_gelu

import xgrad
from xgrad.frameworks.numpy import NumpyFramework
from xgrad.testing import assert_gradients_close


def _failing(report):
    return sorted({(entry.name, fw) for entry, fw, _ in report.failures()})


def test_forgotten_transpose_is_flagged_on_dinput_only(rng):
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])  # square first kernel
    x = rng.normal(size=(3, 4))
    report = xgrad.compare(spec, x, frameworks=["numpy", no_transpose()], dtype="float64")
    assert not report.ok
    assert _failing(report) == [("input", "no-transpose")]
    ((entry, fw, m),) = report.failures()
    assert m.status == "mismatch" and m.rel_norm > 1e-3


def test_tanh_gelu_is_flagged_on_exactly_the_entries_it_reaches(rng):
    spec = xgrad.MLP(5, [xgrad.Dense(8, "tanh"), xgrad.Dense(6, "gelu"), xgrad.Dense(3)])
    x = rng.normal(size=(4, 5))
    report = xgrad.compare(spec, x, frameworks=["numpy", tanh_gelu()], dtype="float64")
    flagged = {e.name for e, fw, _ in report.failures() if fw == "tanh-gelu"}
    # the last bias's gradient is dL/dout summed: the same, whatever the activation before
    assert flagged == {e.name for e in report.entries} - {"layers.2.bias"}
    assert not any(fw == "numpy" for _, fw, _ in report.failures())
    # the layers were compared, and the first divergence is the GELU layer, forward
    (divergence,) = report.divergences
    assert (divergence.framework, divergence.path, divergence.where) == (
        "tanh-gelu",
        "layers.1",
        "forward",
    )
    assert [layer.path for layer in report.layers] == ["layers.0", "layers.1", "layers.2"]


def test_two_frameworks_agreeing_on_a_wrong_answer_show_in_pairwise(rng):
    spec = xgrad.MLP(3, [xgrad.Dense(4, "gelu")])
    x = rng.normal(size=(2, 3))
    wrong_a, wrong_b = tanh_gelu(), tanh_gelu()
    wrong_b.name = "tanh-gelu-2"
    report = xgrad.compare(spec, x, frameworks=[wrong_a, wrong_b, "numpy"], dtype="float64")
    pairs = {p.frameworks: p.rel_norm for p in report.pairwise}
    assert pairs[("tanh-gelu", "tanh-gelu-2")] == 0.0
    assert pairs[("tanh-gelu", "numpy")] > 1e-5


def test_nan_gradient_is_reported_and_everything_else_still_compared(rng):
    spec = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2)])
    report = xgrad.compare(spec, rng.normal(size=(2, 3)), frameworks=[nan_gradient()])
    statuses = {e.name: e.results["nan"].status for e in report.entries}
    assert statuses.pop("layers.0.kernel") == "nonfinite"
    assert set(statuses.values()) == {"match"}
    m = report.parameters[0].results["nan"]
    assert (m.nan, m.first_nonfinite) == (1, (1, 2))


def test_float32_overflow_is_nonfinite_not_a_crash():
    spec = xgrad.MLP(2, [xgrad.Dense(1)])
    params = {"layers.0.kernel": np.ones((2, 1)), "layers.0.bias": np.zeros(1)}
    report = xgrad.compare(
        spec, np.full((1, 2), 1e20), np.zeros((1, 1)), loss="mse", params=params, frameworks="numpy"
    )
    statuses = {e.name: e.results["numpy"].status for e in report.entries}
    # loss 4e40 and dL/dkernel = x^T (2 out / N) = 4e40 overflow; dL/dbias = 4e20 does not.
    assert statuses == {
        "layers.0.kernel": "nonfinite",
        "layers.0.bias": "match",
        "input": "match",
        "output": "match",
        "loss": "nonfinite",
    }


def test_mismatch_message_reads_like_numpy(rng):
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    report = xgrad.compare(
        spec, rng.normal(size=(3, 4)), dtype="float64", frameworks=["numpy", no_transpose()]
    )
    with pytest.raises(xgrad.GradientMismatchError) as info:
        report.raise_for_mismatch()
    text = str(info.value)
    assert "dL/d input [no-transpose: input] status mismatch" in text
    assert re.search(r"Mismatched elements: \d+ / 12 \(", text)
    assert "Max absolute difference: " in text and "Max relative difference: " in text
    assert re.search(r"Worst element at index \(\d, \d\): no-transpose -?\d", text)
    assert isinstance(info.value, AssertionError)


def test_assert_gradients_close_passes_and_fails():
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    x = np.linspace(-1, 1, 12).reshape(3, 4)
    report = assert_gradients_close(spec, x, frameworks="numpy", dtype="float64")
    assert report.ok
    with pytest.raises(xgrad.GradientMismatchError, match=re.escape("dL/d input [no-transpose")):
        assert_gradients_close(spec, x, frameworks=[no_transpose()], dtype="float64")


REQUIRED_TOP = {
    "schema",
    "ok",
    "dtype",
    "loss",
    "frameworks",
    "reference",
    "losses",
    "parameters",
    "state",
    "input",
    "layers",
    "divergences",
    "diagnoses",
    "notes",
}
REQUIRED_RESULT = {"max_abs", "max_rel", "rel_norm", "cosine", "ulp_max", "status"}


def test_json_has_the_documented_keys(tmp_path):
    spec = xgrad.MLP(3, [xgrad.Dense(4, "relu"), xgrad.Dense(2)])
    report = xgrad.compare(
        spec, np.ones((2, 3)), frameworks="numpy,jax" if "jax" in INSTALLED else "numpy"
    )
    data = json.loads(report.to_json(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == data
    assert REQUIRED_TOP <= set(data)
    assert data["schema"] == "xgrad.report/3"
    assert data["reference"] == {"framework": "numpy", "dtype": "float64"}
    assert [p["name"] for p in data["parameters"]] == list(spec.param_shapes())
    for item in [*data["parameters"], data["input"]]:
        assert {"name", "shape", "native", "results"} <= set(item)
        assert set(item["native"]) == set(data["frameworks"])
        for result in item["results"].values():
            assert REQUIRED_RESULT <= set(result)
    assert data["parameters"][0]["shape"] == [3, 4]
    assert set(data["losses"]) == set(data["frameworks"])
    assert data["diagnoses"] == [] and data["divergences"] == []


def test_every_layer_kind_runs_through_compare_with_state_entries():
    x = np.random.default_rng(1).normal(size=(4, 2, 3))
    frameworks = [f for f in ("numpy", "jax", "flax") if f in INSTALLED]
    y = np.zeros((4, 3))
    report = xgrad.compare(EVERY_LAYER, x, y, loss="mse", frameworks=frameworks, explain=True)
    assert report.ok, report.mismatch_message()
    assert [e.name for e in report.state] == ["layers.3.layers.1.mean", "layers.3.layers.1.var"]
    assert all(e.label.endswith("(updated)") for e in report.state)
    assert {layer.path for layer in report.layers} == {
        "layers.1",
        "layers.2",
        "layers.3",
        "layers.3.layers.0",
        "layers.3.layers.1",
        "layers.5",
        "layers.7",
        "layers.9",
    }


@pytest.mark.skipif("jax" not in INSTALLED, reason="jax is not installed")
def test_reports_are_deterministic_apart_from_timing():
    spec = xgrad.MLP(5, [xgrad.Dense(4, "gelu"), xgrad.Dense(3, "softmax")])
    x = np.random.default_rng(3).normal(size=(4, 5))
    a = xgrad.compare(spec, x, [0, 1, 2, 0], loss="cce", frameworks="numpy,jax,flax")
    b = xgrad.compare(spec, x, [0, 1, 2, 0], loss="cce", frameworks="numpy,jax,flax")
    assert a.to_json(timing=False) == b.to_json(timing=False)
    assert "timing" in a.to_dict() and "timing" not in a.to_dict(timing=False)


def test_cotangent_replaces_the_loss(rng):
    spec = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2)])
    x = rng.normal(size=(2, 3))
    by_cot = xgrad.compare(spec, x, cotangent=np.ones((2, 2)), frameworks="numpy")
    by_sum = xgrad.compare(spec, x, frameworks="numpy")
    assert by_cot.loss is None and by_cot.loss_value is None and by_cot.losses == {}
    assert by_cot.ok
    assert [e.name for e in by_cot.entries] == [e.name for e in by_sum.entries][:-1]
    with pytest.raises(
        xgrad.InputError, match=re.escape("cotangent (grad_output) has shape (2, 3)")
    ):
        xgrad.compare(spec, x, cotangent=np.ones((2, 3)), frameworks="numpy")


@pytest.mark.parametrize(
    ("frameworks", "error", "pattern"),
    [
        ("numpy,numpy", xgrad.FrameworkError, "framework 'numpy' is named more than once"),
        ([NumpyFramework], xgrad.FrameworkError, "pass an instance: NumpyFramework()"),
        ([3], xgrad.FrameworkError, "got int 3"),
        ("", xgrad.FrameworkError, "no framework to compare"),
        ("mxnet", xgrad.FrameworkError, "unknown framework 'mxnet'; known frameworks:"),
    ],
)
def test_bad_frameworks(frameworks, error, pattern):
    with pytest.raises(error, match=re.escape(pattern)):
        xgrad.compare(xgrad.MLP(2, [xgrad.Dense(2)]), np.ones((1, 2)), frameworks=frameworks)


def test_rtol_override_and_validation():
    spec = xgrad.MLP(3, [xgrad.Dense(4, "tanh")])
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    assert xgrad.compare(spec, x, frameworks="numpy", dtype="float32").ok
    strict = xgrad.compare(spec, x, frameworks="numpy", dtype="float32", rtol=1e-12)
    assert not strict.ok and strict.tolerance == 1e-12
    assert "rtol 1e-12 is below float32's unit roundoff (6.0e-08)" in strict.notes[0]
    with pytest.raises(xgrad.InputError, match="rtol must be a positive finite number"):
        xgrad.compare(spec, x, frameworks="numpy", rtol=-1)


def test_a_cancelling_sum_loss_is_judged_by_its_terms():
    from xgrad.metrics import PreparedReference
    from xgrad.runner import loss_scale

    out = np.array([[0.3, -0.29], [0.2, -0.2033]])  # sums to 0.0067: terms around 0.25
    assert loss_scale("sum", out) == pytest.approx(0.9933)
    assert loss_scale("mean", out) == pytest.approx(0.9933 / 4)
    assert loss_scale("mse", out) is None
    ref = np.asarray(out.sum())
    cand = np.float32(ref + 3e-7)  # float32 rounding of the terms, not of the sum
    assert PreparedReference(ref, dtype="float32", tol=1e-5).compare(cand).status == "mismatch"
    judged = PreparedReference(ref, dtype="float32", tol=1e-5, scale=loss_scale("sum", out))
    assert judged.compare(cand).status == "match"
    assert judged.compare(np.float32(ref + 1e-4)).status == "mismatch"  # a real difference


def test_a_cancelling_projection_loss_is_judged_by_its_terms():
    # y chosen so that sum(out * y) cancels to 0.1% of sum(|out * y|): float32 rounding of
    # the terms is then far above tol relative to the value, and must not read as a mismatch
    from xgrad.runner import loss_scale

    spec = xgrad.MLP(6, [xgrad.Dense(16, "tanh"), xgrad.Dense(8)])
    params = xgrad.init_params(spec, seed=0)
    x = np.random.default_rng(0).standard_normal((8, 6))
    out = xgrad.get_framework("numpy").build(spec, params, dtype="float64")
    out = out.evaluate(x, loss="sum").output
    y = np.random.default_rng(1).standard_normal(out.shape)
    y -= 0.999 * (out * y).sum() / (out * out).sum() * out
    assert abs((out * y).sum()) < 2e-3 * np.abs(out * y).sum()
    assert loss_scale("projection", out, y) == pytest.approx(np.abs(out * y).sum())
    report = xgrad.compare(
        spec, x, y, params=params, frameworks="numpy", loss="projection", dtype="float32"
    )
    assert report.ok, report.table()


def test_explain_false_compares_no_layers(rng):
    spec = xgrad.MLP(4, [xgrad.Dense(4, "gelu"), xgrad.Dense(3)])
    report = xgrad.compare(
        spec, rng.normal(size=(2, 4)), frameworks=[tanh_gelu()], explain=False, dtype="float64"
    )
    assert not report.ok and report.layers == () and report.diagnoses == ()
