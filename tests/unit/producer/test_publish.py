"""The publish path's pure parts: request builders, batch packing, the extended-client pointer,
and the batch sender's retry/report logic with a fake SQS client.

Messages are made by real Celery (``app.amqp.as_task_v2``) and kombu (``Channel.prepare_message``,
as ``Producer.publish`` does), then passed through our builder; the body it produces is decoded
by our own decoder, so what we send is what the consumers read.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from kombu import Connection

from infra.core.errors import PublishError
from infra.producer.batch import PublishBatch
from infra.producer.publish import (
    PublishOptions,
    batch_entry,
    batches,
    check_size,
    deduplication_id,
    message_delay,
    offloaded,
    request_size,
    send_request,
)
from infra.wire.offload import POINTER_CLASS, Pointer, parse_pointer, payload_key
from infra.wire.protocol import decode

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
OPTIONS = PublishOptions(offload_threshold=1024 * 1024, max_payload_bytes=64 * 1024 * 1024)
URL = "http://127.0.0.1/123456789012/q"

app = Celery("publish-tests", set_as_current=False)
app.conf.update(task_serializer="json", accept_content=["json"], enable_utc=True)
connection = Connection("memory://")
channel = connection.channel()


def kombu_message(*args: Any, eta: datetime | None = None, **properties: Any) -> dict[str, Any]:
    """The dict kombu hands a transport's ``_put`` for ``tasks.add(*args)``."""
    task = app.amqp.as_task_v2("task-1", "tasks.add", args=args, eta=eta)
    body = json.dumps(task.body)
    message: dict[str, Any] = channel.prepare_message(
        body,
        content_type="application/json",
        content_encoding="utf-8",
        headers=task.headers,
        properties={"delivery_info": {"exchange": "", "routing_key": "q"}, **properties},
    )
    message["properties"]["body_encoding"] = "base64"
    message["body"] = channel.encode_body(body, "base64")[0]
    return message


# ---------------------------------------------------------------- delays


def test_countdown_becomes_delay_seconds_rounded_up() -> None:
    message = kombu_message(1, 2, eta=NOW + timedelta(seconds=29.2))

    request = send_request("q", URL, message, options=OPTIONS, now=NOW)

    assert request["DelaySeconds"] == 30


@pytest.mark.parametrize(
    ("eta", "delay"),
    [
        (NOW + timedelta(minutes=15), 900),
        (NOW + timedelta(hours=3), 900),  # the consumer re-delays the rest
        (NOW - timedelta(seconds=5), None),  # already due
        (NOW, None),
        (None, None),
    ],
)
def test_delay_is_capped_and_absent_when_due(eta: datetime | None, delay: int | None) -> None:
    request = send_request("q", URL, kombu_message(1, 2, eta=eta), options=OPTIONS, now=NOW)

    assert request.get("DelaySeconds") == delay


def test_naive_eta_is_left_to_the_consumer() -> None:
    message = kombu_message(1, 2)
    message["headers"]["eta"] = (NOW + timedelta(seconds=60)).replace(tzinfo=None).isoformat()

    assert message_delay(message, NOW) is None


def test_explicit_delay_property_wins_as_in_kombu() -> None:
    message = kombu_message(1, 2, eta=NOW + timedelta(seconds=60), delay_seconds=5000)

    assert message_delay(message, NOW) == 900


# ---------------------------------------------------------------- FIFO


def test_fifo_gets_group_and_attempt_deduplication_and_no_delay() -> None:
    first = kombu_message(1, 2, eta=NOW + timedelta(seconds=60))
    retry = kombu_message(1, 2)
    retry["headers"]["retries"] = 1
    options = PublishOptions(1024 * 1024, 64 * 1024 * 1024, fifo_group="orders")

    a = send_request("q.fifo", URL + ".fifo", first, options=options, now=NOW)
    b = send_request("q.fifo", URL + ".fifo", retry, options=options, now=NOW)

    assert a["MessageGroupId"] == b["MessageGroupId"] == "orders"
    assert (a["MessageDeduplicationId"], b["MessageDeduplicationId"]) == ("task-1-0", "task-1-1")
    assert "DelaySeconds" not in a


def test_fifo_group_from_publish_options() -> None:
    message = kombu_message(1, 2, MessageGroupId="customer-7")

    request = send_request("q.fifo", URL + ".fifo", message, options=OPTIONS, now=NOW)

    assert request["MessageGroupId"] == "customer-7"


def test_non_task_messages_are_never_deduplicated() -> None:
    assert deduplication_id({"headers": {}}) != deduplication_id({"headers": {}})


# ---------------------------------------------------------------- body and attributes


def test_body_is_what_our_decoder_and_kombu_read() -> None:
    message = kombu_message(
        4, 4, message_attributes={"tenant": {"DataType": "String", "StringValue": "a"}}
    )

    request = send_request("q", URL, message, options=OPTIONS, now=NOW)
    decoded = decode(request["MessageBody"], message_id="m-1", accept=["json"])

    assert (decoded.task_name, decoded.task_id, decoded.args) == ("tasks.add", "task-1", (4, 4))
    assert request["MessageAttributes"] == {"tenant": {"DataType": "String", "StringValue": "a"}}
    assert "message_attributes" not in message["properties"]  # not duplicated into the body


def test_raw_body_when_base64_is_off() -> None:
    options = PublishOptions(1024 * 1024, 64 * 1024 * 1024, base64=False)

    request = send_request("q", URL, kombu_message(1, 2), options=options, now=NOW)

    assert json.loads(request["MessageBody"])["headers"]["task"] == "tasks.add"


def test_size_counts_body_and_attributes() -> None:
    request = {
        "MessageBody": "é" * 10,
        "MessageAttributes": {"ab": {"DataType": "String", "StringValue": "xyz"}},
    }

    assert request_size(request) == 20 + 2 + 6 + 3


# ---------------------------------------------------------------- offloading


def test_large_bodies_are_offloaded_and_too_large_ones_refused() -> None:
    options = PublishOptions(offload_threshold=2000, max_payload_bytes=10_000)
    small = send_request("q", URL, kombu_message("x" * 100), options=options, now=NOW)
    large = send_request("q", URL, kombu_message("x" * 3000), options=options, now=NOW)
    huge = send_request("q", URL, kombu_message("x" * 20_000), options=options, now=NOW)

    assert check_size(small, options, "tasks.add[task-1]") is False
    assert check_size(large, options, "tasks.add[task-1]") is True
    with pytest.raises(PublishError, match=r"tasks\.add\[task-1\].*CELERY_LAMBDA_MAX_PAYLOAD"):
        check_size(huge, options, "tasks.add[task-1]")


def test_offloaded_request_is_an_extended_client_pointer() -> None:
    request = {"QueueUrl": URL, "MessageBody": "b" * 5000, "DelaySeconds": 30}
    pointer = Pointer("bucket", payload_key("task-1"))

    sent = offloaded(request, pointer)

    assert json.loads(sent["MessageBody"]) == [
        POINTER_CLASS,
        {"s3BucketName": "bucket", "s3Key": pointer.key},
    ]
    assert sent["MessageAttributes"]["ExtendedPayloadSize"] == {
        "DataType": "Number",
        "StringValue": "5000",
    }
    assert sent["DelaySeconds"] == 30
    assert parse_pointer(sent["MessageBody"]) == pointer
    assert pointer.task_id == "task-1"


@pytest.mark.parametrize(
    "body",
    [
        "eyJib2R5IjogIngifQ==",  # an ordinary base64 kombu envelope
        '{"body": "x"}',
        f'["{POINTER_CLASS}"]',
        f'["{POINTER_CLASS}", {{"s3BucketName": "b"}}]',
        f'["{POINTER_CLASS}", {{"s3BucketName": "", "s3Key": "k"}}]',
        f'["{POINTER_CLASS}", "b/k"]',
        f'["{POINTER_CLASS}", {{',
        '["another.Pointer", {"s3BucketName": "b", "s3Key": "k"}]',
    ],
)
def test_bodies_that_are_not_pointers(body: str) -> None:
    assert parse_pointer(body) is None


def test_another_producers_key_has_no_task_id() -> None:
    assert Pointer("b", "some/other/key").task_id is None
    assert Pointer("b", "payloads/task-1").task_id is None


# ---------------------------------------------------------------- batches


def _request(size: int, index: int = 0) -> dict[str, Any]:
    return {"QueueUrl": URL, "MessageBody": "x" * size, "Id-hint": index}


def test_batches_hold_at_most_ten_entries_in_order() -> None:
    requests = [_request(10, i) for i in range(25)]

    chunks = list(batches(requests))

    assert [len(c) for c in chunks] == [10, 10, 5]
    assert [r["Id-hint"] for c in chunks for r in c] == list(range(25))


def test_batches_respect_the_payload_limit() -> None:
    chunks = list(batches([_request(400 * 1024) for _ in range(3)]))

    assert [len(c) for c in chunks] == [2, 1]


def test_batch_entry_drops_the_queue_url() -> None:
    entry = batch_entry(3, {"QueueUrl": URL, "MessageBody": "b", "DelaySeconds": 5})

    assert entry == {"Id": "3", "MessageBody": "b", "DelaySeconds": 5}


class FakeSQS:
    """SendMessageBatch that fails the entries it is told to, a given number of times."""

    def __init__(self, failures: dict[str, list[dict[str, Any]]]) -> None:
        self.failures = failures  # body -> Failed entries to return, one per call
        self.calls: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append([e["MessageBody"] for e in Entries])
        failed = []
        for entry in Entries:
            queue = self.failures.get(entry["MessageBody"])
            if queue:
                failed.append({"Id": entry["Id"], **queue.pop(0)})
        return {"Successful": [], "Failed": failed}


class FakePayloads:
    def __init__(self) -> None:
        self.deleted: list[Pointer] = []

    def delete(self, pointer: Pointer) -> None:
        self.deleted.append(pointer)


def _batch(sqs: FakeSQS, payloads: FakePayloads) -> PublishBatch:
    return PublishBatch(client=lambda _url: sqs, payloads=lambda: payloads, sleep=lambda _: None)  # type: ignore[arg-type,return-value]


def test_entries_failed_by_sqs_are_retried() -> None:
    sqs = FakeSQS({"b": [{"SenderFault": False, "Code": "InternalError", "Message": "x"}]})
    batch = _batch(sqs, FakePayloads())
    for body in "abc":
        batch.add(f"t[{body}]", {"QueueUrl": URL, "MessageBody": body}, None)

    batch.flush()

    assert sqs.calls == [["a", "b", "c"], ["b"]]


def test_entries_refused_are_reported_by_name_and_their_bodies_deleted() -> None:
    refused = {"SenderFault": True, "Code": "InvalidParameterValue", "Message": "bad"}
    sqs = FakeSQS({"b": [refused]})
    payloads = FakePayloads()
    batch = _batch(sqs, payloads)
    pointer = Pointer("bucket", "payloads/b/1")
    batch.add("tasks.add[a]", {"QueueUrl": URL, "MessageBody": "a"}, None)
    batch.add("tasks.add[b]", {"QueueUrl": URL, "MessageBody": "b"}, pointer)

    with pytest.raises(PublishError, match=r"1 message.*tasks\.add\[b\]: InvalidParameterValue"):
        batch.flush()

    assert sqs.calls == [["a", "b"]]
    assert payloads.deleted == [pointer]


def test_entries_still_failing_after_retries_are_reported() -> None:
    busy = {"SenderFault": False, "Code": "ServiceUnavailable", "Message": "busy"}
    sqs = FakeSQS({"a": [busy, busy, busy]})
    batch = _batch(sqs, FakePayloads())
    batch.add("tasks.add[a]", {"QueueUrl": URL, "MessageBody": "a"}, None)

    with pytest.raises(PublishError, match=r"tasks\.add\[a\]: still failing"):
        batch.flush()

    assert len(sqs.calls) == 3


def test_the_publishers_trace_header_travels_as_a_system_attribute() -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"

    request = send_request(
        "q", URL, kombu_message(1, 2), options=OPTIONS, now=NOW, trace_header=header
    )
    untraced = send_request("q", URL, kombu_message(1, 2), options=OPTIONS, now=NOW)

    assert request["MessageSystemAttributes"] == {
        "AWSTraceHeader": {"DataType": "String", "StringValue": header}
    }
    assert "MessageSystemAttributes" not in untraced
    assert batch_entry(0, request)["MessageSystemAttributes"] == request["MessageSystemAttributes"]
