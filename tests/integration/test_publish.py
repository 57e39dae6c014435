"""The publish path end to end: native delays, large bodies in S3, batched groups, FIFO ids.

The proof of issue 5 against the local cloud. Tasks of ``tests.apps.plain`` (Celery's plain task
base: no claims, so a worker runs every delivery it is handed) are published by this process
through ``infra.producer.transport`` to queues of this module's own, and consumed three ways:

- a stock ``celery worker`` left on kombu's own SQS transport (``PLAIN_STOCK_TRANSPORT``): what it
  runs once, SQS delivered once;
- a ``celery worker`` of the same app on our transport (it reads offloaded bodies);
- the Lambda path: ``handlers.sqs.handler`` invoked in this process as the event source does.

AWS calls are observed with botocore event hooks on the clients that make them, and the
emulator's own per-operation request counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import group
from celery._state import get_current_app

import tasks
from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.emulator import request_counts
from devtools.cloud.event_source import ConsumeStats, consume, handler_from_source
from devtools.cloud.session import point_app_at
from infra.consumer.runtime import pipeline
from infra.core import aws
from infra.core.errors import UnknownQueueError
from infra.core.settings import Settings
from infra.wire.offload import SIZE_ATTRIBUTE, parse_pointer
from tests.apps import plain, probe
from tests.invoke import invoke
from tests.sqs_helpers import TestQueue, counts, queue_with_dlq, receive
from tests.workers import celery_worker, outcome_lines

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]

DELAYED = "publish-delayed"
"""Consumed by the stock worker; its visibility timeout is shorter than the countdown."""
WORKER = "publish-worker"
"""Consumed by a worker on our transport."""
LAMBDA = "publish-lambda"
"""Consumed by the Lambda path."""
FIFO = "publish.fifo"
"""A FIFO queue consumed by the Lambda path."""
DELAYED_VISIBILITY = 6
COUNTDOWN = 15
LARGE_CHARS = 2_000_000
"""A ~2 MB argument: over SQS's 1 MiB message limit, so it must travel through S3."""
GROUP_SIZE = 100
SETTLE = 60.0
QUEUE_LOOKUPS = ("sqs:ListQueues", "sqs:GetQueueUrl", "sqs:CreateQueue")


# ---------------------------------------------------------------- fixtures


@dataclasses.dataclass(frozen=True)
class Queues:
    """This module's queues, by who consumes them."""

    delayed: TestQueue
    worker: TestQueue
    source: EventSource
    """The Lambda path's standard queue, as an event source (the template's settings)."""
    fifo: EventSource
    """The Lambda path's FIFO queue."""


@pytest.fixture(scope="module")
def queues(cloud: Deployment) -> Iterator[Queues]:
    """Fresh queues; ``plain.app`` publishes to them here and the handler serves it."""
    suffix = uuid.uuid4().hex[:8]
    delayed = queue_with_dlq(
        f"publish-delayed-{suffix}", attributes={"VisibilityTimeout": str(DELAYED_VISIBILITY)}
    )
    worker = queue_with_dlq(f"publish-worker-{suffix}")
    lambda_queue = queue_with_dlq(f"publish-lambda-{suffix}")
    fifo = queue_with_dlq(f"publish-{suffix}.fifo")
    urls = {DELAYED: delayed.url, WORKER: worker.url, LAMBDA: lambda_queue.url, FIFO: fifo.url}
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    previous = get_current_app()
    with pytest.MonkeyPatch.context() as env:
        point_app_at(plain.app, cloud)  # sets the deployment's CELERY_APP=tasks:app, hence after:
        env.setenv(plain.QUEUES_VARIABLE, json.dumps(urls))
        env.setenv("CELERY_APP", "tests.apps.plain:app")
        plain.configure(plain.app)
        pipeline.cache_clear()
        yield Queues(
            delayed=delayed,
            worker=worker,
            source=dataclasses.replace(
                celery_source, queue_url=lambda_queue.url, queue_arn=lambda_queue.arn
            ),
            fifo=dataclasses.replace(celery_source, queue_url=fifo.url, queue_arn=fifo.arn),
        )
        pipeline.cache_clear()
    previous.set_current()
    for queue in (delayed, worker, lambda_queue, fifo):
        for url in (queue.url, queue.dlq_url):
            aws.client("sqs").delete_queue(QueueUrl=url)


@pytest.fixture(autouse=True)
def empty_queues(queues: Queues) -> None:
    """Every test starts with nothing in the Lambda path's queues (a failed test leaves some)."""
    for source in (queues.source, queues.fifo):
        aws.client("sqs").purge_queue(QueueUrl=source.queue_url)


@pytest.fixture(scope="module")
def plain_worker(queues: Queues, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ``celery worker`` of ``plain.app`` on our transport, on :data:`WORKER`; its log."""
    log = tmp_path_factory.mktemp("publish-worker") / "worker.log"
    args = ["-Q", WORKER, "--concurrency=2", "--hostname", "publish@%h"]
    with celery_worker("tests.apps.plain", args, dict(os.environ), log):
        yield log


@pytest.fixture
def stock_worker(queues: Queues, tmp_path: Path) -> Iterator[Path]:
    """A ``celery worker`` of ``plain.app`` on kombu's stock transport, on :data:`DELAYED`."""
    env = {**os.environ, plain.STOCK_TRANSPORT_VARIABLE: "1"}
    args = ["-Q", DELAYED, "--concurrency=1", "--hostname", "publish-stock@%h"]
    with celery_worker("tests.apps.plain", args, env, tmp_path / "worker.log") as log:
        yield log


# ---------------------------------------------------------------- helpers


def marker() -> str:
    return uuid.uuid4().hex


def wait_for(condition: Callable[[], bool], what: str, within: float = SETTLE) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextmanager
def calls_to(client: Any, operation: str) -> Iterator[list[dict[str, Any]]]:
    """The parameters of every ``operation`` request ``client`` makes inside the block.

    A botocore event hook on that client alone: what other clients send is not seen.
    """
    seen: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        seen.append(params)

    service = client.meta.service_model.service_id.hyphenize()
    event = f"before-parameter-build.{service}.{operation}"
    client.meta.events.register(event, record)
    try:
        yield seen
    finally:
        client.meta.events.unregister(event, record)


def drain(source: EventSource) -> ConsumeStats:
    """Run the Lambda path on ``source`` (the event-source emulator, in this thread) until empty."""
    return consume(
        [source], handler_from_source, until_empty=True, failed_visibility=1, wait_seconds=1
    )


def payload_keys(task_id: str) -> list[str]:
    """The offloaded bodies of ``task_id`` still in the bucket."""
    listed = aws.client("s3").list_objects_v2(
        Bucket=Settings.from_env().results_bucket, Prefix=f"payloads/{task_id}/"
    )
    return [item["Key"] for item in listed.get("Contents", [])]


def large_text() -> str:
    """~2 MB of text that does not compress."""
    return secrets.token_hex(LARGE_CHARS // 2)


def measured(blob: str) -> dict[str, Any]:
    """What ``plain.measure`` returns for ``blob``, computed here."""
    return {"length": len(blob), "sha256": hashlib.sha256(blob.encode()).hexdigest()}


def lookups() -> dict[str, int]:
    """Queue lookups and creations the emulator served so far, from every process."""
    served = request_counts(Settings.from_env().endpoint_url or "")
    return {name: served.get(name, 0) for name in QUEUE_LOOKUPS}


# ---------------------------------------------------------------- 1. native delay


def test_countdown_is_a_native_delay_a_stock_worker_runs_once(
    queues: Queues, stock_worker: Path
) -> None:
    done = marker()
    published = time.time()
    result = plain.stamp.apply_async((done,), countdown=COUNTDOWN, queue=DELAYED)

    # SQS itself holds it: no consumer receives it (and holds it past its visibility timeout).
    assert counts(queues.delayed.url) == (0, 0, 1)
    ran_at = result.get(timeout=COUNTDOWN + SETTLE)
    wait_for(lambda: counts(queues.delayed.url) == (0, 0, 0), "the worker to ack the task")

    assert ran_at - published >= COUNTDOWN
    assert probe.calls(done) == 1
    # One delivery, no hop: a re-delayed message would have ended one attempt IGNORED first.
    assert [line["state"] for line in outcome_lines(stock_worker, result.id)] == ["SUCCESS"]


# ---------------------------------------------------------------- 2. large bodies in S3


def test_large_argument_travels_through_s3_on_the_lambda_path(queues: Queues) -> None:
    blob = large_text()
    with calls_to(aws.client("s3"), "PutObject") as puts:
        result = plain.measure.apply_async((blob,), queue=LAMBDA)
    [put] = puts
    assert put["Key"].startswith(f"payloads/{result.id}/")
    assert payload_keys(result.id) == [put["Key"]]

    [message] = receive(queues.source.queue_url, 1)
    pointer = parse_pointer(message["Body"])  # the AWS extended client's pointer format
    assert pointer is not None and pointer.key == put["Key"]
    assert int(message["MessageAttributes"][SIZE_ATTRIBUTE]["StringValue"]) > LARGE_CHARS
    assert invoke(queues.source, [message]) == []

    assert result.get(timeout=10) == measured(blob)
    assert payload_keys(result.id) == []


def test_large_argument_travels_through_s3_on_a_worker(queues: Queues, plain_worker: Path) -> None:
    blob = large_text()
    with calls_to(aws.client("s3"), "PutObject") as puts:
        result = plain.measure.apply_async((blob,), queue=WORKER)
    [put] = puts
    assert put["Key"].startswith(f"payloads/{result.id}/")

    assert result.get(timeout=SETTLE) == measured(blob)
    # The worker deletes the object once it has acked the message (after storing the result).
    wait_for(lambda: payload_keys(result.id) == [], "the worker to delete the offloaded body")
    wait_for(lambda: counts(queues.worker.url) == (0, 0, 0), "the worker to ack the task")


# ---------------------------------------------------------------- 3. batched groups


def test_group_of_100_is_sent_with_at_most_10_batch_calls(queues: Queues) -> None:
    with plain.app.producer_or_acquire() as producer:
        channel = producer.channel
        client = channel.sqs(queue=channel.canonical_queue_name(LAMBDA))  # kombu's, for LAMBDA
        with (
            calls_to(client, "SendMessageBatch") as batches,
            calls_to(client, "SendMessage") as singles,
        ):
            members = group(plain.add.s(i, i) for i in range(GROUP_SIZE)).apply_async(
                producer=producer, queue=LAMBDA
            )

    assert singles == []
    assert 1 <= len(batches) <= GROUP_SIZE // 10
    assert sum(len(call["Entries"]) for call in batches) == GROUP_SIZE

    stats = drain(queues.source)
    assert stats.records == GROUP_SIZE and stats.failures == 0, stats
    assert members.get(timeout=10) == [2 * i for i in range(GROUP_SIZE)]


# ---------------------------------------------------------------- 4. no queue lookups


def test_a_full_run_with_queue_urls_never_looks_a_queue_up(
    cloud_env: dict[str, str], tmp_path: Path
) -> None:
    assert json.loads(cloud_env["CELERY_QUEUE_URLS"])  # the deployment names every queue
    before = lookups()
    args = ["-Q", "celery", "--concurrency=1", "--hostname", "publish-lookups@%h"]
    with celery_worker("tasks", args, cloud_env, tmp_path / "worker.log"):
        # A connection (hence a kombu channel) of its own: its set-up is counted too.
        with tasks.app.connection_for_write() as connection:
            result = tasks.add.apply_async((20, 22), connection=connection)
        assert result.get(timeout=SETTLE) == 42

    assert lookups() == before


def test_a_queue_the_configuration_does_not_name_is_a_clear_error(queues: Queues) -> None:
    with pytest.raises(UnknownQueueError, match="'publish-nowhere'"):
        plain.add.apply_async((1, 1), queue="publish-nowhere")


# ---------------------------------------------------------------- 5. FIFO


def test_fifo_retry_is_a_new_message_not_a_duplicate(queues: Queues) -> None:
    done = marker()
    url = queues.fifo.queue_url
    result = plain.retrying.apply_async((done,), queue=FIFO)

    [first] = receive(url, 1)
    assert first["Attributes"]["MessageDeduplicationId"] == f"{result.id}-0"
    assert first["Attributes"]["MessageGroupId"] == "default"
    assert invoke(queues.fifo, [first]) == []  # the task retried: a new message was sent

    [retry] = receive(url, 1)
    assert retry["Attributes"]["MessageDeduplicationId"] == f"{result.id}-1"
    assert invoke(queues.fifo, [retry]) == []

    assert result.get(timeout=10) == 1
    assert probe.calls(done) == 2
    assert counts(url) == (0, 0, 0)


def test_fifo_publishing_one_attempt_twice_sends_one_message(queues: Queues) -> None:
    task_id = str(uuid.uuid4())
    url = queues.fifo.queue_url
    plain.add.apply_async((1, 2), task_id=task_id, queue=FIFO)
    plain.add.apply_async((1, 2), task_id=task_id, queue=FIFO)  # e.g. a publisher's retry

    [message] = receive(url, 1)
    assert counts(url) == (0, 1, 0)  # the second publish was deduplicated by SQS
    assert invoke(queues.fifo, [message]) == []
    assert plain.app.AsyncResult(task_id).get(timeout=10) == 3


def test_fifo_keeps_the_order_within_each_message_group(queues: Queues) -> None:
    batched, single = marker(), marker()
    # One group's tasks in a Celery group (one SendMessageBatch), the other's one by one.
    group(plain.append.s(batched, i) for i in range(5)).apply_async(
        queue=FIFO, MessageGroupId=f"batched-{batched}"
    )
    for i in range(5):
        plain.append.apply_async((single, i), queue=FIFO, MessageGroupId=f"single-{single}")

    messages = receive(queues.fifo.queue_url, 10)
    groups = [m["Attributes"]["MessageGroupId"] for m in messages]
    assert sorted(set(groups)) == [f"batched-{batched}", f"single-{single}"]
    assert invoke(queues.fifo, messages) == []

    assert plain.recorded_order(batched) == [0, 1, 2, 3, 4]
    assert plain.recorded_order(single) == [0, 1, 2, 3, 4]
