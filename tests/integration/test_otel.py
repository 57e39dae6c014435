"""OpenTelemetry on both paths: one trace from ``apply_async`` through the Lambda path, a chain
and a worker, interoperating with ``opentelemetry-instrumentation-celery``.

The test process is the producer and the Lambda path (``handlers.sqs.handler`` invoked with real
SQS events from moto's server); its spans go to the SDK's in-memory exporter. The worker path is
a real ``celery worker`` subprocess tracing with the instrumentation, as a user's worker would:
it cannot share that exporter, so it writes its spans to a file (:mod:`tests.apps.traced`).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import chain
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from devtools.cloud.deploy import Deployment
from infra.core.errors import UnknownQueueError
from tests.apps import traced
from tests.integration.two_paths import Queues, worker_and_lambda_queues
from tests.invoke import invoke
from tests.sqs_helpers import receive
from tests.workers import ROOT, celery_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """This process's spans, in memory (the SDK provider is process-wide: set once)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory
    memory.shutdown()  # a provider keeps its processors: later spans are dropped, not kept


@pytest.fixture
def queues(
    cloud: Deployment, monkeypatch: pytest.MonkeyPatch, exporter: InMemorySpanExporter
) -> Iterator[Queues]:
    with worker_and_lambda_queues(
        traced.app, "tests.apps.traced:app", cloud, monkeypatch, "traced"
    ) as queues:
        exporter.clear()
        yield queues


def _one(spans: list[ReadableSpan], kind: SpanKind, name: str) -> ReadableSpan:
    found = [s for s in spans if s.kind is kind and s.name == name]
    assert len(found) == 1, f"{kind.name} {name!r}: {[(s.kind.name, s.name) for s in spans]}"
    return found[0]


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def _parent(span: ReadableSpan) -> str | None:
    return f"{span.parent.span_id:016x}" if span.parent else None


def _worker_spans(path: Path, name: str, within: float = 30.0) -> list[dict[str, Any]]:
    """The worker's exported spans once one named ``name`` is among them."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if path.exists():
            spans = [json.loads(line) for line in path.read_text().splitlines()]
            if any(s["name"] == name for s in spans):
                return spans
        time.sleep(0.2)
    pytest.fail(f"the worker exported no span {name!r}")


@pytest.mark.parametrize("instrumented", [True, False], ids=["instrumented-worker", "plain-worker"])
def test_one_trace_from_the_producer_through_the_lambda_path_and_a_chain_to_a_worker(
    queues: Queues,
    exporter: InMemorySpanExporter,
    cloud_env: dict[str, str],
    tmp_path: Path,
    instrumented: bool,
) -> None:
    """The worker continues the trace with the instrumentation's span, or without it with ours."""
    with trace.get_tracer("test").start_as_current_span("web request"):
        result = chain(
            traced.first.si(1).set(queue=queues.lambda_name),
            traced.second.s().set(queue=queues.worker),
        ).apply_async()
    [message] = receive(queues.lambda_.queue_url, 1)
    assert invoke(queues.lambda_, [message]) == []  # runs first, publishes second
    spans_file = tmp_path / "worker-spans.jsonl"
    env = {
        **cloud_env,
        "CELERY_QUEUE_URLS": json.dumps(queues.urls),
        traced.SPANS_FILE_VARIABLE: str(spans_file),
        traced.INSTRUMENT_VARIABLE: "1" if instrumented else "0",
    }
    args = ["-Q", queues.worker, "--pool=solo"]
    run_name = "run/traced.second" if instrumented else f"process {queues.worker}"
    with celery_worker("tests.apps.traced", args, env, tmp_path / "worker.log"):
        assert result.get(timeout=60) == 20
        worker_spans = _worker_spans(spans_file, run_name)

    ours = list(exporter.get_finished_spans())
    request = _one(ours, SpanKind.INTERNAL, "web request")
    published = _one(ours, SpanKind.PRODUCER, f"send {queues.lambda_name}")
    record = _one(ours, SpanKind.CONSUMER, f"process {queues.lambda_name}")
    chained = _one(ours, SpanKind.PRODUCER, f"send {queues.worker}")
    [ran] = [s for s in worker_spans if s["name"] == run_name]
    trace_id, request_id = _ids(request)
    assert {_ids(s)[0] for s in (published, record, chained)} == {trace_id}
    assert ran["trace_id"] == trace_id
    # Each step is the child of the one before it, across both processes.
    assert _parent(published) == request_id
    assert _parent(record) == _ids(published)[1]
    assert _parent(chained) == _ids(record)[1]
    assert ran["parent_id"] == _ids(chained)[1]
    assert ran["kind"] == "CONSUMER"
    assert dict(record.attributes or {}) == {
        "messaging.system": "aws_sqs",
        "messaging.destination.name": queues.lambda_name,
        "messaging.operation.type": "process",
        "messaging.message.id": message["MessageId"],
        "celery.task_name": "traced.first",
        "celery.task_id": result.parent.id,
        "celery.state": "SUCCESS",
    }
    assert (published.attributes or {})["celery.task_name"] == "traced.first"
    assert (chained.attributes or {})["celery.task_name"] == "traced.second"
    if not instrumented:
        assert ran["attributes"] == {
            "messaging.system": "aws_sqs",
            "messaging.destination.name": queues.worker,
            "messaging.operation.type": "process",
            "celery.task_name": "traced.second",
            "celery.task_id": result.id,
            "celery.state": "SUCCESS",
        }


def test_a_failed_task_marks_its_one_record_span_as_an_error(
    queues: Queues, exporter: InMemorySpanExporter
) -> None:
    result = traced.fails.apply_async(queue=queues.lambda_name)
    messages = receive(queues.lambda_.queue_url, 1)

    assert invoke(queues.lambda_, messages) == []  # FAILURE recorded: the record is acked

    consumers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    [record] = consumers  # Celery's task signals inside it made no second span
    assert (record.attributes or {})["celery.state"] == "FAILURE"
    assert (record.attributes or {})["celery.task_id"] == result.id
    assert record.status.status_code is StatusCode.ERROR
    assert record.status.description == "ValueError"


def test_the_lambda_path_continues_a_producer_traced_by_the_instrumentation(
    queues: Queues, exporter: InMemorySpanExporter
) -> None:
    instrumentor = CeleryInstrumentor()
    instrumentor.instrument()
    try:
        result = traced.first.apply_async((1,), queue=queues.lambda_name)
    finally:
        instrumentor.uninstrument()
    messages = receive(queues.lambda_.queue_url, 1)

    assert invoke(queues.lambda_, messages) == []

    spans = list(exporter.get_finished_spans())
    theirs = _one(spans, SpanKind.PRODUCER, "apply_async/traced.first")
    record = _one(spans, SpanKind.CONSUMER, f"process {queues.lambda_name}")
    assert not [s for s in spans if s.name.startswith("send ")]  # theirs replaced ours
    assert _ids(record)[0] == _ids(theirs)[0]
    assert _parent(record) == _ids(theirs)[1]
    assert result.get(timeout=10) == 2


IMPORT_AND_PUBLISH = """
import json, sys
if BLOCK:
    sys.modules["opentelemetry"] = None  # as if the [otel] extra were not installed
def tracing_modules():
    names = ("opentelemetry", "infra.core.otel")
    return sorted(m for m, mod in sys.modules.items() if mod and m.startswith(names))
import handlers.sqs, tasks
from infra.core import tracing
imported = tracing_modules()
if not BLOCK:  # a provider, so that the publish has a span context to inject
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
tasks.app.tasks["tasks.add"].apply_async((1, 2), queue=QUEUE)
report = {"installed": tracing.installed(), "imported": imported, "after": tracing_modules()}
print(json.dumps(report))
"""


@pytest.mark.parametrize("block", [True, False], ids=["without-extra", "with-extra"])
def test_opentelemetry_is_never_imported_at_import_and_not_at_all_without_the_extra(
    queues: Queues, cloud_env: dict[str, str], block: bool
) -> None:
    script = IMPORT_AND_PUBLISH.replace("BLOCK", repr(block)).replace(
        "QUEUE", repr(queues.lambda_name)
    )
    env = {**cloud_env, "CELERY_QUEUE_URLS": json.dumps(queues.urls)}
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.splitlines()[-1])
    [message] = receive(queues.lambda_.queue_url, 1)
    headers = json.loads(base64.b64decode(message["Body"]))["headers"]

    assert report["imported"] == []  # cold import unchanged either way
    assert report["installed"] is not block
    if block:
        assert report["after"] == []
        assert "traceparent" not in headers
    else:
        assert "infra.core.otel" in report["after"]  # loaded by the first publish
        assert headers["traceparent"].startswith("00-")


def test_a_publish_that_failed_ends_its_span_as_an_error_at_the_next_publish(
    queues: Queues, exporter: InMemorySpanExporter
) -> None:
    with pytest.raises(UnknownQueueError, match="no-such-queue"):
        traced.first.apply_async((1,), queue="no-such-queue")
    traced.first.apply_async((1,), queue=queues.lambda_name)

    failed = _one(list(exporter.get_finished_spans()), SpanKind.PRODUCER, "send no-such-queue")
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "publish did not complete"
    _one(list(exporter.get_finished_spans()), SpanKind.PRODUCER, f"send {queues.lambda_name}")
