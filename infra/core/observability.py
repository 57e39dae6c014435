"""The observability vocabulary: metric names, units and the log fields every line carries, and
what a task that ran emits on either consumer (:func:`outcome_metrics`, :func:`outcome_fields`).

One module so that the dashboard in ``template.yaml`` and the code agree on names; Powertools
objects are created here once (Logger and Metrics read their service and namespace from
``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``, which the template sets).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from celery import states

__all__ = [
    "CONSUMER_METRICS",
    "DIMENSION_QUEUE",
    "DIMENSION_TASK",
    "LOG_KEYS",
    "METRIC_BEAT_FAILED",
    "METRIC_BEAT_PUBLISHED",
    "METRIC_BEAT_SKIPPED",
    "METRIC_ETA_LAG",
    "METRIC_PAYLOAD_SIZE",
    "METRIC_RECEIVED",
    "METRIC_RECORDS",
    "METRIC_STARTED",
    "TASK_METRICS",
    "TaskMetrics",
    "METRIC_DECODE_FAILED",
    "METRIC_CLAIM_HELD",
    "METRIC_DEFERRED",
    "METRIC_DELAYED",
    "METRIC_DUPLICATE",
    "METRIC_DURATION",
    "METRIC_EXPIRED",
    "METRIC_FAILED",
    "METRIC_MACHINERY_FAILED",
    "METRIC_MEMORY_HIGH",
    "METRIC_QUEUE_WAIT",
    "METRIC_RATE_LIMITED",
    "METRIC_RETRIED",
    "METRIC_REVOKED",
    "METRIC_SUCCEEDED",
    "METRIC_UNKNOWN_TASK",
    "METRIC_FOR_STATE",
    "NAMESPACE",
    "SERVICE",
    "TASK_FINISHED",
    "MetricUnit",
    "MetricValue",
    "eta_lag_ms",
    "logger",
    "metrics",
    "outcome_fields",
    "outcome_metrics",
    "revoked_metric",
    "task_metrics",
    "tracer",
]

SERVICE: Final = "celery-lambda"
NAMESPACE: Final = "CeleryLambda"

METRIC_SUCCEEDED: Final = "TasksSucceeded"
METRIC_FAILED: Final = "TasksFailed"
METRIC_RETRIED: Final = "TasksRetried"
METRIC_REVOKED: Final = "TasksRevoked"
METRIC_EXPIRED: Final = "TasksExpired"
METRIC_DELAYED: Final = "TasksDelayed"
"""Not yet due (ETA in the future): re-sent with DelaySeconds."""
METRIC_DEFERRED: Final = "RecordsDeferred"
"""Not started because the invocation's deadline was near: returned to SQS."""
METRIC_DECODE_FAILED: Final = "DecodeFailures"
METRIC_UNKNOWN_TASK: Final = "UnknownTasks"
METRIC_MACHINERY_FAILED: Final = "MachineryFailures"
"""The consumer itself failed (app import, result store, SQS): the record goes back to SQS."""
METRIC_DUPLICATE: Final = "DuplicatesSkipped"
"""A redelivered task already terminal in the result store: acked without running."""
METRIC_CLAIM_HELD: Final = "ClaimsHeldElsewhere"
"""Another consumer holds a live claim on the task: the record comes back later."""
METRIC_RATE_LIMITED: Final = "TasksRateLimited"
"""No turn under the task's rate limit: handed back to SQS with a delay (FIFO: held)."""
METRIC_MEMORY_HIGH: Final = "MemoryHigh"
"""Resident memory over the budget: the invocation stopped starting records."""
METRIC_BEAT_PUBLISHED: Final = "ScheduledSlotsPublished"
"""beat_schedule slots the scheduled tick published."""
METRIC_BEAT_SKIPPED: Final = "ScheduledSlotsSkipped"
"""Slots older than the catch-up window, never published (the tick was down too long)."""
METRIC_BEAT_FAILED: Final = "ScheduledSlotsFailed"
"""Slots the tick could not publish (given back for the next tick unless reported lost)."""
METRIC_DURATION: Final = "TaskDuration"
METRIC_QUEUE_WAIT: Final = "QueueWait"
"""Milliseconds from SQS's SentTimestamp to the start of the task."""
METRIC_RECEIVED: Final = "TasksReceived"
"""A record decoded to a task message of a registered task."""
METRIC_STARTED: Final = "TasksStarted"
METRIC_ETA_LAG: Final = "EtaLag"
"""Milliseconds from a task's ETA to its start (how late a scheduled task ran)."""
METRIC_PAYLOAD_SIZE: Final = "PayloadSize"
"""Bytes of the message body (the offloaded body's size for an S3 pointer)."""

TASK_METRICS: Final = frozenset(
    {
        METRIC_RECEIVED,
        METRIC_STARTED,
        METRIC_SUCCEEDED,
        METRIC_FAILED,
        METRIC_RETRIED,
        METRIC_REVOKED,
        METRIC_EXPIRED,
        METRIC_DELAYED,
        METRIC_DUPLICATE,
        METRIC_CLAIM_HELD,
        METRIC_RATE_LIMITED,
        METRIC_DURATION,
        METRIC_QUEUE_WAIT,
        METRIC_ETA_LAG,
        METRIC_PAYLOAD_SIZE,
    }
)
"""Emitted per task with the dimensions ``task_name`` and ``queue`` (never ids: bounded)."""
METRIC_RECORDS: Final = "RecordsReceived"
"""SQS records an invocation was handed (every invocation emits it)."""
CONSUMER_METRICS: Final = frozenset(
    {
        METRIC_RECORDS,
        METRIC_DECODE_FAILED,
        METRIC_UNKNOWN_TASK,
        METRIC_MACHINERY_FAILED,
        METRIC_DEFERRED,
        METRIC_MEMORY_HIGH,
    }
)
"""Emitted with the ``service`` dimension only: records that never became a known task, and the
consumer's own troubles."""
DIMENSION_TASK: Final = "task_name"
DIMENSION_QUEUE: Final = "queue"

LOG_KEYS: Final = ("task_id", "task_name", "message_id", "receive_count")
"""Keys appended to every log line while a record is processed."""

METRIC_FOR_STATE: Final[Mapping[str, str]] = MappingProxyType(
    {
        states.SUCCESS: METRIC_SUCCEEDED,
        states.FAILURE: METRIC_FAILED,
        states.RETRY: METRIC_RETRIED,
    }
)
"""The count a task that ran adds to, by the state it ended in (other states: none)."""
TASK_FINISHED: Final = "task finished"
"""The line both consumers write once per task that ran."""

MetricValue = tuple[str, MetricUnit, float]
"""One value of a per-task metric: ``(name, unit, value)``."""

logger = Logger(service=SERVICE, use_rfc3339=True)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@functools.cache
def tracer() -> Tracer:
    """The X-Ray tracer, made on first use: making it patches boto3 and creates the SDK's own
    sampling client, which importing the handler must not (the pipeline makes it when it is
    built, before the app or any client)."""
    return Tracer(service=SERVICE)


class TaskMetrics:
    """Per-task metrics, kept by (task name, queue) and written as one EMF line per pair.

    Powertools' shared ``Metrics`` has one dimension set per flush; a batch mixes tasks, so each
    pair gets its own ``EphemeralMetrics`` at flush time.
    """

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], list[tuple[str, MetricUnit, float]]] = {}

    def add(
        self, task_name: str, queue: str | None, name: str, unit: MetricUnit, value: float
    ) -> None:
        """Note one value of metric ``name`` for ``task_name`` on ``queue``."""
        key = (task_name, queue or "unknown")
        self._values.setdefault(key, []).append((name, unit, value))

    def flush(self, write: Callable[[str], object] = print) -> None:
        """Write what was noted as EMF lines (one JSON object per line) and forget it."""
        values, self._values = self._values, {}
        for (task_name, queue), noted in values.items():
            line = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
            line.add_dimension(DIMENSION_TASK, task_name)
            line.add_dimension(DIMENSION_QUEUE, queue)
            for name, unit, value in noted:
                line.add_metric(name=name, unit=unit, value=value)
            write(json.dumps(line.serialize_metric_set(), separators=(",", ":")))


task_metrics = TaskMetrics()


def outcome_metrics(state: str | None, duration_ms: float) -> list[MetricValue]:
    """What a task that ran counts: its ending state (:data:`METRIC_FOR_STATE`), its duration."""
    values: list[MetricValue] = []
    name = METRIC_FOR_STATE.get(state or "")
    if name:
        values.append((name, MetricUnit.Count, 1.0))
    values.append((METRIC_DURATION, MetricUnit.Milliseconds, duration_ms))
    return values


def outcome_fields(
    state: str | None,
    duration_ms: float,
    *,
    queue: str | None,
    root_id: str | None,
    parent_id: str | None,
    **more: object,
) -> dict[str, object]:
    """The fields of the :data:`TASK_FINISHED` line; ``more``: what only one consumer knows."""
    return {
        "state": state,
        "duration_ms": round(duration_ms, 1),
        "queue": queue,
        "root_id": root_id,
        "parent_id": parent_id,
        **more,
    }


def revoked_metric(expired: bool) -> str:
    """The count of a task recorded REVOKED without running: expired, or revoked."""
    return METRIC_EXPIRED if expired else METRIC_REVOKED


def eta_lag_ms(eta: datetime, now: float) -> float:
    """Milliseconds a task started after its (aware) ETA; 0 when it started on time."""
    return max(now - eta.timestamp(), 0) * 1000
