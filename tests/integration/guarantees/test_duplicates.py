"""Delivery guarantees (see :mod:`tests.integration.guarantees`): a duplicate delivery runs once,
sequential or concurrent, on the Lambda path, on a worker, or one of each; a worker meeting a live
claim hands the task back."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from pathlib import Path

import pytest
from celery import states

from devtools.cloud.event_source import ConsumeStats, consume, handler_from_source
from infra.core import aws
from infra.store.claim_requests import ClaimRequest
from infra.store.claims import store_for_app
from tests.apps import probe
from tests.integration.guarantees.app import WORKER_QUEUE, app, record
from tests.integration.guarantees.support import (
    SETTLE,
    Queues,
    claimed_by,
    drained,
    duplicated,
    marker,
    state,
    wait_for,
)
from tests.invoke import invoke
from tests.sqs_helpers import receive
from tests.workers import outcome_lines

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]


def test_duplicate_delivered_sequentially_runs_once(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    original, copy = duplicated(queues.source.queue_url)

    assert invoke(queues.source, [original]) == []
    assert invoke(queues.source, [copy]) == []  # already SUCCESS: acked without running

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS
    assert drained(queues, queues.source.queue_url)


def test_duplicate_in_one_batch_runs_once(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    original, copy = duplicated(queues.source.queue_url)

    # The repeat is acked as a duplicate: its task ran earlier in this batch (its outcome is
    # written with the batch's; were that write to fail, the original would come back).
    assert invoke(queues.source, [original, copy]) == []

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS


def test_duplicate_delivered_concurrently_runs_once(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done, 2.0))
    [message] = receive(queues.source.queue_url, 1)
    aws.client("sqs").change_message_visibility(
        QueueUrl=queues.source.queue_url,
        ReceiptHandle=message["ReceiptHandle"],
        VisibilityTimeout=0,
    )
    # Two pollers (two processes), one record per invocation. A held record comes back after
    # 3 s: once the task (2 s) has finished, never while its result is being written.
    source = dataclasses.replace(queues.source, batch_size=1, batching_window=0)
    outcome: dict[str, ConsumeStats] = {}

    def run_pollers() -> None:
        outcome["stats"] = consume(
            [source],
            handler_from_source,
            concurrency=2,
            processes=True,  # two invocations at once, as two Lambda environments
            until_empty=True,
            failed_visibility=3,
            wait_seconds=1,
        )

    pollers = threading.Thread(target=run_pollers)
    pollers.start()
    try:
        # The copy arrives while one invocation runs the task: the other poller takes it. (Sent
        # only once the first claim is made: two claims in the same instant are decided by
        # DynamoDB's per-item serialisation, which moto in server mode does not provide.)
        wait_for(lambda: claimed_by(result.id, "lambda:"), "a poller to claim the task")
        aws.client("sqs").send_message(QueueUrl=source.queue_url, MessageBody=message["Body"])
    finally:
        pollers.join(timeout=SETTLE)

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS
    assert drained(queues, queues.source.queue_url)
    # The copy met the live claim (reported, came back) before it was acked as a duplicate.
    stats = outcome["stats"]
    assert stats.records >= 3 and stats.failures >= 1, stats


def test_duplicate_to_the_lambda_path_then_a_worker_runs_once(queues: Queues, worker: Path) -> None:
    done = marker()
    result = record.apply_async((done,))
    original, copy = duplicated(queues.source.queue_url)

    assert invoke(queues.source, [original]) == []
    aws.client("sqs").send_message(QueueUrl=queues.worker_url, MessageBody=copy["Body"])
    wait_for(lambda: drained(queues, queues.worker_url), "the worker to ack the duplicate")

    assert probe.calls(done) == 1
    assert state(result.id) == states.SUCCESS
    assert [line["state"] for line in outcome_lines(worker, result.id)] == ["IGNORED"]


def test_duplicate_to_a_running_worker_is_held_on_the_lambda_path(
    queues: Queues, worker: Path
) -> None:
    done = marker()
    result = record.apply_async((done, 3.0))
    original, copy = duplicated(queues.source.queue_url)
    aws.client("sqs").send_message(QueueUrl=queues.worker_url, MessageBody=original["Body"])
    wait_for(lambda: claimed_by(result.id, "worker:"), "the worker to claim the task")

    assert invoke(queues.source, [copy]) == [copy["MessageId"]]  # held: comes back later
    wait_for(lambda: state(result.id) == states.SUCCESS, "the worker to finish")
    assert invoke(queues.source, [copy]) == []  # the redelivery: a duplicate, acked

    assert probe.calls(done) == 1
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")


def test_worker_meeting_a_live_claim_hands_the_task_back(queues: Queues, worker: Path) -> None:
    done = marker()
    task_id = str(uuid.uuid4())
    store = store_for_app(app)
    assert store is not None
    # Another consumer (a Lambda invocation, say) holds the task for 3 more seconds.
    assert store.claim([ClaimRequest(task_id)], "lambda:elsewhere", time.time() + 3)[task_id]

    record.apply_async((done,), task_id=task_id, queue=WORKER_QUEUE)
    wait_for(lambda: state(task_id) == states.SUCCESS, "the lease to end and the worker to run it")

    assert probe.calls(done) == 1
    log = worker.read_text()
    assert f"[{task_id}] reject requeue=True: task is running on lambda:elsewhere" in log
    # kombu hands it back by hiding the same message for wait_time_seconds: no copy is made.
    ended = [line["state"] for line in outcome_lines(worker, task_id)]
    assert ended == [states.REJECTED, states.SUCCESS]
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")
