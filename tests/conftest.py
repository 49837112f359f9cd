"""Shared fixtures: which frameworks are installed, and small helpers."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any framework is imported
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # Hugging Face models are built from configs only

import numpy as np
import pytest

import xgrad

FRAMEWORKS = xgrad.known_frameworks()
INSTALLED = set(xgrad.available_frameworks())


def framework_param(name: str):
    """A pytest param for a framework, skipped with a reason when it is not installed."""
    return pytest.param(
        name,
        id=name,
        marks=pytest.mark.skipif(name not in INSTALLED, reason=f"{name} is not installed"),
    )


ALL_FRAMEWORKS = [framework_param(name) for name in FRAMEWORKS]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_norm(a, b) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / den) if den else float(np.linalg.norm(a - b))
