"""FIFO queues and rate limits on the Lambda path: order kept, turns taken across consumers.

Driven the way Lambda drives ``handlers.sqs.handler``, against moto in server mode: tasks of the
test-only app ``tests.apps.probe`` published with real ``apply_async`` to this module's queues,
received, turned into a Lambda SQS event by the event-source emulator, handled, and deleted
unless reported (fixtures in ``conftest.py``, helpers in :mod:`tests.functional.consumer.support`).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from celery import Celery, states

from devtools.cloud.event_source import make_context
from infra.core import aws
from infra.core.observability import (
    METRIC_MACHINERY_FAILED,
    METRIC_RATE_LIMITED,
)
from infra.store.items import task_key
from tests.apps import probe
from tests.functional.consumer.support import (
    Queues,
    celery_bodies,
    emf_metrics,
    json_lines,
    marker,
    no_turn_for,
    reset_backend,
    send_raw,
    stored,
)
from tests.invoke import invoke
from tests.sqs_helpers import counts, receive

pytestmark = pytest.mark.usefixtures("served")


# ---------------------------------------------------------------- FIFO


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
    reset_backend(probe.app)
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
        reset_backend(probe.app)


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


def test_a_task_without_a_turn_is_handed_back_delayed_and_unclaimed(
    queues: Queues, stdout: pytest.CaptureFixture[str]
) -> None:
    no_turn_for(60)
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
    no_turn_for(0.5)
    done = marker()
    probe.paced.apply_async((done,))

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    assert probe.calls(done) == 1


def test_a_fifo_task_without_a_turn_is_held_in_order(queues: Queues) -> None:
    no_turn_for(60)
    url = queues.fifo.queue_url
    [body] = celery_bodies(queues, marker(), task=probe.paced)
    sent = send_raw(url, body, MessageGroupId="g", MessageDeduplicationId=marker())

    failed = invoke(queues.fifo, receive(url, 1))

    assert failed == [sent]
    assert counts(url) == (0, 1, 0)  # invisible until the turn, not re-sent
