"""A batch's outcomes written together, and the function's role measured against its calls.

Driven the way Lambda drives ``handlers.sqs.handler``, against moto in server mode: tasks of the
test-only app ``tests.apps.probe`` published with real ``apply_async`` to this module's queues,
received, turned into a Lambda SQS event by the event-source emulator, handled, and deleted
unless reported (fixtures in ``conftest.py``, helpers in :mod:`tests.functional.consumer.support`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import botocore.exceptions
import pytest
from celery import Celery, states

from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import request_counts
from devtools.cloud.event_source import build_event, make_context
from devtools.cloud.template import load_template
from handlers.sqs import handler
from infra.core import aws
from infra.core.errors import StoreError
from infra.core.observability import (
    METRIC_MACHINERY_FAILED,
)
from infra.core.settings import Settings
from infra.store.items import task_key
from infra.store.results import LARGE_RESULT_BYTES, DynamoDBBackend
from infra.store.revoke import revoke
from tests.apps import probe
from tests.functional.consumer.support import (
    Queues,
    by_task,
    celery_bodies,
    emf_metrics,
    json_lines,
    marker,
    no_turn_for,
    send_raw,
    stored,
    task_id,
)
from tests.invoke import invoke
from tests.sqs_helpers import receive

pytestmark = pytest.mark.usefixtures("served")


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
    no_turn_for(60)
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
