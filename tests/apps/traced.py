"""The tracing tests' Celery app: a chain's two steps and a failing task, configured as tasks.app.

Run by a ``celery worker`` subprocess with :data:`SPANS_FILE_VARIABLE` set, the process traces
as a worker using ``opentelemetry-instrumentation-celery`` would (or, with
:data:`INSTRUMENT_VARIABLE` ``0``, with only this project's spans), and writes every span it ends
to that file, one JSON line each (:class:`JsonLinesExporter`): the test process cannot share an
in-memory exporter with another process, so the worker's spans come back through the file.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from celery import Celery
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

import infra

__all__ = [
    "INSTRUMENT_VARIABLE",
    "SPANS_FILE_VARIABLE",
    "JsonLinesExporter",
    "app",
    "fails",
    "first",
    "second",
]

SPANS_FILE_VARIABLE = "TRACED_SPANS_FILE"
INSTRUMENT_VARIABLE = "TRACED_INSTRUMENT"
"""``0``: the worker traces without ``opentelemetry-instrumentation-celery`` (our spans only)."""

app = Celery("traced", set_as_current=False)
app.config_from_object("tasks.celeryconfig")
infra.configure(app)


@app.task(name="traced.first")
def first(x: int) -> int:
    """The chain's first step (the Lambda path runs it)."""
    return x + 1


@app.task(name="traced.second")
def second(x: int) -> int:
    """The chain's second step (a worker runs it)."""
    return x * 10


@app.task(name="traced.fails")
def fails() -> None:
    """Ends in FAILURE."""
    raise ValueError("traced failure")


def _trace_to_file(path: Path) -> None:
    """This process as a traced worker: an SDK provider exporting to ``path``, instrumented
    unless :data:`INSTRUMENT_VARIABLE` is ``0``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    trace.set_tracer_provider(provider)
    if os.environ.get(INSTRUMENT_VARIABLE) != "0":
        CeleryInstrumentor().instrument()


class JsonLinesExporter(SpanExporter):
    """A span exporter appending each span as one JSON line (ids in hex, as W3C writes them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_as_dict(span)) + "\n" for span in spans]
        with self._lock, self.path.open("a") as out:
            out.writelines(lines)
        return SpanExportResult.SUCCESS


def _as_dict(span: ReadableSpan) -> dict[str, object]:
    assert span.context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "attributes": dict(span.attributes or {}),
    }


if os.environ.get(SPANS_FILE_VARIABLE):
    _trace_to_file(Path(os.environ[SPANS_FILE_VARIABLE]))
