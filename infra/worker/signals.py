"""The worker path's metrics and outcome log lines, in the Lambda path's vocabulary.

A ``celery worker`` on SQS has no events for Flower to watch; these Celery signal handlers write
the same EMF lines the Lambda handler writes (names from :mod:`infra.core.observability`, dimensions
task name and queue) plus one JSON "task finished" line per outcome, to the process's real
stdout, where the CloudWatch agent or the awslogs driver picks them up. (Celery redirects
``sys.stdout`` of pool processes into its logger, which would prefix every line: EMF must be a
bare JSON line.) Tasks the Lambda path runs are skipped: it records them itself.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from aws_lambda_powertools.metrics import EphemeralMetrics
from celery import signals

from infra.core.observability import (
    METRIC_DECODE_FAILED,
    METRIC_ETA_LAG,
    METRIC_RECEIVED,
    METRIC_STARTED,
    METRIC_UNKNOWN_TASK,
    NAMESPACE,
    SERVICE,
    TASK_FINISHED,
    MetricUnit,
    MetricValue,
    TaskMetrics,
    eta_lag_ms,
    logger,
    outcome_fields,
    outcome_metrics,
    revoked_metric,
)
from infra.store.items import CONSUMER_REQUEST_KEY
from infra.wire.timing import zoned_time

__all__ = ["install"]

_started: dict[str, float] = {}
_installed = False


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
    line = TaskMetrics()
    for name, unit, value in values:
        line.add(task_name, queue, name, unit, value)
    line.flush(_write)


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


def _postrun(task_id: str = "", task: Any = None, state: str | None = None, **_: Any) -> None:
    if _on_lambda(task):
        return
    duration_ms = (time.time() - _started.pop(task_id, time.time())) * 1000
    request = task.request
    _emit(task.name, _queue(request), *outcome_metrics(state, duration_ms))
    fields = outcome_fields(
        state=state,
        duration_ms=duration_ms,
        queue=_queue(request),
        root_id=request.root_id,
        parent_id=request.parent_id,
        task_id=task_id,
        task_name=task.name,
        consumer=request.hostname,
        retries=request.retries,
    )
    logger.info(TASK_FINISHED, extra=fields)


def _revoked(request: Any = None, expired: bool = False, **_: Any) -> None:
    _emit(request.task_name, _queue(request), (revoked_metric(expired), MetricUnit.Count, 1))


def _consumer_metric(name: str) -> None:
    line = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    line.add_metric(name=name, unit=MetricUnit.Count, value=1)
    _write(json.dumps(line.serialize_metric_set(), separators=(",", ":")))


def _rejected(**_: Any) -> None:
    _consumer_metric(METRIC_DECODE_FAILED)


def _unknown(**_: Any) -> None:
    _consumer_metric(METRIC_UNKNOWN_TASK)


def install() -> None:
    """Connect the handlers (once per process; they serve every app)."""
    global _installed
    if _installed:
        return
    signals.task_received.connect(_received, weak=False)
    signals.task_prerun.connect(_prerun, weak=False)
    signals.task_postrun.connect(_postrun, weak=False)
    signals.task_revoked.connect(_revoked, weak=False)
    signals.task_rejected.connect(_rejected, weak=False)
    signals.task_unknown.connect(_unknown, weak=False)
    _installed = True
