"""The comparison runner and the Report: planted bugs are caught on exactly the entries they
affect, formats carry the documented keys, results are deterministic."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.adapters.numpy import NumpyAdapter, NumpyModel, forward
from xgrad.testing import assert_gradients_close

# -- planted bugs: the NumPy reference with exactly one mistake each ----------------------


class _NoTransposeModel(NumpyModel):
    """Forgets the transpose in dL/dinput = delta . W^T of the first layer."""

    def _value_and_grad(self, x, y, loss):
        good = super()._value_and_grad(x, y, loss)
        values = forward(self.spec, self._params, x)
        # Back-propagate to z of layer 0 correctly, then forget the transpose at the end.
        grad_a = loss.value_and_grad(values[-1].a, y)[1]
        for i in range(len(self.spec.layers) - 1, 0, -1):
            delta = self.spec.layers[i].act.vjp(values[i].z, values[i].a, grad_a)
            grad_a = delta @ self._params[f"layers.{i}.kernel"].T
        delta0 = self.spec.layers[0].act.vjp(values[0].z, values[0].a, grad_a)
        wrong = delta0 @ self._params["layers.0.kernel"]  # should be .T
        return xgrad.Gradients(good.loss, good.params, wrong, good.output)


class NoTransposeAdapter(NumpyAdapter):
    name = "no-transpose"

    def _build(self, spec, params, dtype):
        return _NoTransposeModel(spec, params, dtype)


class _TanhGeluModel(NumpyModel):
    def _value_and_grad(self, x, y, loss):
        swapped = xgrad.MLP(
            self.spec.input_dim,
            [
                xgrad.Dense(
                    d.units,
                    "gelu_tanh" if d.activation == "gelu" else d.activation,
                    use_bias=d.use_bias,
                )
                for d in self.spec.layers
            ],
        )
        return NumpyModel(swapped, self._params, self.dtype)._value_and_grad(x, y, loss)


class TanhGeluAdapter(NumpyAdapter):
    """Uses the tanh GELU wherever the spec says the exact one."""

    name = "tanh-gelu"

    def _build(self, spec, params, dtype):
        return _TanhGeluModel(spec, params, dtype)


class NaNAdapter(NumpyAdapter):
    """Puts a NaN into one element of dL/d layers.0.kernel."""

    name = "nan"

    def _build(self, spec, params, dtype):
        class Model(NumpyModel):
            def _value_and_grad(self, x, y, loss):
                g = super()._value_and_grad(x, y, loss)
                kernel = g.params["layers.0.kernel"].copy()
                kernel[1, 2] = np.nan
                return xgrad.Gradients(
                    g.loss, {**g.params, "layers.0.kernel": kernel}, g.input, g.output
                )

        return Model(spec, params, dtype)


def _failing(report):
    return sorted({(entry.name, fw) for entry, fw, _ in report.failures()})


def test_forgotten_transpose_is_flagged_on_dinput_only(rng):
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])  # square first kernel
    x = rng.normal(size=(3, 4))
    report = xgrad.compare(spec, x, frameworks=["numpy", NoTransposeAdapter()], dtype="float64")
    assert not report.ok
    assert _failing(report) == [("input", "no-transpose")]
    ((entry, fw, m),) = report.failures()
    assert m.status == "mismatch" and m.rel_norm > 1e-3


def test_tanh_gelu_is_flagged_on_exactly_the_entries_it_reaches(rng):
    # GELU in the first layer; a linear head and loss=sum make dL/d layers.1.bias = batch
    # size regardless of layer 0, so that entry alone must stay a match.
    spec = xgrad.MLP(4, [xgrad.Dense(6, "gelu"), xgrad.Dense(3)])
    x = rng.normal(size=(5, 4)) * 2
    report = xgrad.compare(spec, x, frameworks=["numpy", TanhGeluAdapter()], dtype="float64")
    affected = {"layers.0.kernel", "layers.0.bias", "layers.1.kernel", "input", "output", "loss"}
    assert _failing(report) == sorted((name, "tanh-gelu") for name in affected)
    by_name = {e.name: e for e in report.entries}
    assert by_name["layers.1.bias"].results["tanh-gelu"].status == "match"
    assert all(
        m.status == "match" for e in report.entries for fw, m in e.results.items() if fw == "numpy"
    )


def test_two_frameworks_agreeing_on_a_wrong_answer_show_in_pairwise(rng):
    class Twin(TanhGeluAdapter):
        name = "twin"

    spec = xgrad.MLP(3, [xgrad.Dense(4, "gelu")])
    report = xgrad.compare(
        spec,
        rng.normal(size=(2, 3)),
        dtype="float64",
        frameworks=["numpy", TanhGeluAdapter(), Twin()],
    )
    pairs = {p.frameworks: p for p in report.pairwise}
    assert pairs[("tanh-gelu", "twin")].rel_norm == 0
    assert pairs[("numpy", "tanh-gelu")].rel_norm > 1e-6


def test_nan_gradient_is_reported_and_everything_else_still_compared(rng):
    spec = xgrad.MLP(4, [xgrad.Dense(5, "relu"), xgrad.Dense(2)])
    report = xgrad.compare(spec, rng.normal(size=(3, 4)), frameworks=["numpy", NaNAdapter()])
    assert _failing(report) == [("layers.0.kernel", "nan")]
    m = report.parameters[0].results["nan"]
    assert (m.status, m.nan, m.inf, m.first_nonfinite) == ("nonfinite", 1, 0, (1, 2))
    data = json.loads(report.to_json())
    assert data["parameters"][0]["results"]["nan"]["status"] == "nonfinite"
    assert "NaN: 1, Inf: 0, first at index (1, 2)" in report.mismatch_message()


def test_float32_overflow_is_nonfinite_not_a_crash():
    spec = xgrad.MLP(2, [xgrad.Dense(2)])
    params = {"layers.0.kernel": np.eye(2), "layers.0.bias": np.zeros(2)}
    x = np.full((1, 2), 1e20)  # (out - y)^2 = 1e40 overflows float32, not float64
    report = xgrad.compare(
        spec, x, np.zeros((1, 2)), loss="mse", params=params, frameworks="numpy", dtype="float32"
    )
    statuses = {e.name: e.results["numpy"].status for e in report.entries}
    # loss 1e40 and dL/dkernel = x^T (2 out / N) = 1e40 overflow; dL/dbias = 1e20 does not.
    assert statuses == {
        "layers.0.kernel": "nonfinite",
        "layers.0.bias": "match",
        "input": "match",
        "output": "match",
        "loss": "nonfinite",
    }
    assert report.loss_value.results["numpy"].first_nonfinite == ()


def test_mismatch_message_reads_like_numpy(rng):
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    report = xgrad.compare(
        spec, rng.normal(size=(3, 4)), dtype="float64", frameworks=["numpy", NoTransposeAdapter()]
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
        assert_gradients_close(spec, x, frameworks=[NoTransposeAdapter()], dtype="float64")


REQUIRED_TOP = {
    "schema",
    "ok",
    "dtype",
    "loss",
    "frameworks",
    "reference",
    "losses",
    "parameters",
    "input",
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
    assert data["schema"] == "xgrad.report/1"
    assert data["reference"] == {"framework": "numpy", "dtype": "float64"}
    assert [p["name"] for p in data["parameters"]] == list(spec.param_shapes())
    for item in [*data["parameters"], data["input"]]:
        assert {"name", "shape", "native", "results"} <= set(item)
        assert set(item["native"]) == set(data["frameworks"])
        for result in item["results"].values():
            assert REQUIRED_RESULT <= set(result)
    assert data["parameters"][0]["shape"] == [3, 4]
    assert set(data["losses"]) == set(data["frameworks"])


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


def test_report_renders_table_markdown_and_plot(tmp_path):
    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    report = xgrad.compare(
        spec,
        np.ones((2, 4)),
        frameworks=["numpy", NoTransposeAdapter()],
        dtype="float64",
        title="planted",
    )
    text = report.to_text(width=200)
    assert "dL/d layers.0.kernel" in text and "no-transpose" in text and "mismatch" in text
    assert "MISMATCH: 1 comparison(s) beyond tolerance" in text
    md = report.to_markdown(tmp_path / "r.md")
    assert "| entry | shape | framework | native name |" in md
    assert "| dL/d input | (2, 4) | no-transpose | `input` |" in md
    assert (tmp_path / "r.md").read_text() == md
    png = report.plot(tmp_path / "r.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unwritable_output_raises_output_error_and_writes_nothing(tmp_path):
    spec = xgrad.MLP(2, [xgrad.Dense(2)])
    report = xgrad.compare(spec, np.ones((1, 2)), frameworks="numpy")
    with pytest.raises(xgrad.OutputError, match="does not exist; create it first"):
        report.to_json(tmp_path / "missing" / "r.json")
    with pytest.raises(xgrad.OutputError, match="is a folder"):
        report.to_markdown(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("frameworks", "error", "pattern"),
    [
        ("numpy,numpy", xgrad.FrameworkError, "framework 'numpy' is named more than once"),
        ([NumpyAdapter], xgrad.FrameworkError, "pass an instance: NumpyAdapter()"),
        ([3], xgrad.FrameworkError, "got int 3"),
        ("", xgrad.FrameworkError, "no framework to compare"),
        ("pytorch", xgrad.FrameworkError, "unknown framework 'pytorch'; known frameworks:"),
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
    with pytest.raises(xgrad.InputError, match="rtol must be a positive finite number"):
        xgrad.compare(spec, x, frameworks="numpy", rtol=-1)


def test_metrics_by_hand():
    from xgrad.metrics import compare_arrays

    m = compare_arrays(
        np.array([1.0, 2.0, 3.5]), np.array([1.0, 2.0, 3.0]), dtype="float64", tol=1e-10
    )
    assert m.max_abs == 0.5
    assert m.max_rel == pytest.approx(0.5 / 3.0)
    assert m.rel_norm == pytest.approx(0.5 / np.sqrt(14))
    assert m.cosine == pytest.approx(15.5 / (np.sqrt(1 + 4 + 12.25) * np.sqrt(14)))
    assert m.worst_index == (2,) and (m.worst_value, m.worst_reference) == (3.5, 3.0)
    assert m.status == "mismatch" and m.mismatched == 1
    one_ulp = np.nextafter(np.float32(1), np.float32(2))
    u = compare_arrays(
        np.array([one_ulp, -1], dtype=np.float32), np.array([1.0, -1.0]), dtype="float32", tol=1e-5
    )
    assert u.ulp_max == 1 and u.status == "match"
    across_zero = compare_arrays(
        np.array([-0.0], dtype=np.float32), np.array([0.0]), dtype="float32", tol=1e-5
    )
    assert across_zero.ulp_max == 0


def test_fast_and_general_metric_paths_agree():
    """The all-finite, chunked path gives the masked general path's answers."""
    from xgrad.metrics import _CHUNK, PreparedReference, _slow_compare

    rng = np.random.default_rng(5)
    ref = rng.normal(size=(3, _CHUNK // 2 + 7))  # spans several chunks
    cand = (ref * (1 + 1e-6 * rng.normal(size=ref.shape))).astype(np.float32)
    cand[2, 11] = -3.5  # one clear outlier, the worst element
    fast = PreparedReference(ref, dtype="float32", tol=1e-5).compare(cand)
    slow = _slow_compare(cand, ref, dtype="float32", tol=1e-5)
    for key in (
        "mismatched",
        "size",
        "worst_index",
        "worst_value",
        "worst_reference",
        "ulp_max",
        "status",
        "nan",
        "inf",
    ):
        assert getattr(fast, key) == getattr(slow, key), key
    for key in ("max_abs", "max_rel", "rel_norm", "cosine"):
        assert getattr(fast, key) == pytest.approx(getattr(slow, key), rel=1e-9), key
    with_nan = cand.copy()
    with_nan[0, 0] = np.nan
    m = PreparedReference(ref, dtype="float32", tol=1e-5).compare(with_nan)
    assert (m.status, m.nan, m.first_nonfinite) == ("nonfinite", 1, (0, 0))


def test_names_in_brackets_are_printed_not_taken_as_markup():
    class Bracketed(NumpyAdapter):
        name = "bold"  # a rich style name: as markup, "[bold]" would vanish

    spec = xgrad.MLP(4, [xgrad.Dense(4, "tanh"), xgrad.Dense(3)])
    report = xgrad.compare(
        spec,
        np.ones((2, 4)),
        frameworks=["numpy", NoTransposeAdapter(), Bracketed()],
        dtype="float64",
    )
    text = report.to_text(width=250)
    assert "[no-transpose]" in text
    assert "| bold " in text.replace("│", "|") or " bold " in text


def test_a_cancelling_sum_loss_is_judged_by_its_terms():
    from xgrad.compare import loss_scale
    from xgrad.metrics import PreparedReference

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


def test_compact_table_for_narrow_terminals():
    report = xgrad.compare(xgrad.MLP(3, [xgrad.Dense(2)]), np.ones((1, 3)), frameworks="numpy")
    narrow = report.to_text(width=100)
    assert "rel norm" in narrow and "ULP" not in narrow and "cosine" not in narrow
    wide = report.to_text(width=200)
    assert "ULP" in wide and "cosine" in wide
