"""Each framework's optimizer, stepped by xgrad, against the float64 NumPy referee.

The referee must follow every framework's float64 run to 1e-12 (rounding level), with the
rule xgrad reads from the optimizer itself; the installed defaults must be those that
docs/training.md records.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import INSTALLED

from xgrad import InputError
from xgrad.training import SGD, Adam, AdamW, OptimizerSpec, RMSprop
from xgrad.training.optimizers import as_optimizer, optimizer_for
from xgrad.training.replay import relative, replay

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"

needs = {
    "keras": pytest.mark.skipif("tensorflow" not in INSTALLED, reason="tensorflow not installed"),
    "optax": pytest.mark.skipif("jax" not in INSTALLED, reason="jax not installed"),
    "torch": pytest.mark.skipif("torch" not in INSTALLED, reason="torch not installed"),
}


def _keras(name, **kw):
    def make():
        import keras

        return getattr(keras.optimizers, name)(**kw)

    return make


def _torch(name, **kw):
    def make():
        import torch

        return lambda params: getattr(torch.optim, name)(params, **kw)

    return make


def _optax(name, rule, *args, chain=None, **kw):
    def make():
        import optax

        tx = getattr(optax, name)(*args, **kw)
        if chain is not None:
            tx = optax.chain(getattr(optax, chain[0])(chain[1]), tx)
        return (tx, rule)

    return make


CASES = [
    ("keras", "Adam", _keras("Adam")),
    ("keras", "Adam-amsgrad-decay", _keras("Adam", amsgrad=True, weight_decay=0.01)),
    ("keras", "AdamW", _keras("AdamW")),
    ("keras", "SGD-momentum", _keras("SGD", learning_rate=0.1, momentum=0.9)),
    ("keras", "SGD-nesterov", _keras("SGD", learning_rate=0.1, momentum=0.9, nesterov=True)),
    ("keras", "RMSprop", _keras("RMSprop")),
    ("keras", "RMSprop-centered", _keras("RMSprop", centered=True, momentum=0.5)),
    ("keras", "SGD-global-clipnorm", _keras("SGD", learning_rate=0.1, global_clipnorm=1.0)),
    ("keras", "Adam-clipnorm", _keras("Adam", clipnorm=0.5)),
    ("keras", "Adam-clipvalue", _keras("Adam", clipvalue=0.5)),
    ("torch", "Adam", _torch("Adam")),
    ("torch", "Adam-L2-amsgrad", _torch("Adam", weight_decay=0.1, amsgrad=True)),
    ("torch", "AdamW", _torch("AdamW")),
    ("torch", "SGD-dampening", _torch("SGD", lr=0.1, momentum=0.9, dampening=0.5)),
    (
        "torch",
        "SGD-nesterov-L2",
        _torch("SGD", lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    ("torch", "RMSprop", _torch("RMSprop")),
    ("torch", "RMSprop-centered", _torch("RMSprop", centered=True, momentum=0.9)),
    ("optax", "adam", _optax("adam", Adam(1e-3), 1e-3)),
    ("optax", "adamw", _optax("adamw", AdamW(1e-3), 1e-3)),
    ("optax", "sgd-nesterov", _optax("sgd", SGD(0.1, momentum=0.9, nesterov=True), 0.1, 0.9, True)),
    ("optax", "rmsprop", _optax("rmsprop", RMSprop(1e-3), 1e-3)),
    (
        "optax",
        "rmsprop-centered",
        _optax(
            "rmsprop",
            RMSprop(1e-3, centered=True, eps_in_sqrt=False, momentum=0.9, nesterov=True),
            1e-3,
            centered=True,
            eps_in_sqrt=False,
            momentum=0.9,
            nesterov=True,
        ),
    ),
    (
        "optax",
        "rmsprop-bias",
        _optax("rmsprop", RMSprop(1e-3, bias_correction=True), 1e-3, bias_correction=True),
    ),
    (
        "optax",
        "adam-clip-eps-root",
        _optax(
            "adam",
            Adam(1e-3, eps_root=1e-8, clip_global_norm=1.0),
            1e-3,
            eps_root=1e-8,
            chain=("clip_by_global_norm", 1.0),
        ),
    ),
]


def _params_and_grads(n=12):
    rng = np.random.default_rng(0)
    params = {
        "layers.0.kernel": rng.standard_normal((2, 2)),
        "layers.0.bias": rng.standard_normal(2),
    }
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(n)]
    return params, grads


def _worst(run, params, grads, dtype):
    got = [run.step(g) for g in grads]
    want = replay(run.rule, params, grads)
    return max(relative(a[k], b[k], "float64") for a, b in zip(got, want, strict=True) for k in b)


@pytest.mark.parametrize(
    "make",
    [pytest.param(m, id=f"{fw}-{name}", marks=needs[fw]) for fw, name, m in CASES],
)
def test_the_referee_follows_each_framework_in_float64_to_1e_12(make):
    params, grads = _params_and_grads()
    run = as_optimizer(make(), "reference").start(params, "float64")
    assert run.rule is not None, run.rule_note
    assert _worst(run, params, grads, "float64") <= 1e-12


@pytest.mark.parametrize(
    "make",
    [pytest.param(m, id=f"{fw}-{name}", marks=needs[fw]) for fw, name, m in CASES[::4]],
)
def test_float32_runs_stay_within_float32_rounding_of_the_referee(make):
    params, grads = _params_and_grads()
    run = as_optimizer(make(), "reference").start(params, "float32")
    assert _worst(run, params, grads, "float32") <= 1e-6


@needs["optax"]
@needs["keras"]
def test_keras_adam_in_optax_is_keras_adam():
    import keras

    from xgrad.training import keras_adam

    params, grads = _params_and_grads()
    a = as_optimizer(keras.optimizers.Adam(), "r").start(params, "float64")
    b = as_optimizer(keras_adam(), "c").start(params, "float64")
    for g in grads:
        wa, wb = a.step(g), b.step(g)
    assert max(relative(wb[k], wa[k], "float64") for k in wa) <= 1e-14


# -- reading the rules and the defaults -------------------------------------------------------


@needs["keras"]
def test_keras_rules_as_read():
    import keras

    from xgrad.frameworks.tensorflow.optim import read_rule

    rule, _ = read_rule(keras.optimizers.Adam())
    assert (rule.eps, rule.epsilon_hat, rule.float32_constants) == (1e-7, True, True)
    assert rule.learning_rate == 0.001 and rule.lr(0) == float(np.float32(0.001))
    rule, _ = read_rule(keras.optimizers.AdamW())
    assert (type(rule), rule.weight_decay, rule.decoupled) == (AdamW, 0.004, True)
    rule, _ = read_rule(keras.optimizers.RMSprop())
    assert (rule.decay, rule.eps, rule.eps_in_sqrt) == (0.9, 1e-7, True)
    # use_ema alone keeps the average beside the weights (see test_trial_causes.py)
    assert (
        read_rule(keras.optimizers.Adam(use_ema=True))[0] == read_rule(keras.optimizers.Adam())[0]
    )
    rule, note = read_rule(keras.optimizers.Adam(use_ema=True, ema_overwrite_frequency=2))
    assert rule is None and "ema_overwrite_frequency" in note
    rule, note = read_rule(keras.optimizers.Adagrad())
    assert rule is None and "not Adagrad" in note


@needs["torch"]
def test_torch_rules_as_read():
    import torch

    from xgrad.frameworks.torch.optim import read_rule

    p = [torch.nn.Parameter(torch.zeros(2))]
    rule, _ = read_rule(torch.optim.Adam(p, weight_decay=0.1))
    assert (rule.eps, rule.epsilon_hat, rule.decoupled) == (1e-8, False, False)
    rule, _ = read_rule(torch.optim.RMSprop(p))
    assert (rule.decay, rule.eps_in_sqrt, rule.learning_rate) == (0.99, False, 0.01)
    q = [torch.nn.Parameter(torch.zeros(2))]
    rule, note = read_rule(torch.optim.SGD([{"params": p, "lr": 0.1}, {"params": q}], lr=0.2))
    assert rule is None and "parameter groups" in note


def _doc_defaults():
    """``(framework, optimizer, setting, value, source)`` rows of docs/training.md's table."""
    rows = re.findall(
        r"^\| (keras|optax|torch) \| `(\w+)` \| `(\w+)` \| `([^`]+)` \| `([^`]+)` \|$",
        DOCS.read_text(),
        re.M,
    )
    assert len(rows) > 20
    return rows


def _signature(framework, name):
    if framework == "keras":
        import keras

        return inspect.signature(getattr(keras.optimizers, name))
    if framework == "optax":
        import optax

        return inspect.signature(getattr(optax, name))
    import torch

    return inspect.signature(getattr(torch.optim, name).__init__)


@pytest.mark.skipif(
    not {"tensorflow", "jax", "torch"} <= INSTALLED, reason="needs keras, optax and torch"
)
def test_the_defaults_in_docs_are_the_installed_ones():
    import importlib

    for framework, name, setting, value, source in _doc_defaults():
        param = _signature(framework, name).parameters[setting]
        assert param.default == ast.literal_eval(value), (framework, name, setting)
        package = {"keras": "keras", "optax": "optax", "torch": "torch"}[framework]
        root = Path(importlib.import_module(package).__file__).parent
        text = (root / source.split("/", 1)[1]).read_text()
        assert f"def {name}" in text or f"class {name}" in text, (framework, name, source)


# -- the user's objects and global state ---------------------------------------------------


@needs["keras"]
def test_a_keras_optimizer_is_copied_never_built_or_stepped():
    import keras

    params, grads = _params_and_grads(3)
    used = keras.optimizers.Adam()
    var = keras.Variable(np.ones(2))
    used.apply_gradients([(np.ones(2), var)])  # the user trained with it already
    before = [np.array(v.numpy()) for v in used.variables]
    run = as_optimizer(used, "reference").start(params, "float64")
    for g in grads:
        run.step(g)
    assert int(used.iterations) == 1
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(before, used.variables, strict=True))
    fresh = keras.optimizers.SGD()
    as_optimizer(fresh, "reference").start(params, "float32").step(grads[0])
    assert not fresh.built


@needs["optax"]
@needs["torch"]
def test_global_state_is_left_as_it_was():
    import jax
    import optax
    import torch

    params, grads = _params_and_grads(2)
    for opt in ((optax.adam(1e-3), Adam(1e-3)), lambda p: torch.optim.SGD(p, lr=0.1)):
        run = as_optimizer(opt, "candidate").start(params, "float64")
        out = run.step(grads[0])
        assert all(v.dtype == np.float64 for v in out.values())
    assert not jax.config.jax_enable_x64
    assert torch.get_default_dtype() == torch.float32
    assert torch.is_grad_enabled()


# -- what is accepted -------------------------------------------------------------------------


def test_a_rule_alone_is_xgrads_numpy_optimizer():
    params, grads = _params_and_grads(3)
    run = as_optimizer(Adam(1e-3), "reference").start(params, "float32")
    assert run.step(grads[0])["layers.0.bias"].dtype == np.float32


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (42, "the reference optimizer must be a keras.optimizers.Optimizer, an optax"),
        ((1, 2), "the reference optimizer must be"),
    ],
)
def test_what_is_not_an_optimizer(obj, message):
    with pytest.raises(InputError, match=re.escape(message)):
        as_optimizer(obj, "reference")


def _claimed():
    """(optimizer object, the framework that should claim it) for what is installed."""
    out = [(Adam(1e-3), "numpy"), (42, None), ((1, 2), None), (lambda p: p, "torch")]
    if "jax" in INSTALLED:
        import optax

        tx = optax.adam(1e-3)
        out += [(tx, "jax"), ((tx, Adam(1e-3)), "jax"), (optax.adam, "jax")]
    if "tensorflow" in INSTALLED:
        import keras

        out += [(keras.optimizers.Adam(), "tensorflow"), (keras.optimizers.Adam, "tensorflow")]
    if "torch" in INSTALLED:
        import torch

        built = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        out += [(torch.optim.SGD, "torch"), (built, "torch")]
    return out


def test_each_optimizer_is_claimed_by_one_framework_at_most():
    from xgrad.frameworks.registry import REGISTRY, lookup_framework

    for obj, expected in _claimed():
        claims = [n for n in REGISTRY if lookup_framework(n).claims_optimizer(obj)]
        assert claims == ([expected] if expected else []), (obj, claims)


def test_claiming_an_optimizer_imports_no_framework():
    import subprocess
    import sys

    code = (
        "import sys, xgrad\n"
        "from xgrad.frameworks.registry import REGISTRY, lookup_framework\n"
        "for name in REGISTRY:\n"
        "    for obj in (xgrad.training.Adam(1e-3), lambda p: p, 42, (1, 2)):\n"
        "        lookup_framework(name).claims_optimizer(obj)\n"
        "heavy = ('tensorflow', 'keras', 'jax', 'flax', 'torch', 'optax')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_a_text_spec_is_realised_by_each_frameworks_own_optimizer():
    spec = OptimizerSpec.parse("adam:lr=0.01")
    assert optimizer_for("numpy", spec) == Adam(0.01)


@needs["optax"]
def test_an_optax_pair_names_its_rule_with_an_xgrad_rule():
    import optax

    with pytest.raises(InputError, match=re.escape("the second item names the rule")):
        as_optimizer((optax.adam(1e-3), {"eps": 1e-8}), "candidate")
    run = as_optimizer(optax.adam(1e-3), "reference").start({"w": np.zeros(2)}, "float32")
    assert run.rule is None and "does not expose its hyperparameters" in run.rule_note


@needs["torch"]
def test_a_built_torch_optimizer_asks_for_a_factory():
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(InputError, match=re.escape("pass a factory instead, e.g. lambda params")):
        as_optimizer(opt, "candidate")


# -- optimizers named in text (the command line) -----------------------------------------


def test_optimizer_specs_parse():
    spec = OptimizerSpec.parse("adam:lr=1e-3,eps=1e-7,amsgrad=true")
    assert spec == OptimizerSpec("adam", {"learning_rate": 1e-3, "eps": 1e-7, "amsgrad": True})
    assert OptimizerSpec.parse("sgd").options == {}
    for bad, message in [
        ("adagrad", "unknown optimizer 'adagrad'"),
        ("adam:lr", "write KEY=VALUE"),
        ("adam:lr=fast", "lr='fast'"),
        ("adam:amsgrad=maybe", "use true or false"),
    ]:
        with pytest.raises(InputError, match=re.escape(message)):
            OptimizerSpec.parse(bad)


@pytest.mark.skipif(
    not {"tensorflow", "jax", "torch"} <= INSTALLED, reason="needs keras, optax and torch"
)
def test_a_spec_takes_each_frameworks_defaults():
    spec = OptimizerSpec.parse("adam:lr=0.01")
    params = {"w": np.zeros(2)}
    rules = {
        fw: as_optimizer(optimizer_for(fw, spec), "r").start(params, "float64").rule
        for fw in ("tensorflow", "jax", "torch", "numpy")
    }
    assert {fw: r.eps for fw, r in rules.items()} == {
        "tensorflow": 1e-7,
        "jax": 1e-8,
        "torch": 1e-8,
        "numpy": 1e-8,
    }
    assert all(r.learning_rate == 0.01 for r in rules.values())
    with pytest.raises(InputError, match=re.escape("torch.optim.Adam has no option eps_root")):
        optimizer_for("torch", OptimizerSpec.parse("adam:eps_root=1e-8"))
    with pytest.raises(InputError, match=re.escape("keras.optimizers.SGD has no option dampening")):
        optimizer_for("tensorflow", OptimizerSpec.parse("sgd:dampening=0.5"))
