"""``TaskMetrics``: per-task metrics kept by (task name, queue), written as few EMF lines."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from infra.core.observability import (
    MAX_VALUES,
    METRIC_DURATION,
    METRIC_PAYLOAD_SIZE,
    METRIC_RECEIVED,
    MetricUnit,
    TaskMetrics,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _written(metrics: TaskMetrics, max_age: float | None = None) -> list[dict[str, Any]]:
    lines: list[str] = []
    if max_age is None:
        metrics.flush(lines.append)
    else:
        metrics.flush_due(lines.append, max_age)
    return [json.loads(line) for line in lines]


def _received(metrics: TaskMetrics, count: int, task: str = "t.a", queue: str = "q") -> None:
    for _ in range(count):
        metrics.add(task, queue, METRIC_RECEIVED, MetricUnit.Count, 1)


def _durations(metrics: TaskMetrics, count: int, task: str = "t.a", queue: str = "q") -> None:
    for i in range(count):
        metrics.add(task, queue, METRIC_DURATION, MetricUnit.Milliseconds, i)


def test_one_line_per_task_and_queue_with_its_values_in_order() -> None:
    metrics = TaskMetrics()
    metrics.add("t.a", "q", METRIC_RECEIVED, MetricUnit.Count, 1)
    metrics.add("t.a", "q", METRIC_DURATION, MetricUnit.Milliseconds, 2.5)
    metrics.add("t.b", None, METRIC_RECEIVED, MetricUnit.Count, 1)
    metrics.add("t.a", "q", METRIC_DURATION, MetricUnit.Milliseconds, 1.5)

    a, b = _written(metrics)

    assert (a["task_name"], a["queue"], b["task_name"], b["queue"]) == (
        "t.a",
        "q",
        "t.b",
        "unknown",
    )
    assert a[METRIC_RECEIVED] == 1 and a[METRIC_DURATION] == [2.5, 1.5]
    assert a["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": METRIC_RECEIVED, "Unit": "Count"},
        {"Name": METRIC_DURATION, "Unit": "Milliseconds"},
    ]
    assert _written(metrics) == []


def test_over_max_values_a_pair_takes_more_lines_and_powertools_prints_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    metrics = TaskMetrics()
    _durations(metrics, MAX_VALUES + 51)
    _received(metrics, 3)

    first, second = _written(metrics)

    assert len(first[METRIC_DURATION]) == MAX_VALUES and first[METRIC_RECEIVED] == 3
    assert len(second[METRIC_DURATION]) == 51 and METRIC_RECEIVED not in second
    assert capsys.readouterr().out == ""


def test_due_when_a_metric_holds_max_values() -> None:
    metrics = TaskMetrics(Clock())
    _durations(metrics, MAX_VALUES - 1)
    _durations(metrics, MAX_VALUES - 1, task="t.b")
    _received(metrics, 10 * MAX_VALUES)  # one running sum: never makes a line due
    assert _written(metrics, max_age=60) == []

    _durations(metrics, 1)

    assert [len(line[METRIC_DURATION]) for line in _written(metrics, max_age=60)] == [
        MAX_VALUES,
        MAX_VALUES - 1,
    ]
    assert _written(metrics, max_age=60) == []


def test_due_when_the_oldest_value_is_max_age_old() -> None:
    clock = Clock()
    metrics = TaskMetrics(clock)
    assert _written(metrics, max_age=1) == []
    _received(metrics, 1)
    clock.now += 0.9
    _received(metrics, 1)
    assert _written(metrics, max_age=1) == []

    clock.now += 0.1

    [line] = _written(metrics, max_age=1)
    assert line[METRIC_RECEIVED] == 2
    clock.now += 5
    assert _written(metrics, max_age=1) == []  # nothing held: nothing is old


def test_threads_adding_and_flushing_together_lose_and_repeat_no_value() -> None:
    metrics = TaskMetrics()
    lines: list[str] = []

    def work() -> None:
        for _ in range(2_000):
            metrics.add("t.a", "q", METRIC_RECEIVED, MetricUnit.Count, 1)
            metrics.flush_due(lines.append, 0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    metrics.flush(lines.append)

    values = [json.loads(line)[METRIC_RECEIVED] for line in lines]
    assert sum(values) == 16_000  # each line one running sum (a number, not a list)


def test_counts_are_one_sum_and_times_and_sizes_are_short() -> None:
    """Log bytes are billed per task: ten tasks of a batch write one count, not ten 1.0s; a
    time is 0.1 ms under 100 ms and whole ms above; a single value is a number, not a list."""
    metrics = TaskMetrics()
    _received(metrics, 10)
    metrics.add("t.a", "q", METRIC_DURATION, MetricUnit.Milliseconds, 19.575787999997374)
    metrics.add("t.a", "q", METRIC_DURATION, MetricUnit.Milliseconds, 148.43)
    metrics.add("t.a", "q", METRIC_DURATION, MetricUnit.Milliseconds, 3.0)
    metrics.add("t.a", "q", METRIC_PAYLOAD_SIZE, MetricUnit.Bytes, 1372.0)
    lines: list[str] = []

    metrics.flush(lines.append)

    [raw] = lines
    assert f'"{METRIC_RECEIVED}":10,' in raw
    assert f'"{METRIC_DURATION}":[19.6,148,3]' in raw
    assert f'"{METRIC_PAYLOAD_SIZE}":1372' in raw
