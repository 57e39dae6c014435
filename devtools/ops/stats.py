"""``lambda stats``: how many tasks ended in each state, per task, and how long they ran.

Counts come from the result store: one Query of the ``by-time`` index over the window (paged,
never a Scan), counted by ``status`` and by (``task_name``, ``queue``).

Durations do not: an item records when a task's state was last written (``timestamp``,
``date_done``) but not when it started -- the claim's write time is overwritten by the outcome's,
and Celery's meta has no start time. The consumers do measure every run and emit it as the
``TaskDuration`` metric (:mod:`infra.core.observability`, dimensions service, task name and queue),
so on AWS the p50/p95 of each (task, queue) over the window are read from CloudWatch
(GetMetricStatistics with ExtendedStatistics). An emulator has no such metrics (the EMF lines go
to the consumers' stdout, not to CloudWatch): there the durations are n/a.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from devtools.ops.target import translated
from devtools.ops.tasks import TaskQuery, TaskRow, query_pages, task_row
from infra.core.observability import (
    DIMENSION_QUEUE,
    DIMENSION_TASK,
    METRIC_DURATION,
    NAMESPACE,
    SERVICE,
)

__all__ = [
    "Stats",
    "TaskStats",
    "duration_request",
    "durations_from_cloudwatch",
    "percentiles",
    "store_rows",
    "summarize",
]

PAGE: Final = 1000
UNKNOWN: Final = "?"

Durations = Callable[[str, str], tuple[float, float] | None]
"""(task name, queue) → (p50, p95) in milliseconds over the window, None when unknown."""


@dataclass(frozen=True, slots=True)
class TaskStats:
    """One task on one queue over the window."""

    task_name: str
    queue: str
    states: Mapping[str, int]
    p50_ms: float | None = None
    p95_ms: float | None = None

    @property
    def total(self) -> int:
        return sum(self.states.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "task_name": self.task_name,
            "queue": self.queue,
            "states": dict(self.states),
            "total": self.total,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
        }


@dataclass(frozen=True, slots=True)
class Stats:
    since: float
    by_state: Mapping[str, int]
    tasks: tuple[TaskStats, ...]
    durations: str
    """Where the durations come from, or why there are none."""

    def as_json(self) -> dict[str, Any]:
        return {
            "since": datetime.fromtimestamp(self.since, UTC).isoformat(),
            "by_state": dict(self.by_state),
            "total": sum(self.by_state.values()),
            "tasks": [task.as_json() for task in self.tasks],
            "durations": self.durations,
        }


# ---------------------------------------------------------------- pure


def summarize(
    rows: Iterable[TaskRow], since: float, durations: Durations | None, source: str
) -> Stats:
    """Counts by state and by (task, queue), with the durations ``durations`` knows."""
    by_state: Counter[str] = Counter()
    by_task: dict[tuple[str, str], Counter[str]] = {}
    for row in rows:
        by_state[row.state] += 1
        key = (row.task_name or UNKNOWN, row.queue or UNKNOWN)
        by_task.setdefault(key, Counter())[row.state] += 1
    tasks = []
    for (name, queue), states in sorted(by_task.items()):
        found = durations(name, queue) if durations and UNKNOWN not in (name, queue) else None
        p50, p95 = found if found else (None, None)
        tasks.append(TaskStats(name, queue, dict(states), p50, p95))
    return Stats(since, dict(sorted(by_state.items())), tuple(tasks), source)


def duration_request(task_name: str, queue: str, start: datetime, end: datetime) -> dict[str, Any]:
    """GetMetricStatistics of ``TaskDuration``'s p50/p95 over one period covering the window."""
    seconds = max(60, math.ceil((end - start).total_seconds() / 60) * 60)
    return {
        "Namespace": NAMESPACE,
        "MetricName": METRIC_DURATION,
        "Dimensions": [
            {"Name": "service", "Value": SERVICE},
            {"Name": DIMENSION_TASK, "Value": task_name},
            {"Name": DIMENSION_QUEUE, "Value": queue},
        ],
        "StartTime": start,
        "EndTime": end,
        "Period": seconds,
        "ExtendedStatistics": ["p50", "p95"],
    }


def percentiles(response: Mapping[str, Any]) -> tuple[float, float] | None:
    """(p50, p95) of the newest datapoint (percentiles of two periods cannot be merged)."""
    points = sorted(response.get("Datapoints", []), key=lambda p: p["Timestamp"])
    if not points:
        return None
    values = points[-1].get("ExtendedStatistics", {})
    if "p50" not in values or "p95" not in values:
        return None
    return float(values["p50"]), float(values["p95"])


# ---------------------------------------------------------------- AWS


def store_rows(dynamodb: Any, table: str, since: float) -> list[TaskRow]:
    """Every task item written since ``since``, through the ``by-time`` index.

    Raises:
        StoreError: the index cannot be queried.
    """
    query = TaskQuery(since=since, limit=PAGE)
    return [task_row(item) for items in query_pages(dynamodb, table, query) for item in items]


def durations_from_cloudwatch(cloudwatch: Any, start: datetime, end: datetime) -> Durations:
    """p50/p95 of each (task, queue) read from CloudWatch (AWS only)."""

    def durations(task_name: str, queue: str) -> tuple[float, float] | None:
        request = duration_request(task_name, queue, start, end)
        with translated(f"reading the durations of {task_name} on {queue}"):
            return percentiles(cloudwatch.get_metric_statistics(**request))

    return durations
