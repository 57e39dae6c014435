"""The observability vocabulary: metric names, units and the log fields every line carries, and
what a task that ran emits on either consumer (:func:`outcome_metrics`, :func:`outcome_fields`).

One module so that the dashboard in ``template.yaml`` and the code agree on names; Powertools
objects are created here once (Logger and Metrics read their service and namespace from
``POWERTOOLS_SERVICE_NAME`` / ``POWERTOOLS_METRICS_NAMESPACE``, which the template sets).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any, Final

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import resolve_truthy_env_var_choice
from celery import states
from celery.app.trace import LOG_FAILURE
from celery.utils.saferepr import saferepr

from infra.core.log_format import LeanLines

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
    "MAX_VALUES",
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
    "BATCH_RECEIVED",
    "INVOCATION_KEYS",
    "LOG_GROUP_KEYS",
    "debug_fields",
    "emf_line",
    "log_invocation",
    "log_outcome",
    "quiet_celery_task_lines",
    "MetricUnit",
    "MetricValue",
    "eta_lag_ms",
    "logger",
    "metrics",
    "outcome_fields",
    "outcome_metrics",
    "revoked_metric",
    "task_metrics",
    "subsegment",
    "tracer",
    "xray_enabled",
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
"""Keys appended to every log line while a record is processed (a line below WARNING goes
without the message id and a receive count of 1: :class:`~infra.core.log_format.LeanLines`)."""

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

BATCH_RECEIVED: Final = "batch received"
"""The Lambda path's DEBUG line once per invocation, with what every other line leaves out."""
INVOCATION_KEYS: Final = ("cold_start", "function_request_id")
"""Keys Powertools puts on every line of an invocation that only its :data:`BATCH_RECEIVED`
line keeps."""
LOG_GROUP_KEYS: Final = ("function_name", "function_memory_size", "function_arn")
"""Keys Powertools puts on every line that no line keeps after an invocation starts: they name
the function, as its log group does."""
TASK_LINE_LOGGERS: Final = ("celery.app.trace", "celery.worker.strategy")
"""Celery's per-task lines: "Received task", "succeeded in", "retry", "ignored"."""


logger = Logger(service=SERVICE, logger_formatter=LeanLines())
# Powertools filters its records out of the root handlers that exist when it is made; a worker
# adds Celery's later, which would print each JSON line a second time as text.
logging.getLogger(SERVICE).propagate = False
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@functools.cache
def tracer() -> Tracer | None:
    """The X-Ray tracer, made on first use: making it patches boto3 and creates the SDK's own
    sampling client, which importing the handler must not (the pipeline makes it when it is
    built, before the app or any client). None where Powertools would disable it anyway: the
    X-Ray SDK's import alone (its recorder and sampling client) costs ~170 ms of CPU, paid by
    every local consumer's start for a tracer that traces nothing."""
    return Tracer(service=SERVICE) if xray_enabled(os.environ) else None


def xray_enabled(env: Mapping[str, str]) -> bool:
    """Powertools' own rule (``Tracer._is_tracer_disabled``): tracing only inside Lambda
    (``LAMBDA_TASK_ROOT``), not under SAM's or Chalice's local emulators, and not with
    ``POWERTOOLS_TRACE_DISABLED`` true."""
    if resolve_truthy_env_var_choice(env=env.get(constants.TRACER_DISABLED_ENV, "false")):
        return False
    return bool(env.get(constants.LAMBDA_TASK_ROOT_ENV)) and not (
        env.get(constants.SAM_LOCAL_ENV) or env.get(constants.CHALICE_LOCAL_ENV)
    )


def subsegment(name: str) -> contextlib.AbstractContextManager[Any]:
    """An X-Ray subsegment around a task's run, or nothing where tracing is off."""
    made = tracer()
    return made.provider.in_subsegment(name) if made is not None else contextlib.nullcontext()


MAX_VALUES: Final = 99
"""Values of one metric in one EMF document. CloudWatch takes 100, but Powertools' ``add_metric``
prints the document itself (to ``sys.stdout``, not to our writer) and clears it at the 100th."""


class TaskMetrics:
    """Per-task metrics, kept by (task name, queue) and written as one EMF line per pair (more
    when a metric has over :data:`MAX_VALUES` values). Thread-safe.

    Powertools' shared ``Metrics`` has one dimension set per flush; a batch mixes tasks, so each
    pair gets its own ``EphemeralMetrics`` at flush time. The Lambda path flushes once per batch;
    the worker path when :meth:`flush_due` says so (see :mod:`infra.worker.signals`).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], dict[str, tuple[MetricUnit, list[float]]]] = {}
        self._fullest = 0
        self._since: float | None = None
        """When the oldest value not yet written was noted (``clock``)."""

    def add(
        self, task_name: str, queue: str | None, name: str, unit: MetricUnit, value: float
    ) -> None:
        """Note one value of metric ``name`` for ``task_name`` on ``queue``.

        Log bytes are billed per task: a count is kept as one running sum per line (CloudWatch's
        Sum, the statistic counts are read by, is the same; only SampleCount differs), sizes are
        whole bytes and times 0.1 ms under 100 ms, whole ms above (SentTimestamp, which a queue
        wait is measured from, has whole ms), not Python's repr of a float.
        """
        key = (task_name, queue or "unknown")
        short = unit == MetricUnit.Bytes or (unit == MetricUnit.Milliseconds and value >= 100)
        with self._lock:
            _, values = self._values.setdefault(key, {}).setdefault(name, (unit, []))
            if unit == MetricUnit.Count and values:
                values[0] += value
            else:
                values.append(round(value) if short else round(value, 1))
            self._fullest = max(self._fullest, len(values))
            if self._since is None:
                self._since = self._clock()

    def flush(self, write: Callable[[str], object] = print) -> None:
        """Write what was noted as EMF lines (one JSON object per line) and forget it."""
        with self._lock:
            self._write(write)

    def flush_due(self, write: Callable[[str], object], max_age: float) -> None:
        """:meth:`flush` if a metric of a pair holds :data:`MAX_VALUES` values or the oldest
        value is ``max_age`` seconds old; else nothing."""
        with self._lock:
            if self._fullest >= MAX_VALUES or (
                self._since is not None and self._clock() - self._since >= max_age
            ):
                self._write(write)

    def survive_forks(self) -> None:
        """For a process that forks (a prefork worker's parent): no fork while a line is
        written, and a child starts empty, its parent writing what was noted before the fork."""
        # Lambdas: a child's lock is a new one (``_forget``), which a fork in the child holds.
        os.register_at_fork(
            before=lambda: self._lock.acquire(),
            after_in_parent=lambda: self._lock.release(),
            after_in_child=self._forget,
        )

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._values, self._fullest, self._since = {}, 0, None

    def _write(self, write: Callable[[str], object]) -> None:
        """Under the lock: the lines, written (a fork cannot cut one), and the noted forgotten."""
        values, self._values, self._fullest, self._since = self._values, {}, 0, None
        for (task_name, queue), noted in values.items():
            for start in range(0, max(len(v) for _, v in noted.values()), MAX_VALUES):
                line = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
                line.add_dimension(DIMENSION_TASK, task_name)
                line.add_dimension(DIMENSION_QUEUE, queue)
                for name, (unit, all_values) in noted.items():
                    for value in all_values[start : start + MAX_VALUES]:
                        line.add_metric(name=name, unit=unit, value=value)
                write(emf_line(line))


def emf_line(metrics: EphemeralMetrics) -> str:
    """One EMF document as a line, each value as short as it reads: ``3`` for Powertools'
    ``[3.0]``, ``[1244, 0.5]`` for ``[1244.0, 0.5]`` (EMF takes a number or a list of them)."""
    document: dict[str, Any] = dict(metrics.serialize_metric_set())
    for directive in document["_aws"]["CloudWatchMetrics"]:
        for metric in directive["Metrics"]:
            values = [int(v) if float(v).is_integer() else v for v in document[metric["Name"]]]
            document[metric["Name"]] = values[0] if len(values) == 1 else values
    return json.dumps(document, separators=(",", ":"))


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
    task_id: str,
    queue: str | None,
    root_id: str | None,
    parent_id: str | None,
    **more: object,
) -> dict[str, object]:
    """The fields of the :data:`TASK_FINISHED` line; ``more``: what only one consumer knows.
    A task that is its own root (no workflow) has no ``root_id``: it would repeat ``task_id``."""
    return {
        "task_id": task_id,
        "state": state,
        "duration_ms": round(duration_ms, 1),
        "queue": queue,
        "root_id": root_id if root_id != task_id else None,
        "parent_id": parent_id,
        **more,
    }


def debug_fields(
    args: object,
    kwargs: object,
    result: object = None,
    *,
    argsrepr: object = None,
    kwargsrepr: object = None,
) -> dict[str, object]:
    """Arguments and return value for the outcome line, only when the logger is at DEBUG (set,
    or for an invocation picked by ``POWERTOOLS_LOGGER_SAMPLE_RATE``); else nothing, and no
    repr is made. ``argsrepr``/``kwargsrepr``: the message's own, when the producer set them."""
    if not logging.getLogger(SERVICE).isEnabledFor(logging.DEBUG):
        return {}
    return {
        # Not `args`: a LogRecord attribute (logging refuses extras that would overwrite one).
        "task_args": str(argsrepr or saferepr(args, maxlen=1024)),
        "task_kwargs": str(kwargsrepr or saferepr(kwargs, maxlen=1024)),
        "result": saferepr(result, maxlen=1024),
    }


def log_outcome(fields: Mapping[str, object], traceback: str | None = None) -> None:
    """The one :data:`TASK_FINISHED` line of a task that ran: ERROR with its traceback for a
    FAILURE (Celery's own line about it is dropped, :func:`quiet_celery_task_lines`), else INFO."""
    if fields.get("state") == states.FAILURE:
        logger.error(TASK_FINISHED, extra={**fields, "traceback": traceback})
    else:
        logger.info(TASK_FINISHED, extra=dict(fields))


def log_invocation(records: int) -> None:
    """At DEBUG, the invocation's :data:`BATCH_RECEIVED` line with its request id, cold start
    and X-Ray trace id, which the task lines that follow go without (see
    :data:`INVOCATION_KEYS`). Not above DEBUG: Lambda's own START and REPORT lines around the
    invocation's lines carry its request id (and REPORT its X-Ray id and init duration), and the
    ``RecordsReceived`` and ``ColdStart`` metrics count the rest."""
    trace = os.environ.get("_X_AMZN_TRACE_ID", "").split(";")[0].removeprefix("Root=")
    logger.remove_keys(LOG_GROUP_KEYS)
    logger.debug(BATCH_RECEIVED, records=records, xray_trace_id=trace or None)
    logger.remove_keys(INVOCATION_KEYS)


class _CeleryFailureLine(logging.Filter):
    """Drops Celery's "Task … raised …" line: the outcome line carries the traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == LOG_FAILURE and record.levelno < logging.CRITICAL)


_FAILURE_LINE = _CeleryFailureLine()


def quiet_celery_task_lines(level: int | str | None = None) -> None:
    """Above DEBUG, Celery writes none of its per-task lines (:data:`TASK_LINE_LOGGERS` at
    WARNING, its failure line filtered): the outcome line says it once. A level the app gave
    those loggers itself is kept. At DEBUG they are all written. ``level``: the worker's, or
    None for the Powertools logger's own (before sampling, which only adds to our line)."""
    level = logger.initial_log_level if level is None else level
    numeric = logging.getLevelName(level) if isinstance(level, str) else level
    trace = logging.getLogger(TASK_LINE_LOGGERS[0])
    quiet = numeric > logging.DEBUG
    for name in TASK_LINE_LOGGERS:
        celery_logger = logging.getLogger(name)
        if quiet and celery_logger.level == logging.NOTSET:
            celery_logger.setLevel(logging.WARNING)
            _quietened.add(name)
        elif not quiet and name in _quietened:
            celery_logger.setLevel(logging.NOTSET)
            _quietened.discard(name)
    if quiet:
        trace.addFilter(_FAILURE_LINE)
    else:
        trace.removeFilter(_FAILURE_LINE)


_quietened: set[str] = set()


def revoked_metric(expired: bool) -> str:
    """The count of a task recorded REVOKED without running: expired, or revoked."""
    return METRIC_EXPIRED if expired else METRIC_REVOKED


def eta_lag_ms(eta: datetime, now: float) -> float:
    """Milliseconds a task started after its (aware) ETA; 0 when it started on time."""
    return max(now - eta.timestamp(), 0) * 1000
