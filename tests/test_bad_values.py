"""Random bad values into the command line and the public API: always a clear error (exit 2 with
one ``error:`` line, or an ``XgradError``), never a traceback or another exception.

Only NumPy computes here (``--frameworks numpy``), so a value that happens to be valid costs
little; numeric flags draw only values that are out of range or not numbers.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xgrad
from xgrad.cli import main

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

garbage = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "nan", "inf", "-1", "0", "1e999", "3x", "x3", ",", "::", "()", "é"]),
)
bad_int = st.one_of(
    st.integers(max_value=0).map(str),
    st.sampled_from(["nan", "1.5", "ten", "", "1e3x", "-0"]),
)
bad_float = st.one_of(
    st.floats(max_value=0.0, allow_nan=False).map(repr),
    st.sampled_from(["nan", "-inf", "abc", ""]),
)

# command -> the arguments that make it run, and its flags with the kind of bad value
COMMANDS = {
    "compare": (
        ["--input-dim", "3", "--layers", "4:tanh,2", "--frameworks", "numpy"],
        {
            "--input-dim": garbage,
            "--layers": garbage,
            "--frameworks": garbage,
            "--dtype": garbage,
            "--loss": garbage,
            "--batch": bad_int,
            "--seed": st.sampled_from(["-1", "1.5", "x", "99999999999999999999999"]),
            "--rtol": bad_float,
            "--params": garbage,
            "--input": garbage,
        },
    ),
    "examples": (
        ["--frameworks", "numpy"],
        {"--frameworks": garbage, "--dtype": garbage},
    ),
    "sweep": (
        [
            "--frameworks",
            "numpy",
            "--activations",
            "tanh",
            "--losses",
            "sum",
            "--dtypes",
            "float64",
            "--batch-sizes",
            "2",
        ],
        {
            "--activations": garbage,
            "--losses": garbage,
            "--dtypes": garbage,
            "--batch-sizes": garbage,
            "--seeds": garbage,
            "--hidden": garbage,
            "--workers": bad_int,
            "--cell-timeout": bad_float,
            "--config": garbage,
        },
    ),
    "port": (
        ["missing.keras", "--to", "numpy", "--out", "w.npz"],
        {"--to": garbage, "--out": garbage, "--batch": bad_int, "--loss": garbage},
    ),
    "backends": (
        ["missing.keras"],
        {"--backends": garbage, "--batch": bad_int, "--timeout": bad_float, "--loss": garbage},
    ),
    "train-compare": (
        ["--layers", "3:tanh,2", "--input-dim", "2", "--to", "numpy", "--optimizer", "sgd"],
        {
            "--optimizer": garbage,
            "--steps": bad_int,
            "--batch": bad_int,
            "--to": garbage,
            "--layers": garbage,
        },
    ),
}


@st.composite
def bad_command(draw):
    command = draw(st.sampled_from(sorted(COMMANDS)))
    base, flags = COMMANDS[command]
    flag = draw(st.sampled_from(sorted(flags)))
    value = draw(flags[flag])
    argv = [command, *base]
    if flag in argv:  # replace the working value
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


@SETTINGS
@given(argv=bad_command())
def test_the_command_line_answers_bad_values_with_one_line_and_exit_2(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, "--quiet"])
    assert code in (0, 1, 2), argv
    if code == 2:
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err.getvalue())
        assert "Traceback" not in err.getvalue()


values = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 5), max_size=3),
    st.sampled_from([np.nan, np.ones((2, 2)), np.array(["a", "b"]), {"a": 1}, (1, "x")]),
)


@SETTINGS
@given(
    field=st.sampled_from(
        [
            "x",
            "y",
            "loss",
            "frameworks",
            "dtype",
            "params",
            "seed",
            "rtol",
            "cotangent",
            "explain",
            "title",
        ]
    ),
    value=values,
)
def test_compare_answers_bad_arguments_with_an_xgrad_error(field, value):
    spec = xgrad.MLP(3, [xgrad.Dense(4, "tanh"), xgrad.Dense(2)])
    kwargs = {"x": np.ones((2, 3)), "frameworks": "numpy", "loss": "sum"}
    kwargs[field] = value
    try:
        report = xgrad.compare(spec, **kwargs)
    except xgrad.XgradError as exc:
        assert str(exc), field
    else:
        assert isinstance(report, xgrad.Report)


@SETTINGS
@given(
    units=st.one_of(st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=3)),
    activation=st.one_of(st.text(max_size=8), st.integers(), st.none()),
    input_dim=st.one_of(st.integers(-2, 3), st.tuples(st.integers(-1, 2)), st.text(max_size=2)),
)
def test_specs_answer_bad_values_with_a_spec_error(units, activation, input_dim):
    try:
        spec = xgrad.MLP(input_dim, [xgrad.Dense(units, activation)])
    except xgrad.XgradError as exc:
        assert str(exc)
    else:
        assert spec.output_dim >= 1


@pytest.mark.parametrize(
    "call",
    [
        lambda: xgrad.compare_models(object(), object(), np.ones((2, 3))),
        lambda: xgrad.read_model(42),
        lambda: xgrad.convert(object(), to="flax"),
        lambda: xgrad.compare_backends("missing.keras"),
        lambda: xgrad.compare_training(
            object(), object(), np.ones((2, 3)), loss="mse", optimizers="sgd"
        ),
        lambda: xgrad.load_params("missing.npz"),
        lambda: xgrad.get_loss(math.nan),
        lambda: xgrad.get_activation(3.5),
    ],
)
def test_other_entry_points_answer_nonsense_with_an_xgrad_error(call):
    with pytest.raises(xgrad.XgradError):
        call()
