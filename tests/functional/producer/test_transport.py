"""Our SQS transport against moto in server mode: what a publish sends, and what a consumer on the
transport receives and deletes.

Tasks of ``tests.apps.probe`` are published with real ``apply_async`` to a queue of this module;
the raw SQS messages are read back with ReceiveMessage; the S3 side is checked in the results
bucket. Request counts come from the emulator (every request it served, by operation).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import group
from kombu.utils.json import loads

from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import request_counts
from devtools.cloud.session import point_app_at
from infra.core import aws
from infra.core.errors import PublishError, UnknownQueueError
from infra.core.settings import Settings
from infra.producer.transport import ACK_BATCH_SECONDS
from infra.wire.offload import POINTER_CLASS, parse_pointer
from tests.apps import probe
from tests.sqs_helpers import counts, queue_with_dlq, receive

QUEUE = "transport"
DISCOVERY = ("sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:ListQueues", "sqs:SendMessage")


@pytest.fixture
def queue_url(cloud: Deployment) -> Iterator[str]:
    """A fresh queue, routed to as ``transport`` through the app's predefined queues."""
    point_app_at(probe.app, cloud)
    url = queue_with_dlq(f"transport-{uuid.uuid4().hex[:8]}").url
    options = dict(probe.app.conf.broker_transport_options)
    predefined = {**options.get("predefined_queues", {}), QUEUE: {"url": url}}
    # Short polls: a consumer here that finds nothing should say so quickly.
    _retarget({**options, "predefined_queues": predefined, "wait_time_seconds": 1})
    try:
        yield url
    finally:
        _retarget(options)


def _retarget(options: dict[str, Any]) -> None:
    """New transport options for the probe app; pooled connections keep the old ones."""
    probe.app.conf.broker_transport_options = options
    if probe.app._pool is not None:
        probe.app._pool.force_close_all()
        probe.app._pool = None
        probe.app.amqp._producer_pool = None


def _bucket() -> str:
    return Settings.from_env().results_bucket


def _payload_keys() -> set[str]:
    listing = aws.client("s3").list_objects_v2(Bucket=_bucket(), Prefix="payloads/")
    return {item["Key"] for item in listing.get("Contents", [])}


def _delta(before: dict[str, int], *operations: str) -> dict[str, int]:
    after = request_counts(Settings.from_env().endpoint_url or "")
    return {op: after.get(op, 0) - before.get(op, 0) for op in operations}


def _counts() -> dict[str, int]:
    return request_counts(Settings.from_env().endpoint_url or "")


# ---------------------------------------------------------------- delays


def test_countdown_is_an_sqs_delay(queue_url: str) -> None:
    probe.record.apply_async(("m", "v"), queue=QUEUE, countdown=60)

    assert counts(queue_url) == (0, 0, 1)


def test_no_countdown_no_delay(queue_url: str) -> None:
    probe.record.apply_async(("m", "v"), queue=QUEUE)

    assert counts(queue_url) == (1, 0, 0)


# ---------------------------------------------------------------- queues


def test_unknown_queue_is_a_clear_error_and_nothing_is_created(queue_url: str) -> None:
    before = _counts()

    with pytest.raises(UnknownQueueError, match=r"'nowhere' is not configured.*transport"):
        probe.record.apply_async(("m", "v"), queue="nowhere")

    calls = _delta(
        before, "sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:ListQueues", "sqs:SendMessage"
    )
    assert calls == dict.fromkeys(calls, 0)


def test_a_publish_makes_no_queue_discovery_calls(queue_url: str) -> None:
    before = _counts()

    probe.record.apply_async(("m", "v"), queue=QUEUE)

    calls = _delta(
        before, "sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:ListQueues", "sqs:SendMessage"
    )
    assert calls == {**dict.fromkeys(calls, 0), "sqs:SendMessage": 1}


# ---------------------------------------------------------------- large bodies


def test_large_body_goes_to_s3_behind_an_extended_client_pointer(queue_url: str) -> None:
    value = "x" * (1024 * 1024)
    result = probe.record.apply_async(("m", value), queue=QUEUE)

    [message] = receive(queue_url, 1)
    pointer = parse_pointer(message["Body"])

    assert json.loads(message["Body"])[0] == POINTER_CLASS
    assert pointer is not None and pointer.bucket == _bucket()
    assert pointer.task_id == result.id
    stored = aws.client("s3").get_object(Bucket=pointer.bucket, Key=pointer.key)["Body"].read()
    size = message["MessageAttributes"]["ExtendedPayloadSize"]
    assert (size["DataType"], int(size["StringValue"])) == ("Number", len(stored))
    envelope = loads(base64.b64decode(stored))
    assert envelope["headers"]["id"] == result.id


def test_too_large_body_is_refused_and_nothing_is_sent(queue_url: str) -> None:
    options = dict(probe.app.conf.broker_transport_options)
    _retarget({**options, "max_payload_bytes": 1024 * 1024})
    keys = _payload_keys()

    with pytest.raises(PublishError, match=r"probe\.record\[.*exceeds"):
        probe.record.apply_async(("m", "x" * (1024 * 1024)), queue=QUEUE)

    assert counts(queue_url) == (0, 0, 0)
    assert _payload_keys() == keys


def test_threshold_is_configurable(queue_url: str) -> None:
    options = dict(probe.app.conf.broker_transport_options)
    _retarget({**options, "offload_threshold": 2048})

    probe.record.apply_async(("m", "x" * 4096), queue=QUEUE)

    [message] = receive(queue_url, 1)
    assert parse_pointer(message["Body"]) is not None


def test_consumer_on_the_transport_reads_the_body_and_deletes_it_after_ack(
    queue_url: str,
) -> None:
    value = "y" * (1024 * 1024)
    result = probe.record.apply_async(("m", value), queue=QUEUE)
    [key] = {k for k in _payload_keys() if k.startswith(f"payloads/{result.id}/")}

    with probe.app.connection_for_read() as connection:
        simple = connection.SimpleQueue(QUEUE)
        message = simple.get(timeout=10)
        args, _kwargs, _embed = message.decode()
        assert message.headers["id"] == result.id
        assert args == ["m", value]
        assert key in _payload_keys()  # still needed until the message is acked
        message.ack()
        simple.close()

    assert key not in _payload_keys()
    assert counts(queue_url) == (0, 0, 0)


# ---------------------------------------------------------------- groups


def test_a_group_is_sent_in_batches_of_ten(queue_url: str) -> None:
    before = _counts()

    group(probe.record.s("m", i).set(queue=QUEUE) for i in range(25)).apply_async()

    assert _delta(before, "sqs:SendMessageBatch", "sqs:SendMessage") == {
        "sqs:SendMessageBatch": 3,
        "sqs:SendMessage": 0,
    }
    bodies = receive(queue_url, 25)
    assert len(bodies) == 25


def test_a_loop_of_apply_async_is_not_batched(queue_url: str) -> None:
    before = _counts()

    for i in range(3):
        probe.record.apply_async(("m", i), queue=QUEUE)

    assert _delta(before, "sqs:SendMessageBatch", "sqs:SendMessage") == {
        "sqs:SendMessageBatch": 0,
        "sqs:SendMessage": 3,
    }


def test_batching_can_be_switched_off(queue_url: str) -> None:
    options = dict(probe.app.conf.broker_transport_options)
    _retarget({**options, "batch_publish": False})
    before = _counts()

    group(probe.record.s("m", i).set(queue=QUEUE) for i in range(4)).apply_async()

    assert _delta(before, "sqs:SendMessageBatch", "sqs:SendMessage") == {
        "sqs:SendMessageBatch": 0,
        "sqs:SendMessage": 4,
    }


def test_a_group_with_large_and_delayed_members(queue_url: str) -> None:
    large = "z" * (1024 * 1024)
    group(
        [
            probe.record.s("m", large).set(queue=QUEUE),
            probe.record.s("m", 1).set(queue=QUEUE, countdown=60),
            probe.record.s("m", 2).set(queue=QUEUE),
        ]
    ).apply_async()

    assert counts(queue_url) == (2, 0, 1)
    bodies = [m["Body"] for m in receive(queue_url, 2)]
    assert sum(parse_pointer(b) is not None for b in bodies) == 1


# ---------------------------------------------------------------- not yet due, on a consumer


def _get(timeout: float = 3.0) -> Any:
    """One message through the transport's receive path, acked; None when none came."""
    with probe.app.connection_for_read() as connection:
        simple = connection.SimpleQueue(QUEUE)
        try:
            message = simple.get(timeout=timeout)
        except simple.Empty:
            return None
        finally:
            simple.close()
        message.ack()
        return message


def test_a_task_due_much_later_is_handed_back_to_sqs_delayed(queue_url: str) -> None:
    # DelaySeconds=0: as it arrives after SQS's longest delay, or from a stock producer.
    eta = datetime.now(UTC) + timedelta(minutes=20)
    result = probe.record.apply_async(("m", "v"), queue=QUEUE, eta=eta, DelaySeconds=0)

    assert _get() is None

    assert counts(queue_url) == (0, 0, 1)
    assert probe.app.AsyncResult(result.id).state == "PENDING"


def test_a_task_due_soon_is_delivered_for_the_worker_timer(queue_url: str) -> None:
    eta = datetime.now(UTC) + timedelta(seconds=30)
    result = probe.record.apply_async(("m", "v"), queue=QUEUE, eta=eta, DelaySeconds=0)

    message = _get()

    assert message is not None and message.headers["id"] == result.id


def test_a_large_task_handed_back_keeps_its_pointer_and_body(queue_url: str) -> None:
    eta = datetime.now(UTC) + timedelta(minutes=20)
    result = probe.record.apply_async(
        ("m", "w" * (1024 * 1024)), queue=QUEUE, eta=eta, DelaySeconds=0
    )
    [key] = {k for k in _payload_keys() if k.startswith(f"payloads/{result.id}/")}

    assert _get() is None

    delayed = aws.client("sqs").receive_message(QueueUrl=queue_url, WaitTimeSeconds=0)
    assert "Messages" not in delayed  # invisible until its delay ends
    assert key in _payload_keys()


def test_a_traced_publisher_links_its_trace_to_the_message(
    queue_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", header)

    probe.record.apply_async(("m", "v"), queue=QUEUE)

    [message] = receive(queue_url, 1)
    assert message["Attributes"]["AWSTraceHeader"] == header


# ---------------------------------------------------------------- acks


class Timers:
    """The event loop's ``call_later``, run by hand: what a worker's hub does on its own."""

    def __init__(self) -> None:
        self.due: list[tuple[float, Any]] = []

    def call_later(self, delay: float, callback: Any, *args: Any) -> None:
        self.due.append((delay, lambda: callback(*args)))

    def run(self) -> None:
        due, self.due = self.due, []
        for _delay, callback in due:
            callback()


def test_a_workers_acks_are_deleted_ten_at_a_time_or_on_the_timer(queue_url: str) -> None:
    ids = {probe.record.apply_async(("m", i), queue=QUEUE).id for i in range(12)}
    timers = Timers()
    with probe.app.connection_for_read() as connection:
        simple = connection.SimpleQueue(QUEUE)
        messages = [simple.get(timeout=10) for _ in range(12)]
        assert {m.headers["id"] for m in messages} == ids
        channel = simple.channel
        channel.hub = timers  # as in a worker: the channel runs on an event loop
        before = _counts()

        for message in messages[:11]:
            message.ack()
        assert _delta(before, "sqs:DeleteMessageBatch", "sqs:DeleteMessage") == {
            "sqs:DeleteMessageBatch": 1,  # the first ten, at once
            "sqs:DeleteMessage": 0,
        }
        assert [delay for delay, _ in timers.due] == [ACK_BATCH_SECONDS]
        qos = channel.qos
        assert len(qos._delivered) - len(qos._dirty) == 1  # only the twelfth still holds a slot

        timers.run()  # the eleventh, on the timer
        assert counts(queue_url) == (0, 1, 0)
        messages[11].ack()
        channel.close()  # the twelfth: a closing channel deletes what waits
        simple.close()

    assert _delta(before, "sqs:DeleteMessageBatch", "sqs:DeleteMessage") == {
        "sqs:DeleteMessageBatch": 3,
        "sqs:DeleteMessage": 0,
    }
    assert counts(queue_url) == (0, 0, 0)


def test_acks_are_deleted_at_once_without_an_event_loop_or_when_switched_off(
    queue_url: str,
) -> None:
    for i in range(2):
        probe.record.apply_async(("m", i), queue=QUEUE)
    with probe.app.connection_for_read() as connection:
        simple = connection.SimpleQueue(QUEUE)
        first, second = simple.get(timeout=10), simple.get(timeout=10)
        before = _counts()
        first.ack()  # no event loop (a script, a test): kombu's DeleteMessage
        simple.channel.hub = Timers()
        options = simple.channel.transport_options
        options["ack_batch_seconds"] = 0
        try:
            second.ack()
        finally:
            options.pop("ack_batch_seconds")
        simple.close()

    assert _delta(before, "sqs:DeleteMessage", "sqs:DeleteMessageBatch") == {
        "sqs:DeleteMessage": 2,
        "sqs:DeleteMessageBatch": 0,
    }
    assert counts(queue_url) == (0, 0, 0)
