"""Jobs for the worker pool's tests (``tests/test_workers.py``). Importable by name
(``_jobs``) from worker processes, which start with the test process's ``sys.path``."""

from __future__ import annotations

import os
import signal
import time

from xgrad.workers import AbstractJob


class Echo(AbstractJob):
    """An item ``(what, value)``: ``("echo", v)`` returns ``(v, pid)``; ``("sleep", s)``
    sleeps ``s`` seconds in one native call; ``("raise", text)`` raises ``ValueError(text)``;
    ``("die", _)`` kills its own process; ``("set", v)`` / ``("get", _)`` keep a value in
    the worker process and read it back."""

    kept = None

    def run(self, item):
        what, value = item
        if what == "sleep":
            time.sleep(value)
        elif what == "raise":
            raise ValueError(value)
        elif what == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        elif what == "set":
            Echo.kept = value
        elif what == "get":
            value = Echo.kept
        return value, os.getpid()


class SetUp(AbstractJob):
    """Counts its setups in the worker process; each item returns the count."""

    setups = 0

    def setup(self) -> None:
        SetUp.setups += 1

    def run(self, item):
        return SetUp.setups


class BadSetup(AbstractJob):
    """Its setup raises."""

    def setup(self) -> None:
        raise RuntimeError("no setup here")

    def run(self, item):
        return item
