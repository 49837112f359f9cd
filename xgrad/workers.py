"""A pool of local worker processes that run picklable tasks and can be stopped at any moment.

A worker is a fresh interpreter (never a fork) that this process starts and talks to over a
socket pair. What it runs is a :class:`AbstractJob`: sent to the worker once (pickled), set up
there once (imports, warm-up: no clock runs), then called on one item at a time. A task is one
item; its clock starts when it is sent to its worker. A task past its time limit is stopped by
killing its worker process, never by raising inside it (that can leave an import or a
library's state half done, and cannot stop a native call at all); a replacement worker runs
what came after it. A worker that dies (a segmentation fault, the out-of-memory killer) loses
only the task it was running.

:class:`WorkerPool` owns the workers. Between runs it keeps the ones that are idle, so the next
run skips their start-up and setup; an idle worker exits by itself after ``idle_s`` seconds
(or when this process ends), and :meth:`WorkerPool.close` stops the idle ones at once.

Example:
    >>> from xgrad.workers import WorkerPool
    >>> with WorkerPool() as pool:  # doctest: +SKIP
    ...     outcomes = pool.run(job, [[1, 2], [3]], size=2, timeout=10.0)
"""

from __future__ import annotations

import abc
import contextlib
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as connection_wait
from typing import Any

from xgrad.errors import InputError

__all__ = ["OUTCOMES", "AbstractJob", "Outcome", "WorkerPool", "describe_error"]

OUTCOMES = ("done", "raised", "timeout", "lost", "unstarted")
"""What can come of a task: it returned (``done``) or raised (``raised``); it ran past its time
limit and its worker was killed (``timeout``); its worker died while running it (``lost``); or
no worker process could be started to run it (``unstarted``)."""

_WORKER_CODE = (
    "import json, sys\n"
    "sys.path[:] = json.loads(sys.argv[2])\n"
    "from xgrad.workers import serve\n"
    "serve(int(sys.argv[1]), float(sys.argv[3]))\n"
)


def describe_error(exc: BaseException) -> dict:
    """An exception as plain data, the same on every machine: ``{"type", "message",
    "where"}``, with ``where`` the innermost frame as ``module:function:line``."""
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        where = f"{frame.f_globals.get('__name__', '?')}:{frame.f_code.co_name}:{tb.tb_lineno}"
        tb = tb.tb_next
    return {"type": type(exc).__name__, "message": " ".join(str(exc).split()), "where": where}


class AbstractJob(abc.ABC):
    """What the workers of a :class:`WorkerPool` run.

    A job is pickled once per run and sent to each worker, so it must pickle by reference:
    its class importable by name in a fresh interpreter (which starts with this process's
    ``sys.path``). A worker that already holds a job of the same pickled bytes skips loading
    and setting it up again.
    """

    def setup(self) -> None:  # noqa: B027 (a job needs no setup unless it says so)
        """Prepare the worker process before its first task (imports, warm-up); no task's
        clock runs meanwhile. If it raises, every task of this job in that worker is
        ``raised`` with its error."""

    @abc.abstractmethod
    def run(self, item: Any) -> Any:
        """One task: its result (which must pickle), or an exception (``raised``)."""


@dataclass(frozen=True)
class Outcome:
    """What came of one task.

    Attributes:
        item: the task's item, as given to :meth:`WorkerPool.run`.
        status: one of :data:`OUTCOMES`.
        value: what :meth:`AbstractJob.run` returned (``done``), else ``None``.
        error: :func:`describe_error` of what it raised (``raised``), else ``None``.
        reason: how its worker ended (``lost``: ``killed by SIGKILL``, ...) or why none
            started (``unstarted``), else ``""``.
    """

    item: Any
    status: str
    value: Any = None
    error: dict | None = None
    reason: str = ""


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "its connection broke"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class _WorkerGone(Exception):
    """The worker process ended, or its connection broke."""


class _Worker:
    """One worker process and this process's end of its connection."""

    def __init__(self, idle_s: float, env: Mapping[str, str]):
        ours, theirs = socket.socketpair()
        argv = [str(theirs.fileno()), json.dumps(sys.path), str(idle_s)]
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_CODE, *argv],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env={**env, **os.environ},
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())

    def send(self, message) -> None:
        try:
            self.conn.send(message)
        except OSError:
            raise _WorkerGone from None

    def recv(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            raise _WorkerGone from None

    def alive(self) -> bool:
        return self.process.poll() is None and not self.conn.closed

    def reason(self) -> str:
        """Why the process ended, once it has."""
        try:
            code = self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        return _exit_reason(code)

    def stop(self) -> None:
        """Kill the process (at once: it holds nothing its starter needs) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if not self.conn.closed:
            self.conn.close()


class WorkerPool:
    """Local worker processes that run the tasks of :meth:`run`, kept between runs.

    The pool is an object, not a module's state, so that its owner says how long its workers
    live: as a context manager its idle workers are stopped on exit. An owner that cannot
    hold it across calls (the tasks an executor gives one process share nothing but that
    process) may keep one pool for the life of the process; its idle workers then exit by
    themselves after ``idle_s`` seconds unused, or when the process ends. A pool is safe to
    use from several threads at once: each :meth:`run` takes its own workers.

    Args:
        idle_s: seconds an idle worker waits for work before it exits by itself; ``0``
            waits until the pool stops it (or this process ends).
        env: environment variables for the workers, as defaults (a variable already set in
            this process's environment wins).
    """

    def __init__(self, *, idle_s: float = 0.0, env: Mapping[str, str] | None = None):
        self.idle_s = float(idle_s)
        self.env = dict(env or {})
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def run(
        self,
        job: AbstractJob,
        groups: Iterable[Sequence[Any]],
        *,
        size: int = 1,
        timeout: float | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Run ``job`` on every item of ``groups``, on at most ``size`` workers.

        The items of one group go to one worker, in order (what it built for the first it
        keeps for the next), unless their worker is killed or dies: the rest of the group
        then goes to a fresh worker. A worker that could not start is not replaced; with none
        left, the items not run are ``unstarted``.

        Args:
            job: what the workers run; it must pickle (see :class:`AbstractJob`).
            groups: the items, in groups that stay together.
            size: the most workers running at once.
            timeout: seconds a task may take from the moment it is sent to its worker
                (which has set up the job by then) until its result is back; ``None``: no
                limit.
            on_outcome: called here with each outcome as it comes (in no fixed order).

        Returns:
            One :class:`Outcome` per item, in the order of ``groups``.

        Raises:
            InputError: ``size`` or ``timeout`` out of range.
            BaseException: whatever ``on_outcome`` raises, or ``KeyboardInterrupt``, once
                every worker of this run is stopped.
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise InputError(f"size must be a positive integer, got {size!r}")
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        return _Run(self, job, groups, size, timeout, on_outcome).go()

    def close(self) -> None:
        """Stop the idle workers. The pool can still run: it starts new workers."""
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.stop()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _take(self) -> tuple[_Worker, bool]:
        """An idle worker still alive, or a new one; and whether it is new."""
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker, False
                worker.stop()
        return _Worker(self.idle_s, self.env), True

    def _keep(self, worker: _Worker) -> None:
        with self._lock:
            self._idle.append(worker)


class _Slot:
    """A worker of one run and the rest of the group it runs (its first task running)."""

    def __init__(self, worker: _Worker, fresh: bool):
        self.worker, self.fresh = worker, fresh
        self.ready = False  # it has loaded and set up the job
        self.tasks: deque[tuple[int, Any]] = deque()  # (index in the run, item)
        self.deadline: float | None = None


class _Run:
    """One :meth:`WorkerPool.run`: its queue of groups, its workers, and the outcomes."""

    def __init__(self, pool, job, groups, size, timeout, on_outcome):
        self.pool, self.size, self.timeout, self.on_outcome = pool, size, timeout, on_outcome
        self.message = ("job", pickle.dumps(job))
        self.queue: deque[deque[tuple[int, Any]]] = deque()
        self.outcomes: list[Outcome | None] = []
        for group in groups:
            tasks = deque()
            for item in group:
                tasks.append((len(self.outcomes), item))
                self.outcomes.append(None)
            if tasks:
                self.queue.append(tasks)
        self.slots: list[_Slot] = []
        self.why_none = ""  # why no worker could start, once none could

    def go(self) -> list[Outcome]:
        try:
            while self.queue or any(s.tasks for s in self.slots):
                self._launch()
                if not self.slots:
                    self._give_up()
                    break
                self._assign()
                self._read(self._wait())
                self._expire()
        except BaseException:
            for slot in self.slots:
                slot.worker.stop()
            raise
        for slot in self.slots:
            if slot.ready and slot.worker.alive():
                self.pool._keep(slot.worker)
            else:
                slot.worker.stop()
        return self.outcomes

    def _report(self, index: int, outcome: Outcome) -> None:
        self.outcomes[index] = outcome
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    # -- workers -------------------------------------------------------------------------------

    def _launch(self) -> None:
        """Start (or take from the pool) as many workers as there is work for."""
        busy = sum(bool(s.tasks) for s in self.slots)
        while len(self.slots) < min(self.size, busy + len(self.queue)):
            slot = _Slot(*self.pool._take())
            self.slots.append(slot)
            with contextlib.suppress(_WorkerGone):  # found out when it is waited on
                slot.worker.send(self.message)

    def _drop(self, slot: _Slot) -> None:
        """Stop ``slot``'s worker; the tasks after its running one go back to the queue,
        first in line."""
        self.slots.remove(slot)
        slot.worker.stop()
        if len(slot.tasks) > 1:
            slot.tasks.popleft()
            self.queue.appendleft(slot.tasks)

    def _gone(self, slot: _Slot) -> None:
        """``slot``'s worker ended: its running task is lost, the rest go to another."""
        reason = slot.worker.reason()
        if not slot.ready and slot.fresh:  # it could not start: not replaced
            self.size -= 1
            self.why_none = f"no worker process could start (the last {reason})"
        if slot.tasks:
            index, item = slot.tasks[0]
            self._report(index, Outcome(item, "lost", reason=reason))
        self._drop(slot)

    def _give_up(self) -> None:
        """No worker could start: every task left is ``unstarted``."""
        for tasks in self.queue:
            for index, item in tasks:
                self._report(index, Outcome(item, "unstarted", reason=self.why_none))
        self.queue.clear()

    # -- tasks ---------------------------------------------------------------------------------

    def _assign(self) -> None:
        """Give a group to every ready worker without one."""
        for slot in list(self.slots):
            if slot.ready and not slot.tasks and self.queue:
                slot.tasks = self.queue.popleft()
                self._start(slot)

    def _start(self, slot: _Slot) -> None:
        """Send ``slot``'s next task and start its clock."""
        try:
            slot.worker.send(("task", slot.tasks[0][1]))
        except _WorkerGone:
            self._gone(slot)
            return
        slot.deadline = None if self.timeout is None else time.monotonic() + self.timeout

    def _wait(self) -> list:
        """The connections that have something to read, waiting until the next deadline."""
        deadlines = [s.deadline for s in self.slots if s.tasks and s.deadline is not None]
        wait_s = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        return connection_wait([s.worker.conn for s in self.slots], wait_s)

    def _read(self, readable: list) -> None:
        """Take each reply: a worker ready, or a task's result (then send it the next)."""
        for slot in [s for s in self.slots if s.worker.conn in readable]:
            try:
                reply = slot.worker.recv()
            except _WorkerGone:
                self._gone(slot)
                continue
            if reply[0] == "ready":
                slot.ready = True
                continue
            index, item = slot.tasks.popleft()
            slot.deadline = None
            if reply[0] == "done":
                self._report(index, Outcome(item, "done", value=reply[1]))
            else:
                self._report(index, Outcome(item, "raised", error=reply[1]))
            if slot.tasks:
                self._start(slot)

    def _expire(self) -> None:
        """Kill the workers whose task ran past its deadline; their tasks ``timeout``."""
        now = time.monotonic()
        for slot in list(self.slots):
            if slot.tasks and slot.deadline is not None and now >= slot.deadline:
                index, item = slot.tasks[0]
                self._report(index, Outcome(item, "timeout"))
                self._drop(slot)  # killed: a new worker runs the rest


# -- in the worker process ----------------------------------------------------------------------


class _Served:
    """A worker process's job: the pickled bytes it was loaded from, or why it failed."""

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.job: AbstractJob | None = None
        self.failure: dict | None = None

    def load(self, data: bytes) -> None:
        if data == self.data:
            return  # the same job as the last run's: already set up
        self.data, self.job, self.failure = data, None, None
        try:
            self.job = pickle.loads(data)
            self.job.setup()
        except Exception as exc:  # e.g. a class not importable here
            self.failure = describe_error(exc)

    def answer(self, item) -> bytes:
        """The pickled reply to one task."""
        if self.failure is not None:
            return pickle.dumps(("raised", self.failure))
        try:
            return pickle.dumps(("done", self.job.run(item)))
        except Exception as exc:  # raised by the task, or its result does not pickle
            return pickle.dumps(("raised", describe_error(exc)))


def serve(fd: int, idle_s: float) -> None:
    """A worker process's loop: ``("job", bytes)`` -> ``("ready",)``, then ``("task", item)``
    -> ``("done", value)`` or ``("raised", error)``, until the connection closes (or, with
    ``idle_s``, nothing comes for that long)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the starting process's to handle
    conn = Connection(fd)
    served = _Served()
    with contextlib.suppress(EOFError, OSError):  # the process that started this one has gone
        while idle_s <= 0 or conn.poll(idle_s):
            message = conn.recv()
            if message[0] == "job":
                served.load(message[1])
                conn.send(("ready",))
            else:
                conn.send_bytes(served.answer(message[1]))
