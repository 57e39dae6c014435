"""Outcomes written per batch (``infra.store.result_batch``), against the session's emulator.

The backend is a fresh instance on ``tasks.app``'s configuration writing to the template's results
table; requests are counted with botocore event hooks on the shared DynamoDB client. Faults are
injected by wrapping that client, so what is proven is the batch's handling of DynamoDB's
answers (unprocessed items, a refused request), not moto's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from celery import Celery, states
from celery.app.task import Context

from devtools.cloud.deploy import Deployment
from infra.core import aws
from infra.core.errors import StoreError
from infra.core.settings import Settings
from infra.store.items import RESULT_BATCH_KEY, task_key
from infra.store.result_batch import ResultBatch
from infra.store.result_requests import ResultWrite, put_item
from infra.store.results import DynamoDBBackend


@pytest.fixture
def backend(cloud: Deployment) -> Iterator[DynamoDBBackend]:
    app = Celery("result-batch-test", set_as_current=False)
    app.config_from_object("tasks.celeryconfig")
    made = app.backend
    assert isinstance(made, DynamoDBBackend)
    yield made
    app.close()


@pytest.fixture
def calls(cloud: Deployment) -> Iterator[list[str]]:
    """DynamoDB operations called while the test runs."""
    seen: list[str] = []

    def count(model: Any, **_: Any) -> None:
        seen.append(model.name)

    events = aws.client("dynamodb").meta.events
    events.register("before-call.dynamodb.*", count, unique_id="count-batch-calls")
    yield seen
    events.unregister("before-call.dynamodb.*", unique_id="count-batch-calls")


def batch_of(backend: DynamoDBBackend, client: Any = None, **options: Any) -> ResultBatch:
    options.setdefault("flush_after", 0)
    return ResultBatch(
        client or aws.client("dynamodb"), backend.table_name, backend.write, **options
    )


def new_id() -> str:
    return str(uuid.uuid4())


def item(task_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (
        aws.client("dynamodb")
        .get_item(TableName=Settings.from_env().results_table, Key={"id": {"S": task_key(task_id)}})
        .get("Item", {})
    )
    return found


def claim(task_id: str) -> None:
    """The item as the consumer's claim leaves it."""
    aws.client("dynamodb").update_item(
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": task_key(task_id)}},
        UpdateExpression="SET claim_owner = :o, lease_until = :l, #s = :p",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={
            ":o": {"S": "lambda:req-1"},
            ":l": {"N": "9999999999"},
            ":p": {"S": states.PENDING},
        },
    )


def request_for(batch: ResultBatch | None = None, **fields: Any) -> Context:
    """A task's request as the Lambda runner builds it; ``batch``: the one it names."""
    batch_key = {RESULT_BATCH_KEY: batch} if batch is not None else {}
    return Context(
        {
            "task": "tests.batch.add",
            "delivery_info": {"routing_key": "celery"},
            "root_id": "root-1",
            "hostname": "lambda@fn",
            **batch_key,
            **fields,
        }
    )


def write_of(task_id: str, state: str = states.SUCCESS) -> ResultWrite:
    return ResultWrite(task_id=task_id, state=state, payload=b"{}", timestamp=time.time())


# ---------------------------------------------------------------- the write itself


@pytest.mark.parametrize("state", [states.SUCCESS, states.FAILURE])
def test_a_put_leaves_the_item_the_update_leaves(backend: DynamoDBBackend, state: str) -> None:
    by_update, by_put = new_id(), new_id()
    for task_id in (by_update, by_put):
        claim(task_id)
    attributes = {"task_name": {"S": "tests.batch.add"}, "retries": {"N": "2"}}

    def written(task_id: str) -> ResultWrite:
        return ResultWrite(
            task_id=task_id,
            state=state,
            payload=b'{"status": "x"}',
            timestamp=1000.5,
            attributes=attributes,
            ttl_seconds=60,
            result_object="s3://bucket/results/x",
        )

    backend.write(written(by_update))
    aws.client("dynamodb").put_item(TableName=backend.table_name, Item=put_item(written(by_put)))

    def comparable(task_id: str) -> dict[str, Any]:
        found = item(task_id)
        return {k: v for k, v in found.items() if k not in ("id", "task_id")}

    assert comparable(by_put) == comparable(by_update)
    assert "claim_owner" not in item(by_put)


@pytest.mark.parametrize("state", [states.STARTED, states.RETRY, states.REVOKED, "PROGRESS"])
def test_a_conditional_write_cannot_be_a_put(state: str) -> None:
    with pytest.raises(ValueError, match="conditional"):
        put_item(write_of("t1", state))


# ---------------------------------------------------------------- deferring through the backend


def test_outcomes_are_written_25_to_a_request(backend: DynamoDBBackend, calls: list[str]) -> None:
    batch = batch_of(backend)
    ids = [new_id() for _ in range(30)]
    for i, task_id in enumerate(ids):
        claim(task_id)
        if i % 3:
            backend.store_result(task_id, i, states.SUCCESS, request=request_for(batch))
        else:
            backend.mark_as_failure(task_id, ValueError(i), request=request_for(batch))
    calls.clear()

    assert item(ids[0])["status"]["S"] == states.PENDING  # nothing written yet
    assert {batch.state_of(i) for i in ids} == {states.SUCCESS, states.FAILURE}
    assert batch.flush() == {}

    assert calls[1:] == ["BatchWriteItem", "BatchWriteItem"]  # (the first: the read above)
    for i, task_id in enumerate(ids):
        meta = backend.get_task_meta(task_id)
        assert meta["status"] == (states.SUCCESS if i % 3 else states.FAILURE)
        assert "claim_owner" not in item(task_id)
        assert batch.state_of(task_id) is None
    assert backend.get_task_meta(ids[1])["result"] == 1
    assert item(ids[1])["task_name"] == {"S": "tests.batch.add"}


def test_conditional_and_chord_writes_are_made_at_once(
    backend: DynamoDBBackend, calls: list[str]
) -> None:
    batch = batch_of(backend)
    started, revoked, in_chord, plain = (new_id() for _ in range(4))

    backend.store_result(started, None, states.STARTED, request=request_for(batch))
    backend.mark_as_revoked(revoked, "revoked", request=request_for(batch))
    in_chord_request = request_for(batch, chord={"task": "x"})
    backend.store_result(in_chord, 1, states.SUCCESS, request=in_chord_request)
    backend.store_result(plain, 2, states.SUCCESS, request=request_for(batch))

    assert calls == ["UpdateItem", "UpdateItem", "UpdateItem"]
    assert backend.get_task_meta(in_chord)["status"] == states.SUCCESS
    assert backend.get_task_meta(plain)["status"] == states.PENDING
    batch.flush()
    assert backend.get_task_meta(plain)["status"] == states.SUCCESS


def test_without_a_batch_each_outcome_is_written_at_once(
    backend: DynamoDBBackend, calls: list[str]
) -> None:
    backend.store_result(new_id(), 1, states.SUCCESS, request=request_for())
    backend.store_result(new_id(), 1, states.SUCCESS)

    assert calls == ["UpdateItem", "UpdateItem"]


def test_deferring_is_per_request(backend: DynamoDBBackend, calls: list[str]) -> None:
    batch = batch_of(backend)
    deferred, elsewhere, other_table = new_id(), new_id(), new_id()
    foreign = ResultBatch(aws.client("dynamodb"), "another-table", backend.write, flush_after=0)

    backend.store_result(deferred, 1, states.SUCCESS, request=request_for(batch))
    backend.store_result(elsewhere, 1, states.SUCCESS, request=request_for())
    backend.store_result(other_table, 1, states.SUCCESS, request=request_for(foreign))

    assert calls == ["UpdateItem", "UpdateItem"]
    assert batch.state_of(deferred) == states.SUCCESS
    assert batch.state_of(elsewhere) is None
    assert foreign.state_of(other_table) is None


# ---------------------------------------------------------------- timer


def test_the_timer_writes_before_the_batch_settles(
    backend: DynamoDBBackend, calls: list[str]
) -> None:
    batch = batch_of(backend, flush_after=0.1)
    task_id = new_id()
    batch.add(write_of(task_id))

    deadline = time.monotonic() + 5
    while batch.state_of(task_id) is not None and time.monotonic() < deadline:
        time.sleep(0.02)

    assert item(task_id)["status"]["S"] == states.SUCCESS
    assert batch.flush() == {}
    assert calls.count("BatchWriteItem") == 1  # the settle found nothing left to write


# ---------------------------------------------------------------- DynamoDB's answers


class Throttling:
    """Leaves ``unprocessed`` writes of the first BatchWriteItem unprocessed, as DynamoDB may."""

    def __init__(self, client: Any, unprocessed: int) -> None:
        self.client = client
        self.unprocessed = unprocessed
        self.requests = 0

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:  # noqa: N803
        self.requests += 1
        [(table, requests)] = RequestItems.items()
        if self.requests > 1 or not self.unprocessed:
            return dict(self.client.batch_write_item(RequestItems=RequestItems))
        kept, left = requests[: -self.unprocessed], requests[-self.unprocessed :]
        self.client.batch_write_item(RequestItems={table: kept})
        return {"UnprocessedItems": {table: left}}


class Refusing:
    """Refuses every BatchWriteItem, as DynamoDB refuses a request with one invalid item."""

    requests = 0

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:  # noqa: N803
        self.requests += 1
        error = {"Code": "ValidationException", "Message": "Item size has exceeded the limit"}
        raise ClientError({"Error": error}, "BatchWriteItem")


def test_unprocessed_writes_are_retried_after_a_pause(backend: DynamoDBBackend) -> None:
    client = Throttling(aws.client("dynamodb"), unprocessed=3)
    pauses: list[float] = []
    batch = batch_of(backend, client, sleep=pauses.append)
    ids = [new_id() for _ in range(8)]
    for task_id in ids:
        batch.add(write_of(task_id))

    assert batch.flush() == {}

    assert client.requests == 2
    assert pauses == [0.05]
    assert {item(i)["status"]["S"] for i in ids} == {states.SUCCESS}


def test_a_refused_request_is_written_one_by_one_and_only_the_bad_write_fails(
    backend: DynamoDBBackend,
) -> None:
    bad = new_id()

    def write_one(write: ResultWrite) -> None:
        if write.task_id == bad:
            raise StoreError(f"storing {write.state} of {bad} failed: too large")
        backend.write(write)

    client = Refusing()
    batch = ResultBatch(client, backend.table_name, write_one, flush_after=0)
    good = [new_id() for _ in range(3)]
    for task_id in [*good, bad]:
        batch.add(write_of(task_id))

    failed = batch.flush()

    assert client.requests == 1
    assert list(failed) == [bad]
    assert "too large" in failed[bad]
    assert {item(i)["status"]["S"] for i in good} == {states.SUCCESS}
    assert item(bad) == {}
    assert batch.state_of(bad) is None  # dropped: its record goes back to SQS


def test_what_the_timer_could_not_write_is_written_when_the_batch_settles(
    backend: DynamoDBBackend,
) -> None:
    attempts: list[str] = []

    def write_one(write: ResultWrite) -> None:
        attempts.append(write.task_id)
        if len(attempts) == 1:
            raise StoreError("DynamoDB unreachable")
        backend.write(write)

    batch = ResultBatch(Refusing(), backend.table_name, write_one, flush_after=0.05)
    task_id = new_id()
    batch.add(write_of(task_id))
    deadline = time.monotonic() + 5
    while not attempts and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.05)

    assert batch.state_of(task_id) == states.SUCCESS  # still waiting after the timer's failure
    assert batch.flush() == {}
    assert attempts == [task_id, task_id]
    assert item(task_id)["status"]["S"] == states.SUCCESS
