"""compare_training: exact ports stay together, planted conventions are found and named.

The models here are xgrad's NumPy models of a tiny spec (fast), so that what differs is the
optimizers, each side's in its own framework; test_done_when.py uses Keras and Flax models.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad import GradientMismatchError, InputError
from xgrad.training import SGD, Adam, RMSprop, compare_training

ALL = pytest.mark.skipif(
    not {"tensorflow", "jax", "torch"} <= INSTALLED, reason="needs keras, optax and torch"
)
SPEC = xgrad.MLP(
    2, [xgrad.Dense(2, "tanh"), xgrad.Dense(2)]
)  # two array shapes: fewer XLA compiles
RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((6, 2)), RNG.standard_normal((6, 2))


def model(dtype="float64", spec=SPEC):
    return (spec, {k: v.astype(dtype) for k, v in xgrad.init_params(spec, 0).items()})


def keras_opt(name, **kw):
    import keras

    return getattr(keras.optimizers, name)(**kw)


def torch_opt(name, **kw):
    import torch

    return lambda params: getattr(torch.optim, name)(params, **kw)


def optax_tx(name, *args, **kw):
    import optax

    return getattr(optax, name)(*args, **kw)


# -- exact ports ---------------------------------------------------------------------------

PAIRS = {
    "keras-Adam/optax.adam": lambda: (keras_opt("Adam", epsilon=1e-8), optax_tx("adam", 1e-3)),
    "keras-SGD/optax.sgd": lambda: (
        keras_opt("SGD", learning_rate=0.01, momentum=0.9),
        optax_tx("sgd", 0.01, momentum=0.9),
    ),
    "keras-AdamW/optax.adamw": lambda: (
        keras_opt("AdamW", weight_decay=1e-4, epsilon=1e-8),
        optax_tx("adamw", 1e-3, weight_decay=1e-4),
    ),
    "keras-RMSprop/optax.rmsprop": lambda: (
        keras_opt("RMSprop", epsilon=1e-8),
        optax_tx("rmsprop", 1e-3),
    ),
    "torch-Adam/optax.adam": lambda: (torch_opt("Adam"), optax_tx("adam", 1e-3)),
    "torch-SGD/optax.sgd": lambda: (
        torch_opt("SGD", lr=0.01, momentum=0.9),
        optax_tx("sgd", 0.01, momentum=0.9),
    ),
    "torch-AdamW/optax.adamw": lambda: (
        torch_opt("AdamW", weight_decay=1e-4),
        optax_tx("adamw", 1e-3, weight_decay=1e-4),
    ),
    "torch-RMSprop/optax.rmsprop": lambda: (
        torch_opt("RMSprop", lr=1e-3, alpha=0.9),
        optax_tx("rmsprop", 1e-3, eps_in_sqrt=False),
    ),
}


@ALL
@pytest.mark.parametrize("pair", list(PAIRS), ids=list(PAIRS))
def test_exact_ports_stay_within_tolerance_for_50_steps(pair):
    report = compare_training(
        model("float32"), model("float32"), X, Y, loss="mse", optimizers=PAIRS[pair](), steps=50
    )
    assert report.ok, report.mismatch_message()
    assert len(report.steps) == 50 and report.referee is not None
    # both sides follow the reference's rule, as the float64 referee computes it
    assert max(s.referee_drift("reference") / s.tolerance for s in report.steps) < 0.1


@pytest.mark.skipif(not {"jax", "torch"} <= INSTALLED, reason="needs flax and torch")
def test_a_flax_and_a_torch_model_train_alike_for_50_steps():
    spec, params = model()
    ref = xgrad.get_framework("flax").build(spec, params, dtype="float32")
    cand = xgrad.get_framework("torch").build(spec, params, dtype="float32")
    opts = (optax_tx("sgd", 0.05, momentum=0.9), torch_opt("SGD", lr=0.05, momentum=0.9))
    report = compare_training(ref, cand, X, Y, loss="mse", optimizers=opts, steps=50)
    assert report.ok, report.mismatch_message()
    assert (
        report.candidate == "torch"
        and report.steps[-1].losses["torch"] < report.steps[0].losses["torch"]
    )
    assert report.notes == (
        "no float64 referee: the reference's rule is unknown (an optax "
        "transformation does not expose its hyperparameters; name its rule: "
        "(tx, xgrad.training.Adam(learning_rate=..., ...)))",
    )


# -- planted differences ---------------------------------------------------------------------


def _schedule(count):
    return 0.1 * 0.5**count


PLANTED = {
    # id: (optimizers, the causes named, the first step where it shows)
    "adam-epsilon value": (
        lambda: (torch_opt("Adam", eps=1e-7), optax_tx("adam", 1e-3)),
        {"adam-epsilon"},
        1,
    ),
    "keras adam vs optax": (
        lambda: (keras_opt("Adam"), optax_tx("adam", 1e-3)),
        {"adam-epsilon", "float32-hyperparameters"},
        1,
    ),
    "L2 vs decoupled": (
        lambda: (torch_opt("Adam", weight_decay=0.01), torch_opt("AdamW", weight_decay=0.01)),
        {"weight-decay"},
        1,
    ),
    "decay value": (lambda: (torch_opt("AdamW"), optax_tx("adamw", 1e-3)), {"weight-decay"}, 1),
    "dampening": (
        lambda: (
            torch_opt("SGD", lr=0.1, momentum=0.9, dampening=0.5),
            optax_tx("sgd", 0.1, momentum=0.9),
        ),
        {"momentum-convention"},
        2,
    ),
    "nesterov": (
        lambda: (
            torch_opt("SGD", lr=0.1, momentum=0.9),
            optax_tx("sgd", 0.1, momentum=0.9, nesterov=True),
        ),
        {"momentum-convention"},
        1,
    ),
    "rmsprop defaults": (
        lambda: (torch_opt("RMSprop"), optax_tx("rmsprop", 1e-2)),
        {"rmsprop-convention"},
        1,
    ),
    "bias-correction": (
        lambda: (
            (optax_tx("rmsprop", 1e-3), RMSprop(1e-3)),
            optax_tx("rmsprop", 1e-3, bias_correction=True),
        ),
        {"bias-correction"},
        1,
    ),
    "clipping per array vs global": (
        lambda: (
            keras_opt("SGD", learning_rate=0.1, clipnorm=0.05),
            keras_opt("SGD", learning_rate=0.1, global_clipnorm=0.05),
        ),
        {"gradient-clipping"},
        1,
    ),
    "schedule-offset": (
        lambda: (
            (optax_tx("sgd", _schedule), SGD(_schedule)),
            optax_tx("sgd", lambda count: _schedule(count + 1)),
        ),
        {"schedule-offset"},
        1,
    ),
    "learning-rate": (
        lambda: (torch_opt("SGD", lr=0.01), optax_tx("sgd", 0.02)),
        {"learning-rate"},
        1,
    ),
    "keras AdamW vs torch AdamW": (
        lambda: (keras_opt("AdamW"), torch_opt("AdamW")),
        {"adam-epsilon", "weight-decay", "float32-hyperparameters"},
        1,
    ),
}


@ALL
@pytest.mark.parametrize("planted", list(PLANTED), ids=list(PLANTED))
def test_a_planted_convention_is_found_where_it_shows_and_named(planted):
    make, causes, step = PLANTED[planted]
    report = compare_training(model(), model(), X, Y, loss="mse", optimizers=make(), steps=4)
    assert not report.ok
    assert report.first_divergence.step == step
    assert {d.cause for d in report.diagnoses} == causes, report.diagnosis_lines()
    for d in report.diagnoses:
        assert d.confirmed and d.step == step
        assert d.residual <= report.tolerance_at(step) < d.before
    assert report.gradient_report is None


def test_the_diagnosis_says_what_each_side_does():
    report = compare_training(
        model(),
        model(),
        X,
        Y,
        loss="mse",
        optimizers=(Adam(1e-3, eps=1e-7, epsilon_hat=True), Adam(1e-3)),
        steps=2,
    )
    (d,) = report.diagnoses
    assert d.detail.startswith(
        "the candidate adds eps 1e-08 to sqrt(v_hat), after the bias correction (Algorithm 1 "
        "of the paper: optax, PyTorch); the reference adds 1e-07 to sqrt(v) before the bias "
        "correction (Keras' epsilon hat"
    )
    assert report.summary().endswith("cause: adam-epsilon")
    assert re.match(
        r"first divergence: step 1, layers\.\d\.(kernel|bias) \(", report.first_divergence.text()
    )


def test_gradients_that_differ_are_handed_to_the_gradient_diagnosis():
    gelu = xgrad.MLP(2, [xgrad.Dense(2, "gelu"), xgrad.Dense(2)])
    tanh_form = xgrad.MLP(2, [xgrad.Dense(2, "gelu_tanh"), xgrad.Dense(2)])
    report = compare_training(
        model(spec=gelu),
        model(spec=tanh_form),
        X,
        Y,
        loss="mse",
        optimizers=(SGD(0.1), SGD(0.1)),
        steps=3,
    )
    (d,) = report.diagnoses
    assert (d.cause, d.step, d.confirmed) == ("gradients", 1, True)
    assert "the gradients already differ at step 1" in d.detail
    assert "gelu-approximation" in d.detail
    assert not report.gradient_report.ok
    assert report.to_dict()["gradients"]["schema"] == "xgrad.report/3"


def test_without_the_reference_rule_nothing_is_replayed():
    pytest.importorskip("optax")
    report = compare_training(
        model(),
        model(),
        X,
        Y,
        loss="mse",
        optimizers=(optax_tx("sgd", 0.1), optax_tx("sgd", 0.2)),
        steps=2,
    )
    (d,) = report.diagnoses
    assert d.cause == "unexplained" and "the reference's rule is unknown" in d.detail
    assert report.referee is None


# -- float32: what cannot be seen ---------------------------------------------------------------


def test_float32_says_which_conventions_it_cannot_see():
    report = compare_training(
        model("float32"),
        model("float32"),
        X,
        Y,
        loss="mse",
        optimizers=(Adam(1e-3, eps=1e-7, epsilon_hat=True), Adam(1e-3)),
        steps=5,
    )
    assert report.ok
    (note,) = report.precision
    assert note.known and note.cause == "adam-epsilon" and 0 < note.effect < 1
    assert report.diagnosis_lines()[0].startswith(
        "cannot be seen at float32 precision: adam-epsilon: the two optimizers differ"
    )
    # the same rules in float64 part at step 1
    report = compare_training(
        model(),
        model(),
        X,
        Y,
        loss="mse",
        optimizers=(Adam(1e-3, eps=1e-7, epsilon_hat=True), Adam(1e-3)),
        steps=1,
    )
    assert not report.ok and report.precision == ()


# -- the report ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parted():
    return compare_training(
        model(),
        model(),
        X,
        Y,
        loss="mse",
        optimizers=(SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.9, nesterov=True)),
        steps=3,
        title="nesterov or not",
    )


def test_json_follows_the_schema(parted, tmp_path):
    data = json.loads(parted.to_json(tmp_path / "r.json"))
    assert data == json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == "xgrad.training/1" and data["ok"] is False
    assert data["tolerance"] == {"base": 1e-10, "growth": "tol * sqrt(step)"}
    assert [s["step"] for s in data["steps"]] == [1, 2, 3]
    first = data["steps"][0]["weights"][0]
    assert set(first) == {"name", "weights", "update", "gradient", "referee", "status"}
    assert data["first_divergence"]["step"] == 1
    assert data["diagnoses"][0]["cause"] == "momentum-convention"
    assert data["referee"]["rule"] == "sgd" and data["referee"]["momentum"] == 0.9
    assert "timing" not in parted.to_dict(timing=False)


def test_table_text_and_markdown(parted):
    text = parted.to_text(width=160)
    assert "worst weight" in text and "nesterov or not" in text
    assert "first divergence: step 1" in text and text.strip().endswith("momentum-convention")
    md = parted.to_markdown()
    assert md.startswith("## nesterov or not") and "| 1 | " in md and "**mismatch**" in md


def test_plot_writes_a_png(parted, tmp_path):
    pytest.importorskip("matplotlib")
    path = parted.plot(tmp_path / "steps.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(xgrad.OutputError, match=re.escape("name it *.png")):
        parted.plot(tmp_path / "steps.jpg")


def test_raise_for_mismatch(parted):
    with pytest.raises(GradientMismatchError, match=re.escape("MISMATCH: the runs part at step 1")):
        parted.raise_for_mismatch()
    ok = compare_training(model(), model(), X, Y, loss="mse", optimizers=(SGD(0.1), SGD(0.1)))
    ok.raise_for_mismatch()
    assert ok.ok and ok.summary().startswith("OK: the weights stay within tolerance for 10 step(s)")


# -- inputs ---------------------------------------------------------------------------------------


def test_batches_one_per_step_and_a_note_when_they_run_out():
    batches = [(X[:3], Y[:3]), (X[3:], Y[3:])]
    report = compare_training(
        model(), model(), loss="mse", optimizers=(SGD(0.1), SGD(0.1)), steps=5, batches=batches
    )
    assert report.ok and len(report.steps) == 2
    assert report.notes == ("batches ran out after 2 of the 5 steps asked for",)


def test_batchnorm_statistics_are_compared_as_state():
    spec = xgrad.MLP(2, [xgrad.Dense(2), xgrad.BatchNorm(training=True), xgrad.Dense(2)])
    report = compare_training(
        model(spec=spec),
        model(spec=spec),
        X,
        Y,
        loss="mse",
        optimizers=(SGD(0.1), SGD(0.1)),
        steps=2,
    )
    kinds = {w.name: w.kind for w in report.weights}
    assert kinds["layers.1.mean"] == "state" and kinds["layers.1.scale"] == "parameter"
    assert report.ok


def test_the_users_arrays_are_not_changed():
    ref, cand = model(), model()
    before = {k: v.copy() for k, v in ref[1].items()}
    compare_training(ref, cand, X, Y, loss="mse", optimizers=(SGD(0.1), SGD(0.2)), steps=2)
    assert all(np.array_equal(before[k], ref[1][k]) for k in before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": 0}, "steps must be a positive integer, got 0"),
        ({"optimizers": SGD(0.1)}, "optimizers=(reference optimizer, candidate optimizer)"),
        ({"optimizers": (SGD(0.1), "adam")}, "the candidate optimizer must be"),
        ({"batches": (X, Y)}, "batches is an iterable of (x, y) pairs"),
        ({"batches": []}, "batches is empty"),
        ({"loss": "nope"}, "nope"),
    ],
)
def test_bad_arguments_fail_before_any_step(kwargs, message):
    args = {"loss": "mse", "optimizers": (SGD(0.1), SGD(0.1)), **kwargs}
    x, y = (None, None) if "batches" in kwargs else (X, Y)
    with pytest.raises(xgrad.XgradError, match=re.escape(message)):
        compare_training(model(), model(), x, y, **args)


def test_x_or_batches_is_required():
    with pytest.raises(InputError, match=re.escape("compare_training needs x")):
        compare_training(model(), model(), loss="mse", optimizers=(SGD(0.1), SGD(0.1)))


def test_an_overflow_is_reported_and_the_run_stops():
    report = compare_training(
        model(), model(), X, Y, loss="mse", optimizers=(SGD(0.1), SGD(1e308)), steps=4
    )
    assert not report.ok and report.first_divergence.step == 1
    assert len(report.steps) < 4 and report.steps[-1].weights[0].status == "nonfinite"
    assert report.notes[-1].startswith("the run stopped after step")
    assert json.loads(report.to_json())["steps"][-1]["losses"]["numpy"] in ("inf", "nan")
