"""The handler's partial batch response, its gate and Celery's retries on the Lambda path.

Driven the way Lambda drives ``handlers.sqs.handler``, against moto in server mode: tasks of the
test-only app ``tests.apps.probe`` published with real ``apply_async`` to this module's queues,
received, turned into a Lambda SQS event by the event-source emulator, handled, and deleted
unless reported (fixtures in ``conftest.py``, helpers in :mod:`tests.functional.consumer.support`).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery, states
from celery.signals import task_failure

from devtools.cloud.event_source import build_event, make_context
from handlers.sqs import handler
from infra.consumer import runtime
from infra.core import aws
from infra.core.observability import (
    METRIC_DELAYED,
    METRIC_MACHINERY_FAILED,
    METRIC_RECORDS,
)
from infra.core.settings import Settings
from infra.store.items import NOT_REGISTERED
from tests.apps import probe
from tests.functional.consumer.support import (
    Queues,
    by_task,
    emf_metrics,
    envelope,
    json_lines,
    marker,
    reset_backend,
    send_raw,
    stored,
    task_id,
    visible_again,
)
from tests.invoke import invoke
from tests.sqs_helpers import counts, receive

pytestmark = pytest.mark.usefixtures("served")


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
    assert stored(unknown_id).state == NOT_REGISTERED  # the id says why (test_handler_unknown)
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
    reset_backend(probe.app)
    stdout.readouterr()
    try:
        # Celery's tracer reports a failure outside the task body with a RuntimeWarning.
        failed = invoke(queues.source, messages)
    finally:
        monkeypatch.setenv("RESULTS_TABLE", table)
        reset_backend(probe.app)

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
        headers = envelope(retry)["headers"]
        assert headers["retries"] == 1
        # Nothing of this run travels with the next attempt: a worker that receives it must
        # claim it (no "claimed" flag), count it as its own and write its outcome itself.
        assert [key for key in headers if key.startswith("celery_lambda")] == []
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


def test_reject_without_requeue_stores_failure_and_acks(queues: Queues) -> None:
    # As a worker does (Celery's issue #4222): the message is gone for good, so the task is a
    # FAILURE, not PENDING forever; task_failure fires.
    done = marker()
    failures: list[str] = []

    def on_failure(sender: Any = None, task_id: str = "", **_: Any) -> None:
        failures.append(task_id)

    task_failure.connect(on_failure, weak=False)
    try:
        result = probe.reject_gone.apply_async((done,))
        [message] = receive(queues.source.queue_url, 1)

        assert invoke(queues.source, [message]) == []
    finally:
        task_failure.disconnect(on_failure)

    assert probe.calls(done) == 1
    assert stored(result.id).state == states.FAILURE
    assert "reject requeue=False: drop" in repr(stored(result.id).result)
    assert failures == [result.id]
    assert counts(queues.source.queue_url) == (0, 0, 0)


def test_a_requeued_reject_is_claimed_again_at_once(queues: Queues) -> None:
    # Reject(requeue=True) ends the attempt: the invocation must not keep its lease, or the
    # message would be handed back as "running elsewhere" until the invocation's deadline.
    done = marker()
    result = probe.reject.apply_async((done,))
    [first] = receive(queues.source.queue_url, 1)
    assert invoke(queues.source, [first]) == [first["MessageId"]]
    visible_again(queues.source.queue_url, [first])
    [again] = receive(queues.source.queue_url, 1)

    assert invoke(queues.source, [again]) == [again["MessageId"]]  # a new invocation

    assert probe.calls(done) == 2
    assert stored(result.id).state == states.PENDING


def test_a_replaced_task_runs_its_replacement_in_another_invocation(queues: Queues) -> None:
    # Task.replace publishes the replacement under the same task id and ends with Ignore: the
    # replacement must find the id free, not held by the invocation that replaced it.
    done = marker()
    result = probe.replaced.apply_async((done,))
    [first] = receive(queues.source.queue_url, 1)
    assert invoke(queues.source, [first]) == []
    [replacement] = receive(queues.source.queue_url, 1)
    assert task_id(replacement) == result.id

    assert invoke(queues.source, [replacement]) == []

    assert probe.calls(f"{done}-replacement") == 1
    assert stored(result.id).state == states.SUCCESS
    assert stored(result.id).result == "replaced"


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
