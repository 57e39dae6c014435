"""The Lambda handler driven the way Lambda drives it, against moto in server mode.

Tasks of the test-only app ``tests.apps.probe`` are published with real Celery ``apply_async``
to a queue of this module (with a DLQ, redrive after 3 receives), received with ReceiveMessage,
turned into a real Lambda SQS event by the event-source emulator's ``build_event`` and handed to
``handlers.sqs.handler``. After the invocation the test deletes what the response did not report,
as the event source mapping does. Side effects are counted in the users table (``probe.calls``).
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import json
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import botocore.exceptions
import pytest
from celery import Celery, group, states
from celery._state import get_current_app
from celery.signals import before_task_publish

from handlers.sqs import handler
from infra import aws, runtime
from infra.errors import ConfigurationError, StoreError
from infra.hooks import CONFIG_KEY, Hooks, RecordHook, register
from infra.items import task_key
from infra.local.cli import point_app_at
from infra.local.consumer import build_event, delete_requests, make_context
from infra.local.deploy import Deployment, EventSource
from infra.local.emulator import request_counts
from infra.local.template import load_template
from infra.memory import BUDGET_FRACTION, resident_bytes
from infra.observability import (
    CONSUMER_METRICS,
    LOG_KEYS,
    METRIC_DECODE_FAILED,
    METRIC_DEFERRED,
    METRIC_DELAYED,
    METRIC_DURATION,
    METRIC_EXPIRED,
    METRIC_FAILED,
    METRIC_MACHINERY_FAILED,
    METRIC_MEMORY_HIGH,
    METRIC_PAYLOAD_SIZE,
    METRIC_QUEUE_WAIT,
    METRIC_RATE_LIMITED,
    METRIC_RECEIVED,
    METRIC_RECORDS,
    METRIC_RETRIED,
    METRIC_STARTED,
    METRIC_SUCCEEDED,
    METRIC_UNKNOWN_TASK,
    NAMESPACE,
    TASK_METRICS,
    logger,
)
from infra.pipeline import SAFETY_MARGIN_SECONDS
from infra.protocol import decode
from infra.ratelimit import rate_key
from infra.results import LARGE_RESULT_BYTES, DynamoDBBackend
from infra.revoke import revoke
from infra.settings import Settings
from tests.apps import probe
from tests.invoke import context_with, invoke
from tests.sqs_helpers import counts, queue_with_dlq, receive

Message = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Queues:
    """This module's queues: a standard one the probe app publishes to, and a FIFO one."""

    region: str
    source: EventSource
    dlq_url: str
    fifo: EventSource


# ---------------------------------------------------------------- fixtures


def _reset_backend(app: Celery) -> None:
    """Drop the app's cached result backend after ``result_backend`` changed.

    Celery has no public reset; this is what ``point_app_at`` (and Celery's after-fork hook) do.
    """
    app._backend_cache = None
    vars(app._local).pop("backend", None)


@pytest.fixture(scope="module")
def queues(cloud: Deployment) -> Iterator[Queues]:
    """Fresh queues for this module; the probe app publishes to the standard one."""
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    name = f"handler-{uuid.uuid4().hex[:8]}"
    url, arn, dlq_url = dataclasses.astuple(
        queue_with_dlq(name, attributes={"VisibilityTimeout": "60"})
    )
    fifo_url, fifo_arn, fifo_dlq_url = dataclasses.astuple(
        queue_with_dlq(
            f"{name}.fifo",
            attributes={"VisibilityTimeout": "60", "ContentBasedDeduplication": "false"},
        )
    )
    previous_app = get_current_app()
    point_app_at(probe.app, cloud)
    options = dict(probe.app.conf.broker_transport_options)
    options["predefined_queues"] = {**options.get("predefined_queues", {}), name: {"url": url}}
    probe.app.conf.broker_transport_options = options
    probe.app.conf.task_default_queue = name
    source = dataclasses.replace(celery_source, queue_url=url, queue_arn=arn)
    yield Queues(
        region=cloud.region,
        source=source,
        dlq_url=dlq_url,
        fifo=dataclasses.replace(source, queue_url=fifo_url, queue_arn=fifo_arn),
    )
    previous_app.set_current()
    for queue_url in (url, dlq_url, fifo_url, fifo_dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=queue_url)


@pytest.fixture(autouse=True)
def served(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The handler serves the probe app; every test starts with empty queues."""
    monkeypatch.setenv("CELERY_APP", "tests.apps.probe:app")
    runtime.pipeline.cache_clear()
    for url in (queues.source.queue_url, queues.dlq_url, queues.fifo.queue_url):
        aws.client("sqs").purge_queue(QueueUrl=url)
    yield
    runtime.pipeline.cache_clear()


@pytest.fixture
def producer(queues: Queues) -> Iterator[Callable[..., Celery]]:
    """Make stock producer apps (no project configuration, no publish hooks) for the queue."""
    made: list[Celery] = []

    def make(**conf: Any) -> Celery:
        app = Celery(f"producer-{len(made)}", set_as_current=False)
        app.conf.update(
            broker_url=probe.app.conf.broker_url,
            broker_transport_options=probe.app.conf.broker_transport_options,
            task_default_queue=probe.app.conf.task_default_queue,
            **conf,
        )
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def published() -> Iterator[dict[str, dict[str, Any]]]:
    """Headers of every task message published while the test runs, by task id."""
    seen: dict[str, dict[str, Any]] = {}

    def keep(sender: Any = None, headers: Any = None, **_: Any) -> None:
        seen[headers["id"]] = dict(headers)

    before_task_publish.connect(keep, weak=False)
    yield seen
    before_task_publish.disconnect(keep)


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> pytest.CaptureFixture[str]:
    """``capsys``, with the handler's JSON logger writing into it too.

    Powertools binds its stream to the ``sys.stdout`` of the moment the logger is created (here:
    pytest's session capture, at collection); on Lambda that is the function's stdout.
    """
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    monkeypatch.setattr(handler, "stream", _CurrentStdout())
    return capsys


# ---------------------------------------------------------------- helpers


def visible_again(url: str, messages: Sequence[Message]) -> None:
    """End the visibility timeout of received messages now, as if it had passed."""
    aws.client("sqs").change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ],
    )


def envelope(message: Message) -> dict[str, Any]:
    """The kombu envelope of a message Celery published (base64 SQS body)."""
    parsed: dict[str, Any] = json.loads(base64.b64decode(message["Body"]))
    return parsed


def task_id(message: Message) -> str:
    return str(envelope(message)["headers"]["id"])


def by_task(messages: Sequence[Message]) -> dict[str, Message]:
    return {task_id(m): m for m in messages}


def send_raw(url: str, body: str, **options: Any) -> str:
    """Send a body with boto3; its message id."""
    response = aws.client("sqs").send_message(QueueUrl=url, MessageBody=body, **options)
    return str(response["MessageId"])


def marker() -> str:
    return uuid.uuid4().hex


def json_lines(text: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``text`` that ``keep`` selects."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            parsed = json.loads(line)
            if keep(parsed):
                found.append(parsed)
    return found


def emf_metrics(text: str) -> dict[str, list[float]]:
    """The application metrics of the EMF lines printed (not the cold-start one), merged."""
    blobs = json_lines(text, lambda o: "_aws" in o and "ColdStart" not in o)
    assert blobs, f"no EMF line in {text!r}"
    merged: dict[str, list[float]] = {}
    for blob in blobs:
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        for metric in directive["Metrics"]:
            merged.setdefault(metric["Name"], []).extend(
                float(v) for v in _as_list(blob[metric["Name"]])
            )
    return merged


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def stored(task: str) -> Any:
    return probe.app.AsyncResult(task)


# ---------------------------------------------------------------- partial batch


def test_partial_batch_reports_exactly_the_bad_records(
    queues: Queues, producer: Callable[..., Celery]
) -> None:
    url = queues.source.queue_url
    pickle_producer = producer(task_serializer="pickle", accept_content=["pickle", "json"])
    good, pickled = marker(), marker()
    good_id = probe.record.apply_async((good, 42)).id
    garbage = send_raw(url, "this is not a task message")
    not_envelope = send_raw(url, base64.b64encode(json.dumps({"hello": "world"}).encode()).decode())
    unknown_id = probe.app.send_task("probe.nope", args=(1,)).id
    pickled_id = pickle_producer.send_task("probe.record", args=(pickled,)).id
    messages = receive(url, 5)
    celery = by_task([m for m in messages if m["MessageId"] not in (garbage, not_envelope)])
    celery_ids = {tid: m["MessageId"] for tid, m in celery.items()}
    assert envelope(celery[pickled_id])["content-type"] == "application/x-python-serialize"

    failed = invoke(queues.source, messages)

    bad = {garbage, not_envelope, celery_ids[unknown_id], celery_ids[pickled_id]}
    assert sorted(failed) == sorted(bad)
    assert celery_ids[good_id] not in failed
    assert stored(good_id).state == states.SUCCESS and stored(good_id).result == 42
    assert probe.calls(good) == 1
    assert probe.calls(pickled) == 0
    assert stored(pickled_id).state == states.PENDING
    assert stored(unknown_id).state == states.PENDING
    assert counts(url) == (0, 4, 0)  # the bad ones come back after the visibility timeout


def test_app_that_cannot_be_loaded_returns_every_record(
    queues: Queues, monkeypatch: pytest.MonkeyPatch, stdout: pytest.CaptureFixture[str]
) -> None:
    done = [marker(), marker()]
    for m in done:
        probe.record.apply_async((m,))
    messages = receive(queues.source.queue_url, 2)
    monkeypatch.setenv("CELERY_APP", "tests.apps.no_such_module:app")
    runtime.pipeline.cache_clear()
    stdout.readouterr()

    failed = invoke(queues.source, messages)

    assert failed == [m["MessageId"] for m in messages]
    assert emf_metrics(stdout.readouterr().out) == {
        METRIC_RECORDS: [2.0],
        METRIC_MACHINERY_FAILED: [1.0, 1.0],
    }
    # Loading is retried by the next invocation, which then runs them.
    monkeypatch.setenv("CELERY_APP", "tests.apps.probe:app")
    visible_again(queues.source.queue_url, messages)
    assert invoke(queues.source, receive(queues.source.queue_url, 2)) == []
    assert [probe.calls(m) for m in done] == [1, 1]


def test_app_load_failure_is_logged_with_the_record(
    queues: Queues, monkeypatch: pytest.MonkeyPatch, stdout: pytest.CaptureFixture[str]
) -> None:
    probe.record.apply_async((marker(),))
    messages = receive(queues.source.queue_url, 1)
    monkeypatch.setenv("CELERY_APP", "tests.apps.no_such_module:app")
    runtime.pipeline.cache_clear()
    stdout.readouterr()

    invoke(queues.source, messages)

    [line] = json_lines(stdout.readouterr().out, lambda o: o.get("level") == "ERROR")
    assert line.get("message_id") == messages[0]["MessageId"]
    assert line.get("receive_count") == "1"


def test_unreachable_result_store_sends_the_record_back(
    queues: Queues, monkeypatch: pytest.MonkeyPatch, stdout: pytest.CaptureFixture[str]
) -> None:
    done = marker()
    probe.record.apply_async((done,))
    messages = receive(queues.source.queue_url, 1)
    table = os.environ["RESULTS_TABLE"]
    monkeypatch.setenv("RESULTS_TABLE", f"missing-{marker()}")
    _reset_backend(probe.app)
    stdout.readouterr()
    try:
        # Celery's tracer reports a failure outside the task body with a RuntimeWarning.
        failed = invoke(queues.source, messages)
    finally:
        monkeypatch.setenv("RESULTS_TABLE", table)
        _reset_backend(probe.app)

    assert failed == [messages[0]["MessageId"]]
    assert probe.calls(done) == 0  # the claim could not be made: not run, SQS brings it back
    assert emf_metrics(stdout.readouterr().out)[METRIC_MACHINERY_FAILED] == [1.0]


# ---------------------------------------------------------------- gate


def test_expired_task_is_revoked_and_acked(queues: Queues) -> None:
    done = marker()
    expired = probe.record.apply_async((done,), expires=datetime.now(UTC) - timedelta(seconds=5))
    messages = receive(queues.source.queue_url, 1)

    failed = invoke(queues.source, messages)

    assert failed == []
    assert stored(expired.id).state == states.REVOKED
    assert probe.calls(done) == 0
    assert counts(queues.source.queue_url) == (0, 0, 0)


def test_future_eta_is_resent_with_a_delay(
    queues: Queues, producer: Callable[..., Celery], stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.source.queue_url
    stock = producer()
    soon, later = marker(), marker()
    soon_id = stock.send_task("probe.record", (soon,), countdown=120).id
    # A stock producer: no native delay, the message is visible at once.
    [first] = receive(url, 1, within=1)
    later_id = stock.send_task(
        "probe.record", (later,), eta=datetime.now(UTC) + timedelta(hours=2)
    ).id
    [second] = receive(url, 1, within=1)
    stdout.readouterr()

    failed = invoke(queues.source, [first, second])

    assert failed == []
    assert counts(url) == (0, 0, 2)  # both re-sent, invisible for now; the originals acked
    assert probe.calls(soon) == probe.calls(later) == 0
    assert stored(soon_id).state == stored(later_id).state == states.PENDING
    out = stdout.readouterr().out
    delays = {
        line["task_id"]: line["delay_seconds"]
        for line in json_lines(out, lambda o: "delay_seconds" in o)
    }
    assert 110 <= delays[soon_id] <= 120
    assert delays[later_id] == 900
    assert sum(emf_metrics(out)[METRIC_DELAYED]) == 2


def test_naive_eta_from_a_non_utc_producer_is_understood(
    queues: Queues, producer: Callable[..., Celery]
) -> None:
    done = marker()
    legacy = producer(task_protocol=1, enable_utc=False)
    long_ago = datetime.now() - timedelta(days=1)  # naive local time, as such apps send it
    legacy.send_task("probe.record", (done,), eta=long_ago)
    messages = receive(queues.source.queue_url, 1)
    body = json.loads(base64.b64decode(envelope(messages[0])["body"]))
    assert body["utc"] is False and body["eta"] == long_ago.isoformat()

    assert invoke(queues.source, messages) == []

    assert probe.calls(done) == 1


def test_resent_message_keeps_its_body_and_attributes(
    queues: Queues, producer: Callable[..., Celery]
) -> None:
    url = queues.source.queue_url
    producer().send_task("probe.record", (marker(),), countdown=1)
    [published] = receive(url, 1, within=1)
    aws.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=published["ReceiptHandle"])
    attributes = {
        "tenant": {"DataType": "String", "StringValue": "acme"},
        "blob": {"DataType": "Binary", "BinaryValue": b"\x00\xff"},
    }
    send_raw(url, published["Body"], MessageAttributes=attributes)
    [message] = receive(url, 1, within=1)

    assert invoke(queues.source, [message]) == []

    assert counts(url) == (0, 0, 1)
    [again] = receive(url, 1, within=5)
    assert again["Body"] == message["Body"]
    assert again["MessageId"] != message["MessageId"]
    assert again["Attributes"]["ApproximateReceiveCount"] == "1"
    assert again["MessageAttributes"] == attributes
    aws.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])


def test_poison_message_ends_in_the_dead_letter_queue(queues: Queues) -> None:
    url = queues.source.queue_url
    poison = send_raw(url, "poison")
    for receive_count in range(1, 4):
        [message] = receive(url, 1)
        assert message["Attributes"]["ApproximateReceiveCount"] == str(receive_count)
        assert invoke(queues.source, [message]) == [poison]
        visible_again(url, [message])

    empty = aws.client("sqs").receive_message(QueueUrl=url, WaitTimeSeconds=1)
    assert "Messages" not in empty
    [dead] = receive(queues.dlq_url, 1)
    assert dead["Body"] == "poison"


# ---------------------------------------------------------------- retries


def test_retry_publishes_the_next_attempt_and_acks(queues: Queues) -> None:
    url = queues.source.queue_url
    tries = marker()
    result = probe.retrying.apply_async((tries,), kwargs={"fail_times": 1, "countdown": 1})
    [first] = receive(url, 1)

    assert invoke(queues.source, [first]) == []

    assert stored(result.id).state == states.RETRY
    assert probe.calls(tries) == 1
    # The next attempt is a new message for the same task id. A stock producer (no publish
    # hooks) makes it visible at once; the gate then delays it until its ETA.
    ran_again = False
    deadline = time.monotonic() + 15
    while not ran_again and time.monotonic() < deadline:
        [retry] = receive(url, 1)
        assert retry["MessageId"] != first["MessageId"]
        assert task_id(retry) == result.id
        assert envelope(retry)["headers"]["retries"] == 1
        assert invoke(queues.source, [retry]) == []
        ran_again = probe.calls(tries) == 2
    assert ran_again
    assert stored(result.id).state == states.SUCCESS
    assert stored(result.id).result == 1
    assert counts(url) == (0, 0, 0)


def test_max_retries_exceeded_is_a_failure_with_traceback(queues: Queues) -> None:
    tries = marker()
    result = probe.retrying.apply_async((tries,), kwargs={"fail_times": 5}, retries=1)
    messages = receive(queues.source.queue_url, 1)

    assert invoke(queues.source, messages) == []

    meta = stored(result.id)
    assert meta.state == states.FAILURE
    assert isinstance(meta.result, RuntimeError)
    assert "attempt 1" in str(meta.result)
    assert meta.traceback and "RuntimeError" in meta.traceback
    assert probe.calls(tries) == 1
    assert counts(queues.source.queue_url) == (0, 0, 0)  # no further attempt published


def test_retry_is_delayed_natively(queues: Queues) -> None:
    probe.retrying.apply_async((marker(),), kwargs={"fail_times": 1, "countdown": 30})
    messages = receive(queues.source.queue_url, 1)

    assert invoke(queues.source, messages) == []

    assert counts(queues.source.queue_url) == (0, 0, 1)


def test_s3_claim_check_pointer_is_fetched(queues: Queues) -> None:
    url = queues.source.queue_url
    done = marker()
    result = probe.record.apply_async((done, "large"))
    [original] = receive(url, 1)
    aws.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=original["ReceiptHandle"])
    bucket, key = Settings.from_env().results_bucket, f"bodies/{uuid.uuid4()}"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=original["Body"].encode())
    pointer = json.dumps(
        [
            "software.amazon.payloadoffloading.PayloadS3Pointer",
            {"s3BucketName": bucket, "s3Key": key},
        ]
    )
    size = {"DataType": "Number", "StringValue": str(len(original["Body"]))}
    send_raw(url, pointer, MessageAttributes={"ExtendedPayloadSize": size})

    assert invoke(queues.source, receive(url, 1)) == []

    assert stored(result.id).result == "large"
    assert probe.calls(done) == 1


def test_reject_with_requeue_goes_back_to_sqs(queues: Queues) -> None:
    done = marker()
    probe.reject.apply_async((done,))
    messages = receive(queues.source.queue_url, 1)

    failed = invoke(queues.source, messages)

    assert probe.calls(done) == 1
    assert failed == [messages[0]["MessageId"]]


def test_redelivered_finished_task_does_not_run_again(queues: Queues) -> None:
    url = queues.source.queue_url
    done = marker()
    result = probe.record.apply_async((done,))
    [message] = receive(url, 1)
    event = build_event([message], queues.source, queues.region)
    assert handler(event, make_context(queues.source)) == {"batchItemFailures": []}
    # The delete got lost (or the invocation timed out after the task): SQS delivers it again.
    visible_again(url, [message])
    [again] = receive(url, 1)
    assert again["Attributes"]["ApproximateReceiveCount"] == "2"

    assert invoke(queues.source, [again]) == []

    assert stored(result.id).state == states.SUCCESS
    assert probe.calls(done) == 1


# ---------------------------------------------------------------- time limits and deadline


def test_soft_time_limit_raises_inside_the_task(queues: Queues) -> None:
    result = probe.limited.apply_async(("soft",))
    messages = receive(queues.source.queue_url, 1)

    started = time.monotonic()
    assert invoke(queues.source, messages) == []

    assert time.monotonic() - started < 4
    assert stored(result.id).state == states.SUCCESS
    assert stored(result.id).result == "soft"


def test_hard_time_limit_is_a_failure(queues: Queues) -> None:
    result = probe.limited.apply_async(("hard",))
    messages = receive(queues.source.queue_url, 1)

    started = time.monotonic()
    assert invoke(queues.source, messages) == []

    assert time.monotonic() - started < 4
    meta = stored(result.id)
    assert meta.state == states.FAILURE
    assert type(meta.result).__name__ == "TimeLimitExceeded"


def test_message_time_limits_override_the_task(queues: Queues) -> None:
    result = probe.limited.apply_async(("soft",), soft_time_limit=0.2, time_limit=0.4)
    messages = receive(queues.source.queue_url, 1)

    started = time.monotonic()
    assert invoke(queues.source, messages) == []

    assert time.monotonic() - started < 1.2
    assert stored(result.id).result == "soft"


def test_task_longer_than_the_invocation_goes_back_to_sqs(
    queues: Queues, stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.source.queue_url
    slow, after = marker(), marker()
    slow_id = probe.sleep.apply_async((10, slow)).id
    [first] = receive(url, 1)
    after_id = probe.record.apply_async((after,)).id
    [second] = receive(url, 1)
    context = context_with(queues.source, SAFETY_MARGIN_SECONDS + 3)

    started = time.monotonic()
    failed = invoke(queues.source, [first, second], context)

    elapsed = time.monotonic() - started
    assert 2 < elapsed < 5, elapsed  # interrupted at the margin, not after 10 s
    assert failed == [first["MessageId"], second["MessageId"]]
    assert probe.calls(slow) == 1  # it had started
    assert stored(slow_id).state == states.PENDING  # not recorded as FAILURE
    assert probe.calls(after) == 0  # too little time left to start it
    assert stored(after_id).state == states.PENDING
    assert emf_metrics(stdout.readouterr().out)[METRIC_DEFERRED] == [1.0, 1.0]
    # The interrupted task left no request behind: the next task runs with its own.
    dumped = probe.dump.apply_async()
    assert invoke(queues.source, receive(url, 1)) == []
    assert stored(dumped.id).result["id"] == dumped.id


def test_records_not_started_near_the_deadline_are_all_returned(queues: Queues) -> None:
    done = [marker() for _ in range(3)]
    for m in done:
        probe.record.apply_async((m,))
    messages = receive(queues.source.queue_url, 3)

    failed = invoke(queues.source, messages, context_with(queues.source, 3))

    assert failed == [m["MessageId"] for m in messages]
    assert [probe.calls(m) for m in done] == [0, 0, 0]


# ---------------------------------------------------------------- failures and callbacks


def test_task_that_raises_is_a_recorded_failure_and_acked(queues: Queues) -> None:
    url = queues.source.queue_url
    boom, errback = marker(), marker()
    failing = probe.boom.apply_async((boom,), link_error=probe.on_error.s(marker=errback))
    callback_marker = marker()
    ok = probe.record.apply_async((marker(), callback_marker), link=probe.record.s())
    messages = receive(url, 2)

    failed = invoke(queues.source, messages)

    assert failed == []
    meta = stored(failing.id)
    assert meta.state == states.FAILURE
    assert isinstance(meta.result, ValueError) and str(meta.result) == f"boom {boom}"
    assert meta.traceback and "ValueError" in meta.traceback
    assert probe.calls(f"{errback}:{failing.id}:ValueError") == 1
    assert stored(ok.id).state == states.SUCCESS
    # The link callback is published with the result as its first argument.
    [callback] = receive(url, 1)
    assert callback["MessageId"] not in {m["MessageId"] for m in messages}
    headers = envelope(callback)["headers"]
    assert headers["task"] == "probe.record"
    assert headers["parent_id"] == ok.id and headers["root_id"] == ok.id
    assert invoke(queues.source, [callback]) == []
    assert probe.calls(callback_marker) == 1


# ---------------------------------------------------------------- the request


def _aware(value: Any) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def test_bound_request_matches_what_was_published(
    queues: Queues, published: dict[str, dict[str, Any]]
) -> None:
    eta = datetime.now(UTC) - timedelta(seconds=1)
    expires = datetime.now(UTC) + timedelta(hours=1)
    direct = probe.dump.apply_async((1, "a"), {"k": [2]}, eta=eta, expires=expires)
    members = group(probe.dump.s(i) for i in range(2)).apply_async()
    messages = receive(queues.source.queue_url, 3)

    assert invoke(queues.source, messages) == []

    seen = stored(direct.id).result
    sent = published[direct.id]
    assert seen["id"] == sent["id"] == direct.id
    assert seen["root_id"] == sent["root_id"] == direct.id
    assert seen["parent_id"] is sent["parent_id"] is None
    assert seen["group"] is None
    assert seen["retries"] == sent["retries"] == 0
    assert seen["routing_key"] == probe.app.conf.task_default_queue
    assert _aware(seen["eta"]) == _aware(sent["eta"]) == eta
    assert _aware(seen["expires"]) == _aware(sent["expires"]) == expires
    assert seen["called_directly"] is False and seen["is_eager"] is False
    assert seen["args"] == [1, "a"] and seen["kwargs"] == {"k": [2]}
    assert seen["correlation_id"] == direct.id
    assert seen["origin"] == sent["origin"]
    assert seen["hostname"].startswith("lambda@")
    for index, member in enumerate(members.results):
        fields = stored(member.id).result
        assert fields["group"] == published[member.id]["group"] == members.id
        assert fields["group_index"] == index
        assert fields["root_id"] == member.id and fields["parent_id"] is None


def test_task_sent_by_a_task_knows_its_parent_and_root(
    queues: Queues, published: dict[str, dict[str, Any]]
) -> None:
    url = queues.source.queue_url
    parent = probe.spawn.apply_async()
    assert invoke(queues.source, receive(url, 1)) == []
    child_id = stored(parent.id).result
    [child] = receive(url, 1)
    assert task_id(child) == child_id

    assert invoke(queues.source, [child]) == []

    seen = stored(child_id).result
    assert seen["parent_id"] == published[child_id]["parent_id"] == parent.id
    assert seen["root_id"] == published[child_id]["root_id"] == parent.id
    assert seen["args"] == ["from a task"]
    assert seen["called_directly"] is False


# ---------------------------------------------------------------- result backends


def test_filesystem_backend_stores_results_unless_ignored(queues: Queues, tmp_path: Path) -> None:
    saved = probe.app.conf.result_backend
    probe.app.conf.result_backend = f"file://{tmp_path}"
    _reset_backend(probe.app)
    try:
        kept, ignored = marker(), marker()
        kept_id = probe.record.apply_async((kept, "stored")).id
        ignored_id = probe.record.apply_async((ignored, "dropped"), ignore_result=True).id
        messages = receive(queues.source.queue_url, 2)

        assert invoke(queues.source, messages) == []

        assert probe.calls(kept) == probe.calls(ignored) == 1
        assert {p.name for p in tmp_path.iterdir()} == {f"celery-task-meta-{kept_id}"}
        assert stored(kept_id).state == states.SUCCESS
        assert stored(kept_id).result == "stored"
        assert stored(ignored_id).state == states.PENDING
    finally:
        probe.app.conf.result_backend = saved
        _reset_backend(probe.app)


# ---------------------------------------------------------------- observability


def test_every_log_line_of_a_record_carries_its_keys(
    queues: Queues, producer: Callable[..., Celery], stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.source.queue_url
    probe.record.apply_async((marker(),))
    probe.boom.apply_async((marker(),))
    probe.retrying.apply_async((marker(),), kwargs={"countdown": 60})
    probe.record.apply_async((marker(),), expires=datetime.now(UTC) - timedelta(seconds=1))
    producer().send_task("probe.record", (marker(),), countdown=60)
    probe.app.send_task("probe.nope")
    tasks = by_task(receive(url, 6))
    garbage = send_raw(url, "garbage")
    messages = [*tasks.values(), *receive(url, 1)]
    names = {tid: envelope(m)["headers"]["task"] for tid, m in tasks.items()}
    stdout.readouterr()

    invoke(queues.source, messages)

    lines = json_lines(stdout.readouterr().out, lambda o: "level" in o)
    by_message: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        assert "message_id" in line, line
        by_message.setdefault(line["message_id"], []).append(line)
    assert set(by_message) == {m["MessageId"] for m in messages}
    for tid, message in tasks.items():
        for line in by_message[message["MessageId"]]:
            assert {key: line.get(key) for key in LOG_KEYS} == {
                "task_id": tid,
                "task_name": names[tid],
                "message_id": message["MessageId"],
                "receive_count": "1",
            }, line
    # Nothing about the task is known for a body that does not decode, and nothing leaks in
    # from the record before it.
    for line in by_message[garbage]:
        assert line["receive_count"] == "1"
        assert "task_id" not in line and "task_name" not in line
    # Celery's own lines (its tracer reporting the failure) are in the same JSON with the keys.
    boom_id = next(tid for tid, name in names.items() if name == "probe.boom")
    celery_lines = [line for line in lines if str(line.get("name", "")).startswith("celery")]
    assert any(line["task_id"] == boom_id and line["level"] == "ERROR" for line in celery_lines)


def test_metrics_name_what_happened(
    queues: Queues, producer: Callable[..., Celery], stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.source.queue_url
    for _ in range(2):
        probe.record.apply_async((marker(),))
    probe.boom.apply_async((marker(),))
    probe.retrying.apply_async((marker(),), kwargs={"countdown": 60})
    probe.record.apply_async((marker(),), expires=datetime.now(UTC) - timedelta(seconds=1))
    producer().send_task("probe.record", (marker(),), countdown=60)
    probe.app.send_task("probe.nope")
    messages = receive(url, 7)
    send_raw(url, "garbage")
    messages += receive(url, 1)
    stdout.readouterr()

    failed = invoke(queues.source, messages)

    assert len(failed) == 2
    out = stdout.readouterr().out
    metrics = emf_metrics(out)
    assert set(metrics) == {
        METRIC_RECORDS,
        METRIC_RECEIVED,
        METRIC_PAYLOAD_SIZE,
        METRIC_STARTED,
        METRIC_SUCCEEDED,
        METRIC_FAILED,
        METRIC_RETRIED,
        METRIC_EXPIRED,
        METRIC_DELAYED,
        METRIC_UNKNOWN_TASK,
        METRIC_DECODE_FAILED,
        METRIC_DURATION,
        METRIC_QUEUE_WAIT,
    }
    assert metrics[METRIC_RECORDS] == [8.0]
    assert sum(metrics[METRIC_RECEIVED]) == 6  # all but the unknown task and the garbage
    assert sum(metrics[METRIC_STARTED]) == 4
    assert all(size > 100 for size in metrics[METRIC_PAYLOAD_SIZE])
    assert sum(metrics[METRIC_SUCCEEDED]) == 2
    for name in (METRIC_FAILED, METRIC_RETRIED, METRIC_EXPIRED, METRIC_DELAYED):
        assert sum(metrics[name]) == 1, name
    assert sum(metrics[METRIC_UNKNOWN_TASK]) == sum(metrics[METRIC_DECODE_FAILED]) == 1
    assert len(metrics[METRIC_DURATION]) == len(metrics[METRIC_QUEUE_WAIT]) == 4
    assert all(value >= 0 for value in metrics[METRIC_QUEUE_WAIT])
    assert_vocabulary(out)


def assert_vocabulary(out: str) -> None:
    """Every EMF line uses the fixed vocabulary: task metrics carry task and queue, nothing else
    carries more than the service (no ids: bounded cardinality)."""
    for blob in json_lines(out, lambda o: "_aws" in o and "ColdStart" not in o):
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        names = {m["Name"] for m in directive["Metrics"]}
        [dimensions] = directive["Dimensions"]
        if names <= TASK_METRICS:
            assert sorted(dimensions) == ["queue", "service", "task_name"]
            assert blob["task_name"].startswith("probe.") and blob["queue"]
        else:
            assert names <= CONSUMER_METRICS and dimensions == ["service"]


# ---------------------------------------------------------------- FIFO


def celery_bodies(queues: Queues, *markers: str, task: Any = probe.record) -> list[str]:
    """Real Celery message bodies for ``task(marker)``, taken off the standard queue."""
    ids = [task.apply_async((m,)).id for m in markers]
    messages = by_task(receive(queues.source.queue_url, len(markers)))
    for entries in delete_requests(list(messages.values())):
        aws.client("sqs").delete_message_batch(QueueUrl=queues.source.queue_url, Entries=entries)
    return [messages[i]["Body"] for i in ids]


def test_fifo_failure_reports_the_rest_of_its_group_only(queues: Queues) -> None:
    url = queues.fifo.queue_url
    first, third, other = marker(), marker(), marker()
    bodies = celery_bodies(queues, first, third, other)
    sent = [
        send_raw(url, body, MessageGroupId=group_id, MessageDeduplicationId=marker())
        for body, group_id in [
            (bodies[0], "a"),
            ("garbage", "a"),
            (bodies[1], "a"),
            (bodies[2], "b"),
        ]
    ]
    messages = receive(url, 4)
    in_a = [m["MessageId"] for m in messages if m["Attributes"]["MessageGroupId"] == "a"]
    assert in_a == sent[:3]  # FIFO order kept within the group

    failed = invoke(queues.fifo, messages)

    assert failed == [sent[1], sent[2]]
    assert probe.calls(first) == 1
    assert probe.calls(third) == 0
    assert probe.calls(other) == 1


def test_fifo_batch_where_every_record_fails_is_a_partial_response(queues: Queues) -> None:
    url = queues.fifo.queue_url
    sent = send_raw(url, "garbage", MessageGroupId="a", MessageDeduplicationId=marker())
    messages = receive(url, 1)

    failed = invoke(queues.fifo, messages)

    assert failed == [sent]


def test_fifo_task_with_an_eta_is_not_a_machinery_failure(
    queues: Queues, producer: Callable[..., Celery], stdout: pytest.CaptureFixture[str]
) -> None:
    url = queues.fifo.queue_url
    later, other = marker(), marker()
    producer().send_task("probe.record", (later,), countdown=60)
    [due_later] = receive(queues.source.queue_url, 1)
    [now] = celery_bodies(queues, other)
    aws.client("sqs").delete_message(
        QueueUrl=queues.source.queue_url, ReceiptHandle=due_later["ReceiptHandle"]
    )
    send_raw(url, due_later["Body"], MessageGroupId="a", MessageDeduplicationId=marker())
    send_raw(url, now, MessageGroupId="b", MessageDeduplicationId=marker())
    messages = receive(url, 2)
    stdout.readouterr()

    invoke(queues.fifo, messages)

    assert probe.calls(other) == 1 and probe.calls(later) == 0
    out = stdout.readouterr().out
    assert METRIC_MACHINERY_FAILED not in emf_metrics(out)
    assert json_lines(out, lambda o: o.get("level") == "ERROR") == []


def test_celerys_s3_backend_stays_usable(queues: Queues) -> None:
    # Results kept by Celery's own S3 backend (no claims then): the Lambda path stores them there.
    conf = probe.app.conf
    saved = {
        k: conf.get(k) for k in ("result_backend", "s3_bucket", "s3_endpoint_url", "s3_base_path")
    }
    conf.update(
        result_backend="s3",
        s3_bucket=os.environ["RESULTS_BUCKET"],
        s3_endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        s3_base_path="s3-backend/",
    )
    _reset_backend(probe.app)
    try:
        done = marker()
        task_id = probe.record.apply_async((done, "in s3")).id
        assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []
        assert probe.calls(done) == 1
        assert probe.app.AsyncResult(task_id).get(timeout=10) == "in s3"
        listed = aws.client("s3").list_objects_v2(
            Bucket=os.environ["RESULTS_BUCKET"], Prefix="s3-backend/"
        )
        assert [o["Key"] for o in listed["Contents"]] == [f"s3-backend/celery-task-meta-{task_id}"]
    finally:
        conf.update(saved)
        _reset_backend(probe.app)


def test_the_invocation_that_ran_a_task_is_recorded(queues: Queues) -> None:
    task_id = probe.record.apply_async((marker(),)).id
    context = make_context(queues.source)

    assert invoke(queues.source, receive(queues.source.queue_url, 1), context) == []

    item = aws.client("dynamodb").get_item(
        TableName=os.environ["RESULTS_TABLE"], Key={"id": {"S": task_key(task_id)}}
    )["Item"]
    assert item["consumer"]["S"] == f"lambda:{context.aws_request_id}"
    assert item["status"]["S"] == states.SUCCESS
    assert "claim_owner" not in item  # released when the outcome was recorded


# ---------------------------------------------------------------- rate limits


def _no_turn_for(seconds: float) -> None:
    """Another consumer just started ``probe.paced``: the next turn is ``seconds`` away."""
    aws.client("dynamodb").put_item(
        TableName=os.environ["RESULTS_TABLE"],
        Item={"id": {"S": rate_key("probe.paced")}, "next_at": {"N": str(time.time() + seconds)}},
    )


def test_a_task_without_a_turn_is_handed_back_delayed_and_unclaimed(
    queues: Queues, stdout: pytest.CaptureFixture[str]
) -> None:
    _no_turn_for(60)
    done = marker()
    task_id = probe.paced.apply_async((done,)).id

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    assert counts(queues.source.queue_url) == (0, 0, 1)  # re-sent delayed, original acked
    assert probe.calls(done) == 0
    assert stored(task_id).state == states.PENDING
    item = (
        aws.client("dynamodb")
        .get_item(TableName=os.environ["RESULTS_TABLE"], Key={"id": {"S": task_key(task_id)}})
        .get("Item", {})
    )
    assert "claim_owner" not in item
    assert emf_metrics(stdout.readouterr().out)[METRIC_RATE_LIMITED] == [1.0]


def test_a_short_wait_for_a_turn_is_slept_through(queues: Queues) -> None:
    _no_turn_for(0.5)
    done = marker()
    probe.paced.apply_async((done,))

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    assert probe.calls(done) == 1


def test_a_fifo_task_without_a_turn_is_held_in_order(queues: Queues) -> None:
    _no_turn_for(60)
    url = queues.fifo.queue_url
    [body] = celery_bodies(queues, marker(), task=probe.paced)
    sent = send_raw(url, body, MessageGroupId="g", MessageDeduplicationId=marker())

    failed = invoke(queues.fifo, receive(url, 1))

    assert failed == [sent]
    assert counts(url) == (0, 1, 0)  # invisible until the turn, not re-sent


# ---------------------------------------------------------------- resources


class Recycled(BaseException):
    """What the fake exit raises: like ``os._exit``, nothing in the handler may catch it."""


def _exit() -> NoReturn:
    raise Recycled


def _first_task(messages: list[Message], name: str) -> list[Message]:
    """``messages`` with those of task ``name`` first (the batch order the test needs)."""
    return sorted(messages, key=lambda m: decode(m["Body"], message_id="m").task_name != name)


def _visible_again(queues: Queues, messages: list[Message]) -> list[Message]:
    """Make reported messages receivable now (instead of after the visibility timeout)."""
    for m in messages:
        aws.client("sqs").change_message_visibility(
            QueueUrl=queues.source.queue_url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )
    return receive(queues.source.queue_url, len(messages))


# The fake exit returns through Powertools' metrics decorator, which warns it has nothing to
# flush; os._exit would not return at all.
@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_memory_over_budget_stops_starting_records_and_recycles_later(
    queues: Queues, stdout: pytest.CaptureFixture[str]
) -> None:
    hogged, later = marker(), marker()
    probe.hog.apply_async((hogged, 120))
    probe.record.apply_async((later,))
    probe.record.apply_async((later,))
    messages = _first_task(receive(queues.source.queue_url, 3), "probe.hog")
    limit_mb = math.ceil((resident_bytes() + 60 * 2**20) / BUDGET_FRACTION / 2**20)
    context = make_context(queues.source, memory_limit_in_mb=limit_mb)
    try:
        failed = invoke(queues.source, messages, context)

        assert failed == [m["MessageId"] for m in messages[1:]]  # reported back, not lost
        assert probe.calls(hogged) == 1 and probe.calls(later) == 0
        out = stdout.readouterr().out
        warnings = json_lines(out, lambda o: o.get("message", "").startswith("resident memory"))
        assert [w["message_id"] for w in warnings] == failed  # one per record not started
        assert all(w["grown_most_by"] == "probe.hog" and w["grown_mb"] >= 100 for w in warnings)
        assert emf_metrics(out)[METRIC_MEMORY_HIGH] == [1.0, 1.0]

        runtime.pipeline().memory.exit = _exit
        again = _visible_again(queues, messages[1:])
        with pytest.raises(Recycled):  # still over budget on the next invocation: a fresh one
            invoke(queues.source, again, context)
        assert probe.calls(later) == 0
    finally:
        probe.release_memory()

    gc.collect()
    assert invoke(queues.source, _visible_again(queues, again), context) == []
    assert probe.calls(later) == 2


def test_a_task_leaking_a_thread_and_a_file_does_not_stop_later_records(
    queues: Queues, tmp_path: Path
) -> None:
    leaked, later = marker(), marker()
    probe.leak.apply_async((leaked, str(tmp_path / "left-open.txt")))
    probe.record.apply_async((later,))
    probe.record.apply_async((later,))
    messages = _first_task(receive(queues.source.queue_url, 3), "probe.leak")
    try:
        assert invoke(queues.source, messages) == []

        assert probe.calls(leaked) == 1 and probe.calls(later) == 2
        assert any(t.name == f"leaked-{leaked}" for t in threading.enumerate())
    finally:
        probe.close_leaks()


# ---------------------------------------------------------------- hooks


class Recorder(RecordHook):
    """Notes every call it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def before_record(self, record: Any, context: Any) -> None:
        self.calls.append(("before_record", record["messageId"]))

    def on_decode_error(self, record: Any, error: Exception) -> None:
        self.calls.append(("on_decode_error", type(error).__name__))

    def before_task(self, message: Any, record: Any) -> None:
        self.calls.append(("before_task", message.task_name))

    def on_outcome(self, message: Any, outcome: Any) -> None:
        self.calls.append(("on_outcome", outcome.state))

    def after_record(self, record: Any, error: BaseException | None) -> None:
        self.calls.append(("after_record", type(error).__name__ if error else None))


class Broken(RecordHook):
    """Raises from every hook method."""

    def _fail(self, *args: Any) -> None:
        raise RuntimeError("hook bug")

    before_record = on_decode_error = before_task = on_outcome = after_record = _fail


@pytest.fixture
def hooked() -> Iterator[Callable[..., None]]:
    """Register hooks on the probe app for one test."""

    def use(*hooks: Any) -> None:
        probe.app.conf[CONFIG_KEY] = list(hooks)
        runtime.pipeline.cache_clear()

    yield use
    probe.app.conf[CONFIG_KEY] = []
    runtime.pipeline.cache_clear()


def test_hooks_see_each_step_of_a_record(queues: Queues, hooked: Callable[..., None]) -> None:
    recorder = Recorder()
    hooked(recorder)
    probe.record.apply_async((marker(),))
    good = receive(queues.source.queue_url, 1)[0]
    bad = send_raw(queues.source.queue_url, "not a task")

    failed = invoke(queues.source, [good, *receive(queues.source.queue_url, 1)])

    assert failed == [bad]
    assert recorder.calls == [
        ("before_record", good["MessageId"]),
        ("before_task", "probe.record"),
        ("on_outcome", states.SUCCESS),
        ("after_record", None),
        ("before_record", bad),
        ("on_decode_error", "MessageDecodeError"),
        ("after_record", "MessageDecodeError"),
    ]


def test_a_failing_hook_is_logged_and_changes_nothing(
    queues: Queues, hooked: Callable[..., None], stdout: pytest.CaptureFixture[str]
) -> None:
    recorder = Recorder()
    hooked(Broken(), recorder)
    done = marker()
    probe.record.apply_async((done, 7))

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    assert probe.calls(done) == 1
    assert [c[0] for c in recorder.calls] == [
        "before_record",
        "before_task",
        "on_outcome",
        "after_record",
    ]
    failures = json_lines(stdout.readouterr().out, lambda o: o.get("hook") == "Broken")
    assert {f["hook_method"] for f in failures} == {
        "before_record",
        "before_task",
        "on_outcome",
        "after_record",
    }


def test_hooks_by_name_and_by_decorator(queues: Queues, hooked: Callable[..., None]) -> None:
    hooked("tasks.hooks:TenantLogKeys")
    register(probe.app)(Recorder)

    hooks = runtime.pipeline().hooks.hooks

    assert [type(h).__name__ for h in hooks] == ["TenantLogKeys", "Recorder"]


def test_an_unloadable_hook_is_a_clear_error() -> None:
    app = Celery("hooks", set_as_current=False)
    app.conf[CONFIG_KEY] = ["no.such:Hook"]

    with pytest.raises(ConfigurationError, match="celery_lambda_hooks.*no.such:Hook"):
        Hooks.of(app)


def test_the_example_hook_puts_the_tenant_in_every_log_line(
    queues: Queues, hooked: Callable[..., None], stdout: pytest.CaptureFixture[str]
) -> None:
    hooked("tasks.hooks:TenantLogKeys")
    task_id = probe.record.apply_async((marker(),), headers={"tenant": "acme"}).id

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    lines = json_lines(stdout.readouterr().out, lambda o: o.get("task_id") == task_id)
    assert lines and all(line.get("tenant") == "acme" for line in lines)
    assert any(line["message"] == "task finished" for line in lines)


# ---------------------------------------------------------------- outcomes written per batch


@pytest.fixture
def results_calls(queues: Queues) -> Iterator[list[str]]:
    """DynamoDB operations on the results table while the test runs (not the probe's counters)."""
    seen: list[str] = []
    table = Settings.from_env().results_table

    def count(params: dict[str, Any], model: Any, **_: Any) -> None:
        body = json.loads(params["body"] or "{}")
        tables = {body.get("TableName"), *body.get("RequestItems", {})}
        tables |= {op.get("TableName") for i in body.get("TransactItems", []) for op in i.values()}
        if table in tables:
            seen.append(model.name)

    events = aws.client("dynamodb").meta.events
    events.register("before-call.dynamodb.*", count, unique_id="count-results-calls")
    yield seen
    events.unregister("before-call.dynamodb.*", unique_id="count-results-calls")


def test_a_batch_claims_in_one_request_and_records_its_outcomes_in_one(
    queues: Queues, results_calls: list[str]
) -> None:
    markers = [marker() for _ in range(10)]
    results = [probe.record.apply_async((m, i)) for i, m in enumerate(markers[:8])]
    results += [probe.boom.apply_async((m,)) for m in markers[8:]]
    messages = receive(queues.source.queue_url, 10)

    assert invoke(queues.source, messages) == []

    assert results_calls == ["TransactWriteItems", "BatchWriteItem"]
    assert [stored(r.id).state for r in results] == [states.SUCCESS] * 8 + [states.FAILURE] * 2
    assert [stored(r.id).result for r in results[:8]] == list(range(8))
    assert all(probe.calls(m) == 1 for m in markers)
    for result in results:
        assert (
            "claim_owner"
            not in aws.client("dynamodb").get_item(
                TableName=Settings.from_env().results_table, Key={"id": {"S": task_key(result.id)}}
            )["Item"]
        )


def test_an_outcome_is_visible_while_a_long_task_after_it_runs(
    queues: Queues, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CELERY_LAMBDA_RESULT_FLUSH_MS", "200")
    quick = probe.record.apply_async((marker(), "quick"))
    slow_marker = marker()
    slow = probe.sleep.apply_async((3.0, slow_marker))
    messages = receive(queues.source.queue_url, 2)
    order = [quick.id, slow.id]
    messages.sort(key=lambda m: order.index(task_id(m)))
    outcome: list[list[str]] = []
    invocation = threading.Thread(target=lambda: outcome.append(invoke(queues.source, messages)))

    invocation.start()
    deadline = time.monotonic() + 10
    while stored(quick.id).state != states.SUCCESS and time.monotonic() < deadline:
        time.sleep(0.05)
    seen_while_running = invocation.is_alive()
    invocation.join()

    assert stored(quick.id).state == states.SUCCESS
    assert seen_while_running  # written by the timer, not when the batch settled
    assert outcome == [[]]
    assert stored(slow.id).result == 3.0


def test_fifo_outcomes_are_written_as_each_task_ends(
    queues: Queues, results_calls: list[str]
) -> None:
    markers = [marker() for _ in range(3)]
    bodies = celery_bodies(queues, *markers)
    for body in bodies:
        send_raw(queues.fifo.queue_url, body, MessageGroupId="a", MessageDeduplicationId=marker())
    messages = receive(queues.fifo.queue_url, 3)
    results_calls.clear()

    assert invoke(queues.fifo, messages) == []

    assert results_calls == ["TransactWriteItems", "UpdateItem", "UpdateItem", "UpdateItem"]


def test_result_flush_0_writes_each_outcome_as_its_task_ends(
    queues: Queues, monkeypatch: pytest.MonkeyPatch, results_calls: list[str]
) -> None:
    monkeypatch.setenv("CELERY_LAMBDA_RESULT_FLUSH_MS", "0")
    results = [probe.record.apply_async((marker(),)) for _ in range(3)]
    messages = receive(queues.source.queue_url, 3)

    assert invoke(queues.source, messages) == []

    assert results_calls == ["TransactWriteItems", "UpdateItem", "UpdateItem", "UpdateItem"]
    assert {stored(r.id).state for r in results} == {states.SUCCESS}


def test_an_unstored_outcome_sends_its_record_back_with_its_offloaded_body(
    queues: Queues, monkeypatch: pytest.MonkeyPatch, stdout: pytest.CaptureFixture[str]
) -> None:
    url, bucket = queues.source.queue_url, Settings.from_env().results_bucket
    done, other = marker(), marker()
    result = probe.record.apply_async((done, "offloaded"))
    ok = probe.record.apply_async((other,))
    body = by_task(receive(url, 2))
    for message in body.values():
        aws.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    key = f"payloads/{result.id}/{uuid.uuid4()}"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=body[result.id]["Body"].encode())
    pointer = json.dumps(
        [
            "software.amazon.payloadoffloading.PayloadS3Pointer",
            {"s3BucketName": bucket, "s3Key": key},
        ]
    )
    sent = send_raw(url, pointer)
    send_raw(url, body[ok.id]["Body"])
    messages = receive(url, 2)
    write = DynamoDBBackend.write

    def refuse_one(self: DynamoDBBackend, written: Any) -> None:
        if written.task_id == result.id:
            raise StoreError(f"storing {written.state} of {written.task_id} failed: injected")
        write(self, written)

    def refuse_batches(*_: Any, **__: Any) -> NoReturn:
        error = {"Code": "InternalServerError", "Message": "injected"}
        raise botocore.exceptions.ClientError({"Error": error}, "BatchWriteItem")

    monkeypatch.setattr(DynamoDBBackend, "write", refuse_one)
    monkeypatch.setattr(aws.client("dynamodb"), "batch_write_item", refuse_batches)
    stdout.readouterr()

    failed = invoke(queues.source, messages)

    assert failed == [sent]
    assert stored(ok.id).state == states.SUCCESS
    assert stored(result.id).state == states.PENDING
    assert probe.calls(done) == 1
    # Kept for the record's next delivery, which finds the task unfinished and runs it again.
    assert aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    out = stdout.readouterr().out
    assert emf_metrics(out)[METRIC_MACHINERY_FAILED] == [1.0]
    [line] = json_lines(out, lambda o: o.get("message", "").startswith("task outcome not stored"))
    assert line["task_id"] == result.id
    assert "injected" in line["why"]


# ---------------------------------------------------------------- least privilege, measured


def _granted(role: str) -> set[str]:
    """Every action the template's inline policies give ``role``."""
    template = load_template()
    granted: set[str] = set()
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            granted |= {actions} if isinstance(actions, str) else set(actions)
    return granted


# The IAM actions that authorise a request, where they are not its own name.
_AUTHORISED_BY = {
    "sqs:SendMessageBatch": {"sqs:SendMessage"},
    "sqs:DeleteMessageBatch": {"sqs:DeleteMessage"},
    "sqs:ChangeMessageVisibilityBatch": {"sqs:ChangeMessageVisibility"},
    # Per item action: the claim updates task items and checks revocation markers.
    "dynamodb:TransactWriteItems": {"dynamodb:UpdateItem", "dynamodb:ConditionCheckItem"},
}


def test_the_functions_role_grants_every_request_the_handler_makes(
    queues: Queues, cloud: Deployment, producer: Callable[..., Celery]
) -> None:
    assert cloud.endpoint_url
    url, bucket = queues.source.queue_url, Settings.from_env().results_bucket
    _no_turn_for(60)
    results = [
        probe.record.apply_async((marker(), "x" * (LARGE_RESULT_BYTES + 1))),  # result to S3
        probe.boom.apply_async((marker(),)),
        probe.retrying.apply_async((marker(), 1, 1)),  # publishes its next attempt
        probe.paced.apply_async((marker(),)),  # no turn: re-sent delayed
        # A stock producer sets no DelaySeconds: not due, the consumer re-sends it delayed.
        producer().send_task("probe.record", (marker(),), countdown=3600),
        probe.record.apply_async((marker(),)),
    ]
    revoke(probe.app, [results[-1].id])
    messages = receive(url, len(results))
    offloaded = messages.pop()
    aws.client("sqs").delete_message(QueueUrl=url, ReceiptHandle=offloaded["ReceiptHandle"])
    key = f"payloads/{task_id(offloaded)}/{uuid.uuid4()}"
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=offloaded["Body"].encode())
    pointer = [
        "software.amazon.payloadoffloading.PayloadS3Pointer",
        {"s3BucketName": bucket, "s3Key": key},
    ]
    send_raw(url, json.dumps(pointer))
    messages += receive(url, 1)
    event = build_event(messages, queues.source, queues.region)
    request_counts(cloud.endpoint_url, reset=True)

    response = handler(event, make_context(queues.source))

    made = request_counts(cloud.endpoint_url)
    assert response == {"batchItemFailures": []}
    assert stored(results[0].id).result == "x" * (LARGE_RESULT_BYTES + 1)
    assert stored(results[-1].id).state == states.REVOKED
    needed = set().union(*(_AUTHORISED_BY.get(op, {op}) for op in made))
    assert needed - _granted("WorkerFunctionRole") == set(), made
    assert {
        "dynamodb:BatchWriteItem",
        "dynamodb:TransactWriteItems",
        "s3:PutObject",
        "s3:GetObject",
        "s3:DeleteObject",
        "sqs:SendMessage",
    } <= set(made)
