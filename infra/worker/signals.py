"""The worker path's metrics and outcome log lines, in the Lambda path's vocabulary.

A ``celery worker`` on SQS has no events for Flower to watch; these Celery signal handlers write
the same EMF lines the Lambda handler writes (names from :mod:`infra.core.observability`, dimensions
task name and queue) plus one JSON "task finished" line per outcome, to the process's real
stdout, where the CloudWatch agent or the awslogs driver picks them up. (Celery redirects
``sys.stdout`` of pool processes into its logger, which would prefix every line: EMF must be a
bare JSON line.) Tasks the Lambda path runs are skipped: it records them itself.

Metrics are aggregated per process (each prefork child its own; one for a thread pool) by
:class:`~infra.core.observability.TaskMetrics`, as the Lambda path aggregates a batch: one EMF
line per (task name, queue) when a metric holds a document's worth of values, or at most about
:data:`FLUSH_SECONDS` after a value was noted (checked as values are noted, and by a daemon
thread when the worker is idle), and at process and worker shutdown.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics
from celery import signals, states

from infra.core.observability import (
    METRIC_DECODE_FAILED,
    METRIC_ETA_LAG,
    METRIC_RECEIVED,
    METRIC_STARTED,
    METRIC_UNKNOWN_TASK,
    NAMESPACE,
    SERVICE,
    MetricUnit,
    MetricValue,
    TaskMetrics,
    debug_fields,
    emf_line,
    eta_lag_ms,
    log_outcome,
    outcome_fields,
    outcome_metrics,
    quiet_celery_task_lines,
    revoked_metric,
)
from infra.store.items import CONSUMER_REQUEST_KEY
from infra.wire.timing import zoned_time

__all__ = ["install"]

_started: dict[str, float] = {}
_tracebacks: dict[str, str] = {}
"""A FAILURE's traceback from ``task_failure``, for the ``task_postrun`` that follows it."""
_installed = False
_metrics = TaskMetrics()
"""This process's per-task metrics not yet written."""
FLUSH_SECONDS = 1.0
"""How long a value may wait for others to share its EMF line."""


def _write(line: str) -> None:
    out = sys.__stdout__
    if out is not None:
        out.write(line + "\n")
        out.flush()


def _queue(request: Any) -> str | None:
    info = getattr(request, "delivery_info", None) or {}
    return info.get("routing_key") if isinstance(info, dict) else None


def _on_lambda(task: Any) -> bool:
    return bool(task is not None and task.request.get(CONSUMER_REQUEST_KEY))


def _emit(task_name: str, queue: str | None, *values: MetricValue) -> None:
    for name, unit, value in values:
        _metrics.add(task_name, queue, name, unit, value)
    _metrics.flush_due(_write, FLUSH_SECONDS)


def _flush(**_: Any) -> None:
    """At process or worker shutdown: what this process still holds."""
    _metrics.flush(_write)


def _flush_when_idle() -> None:
    while True:
        time.sleep(FLUSH_SECONDS / 2)
        _metrics.flush_due(_write, FLUSH_SECONDS)


def _start_flusher(**_: Any) -> None:
    """This process's daemon thread writing what waited :data:`FLUSH_SECONDS` (a fork keeps
    only the forking thread: each pool process starts its own)."""
    threading.Thread(target=_flush_when_idle, name="emf-flush", daemon=True).start()


def _received(request: Any = None, **_: Any) -> None:
    _emit(request.name, _queue(request), (METRIC_RECEIVED, MetricUnit.Count, 1))


def _prerun(task_id: str = "", task: Any = None, **_: Any) -> None:
    if _on_lambda(task):
        return
    _started[task_id] = time.time()
    values: list[MetricValue] = [(METRIC_STARTED, MetricUnit.Count, 1.0)]
    eta = zoned_time(task.request.eta)
    if eta is not None:
        values.append((METRIC_ETA_LAG, MetricUnit.Milliseconds, eta_lag_ms(eta, time.time())))
    _emit(task.name, _queue(task.request), *values)


def _failure(task_id: str = "", einfo: Any = None, **_: Any) -> None:
    traceback = getattr(einfo, "traceback", None)
    if task_id and traceback:
        _tracebacks[task_id] = traceback


def _postrun(
    task_id: str = "",
    task: Any = None,
    state: str | None = None,
    retval: Any = None,
    args: Any = None,
    kwargs: Any = None,
    **_: Any,
) -> None:
    traceback = _tracebacks.pop(task_id, None)
    if _on_lambda(task):
        return
    duration_ms = (time.time() - _started.pop(task_id, time.time())) * 1000
    request = task.request
    _emit(task.name, _queue(request), *outcome_metrics(state, duration_ms))
    failed = state not in (None, states.SUCCESS) and isinstance(retval, BaseException)
    fields = outcome_fields(
        state=state,
        duration_ms=duration_ms,
        task_id=task_id,
        queue=_queue(request),
        root_id=request.root_id,
        parent_id=request.parent_id,
        task_name=task.name,
        exception=type(retval).__name__ if failed else None,
        retries=request.retries or None,
        **debug_fields(
            args,
            kwargs,
            None if failed else retval,
            argsrepr=getattr(request, "argsrepr", None),
            kwargsrepr=getattr(request, "kwargsrepr", None),
        ),
    )
    log_outcome(fields, traceback)


def _revoked(request: Any = None, expired: bool = False, **_: Any) -> None:
    _emit(request.task_name, _queue(request), (revoked_metric(expired), MetricUnit.Count, 1))


def _consumer_metric(name: str) -> None:
    line = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    line.add_metric(name=name, unit=MetricUnit.Count, value=1)
    _write(emf_line(line))


def _rejected(**_: Any) -> None:
    _consumer_metric(METRIC_DECODE_FAILED)


def _unknown(**_: Any) -> None:
    _consumer_metric(METRIC_UNKNOWN_TASK)


def install(loglevel: int | str = logging.INFO) -> None:
    """Connect the handlers (once per process; they serve every app); at ``loglevel`` above
    DEBUG Celery's own per-task lines give way to the outcome line."""
    global _installed
    quiet_celery_task_lines(loglevel)
    if _installed:
        return
    signals.task_received.connect(_received, weak=False)
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_failure.connect(_failure, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    signals.task_revoked.connect(_revoked, weak=False)
    signals.task_rejected.connect(_rejected, weak=False)
    signals.task_unknown.connect(_unknown, weak=False)
    signals.worker_process_init.connect(_start_flusher, weak=False)
    signals.worker_process_shutdown.connect(_flush, weak=False)
    signals.worker_shutdown.connect(_flush, weak=False)
    _metrics.survive_forks()
    _start_flusher()
    _installed = True
