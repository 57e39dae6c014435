"""Soft and hard limits and the invocation deadline, raised inside the running code."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from infra.consumer.timelimits import DeadlineReached, HardTimeLimitReached, time_limits


def busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_soft_limit_raises_inside_and_can_be_handled() -> None:
    handled = False
    with time_limits(soft=0.05, hard=2):
        try:
            busy(1)
        except SoftTimeLimitExceeded:
            handled = True
    assert handled


def test_hard_limit_follows_a_swallowed_soft_limit() -> None:
    with pytest.raises(HardTimeLimitReached), time_limits(soft=0.05, hard=0.15):
        try:
            busy(1)
        except SoftTimeLimitExceeded:
            busy(1)


def test_sleeping_code_is_interrupted_too() -> None:
    started = time.monotonic()
    with pytest.raises(HardTimeLimitReached), time_limits(soft=None, hard=0.1):
        time.sleep(5)
    assert time.monotonic() - started < 2


def test_hard_limit_cannot_be_swallowed_by_except_exception() -> None:
    with pytest.raises(HardTimeLimitReached), time_limits(soft=None, hard=0.05):
        with contextlib.suppress(Exception):  # a task's broad handler must not survive it
            busy(1)
        busy(1)


def test_deadline_before_the_hard_limit_is_a_deadline_not_a_failure() -> None:
    with pytest.raises(DeadlineReached), time_limits(soft=None, hard=5, deadline=0.1):
        busy(1)
    assert not issubclass(DeadlineReached, Exception)  # passes through Celery's tracer


def test_timer_is_cleared_after_the_block() -> None:
    with time_limits(soft=0.2, hard=0.3):
        pass
    busy(0.4)  # would raise if a timer were left armed


def test_no_limits_outside_the_main_thread() -> None:
    outcome: list[str] = []

    def work() -> None:
        with time_limits(soft=None, hard=0.01):
            time.sleep(0.1)
        outcome.append("finished")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert outcome == ["finished"]
