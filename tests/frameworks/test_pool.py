"""Pooled builds (xgrad.frameworks.pool): a kit has one owner at a time, goes back when its
owner is collected, never once handed to the user, and a reused build holds exactly the new
weights."""

from __future__ import annotations

import gc

import numpy as np
import pytest
from conftest import INSTALLED

import xgrad
from xgrad.frameworks.pool import BuildPool


class _Owner:
    pass


def test_a_kit_goes_back_when_its_owner_is_collected():
    pool = BuildPool()
    owner = _Owner()
    pool.lend(owner, "k", kit := object(), 10)
    assert pool.take("k") is None  # lent, not idle
    del owner
    gc.collect()
    assert len(pool) == 1 and pool.take("k") is kit and pool.take("k") is None
    assert (pool.hits, pool.misses) == (1, 2)


def test_an_escaped_kit_never_goes_back():
    pool = BuildPool()
    owner = _Owner()
    pool.lend(owner, "k", object()).escape()
    del owner
    gc.collect()
    assert len(pool) == 0


def test_the_pool_keeps_its_bounds_dropping_the_oldest_first():
    pool = BuildPool(max_idle=2, max_bytes=100)
    kits = [object() for _ in range(4)]
    for i, kit in enumerate(kits[:3]):
        owner = _Owner()
        pool.lend(owner, f"k{i}", kit, 10)
        del owner
        gc.collect()
    assert len(pool) == 2 and pool.take("k0") is None and pool.take("k2") is kits[2]
    owner = _Owner()
    pool.lend(owner, "big", kits[3], 101)  # larger than the whole pool: not kept
    del owner
    gc.collect()
    assert pool.take("big") is None
    pool.clear()
    assert len(pool) == 0


SPEC = xgrad.MLP(
    5,
    [
        xgrad.Dense(6, "tanh"),
        xgrad.BatchNorm(training=True),
        xgrad.Residual([xgrad.Dense(6, "relu")]),
        xgrad.Dense(2),
    ],
)


def _builder_pool(name):
    if name == "torch":
        from xgrad.frameworks.torch.builder import POOL
    else:
        from xgrad.frameworks.tensorflow.builder import POOL
    return POOL


@pytest.mark.parametrize("name", [n for n in ("torch", "tensorflow") if n in INSTALLED])
def test_a_reused_build_holds_the_new_weights_and_state(name):
    fw = xgrad.get_framework(name)
    pool = _builder_pool(name)
    pool.clear()
    x = np.random.default_rng(0).standard_normal((4, 5))
    first = fw.build(SPEC, xgrad.init_params(SPEC, seed=1), dtype="float64")
    first.evaluate(x, loss="sum")  # a training-mode batch norm moves its statistics
    del first
    gc.collect()
    assert len(pool) == 1
    weights = xgrad.init_params(SPEC, seed=2)
    hits = pool.hits
    reused = fw.build(SPEC, weights, dtype="float64")
    assert pool.hits == hits + 1
    got = reused.evaluate(x, loss="sum")
    # gradients: the float64 NumPy referee built from the same weights
    want = xgrad.get_framework("numpy").build(SPEC, weights, dtype="float64")
    want = want.evaluate(x, loss="sum")
    for key, value in want.params.items():
        np.testing.assert_allclose(got.params[key], value, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.input, want.input, rtol=1e-10, atol=1e-12)
    # the updated statistics in the framework's own convention (torch's running variance is
    # unbiased): a fresh build of the same weights, made while the reused one is alive
    fresh = fw.build(SPEC, weights, dtype="float64").evaluate(x, loss="sum")
    assert fresh.state.keys() == got.state.keys() == want.state.keys()
    for key, value in fresh.state.items():
        np.testing.assert_array_equal(got.state[key], value)


@pytest.mark.parametrize("name", [n for n in ("torch", "tensorflow") if n in INSTALLED])
def test_live_models_never_share_and_a_handed_out_module_is_never_reused(name):
    fw = xgrad.get_framework(name)
    pool = _builder_pool(name)
    pool.clear()
    a = fw.build(SPEC, xgrad.init_params(SPEC, seed=1), dtype="float32")
    b = fw.build(SPEC, xgrad.init_params(SPEC, seed=2), dtype="float32")
    assert a.native is not b.native  # native escapes both
    del a, b
    gc.collect()
    assert len(pool) == 0
