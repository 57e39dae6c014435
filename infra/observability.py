"""The observability vocabulary: metric names, units and the log fields every line carries.

One module so that the dashboard in ``template.yaml`` and the code agree on names; Powertools
objects are created here once (Logger and Metrics read their service and namespace from
``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``, which the template sets).
"""

from __future__ import annotations

from typing import Final

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

__all__ = [
    "LOG_KEYS",
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
    "MetricUnit",
    "logger",
    "metrics",
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
METRIC_DURATION: Final = "TaskDuration"
METRIC_QUEUE_WAIT: Final = "QueueWait"

LOG_KEYS: Final = ("task_id", "task_name", "message_id", "receive_count")
"""Keys appended to every log line while a record is processed."""

logger = Logger(service=SERVICE, use_rfc3339=True)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
