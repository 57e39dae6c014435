"""What the Lambda pipeline tells CloudWatch about each record: per-task metrics (dimensions task
name and queue, one EMF line per pair per invocation) and the "task finished" log line, built
from :mod:`infra.core.observability` as the worker's signals build theirs."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from infra.consumer.runner import Outcome
from infra.core.observability import (
    METRIC_ETA_LAG,
    METRIC_PAYLOAD_SIZE,
    METRIC_QUEUE_WAIT,
    METRIC_RECEIVED,
    METRIC_STARTED,
    MetricUnit,
    debug_fields,
    eta_lag_ms,
    log_invocation,
    log_outcome,
    outcome_fields,
    outcome_metrics,
    task_metrics,
)
from infra.wire.offload import SIZE_ATTRIBUTE
from infra.wire.protocol import TaskMessage
from infra.wire.timing import aware

__all__ = ["note", "note_batch", "note_outcome", "note_received", "note_start"]


def note(
    message: TaskMessage, name: str, value: float = 1, unit: MetricUnit = MetricUnit.Count
) -> None:
    """A per-task metric, with the task name and queue as its dimensions."""
    task_metrics.add(message.task_name, message.queue, name, unit, value)


def note_batch(records: Sequence[Mapping[str, Any]]) -> None:
    """The invocation's Lambda context: on its one line at DEBUG, on none of its task lines."""
    log_invocation(len(records))


def note_received(message: TaskMessage, record: Mapping[str, Any]) -> None:
    """A record decoded into a task: counted, with its payload size (the offloaded one's, if so)."""
    note(message, METRIC_RECEIVED)
    size = (record.get("messageAttributes") or {}).get(SIZE_ATTRIBUTE, {}).get("stringValue")
    payload = int(size) if size else len(str(record.get("body", "")).encode())
    note(message, METRIC_PAYLOAD_SIZE, payload, MetricUnit.Bytes)


def note_start(message: TaskMessage, record: Mapping[str, Any], timezone: Any) -> None:
    """A task about to run: counted, with its wait in the queue and its lag behind its ETA."""
    now = time.time()
    note(message, METRIC_STARTED)
    sent_ms = record.get("attributes", {}).get("SentTimestamp")
    if sent_ms:
        wait = max(now * 1000 - int(sent_ms), 0)
        note(message, METRIC_QUEUE_WAIT, wait, MetricUnit.Milliseconds)
    eta = aware(message.eta, timezone)
    if eta is not None:
        note(message, METRIC_ETA_LAG, eta_lag_ms(eta, now), MetricUnit.Milliseconds)


def note_outcome(message: TaskMessage, outcome: Outcome) -> None:
    """A task that ran: its state counted, its duration, and its one "task finished" line."""
    duration_ms = outcome.duration * 1000
    for name, unit, value in outcome_metrics(outcome.state, duration_ms):
        note(message, name, value, unit)
    fields = outcome_fields(
        state=outcome.state,
        duration_ms=duration_ms,
        task_id=message.task_id,
        queue=message.queue,
        root_id=message.root_id,
        parent_id=message.parent_id,
        exception=outcome.exception,
        **debug_fields(
            message.args,
            message.kwargs,
            outcome.result,
            argsrepr=message.headers.get("argsrepr"),
            kwargsrepr=message.headers.get("kwargsrepr"),
        ),
    )
    log_outcome(fields, outcome.traceback)
