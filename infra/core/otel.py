"""OpenTelemetry on both paths: W3C trace context in the task message, a span per task.

Imported only through :mod:`infra.core.tracing`, once the ``[otel]`` extra is known to be
installed, so a producer or a Lambda without it never loads OpenTelemetry.

The carrier is the one ``opentelemetry-instrumentation-celery`` uses: the global propagator
(W3C ``traceparent``/``tracestate`` unless ``OTEL_PROPAGATORS`` says otherwise) injected into the
Celery message headers in ``before_task_publish``. A worker reads them back from ``task.request``
(every custom header becomes a request attribute), so a worker using that instrumentation
continues a trace we started, and the Lambda path continues one it started. Where it is
instrumented in this process it makes the publish and run spans itself; ours would duplicate
them, so they are made only in its absence. The Lambda path's record span is always ours: the
instrumentation never sees an SQS record.

Span names and attributes follow the messaging semantic conventions
(https://opentelemetry.io/docs/specs/semconv/messaging/sqs/), with the instrumentation's
``celery.*`` attributes for what is Celery's.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any, Final

from celery import states
from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from infra.core.queues import queue_name

__all__ = [
    "ATTR_DESTINATION",
    "ATTR_MESSAGE_ID",
    "ATTR_OPERATION",
    "ATTR_STATE",
    "ATTR_SYSTEM",
    "ATTR_TASK_ID",
    "ATTR_TASK_NAME",
    "SYSTEM",
    "TRACER_NAME",
    "RecordSpan",
    "instrumented",
    "publish_ended",
    "publish_started",
    "record_span",
    "task_ended",
    "task_started",
]

TRACER_NAME: Final = "celery_lambda"
SYSTEM: Final = "aws_sqs"
ATTR_SYSTEM: Final = "messaging.system"
ATTR_DESTINATION: Final = "messaging.destination.name"
ATTR_OPERATION: Final = "messaging.operation.type"
ATTR_MESSAGE_ID: Final = "messaging.message.id"
ATTR_TASK_NAME: Final = "celery.task_name"
ATTR_TASK_ID: Final = "celery.task_id"
ATTR_STATE: Final = "celery.state"

_INSTRUMENTATION: Final = "opentelemetry.instrumentation.celery"
_in_record: ContextVar[bool] = ContextVar("celery_lambda_in_record", default=False)
"""True while the Lambda path's record span is current: Celery's task signals then fire inside
it, and a second span per task would only repeat it."""


class _Local(threading.local):
    def __init__(self) -> None:
        self.publishing: dict[str, trace.Span] = {}
        self.running: dict[str, tuple[trace.Span, Token[Context]]] = {}


_local = _Local()


def _tracer() -> trace.Tracer:
    """Asked for on every span, so that a provider configured after ``configure(app)`` is used."""
    return trace.get_tracer(TRACER_NAME)


def instrumented() -> bool:
    """``opentelemetry-instrumentation-celery`` is active in this process (it makes the spans)."""
    module = sys.modules.get(_INSTRUMENTATION)
    if module is None:  # never imported, so never instrumented
        return False
    return bool(module.CeleryInstrumentor().is_instrumented_by_opentelemetry)


def _ended(span: trace.Span, state: str, exception: str | None) -> None:
    """The task's state on its span; a FAILURE is an error, as the instrumentation marks it."""
    span.set_attribute(ATTR_STATE, state)
    if state == states.FAILURE:
        span.set_status(Status(StatusCode.ERROR, exception))


# ---------------------------------------------------------------- publishing


def publish_started(
    sender: Any = None,
    headers: dict[str, Any] | None = None,
    routing_key: str | None = None,
    **_: Any,
) -> None:
    """``before_task_publish``: a PRODUCER span, current context's child, injected in the headers.

    Publishes in one thread never nest, so a span still open here belongs to a publish that
    raised before ``after_task_publish``: it is ended as failed rather than kept forever.
    """
    if headers is None or instrumented():  # protocol 1: no headers; instrumented: its span
        return
    for stale in _local.publishing.values():
        stale.set_status(Status(StatusCode.ERROR, "publish did not complete"))
        stale.end()
    queue = routing_key or "celery"
    span = _tracer().start_span(
        f"send {queue}",
        kind=SpanKind.PRODUCER,
        attributes={
            ATTR_SYSTEM: SYSTEM,
            ATTR_DESTINATION: queue,
            ATTR_OPERATION: "send",
            ATTR_TASK_NAME: str(sender),
            ATTR_TASK_ID: str(headers.get("id")),
        },
    )
    propagate.inject(headers, context=trace.set_span_in_context(span))
    _local.publishing = {str(headers.get("id")): span}


def publish_ended(headers: Mapping[str, Any] | None = None, **_: Any) -> None:
    """``after_task_publish``: the message was handed to the transport; its span ends."""
    span = _local.publishing.pop(str((headers or {}).get("id")), None)
    if span is not None:
        span.end()


# ---------------------------------------------------------------- the Lambda path


class RecordSpan:
    """The CONSUMER span of one SQS record, told how its task ended."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def outcome(self, state: str, exception: str | None = None) -> None:
        """The task's final (or, for a hand-back, current) state; FAILURE marks the span."""
        _ended(self.span, state, exception)


@contextmanager
def record_span(
    record: Mapping[str, Any], headers: Mapping[str, Any], task_name: str, task_id: str
) -> Iterator[RecordSpan]:
    """A CONSUMER span continuing the producer's trace, current while the record is processed,
    so what its task publishes (chain, callback, retry) carries this span's context.

    An exception (the record goes back to SQS) is recorded on the span and re-raised.
    """
    queue = queue_name(str(record.get("eventSourceARN") or "celery"))
    span = _tracer().start_span(
        f"process {queue}",
        context=propagate.extract(headers),
        kind=SpanKind.CONSUMER,
        attributes={
            ATTR_SYSTEM: SYSTEM,
            ATTR_DESTINATION: queue,
            ATTR_OPERATION: "process",
            ATTR_MESSAGE_ID: str(record.get("messageId")),
            ATTR_TASK_NAME: task_name,
            ATTR_TASK_ID: task_id,
        },
    )
    marked = _in_record.set(True)
    try:
        with trace.use_span(span, end_on_exit=True):
            yield RecordSpan(span)
    finally:
        _in_record.reset(marked)


# ---------------------------------------------------------------- the worker path


class _RequestGetter(Getter[Any]):
    """Reads the propagator's keys from a Celery request, where the message headers land."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        value = getattr(carrier, key, None)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Any) -> list[str]:
        return []


_REQUEST_GETTER = _RequestGetter()


def task_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """``task_prerun`` on a worker without the instrumentation: a CONSUMER span, made current."""
    if task_id is None or task is None or _in_record.get() or instrumented():
        return
    request = task.request
    queue = str((request.delivery_info or {}).get("routing_key") or "celery")
    span = _tracer().start_span(
        f"process {queue}",
        context=propagate.extract(request, getter=_REQUEST_GETTER),
        kind=SpanKind.CONSUMER,
        attributes={
            ATTR_SYSTEM: SYSTEM,
            ATTR_DESTINATION: queue,
            ATTR_OPERATION: "process",
            ATTR_TASK_NAME: str(task.name),
            ATTR_TASK_ID: task_id,
        },
    )
    token = context.attach(trace.set_span_in_context(span))
    _local.running[task_id] = (span, token)


def task_ended(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    """``task_postrun``: the worker span of :func:`task_started` ends with the task's state."""
    started = _local.running.pop(str(task_id), None)
    if started is None:
        return
    span, token = started
    _ended(span, str(state), None)
    span.end()
    context.detach(token)
