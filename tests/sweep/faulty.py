"""Frameworks with a planted fault, for the sweep tests: NumPy, except in the cells whose
first activation is ``tanh``. Importable by name (``sweep.faulty``) from worker processes,
which start with the test process's ``sys.path``."""

from __future__ import annotations

import time

from xgrad.frameworks.numpy import NumpyFramework

PLANTED = "tanh"  # the activation of the cells that fail


def _planted(spec) -> bool:
    return spec.layers[0].activation == PLANTED


class CrashingNumpy(NumpyFramework):
    """Raises while building a ``tanh`` cell's model."""

    name = "crashing"

    def _build(self, spec, params, dtype):
        if _planted(spec):
            raise RuntimeError(f"planted crash in a {PLANTED} cell")
        return super()._build(spec, params, dtype)


class SlowNumpy(NumpyFramework):
    """Takes a minute (in short Python steps) to build a ``tanh`` cell's model."""

    name = "slow"

    def _build(self, spec, params, dtype):
        if _planted(spec):
            end = time.monotonic() + 60.0
            while time.monotonic() < end:
                time.sleep(0.01)
        return super()._build(spec, params, dtype)


class StuckNumpy(NumpyFramework):
    """Sleeps a minute in one native call (no Python instruction runs) in a ``tanh`` cell:
    only killing its process can stop it."""

    name = "stuck"

    def _build(self, spec, params, dtype):
        if _planted(spec):
            time.sleep(60.0)
        return super()._build(spec, params, dtype)


class DyingNumpy(NumpyFramework):
    """Kills its own process (as a segmentation fault would) in a ``tanh`` cell."""

    name = "dying"

    def _build(self, spec, params, dtype):
        if _planted(spec):
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return super()._build(spec, params, dtype)
