"""The worker pool on its own (no sweep): outcomes in order, a task past its limit killed with
its worker, a dying worker losing only its task, idle workers reused and expired."""

from __future__ import annotations

import re
import time

import pytest
from _jobs import BadSetup, Echo, SetUp

from xgrad.errors import InputError
from xgrad.workers import Outcome, WorkerPool


def _values(outcomes: list[Outcome]) -> list:
    return [o.value[0] if o.status == "done" else o.status for o in outcomes]


def test_outcomes_come_back_in_the_order_of_the_groups():
    groups = [[("echo", i) for i in range(4)], [("echo", 4), ("echo", 5)], [("echo", 6)]]
    seen: list[Outcome] = []
    with WorkerPool() as pool:
        outcomes = pool.run(Echo(), groups, size=2, on_outcome=seen.append)
    assert _values(outcomes) == list(range(7))
    assert [o.item for o in outcomes] == [item for group in groups for item in group]
    assert sorted(seen, key=lambda o: o.item[1]) == outcomes
    assert len({o.value[1] for o in outcomes[:4]}) == 1  # a group stays on one worker


def test_a_task_past_its_limit_is_killed_and_the_rest_of_its_group_runs_on_a_new_worker():
    group = [("echo", 1), ("sleep", 60.0), ("echo", 2)]
    start = time.monotonic()
    with WorkerPool() as pool:
        outcomes = pool.run(Echo(), [group], timeout=2.0)
    assert time.monotonic() - start < 30  # not the minute the task would have slept
    assert _values(outcomes) == [1, "timeout", 2]
    assert outcomes[0].value[1] != outcomes[2].value[1]  # the killed worker was replaced


def test_a_dying_worker_loses_only_its_running_task():
    groups = [[("echo", 1), ("die", 0), ("echo", 2)], [("echo", 3)]]
    with WorkerPool() as pool:
        outcomes = pool.run(Echo(), groups, size=2)
    assert _values(outcomes) == [1, "lost", 2, 3]
    assert outcomes[1].reason == "killed by SIGKILL"


def test_a_task_that_raises_is_recorded_and_its_worker_goes_on():
    with WorkerPool() as pool:
        outcomes = pool.run(Echo(), [[("raise", "bad  input\nhere"), ("echo", 1)]])
    assert _values(outcomes) == ["raised", 1]
    error = outcomes[0].error
    assert (error["type"], error["message"]) == ("ValueError", "bad input here")
    assert re.fullmatch(r"_jobs:run:\d+", error["where"])


def test_idle_workers_are_reused_and_keep_their_setup_until_the_pool_closes():
    pool = WorkerPool()
    try:
        first = pool.run(Echo(), [[("set", "kept")]])
        again = pool.run(Echo(), [[("get", None)]])
        assert again[0].value == ("kept", first[0].value[1])  # the same process
        assert pool.run(SetUp(), [[0]])[0].value == 1
        assert pool.run(SetUp(), [[0]])[0].value == 1  # the same job: not set up again
    finally:
        pool.close()
    after = pool.run(Echo(), [[("get", None)]])
    pool.close()
    assert after[0].value[0] is None and after[0].value[1] != first[0].value[1]


def test_an_idle_worker_exits_after_idle_s():
    with WorkerPool(idle_s=0.5) as pool:
        first = pool.run(Echo(), [[("echo", 0)]])
        time.sleep(3.0)
        second = pool.run(Echo(), [[("echo", 0)]])
    assert first[0].value[1] != second[0].value[1]


def test_an_error_in_setup_is_every_task_s_error():
    with WorkerPool() as pool:
        outcomes = pool.run(BadSetup(), [[1, 2]])
    assert [o.status for o in outcomes] == ["raised", "raised"]
    assert outcomes[0].error["message"] == "no setup here"


def test_an_exception_here_stops_the_run_s_workers():
    def stop(outcome: Outcome) -> None:
        raise KeyboardInterrupt

    with WorkerPool() as pool:
        first = pool.run(Echo(), [[("echo", 0)]])
        with pytest.raises(KeyboardInterrupt):
            pool.run(Echo(), [[("echo", 1)]], on_outcome=stop)
        second = pool.run(Echo(), [[("echo", 2)]])
    assert first[0].value[1] != second[0].value[1]  # the interrupted run's worker was stopped


def test_tasks_are_unstarted_when_no_worker_can_start():
    with WorkerPool(env={"PYTHONHOME": "/nonexistent"}) as pool:
        outcomes = pool.run(Echo(), [[("echo", 0)], [("echo", 1)]], size=2)
    assert [o.status for o in outcomes] == ["unstarted", "unstarted"]
    assert outcomes[0].reason.startswith("no worker process could start (the last exited")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "size must be a positive integer, got 0"),
        ({"timeout": 0.0}, "timeout must be a positive number of seconds, got 0.0"),
        ({"timeout": float("inf")}, "got inf"),
    ],
)
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(InputError, match=re.escape(message)):
        WorkerPool().run(Echo(), [[("echo", 0)]], **kwargs)
