"""OpenTelemetry's switch: on with the ``[otel]`` extra installed, absent (never imported) without.

X-Ray needs nothing here (the producer's trace header rides as ``AWSTraceHeader``, see
:mod:`infra.producer.publish`). OpenTelemetry is optional, and importing it costs a cold start
some 30 ms, so this module only asks whether it is installed (``importlib.util.find_spec``, no
import) and loads :mod:`infra.core.otel` on the first publish or record that needs it:

- :func:`install` (from ``configure(app)``) connects Celery's publish and task signals, so every
  ``apply_async`` carries the current trace context and a worker continues it;
- :func:`record_span` gives the Lambda path's pipeline one CONSUMER span per record.

With the extra but no tracer provider configured, OpenTelemetry's API makes non-recording spans:
an incoming trace context is still passed on to the tasks a task publishes.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

from celery import signals

__all__ = ["RecordSpan", "install", "installed", "record_span"]

_UID = "celery_lambda.tracing"


class RecordSpan(Protocol):
    """What the pipeline tells a record's span: how its task ended."""

    def outcome(self, state: str, exception: str | None = None) -> None:
        """The task's state (and a FAILURE's exception name)."""


class _NoSpan:
    """The record span without the extra: told everything, keeps nothing."""

    def outcome(self, state: str, exception: str | None = None) -> None:
        """Nothing to record without OpenTelemetry."""


_NO_SPAN = _NoSpan()


@functools.cache
def installed() -> bool:
    """OpenTelemetry's API is importable: asked once per process, importing nothing (not even
    the ``opentelemetry`` namespace package, which ``find_spec("opentelemetry.trace")`` would)."""
    namespace = importlib.util.find_spec("opentelemetry")
    if namespace is None or not namespace.submodule_search_locations:
        return False
    where = list(namespace.submodule_search_locations)
    return importlib.machinery.PathFinder.find_spec("opentelemetry.trace", where) is not None


def install() -> None:
    """Trace every publish and every task a worker runs, when the extra is installed (once)."""
    if not installed():
        return
    signals.before_task_publish.connect(_publish_started, weak=False, dispatch_uid=_UID)
    signals.after_task_publish.connect(_publish_ended, weak=False, dispatch_uid=_UID)
    signals.task_prerun.connect(_task_started, weak=False, dispatch_uid=_UID)
    signals.task_postrun.connect(_task_ended, weak=False, dispatch_uid=_UID)


def record_span(
    record: Mapping[str, Any], headers: Mapping[str, Any], task_name: str, task_id: str
) -> AbstractContextManager[RecordSpan]:
    """The CONSUMER span of one SQS record, current while its task runs (see
    :func:`infra.core.otel.record_span`); a no-op without the extra."""
    if not installed():
        return nullcontext(_NO_SPAN)
    from infra.core import otel  # the [otel] extra: loaded on first use, never at import

    return otel.record_span(record, headers, task_name, task_id)


def _publish_started(**kwargs: Any) -> None:
    from infra.core import otel  # the [otel] extra: loaded on the first publish, not at import

    otel.publish_started(**kwargs)


def _publish_ended(**kwargs: Any) -> None:
    from infra.core import otel  # the [otel] extra: loaded on the first publish, not at import

    otel.publish_ended(**kwargs)


def _task_started(**kwargs: Any) -> None:
    from infra.core import otel  # the [otel] extra: loaded on the first task, not at import

    otel.task_started(**kwargs)


def _task_ended(**kwargs: Any) -> None:
    from infra.core import otel  # the [otel] extra: loaded on the first task, not at import

    otel.task_ended(**kwargs)
