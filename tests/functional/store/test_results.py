"""The result backend (``infra.store.results``): its request builders, then the backend against
moto.

The backend under test is a fresh instance on ``tasks.app`` (JSON, ``result_expires`` one day)
writing to the template's results table in the session's emulator. AWS requests are counted with
botocore event hooks on the shared clients the backend uses.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest
from celery import Celery, states
from celery.app.task import Context
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, GroupResult

from devtools.cloud.deploy import Deployment
from infra.core import aws
from infra.core.errors import ConfigurationError, StoreError
from infra.core.settings import Settings
from infra.store.items import INDEX_BY_STATUS, INDEX_BY_TASK, INDEX_BY_TIME, KIND_TASK, task_key
from infra.store.result_requests import (
    POINTER_KEY,
    ResultWrite,
    batch_get,
    batch_get_request,
    large_result_meta,
    queryable_attributes,
    update_request,
)
from infra.store.results import LARGE_RESULT_BYTES, DynamoDBBackend
from tasks import app

TERMINAL = (states.SUCCESS, states.FAILURE, states.REVOKED)
NON_TERMINAL = (states.STARTED, states.RETRY, "PROGRESS")
ONE_MB = 1024 * 1024


def new_id() -> str:
    return str(uuid.uuid4())


def request_for(task_name: str = "tests.results.add", **fields: Any) -> Context:
    """The request a worker or the Lambda runner hands the backend."""
    defaults: dict[str, Any] = {
        "task": task_name,
        "delivery_info": {"routing_key": "celery"},
        "root_id": "root-1",
        "parent_id": "parent-1",
        "group": "group-1",
        "retries": 2,
        "hostname": "worker@host",
    }
    return Context({**defaults, **fields})


# ---------------------------------------------------------------- request builders (pure)


def write(state: str, **fields: Any) -> ResultWrite:
    return ResultWrite(task_id="t1", state=state, payload=b"{}", timestamp=1000.5, **fields)


def test_terminal_write_is_unconditional_and_releases_the_claim() -> None:
    request = update_request("results", write(states.SUCCESS, ttl_seconds=60))

    assert request["Key"] == {"id": {"S": "b'celery-task-meta-t1'"}}
    assert "ConditionExpression" not in request
    assert request["UpdateExpression"] == (
        "SET #kind = :kind, #status = :status, #task_id = :task_id,"
        " #result = :result, #timestamp = :timestamp, #ttl = :ttl"
        " REMOVE #result_object, #claim_owner, #lease_until"
    )
    assert request["ExpressionAttributeValues"] == {
        ":kind": {"S": KIND_TASK},
        ":status": {"S": states.SUCCESS},
        ":task_id": {"S": "t1"},
        ":result": {"B": b"{}"},
        ":timestamp": {"N": "1000.5"},
        ":ttl": {"N": "1060"},
    }


@pytest.mark.parametrize("state", NON_TERMINAL)
def test_non_terminal_write_is_conditional_on_a_non_terminal_item(state: str) -> None:
    request = update_request("results", write(state))

    assert request["ConditionExpression"] == (
        "attribute_not_exists(#status) OR NOT #status IN (:terminal0, :terminal1, :terminal2)"
    )
    values = request["ExpressionAttributeValues"]
    assert {values[f":terminal{i}"]["S"] for i in range(3)} == set(TERMINAL)
    assert request["ExpressionAttributeNames"]["#status"] == "status"
    releases = "#claim_owner, #lease_until" in request["UpdateExpression"]
    assert releases == (state == states.RETRY)  # a retry must be claimable at once


def test_large_result_write_keeps_its_pointer() -> None:
    request = update_request("results", write(states.SUCCESS, result_object="s3://b/results/t1/x"))

    assert request["ExpressionAttributeValues"][":result_object"] == {"S": "s3://b/results/t1/x"}
    assert "#ttl" not in request["UpdateExpression"]  # no ttl_seconds: no expiry
    assert request["UpdateExpression"].endswith("REMOVE #claim_owner, #lease_until")


def test_queryable_attributes_come_from_the_request() -> None:
    meta = {"date_done": "2026-01-01T00:00:00+00:00"}

    attributes = queryable_attributes(states.SUCCESS, meta, request_for())

    assert attributes == {
        "task_name": {"S": "tests.results.add"},
        "queue": {"S": "celery"},
        "root_id": {"S": "root-1"},
        "parent_id": {"S": "parent-1"},
        "group_id": {"S": "group-1"},
        "worker": {"S": "worker@host"},
        "consumer": {"S": "worker@host"},  # a worker is named by its hostname
        "date_done": {"S": "2026-01-01T00:00:00+00:00"},
        "retries": {"N": "2"},
    }


def test_a_lambda_invocation_is_recorded_as_the_consumer() -> None:
    request = request_for(celery_lambda_consumer="lambda:req-1")

    attributes = queryable_attributes(states.SUCCESS, {}, request)

    assert attributes["consumer"] == {"S": "lambda:req-1"}
    assert attributes["worker"] == {"S": "worker@host"}


def test_unknown_and_empty_attributes_are_left_out() -> None:
    request = request_for(task="", group=None, root_id=None, delivery_info=None, hostname="")

    attributes = queryable_attributes(states.STARTED, {"date_done": "x"}, request)

    assert set(attributes) == {"parent_id", "retries"}
    assert queryable_attributes(states.SUCCESS, {}, None) == {}


def test_large_result_meta_points_at_the_object() -> None:
    meta = {"status": states.SUCCESS, "result": "x" * 10, "task_id": "t1", "date_done": "d"}

    small = large_result_meta(meta, "bucket", "results/t1/k")

    location = {"bucket": "bucket", "key": "results/t1/k"}
    assert small["result"] == {POINTER_KEY: location}
    assert small[POINTER_KEY] == location
    assert (small["status"], small["task_id"], small["date_done"]) == (states.SUCCESS, "t1", "d")


def test_large_failure_meta_is_still_an_exception_for_stock_readers() -> None:
    exc = {"exc_type": "ValueError", "exc_module": "builtins", "exc_message": ["x" * 10]}
    meta = {"status": states.FAILURE, "result": exc, "task_id": "t1", "traceback": "tb"}

    small = large_result_meta(meta, "bucket", "results/t1/k")

    assert small["result"]["exc_type"] == "ValueError"
    assert small["result"]["exc_module"] == "builtins"
    assert small["result"]["exc_message"] == ["result stored in s3://bucket/results/t1/k"]
    assert small["traceback"] is None
    rebuilt = app.backend.exception_to_python(small["result"])
    assert isinstance(rebuilt, ValueError)


def test_batch_get_request_projects_key_and_result() -> None:
    request = batch_get_request("results", ["a", "b"])

    assert request == {
        "RequestItems": {
            "results": {
                "Keys": [{"id": {"S": "a"}}, {"id": {"S": "b"}}],
                "ProjectionExpression": "#id, #result",
                "ExpressionAttributeNames": {"#id": "id", "#result": "result"},
            }
        }
    }


class FakeBatchClient:
    """``batch_get_item`` over a dict, leaving ``unprocessed`` keys for the first calls."""

    def __init__(self, items: Mapping[str, bytes], unprocessed_calls: int = 0) -> None:
        self.items = items
        self.unprocessed_calls = unprocessed_calls
        self.requests: list[list[str]] = []

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:  # noqa: N803
        [(table, spec)] = RequestItems.items()
        keys = [key["id"]["S"] for key in spec["Keys"]]
        assert len(keys) <= 100 and len(set(keys)) == len(keys)
        self.requests.append(keys)
        served, left = keys, []
        if self.unprocessed_calls:
            self.unprocessed_calls -= 1
            served, left = keys[: len(keys) // 2], keys[len(keys) // 2 :]
        found = [
            {"id": {"S": k}, "result": {"B": self.items[k]}} for k in served if k in self.items
        ]
        unprocessed = {table: {"Keys": [{"id": {"S": k}} for k in left]}} if left else {}
        return {"Responses": {table: found}, "UnprocessedKeys": unprocessed}


def test_batch_get_chunks_by_100_and_retries_unprocessed_keys() -> None:
    keys = [f"k{i}" for i in range(250)]
    client = FakeBatchClient({k: k.encode() for k in keys if k != "k7"}, unprocessed_calls=2)
    naps: list[float] = []

    found = batch_get(client, "results", [*keys, "k1"], sleep=naps.append)

    assert found == {k: k.encode() for k in keys if k != "k7"}
    assert [len(r) for r in client.requests] == [100, 50, 25, 100, 50]
    assert naps == [0.05, 0.1]


def test_batch_get_gives_up_on_keys_never_processed() -> None:
    client = FakeBatchClient({"a": b"1"}, unprocessed_calls=100)

    with pytest.raises(StoreError, match="unprocessed"):
        batch_get(client, "results", ["a", "b"], sleep=lambda _: None, attempts=3)


def test_a_global_key_prefix_is_refused() -> None:
    prefixed = Celery("prefixed", set_as_current=False)
    prefixed.conf.result_backend_transport_options = {"global_keyprefix": "tenant1"}

    with pytest.raises(ConfigurationError, match="global_keyprefix"):
        DynamoDBBackend(app=prefixed)


# ---------------------------------------------------------------- the backend against moto


@pytest.fixture
def results_app(cloud: Deployment) -> Iterator[Celery]:
    """An app configured as ``tasks.app``, with a backend of its own made during the test."""
    fresh = Celery("results-test", set_as_current=False)
    fresh.config_from_object("tasks.celeryconfig")
    yield fresh
    fresh.close()


@pytest.fixture
def backend(results_app: Celery) -> DynamoDBBackend:
    made: DynamoDBBackend = results_app.backend
    assert isinstance(made, DynamoDBBackend)
    return made


@pytest.fixture
def calls(cloud: Deployment) -> Iterator[list[str]]:
    """``service:Operation`` of every DynamoDB and S3 call made while the test runs."""
    seen: list[str] = []

    def count(model: Any, **_: Any) -> None:
        seen.append(f"{model.service_model.endpoint_prefix}:{model.name}")

    hooks = [(aws.client("dynamodb"), "dynamodb"), (aws.client("s3"), "s3")]
    for client, service in hooks:
        client.meta.events.register(f"before-call.{service}.*", count, unique_id="count-calls")
    yield seen
    for client, service in hooks:
        client.meta.events.unregister(f"before-call.{service}.*", unique_id="count-calls")


def _table() -> str:
    return Settings.from_env().results_table


def item(task_id: str) -> dict[str, Any]:
    """The raw item of a task, read consistently."""
    response = aws.client("dynamodb").get_item(
        TableName=_table(), Key={"id": {"S": task_key(task_id)}}, ConsistentRead=True
    )
    found: dict[str, Any] = response.get("Item", {})
    return found


def query_items(index: str, partition: str, value: str, since: float) -> list[dict[str, Any]]:
    """Items in ``index`` under ``partition = value`` written since ``since``, newest first."""
    response = aws.client("dynamodb").query(
        TableName=_table(),
        IndexName=index,
        KeyConditionExpression="#p = :v AND #ts >= :since",
        ExpressionAttributeNames={"#p": partition, "#ts": "timestamp"},
        ExpressionAttributeValues={":v": {"S": value}, ":since": {"N": repr(since)}},
        ScanIndexForward=False,
    )
    items: list[dict[str, Any]] = response["Items"]
    return items


def query(index: str, partition: str, value: str, since: float) -> list[str]:
    """Task ids of :func:`query_items`."""
    return [i["task_id"]["S"] for i in query_items(index, partition, value, since)]


def seed_claim(task_id: str) -> None:
    """A live claim on the task's item, as the consumer's claim leaves it."""
    aws.client("dynamodb").update_item(
        TableName=_table(),
        Key={"id": {"S": task_key(task_id)}},
        UpdateExpression="SET claim_owner = :o, lease_until = :l",
        ExpressionAttributeValues={":o": {"S": "lambda:req-1"}, ":l": {"N": "9999999999"}},
    )


def store(backend: DynamoDBBackend, task_id: str, state: str, value: Any = None) -> None:
    if state == states.FAILURE:
        backend.mark_as_failure(task_id, ValueError("boom"), traceback="Traceback ...")
    elif state == states.REVOKED:
        backend.mark_as_revoked(task_id, "revoked by test")
    elif state == states.RETRY:
        backend.mark_as_retry(task_id, RuntimeError("again"), traceback="Traceback ...")
    else:
        backend.store_result(task_id, value, state)


def test_the_deployed_table_has_the_template_indexes(cloud: Deployment) -> None:
    table = aws.client("dynamodb").describe_table(TableName=_table())["Table"]

    indexes = {i["IndexName"]: i["KeySchema"] for i in table["GlobalSecondaryIndexes"]}
    assert {name: [k["AttributeName"] for k in keys] for name, keys in indexes.items()} == {
        INDEX_BY_STATUS: ["status", "timestamp"],
        INDEX_BY_TASK: ["task_name", "timestamp"],
        INDEX_BY_TIME: ["kind", "timestamp"],
    }


def test_a_state_is_one_update_without_a_read(backend: DynamoDBBackend, calls: list[str]) -> None:
    task_id = new_id()

    backend.store_result(task_id, 1, states.STARTED)
    backend.store_result(task_id, 42, states.SUCCESS, request=request_for())

    assert calls == ["dynamodb:UpdateItem", "dynamodb:UpdateItem"]


def test_attributes_are_written_and_queryable_by_every_index(
    backend: DynamoDBBackend,
) -> None:
    since = time.time() - 1
    task_name = f"tests.results.{uuid.uuid4().hex}"
    done, running = new_id(), new_id()

    backend.store_result(running, None, states.STARTED, request=request_for(task_name))
    backend.store_result(done, 42, states.SUCCESS, request=request_for(task_name))

    stored = item(done)
    assert {k: v for k, v in stored.items() if k not in ("result", "timestamp", "ttl")} == {
        "id": {"S": task_key(done)},
        "kind": {"S": "task"},
        "status": {"S": "SUCCESS"},
        "task_id": {"S": done},
        "task_name": {"S": task_name},
        "queue": {"S": "celery"},
        "root_id": {"S": "root-1"},
        "parent_id": {"S": "parent-1"},
        "group_id": {"S": "group-1"},
        "retries": {"N": "2"},
        "worker": {"S": "worker@host"},
        "consumer": {"S": "worker@host"},
        "date_done": {"S": backend.get_task_meta(done)["date_done"]},
    }
    timestamp = float(stored["timestamp"]["N"])
    assert int(stored["ttl"]["N"]) == int(timestamp + 24 * 60 * 60)  # result_expires
    assert "date_done" not in item(running)
    assert query(INDEX_BY_TASK, "task_name", task_name, since) == [done, running]
    assert done in query(INDEX_BY_STATUS, "status", states.SUCCESS, since)
    assert running in query(INDEX_BY_STATUS, "status", states.STARTED, since)
    assert running not in query(INDEX_BY_STATUS, "status", states.SUCCESS, since)
    assert {done, running} <= set(query(INDEX_BY_TIME, "kind", KIND_TASK, since))
    [listed] = query_items(INDEX_BY_TASK, "task_name", task_name, since)[:1]
    assert "result" not in listed  # the indexes carry what lists need, not the result
    assert {k: listed[k]["S"] for k in ("status", "queue", "worker")} == {
        "status": states.SUCCESS,
        "queue": "celery",
        "worker": "worker@host",
    }


@pytest.mark.parametrize("late", NON_TERMINAL)
@pytest.mark.parametrize("terminal", TERMINAL)
def test_a_late_non_terminal_state_never_replaces_a_terminal_one(
    backend: DynamoDBBackend, terminal: str, late: str
) -> None:
    task_id = new_id()
    store(backend, task_id, terminal, value=42)
    before = item(task_id)

    store(backend, task_id, late, value={"current": 1})  # no error: dropped

    assert item(task_id) == before
    assert backend.get_task_meta(task_id, cache=False)["status"] == terminal


def test_a_terminal_state_replaces_a_non_terminal_one(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    store(backend, task_id, "PROGRESS", value={"current": 1})
    assert backend.get_task_meta(task_id)["result"] == {"current": 1}

    store(backend, task_id, states.SUCCESS, value=7)

    assert AsyncResult(task_id, backend=backend).get(timeout=1) == 7


@pytest.mark.parametrize(
    ("state", "released"),
    [
        (states.STARTED, False),
        ("PROGRESS", False),
        (states.RETRY, True),
        (states.SUCCESS, True),
        (states.FAILURE, True),
        (states.REVOKED, True),
    ],
)
def test_retry_and_terminal_states_release_the_claim(
    backend: DynamoDBBackend, state: str, released: bool
) -> None:
    task_id = new_id()
    seed_claim(task_id)

    store(backend, task_id, state, value=1)

    claim = {k for k in item(task_id) if k in ("claim_owner", "lease_until")}
    assert claim == (set() if released else {"claim_owner", "lease_until"})


def test_states_read_back_through_the_backend(backend: DynamoDBBackend) -> None:
    ids = {state: new_id() for state in (*TERMINAL, states.RETRY, "PROGRESS")}
    for state, task_id in ids.items():
        store(backend, task_id, state, value={"current": 3, "total": 10})

    def read(state: str) -> AsyncResult:
        return AsyncResult(ids[state], backend=backend, app=app)

    assert read(states.SUCCESS).get(timeout=1) == {"current": 3, "total": 10}
    with pytest.raises(ValueError, match="boom"):
        read(states.FAILURE).get(timeout=1)
    assert read(states.FAILURE).traceback == "Traceback ..."
    assert read(states.REVOKED).state == states.REVOKED
    assert read("PROGRESS").info == {"current": 3, "total": 10}
    assert isinstance(read(states.RETRY).info, RuntimeError)
    assert AsyncResult(new_id(), backend=backend).state == states.PENDING


def test_get_many_is_one_batch_get_per_hundred_ids(
    backend: DynamoDBBackend, calls: list[str]
) -> None:
    ids = [new_id() for _ in range(150)]
    for i, task_id in enumerate(ids):
        backend.store_result(task_id, i, states.SUCCESS)
    calls.clear()

    first = dict(backend.get_many(ids[:100], timeout=1))
    assert calls == ["dynamodb:BatchGetItem"]
    calls.clear()
    fresh = DynamoDBBackend(app=app)  # no cached results
    both = dict(fresh.get_many(ids, timeout=1))

    assert calls == ["dynamodb:BatchGetItem", "dynamodb:BatchGetItem"]
    assert {k: v["result"] for k, v in first.items()} == {t: i for i, t in enumerate(ids[:100])}
    assert {k: v["result"] for k, v in both.items()} == {t: i for i, t in enumerate(ids)}


def test_mget_keeps_order_and_gives_none_for_missing(backend: DynamoDBBackend) -> None:
    a, b, missing = new_id(), new_id(), new_id()
    backend.store_result(a, "a", states.SUCCESS)
    backend.store_result(b, "b", states.SUCCESS)
    keys = [backend.get_key_for_task(t) for t in (b, missing, a, b)]

    values = backend.mget(keys)

    assert [None if v is None else backend.decode_result(v)["result"] for v in values] == [
        "b",
        None,
        "a",
        "b",
    ]


def test_group_result_get_is_a_batch_read(
    results_app: Celery, backend: DynamoDBBackend, calls: list[str]
) -> None:
    ids = [new_id() for _ in range(5)]
    for i, task_id in enumerate(ids):
        backend.store_result(task_id, i * i, states.SUCCESS)
    group = results_app.GroupResult(new_id(), [results_app.AsyncResult(t) for t in ids])
    calls.clear()

    assert group.get(timeout=1) == [0, 1, 4, 9, 16]
    assert calls == ["dynamodb:BatchGetItem"]


def nested_group(results_app: Celery, ids: Sequence[str]) -> GroupResult:
    """``[ids[0], [ids[1], ids[2], ...]]``: a header ending in a group, as a chord restores it."""
    inner = results_app.GroupResult(new_id(), [results_app.AsyncResult(t) for t in ids[1:]])
    return results_app.GroupResult(new_id(), [results_app.AsyncResult(ids[0]), inner])


def test_a_native_join_reads_nested_groups_in_one_batch_read(
    results_app: Celery, backend: DynamoDBBackend, calls: list[str]
) -> None:
    ids = [new_id() for _ in range(3)]
    for i, task_id in enumerate(ids):
        backend.store_result(task_id, i + 1, states.SUCCESS)
    group = nested_group(results_app, ids)
    calls.clear()

    assert group.join_native(timeout=1) == [1, [2, 3]]
    assert calls == ["dynamodb:BatchGetItem"]


def test_a_native_join_waits_for_nested_members_within_its_timeout(
    results_app: Celery, backend: DynamoDBBackend
) -> None:
    """Celery's own join waits for a nested group's members with no timeout: a chord join that
    fired early then wedged the worker's only process for ever (issue 17)."""
    ids = [new_id() for _ in range(3)]
    for task_id in ids[:2]:
        backend.store_result(task_id, 1, states.SUCCESS)  # ids[2] never finishes
    group = nested_group(results_app, ids)
    outcome: list[BaseException] = []

    def join() -> None:
        try:
            group.join_native(timeout=0.5, interval=0.1)
        except BaseException as exc:  # noqa: BLE001 - the outcome under test
            outcome.append(exc)

    joiner = threading.Thread(target=join, daemon=True)
    joiner.start()
    joiner.join(timeout=10)

    assert not joiner.is_alive(), "the join did not return: it waits without a timeout"
    assert [type(exc) for exc in outcome] == [CeleryTimeoutError]


def test_group_results_and_chord_counters_still_use_plain_items(
    backend: DynamoDBBackend,
) -> None:
    ids = [new_id() for _ in range(2)]
    group = GroupResult(new_id(), [AsyncResult(t, backend=backend, app=app) for t in ids], app=app)

    backend.save_group(group.id, group)
    chord_key = backend.get_key_for_chord(group.id)
    backend.client.put_item(**backend._prepare_init_count_request(str(chord_key)))

    restored = backend.restore_group(group.id, cache=False)
    assert [r.id for r in restored.results] == ids
    assert [backend.incr(chord_key) for _ in range(3)] == [1, 2, 3]
    backend.delete_group(group.id)
    assert backend.restore_group(group.id, cache=False) is None


def s3_keys(task_id: str) -> list[str]:
    bucket = Settings.from_env().results_bucket
    response = aws.client("s3").list_objects_v2(Bucket=bucket, Prefix=f"results/{task_id}/")
    return [o["Key"] for o in response.get("Contents", [])]


def test_a_large_result_goes_to_s3_and_comes_back(
    backend: DynamoDBBackend, calls: list[str]
) -> None:
    task_id = new_id()
    value = {"blob": "x" * ONE_MB, "n": 1}

    backend.store_result(task_id, value, states.SUCCESS, request=request_for())

    assert calls == ["s3:PutObject", "dynamodb:UpdateItem"]
    stored = item(task_id)
    [key] = s3_keys(task_id)
    assert stored["result_object"]["S"].endswith(key)
    assert len(stored["result"]["B"]) < 1024
    assert stored["status"] == {"S": states.SUCCESS}
    calls.clear()
    reader = DynamoDBBackend(app=app)
    assert AsyncResult(task_id, backend=reader, app=app).get(timeout=1) == value
    assert calls == ["dynamodb:GetItem", "s3:GetObject"]
    assert dict(DynamoDBBackend(app=app).get_many([task_id], timeout=1))[task_id]["result"] == value

    AsyncResult(task_id, backend=backend, app=app).forget()

    assert s3_keys(task_id) == []
    assert item(task_id) == {}


def test_a_large_failure_round_trips_with_its_traceback(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    traceback = "Traceback (most recent call last):\n" + "  frame\n" * (LARGE_RESULT_BYTES // 8)

    backend.mark_as_failure(task_id, KeyError("missing"), traceback=traceback)

    assert len(s3_keys(task_id)) == 1
    result = AsyncResult(task_id, backend=DynamoDBBackend(app=app), app=app)
    assert result.state == states.FAILURE
    assert isinstance(result.result, KeyError)
    assert result.traceback == traceback


def test_a_dropped_large_state_leaves_no_object(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    backend.store_result(task_id, 1, states.SUCCESS)

    backend.store_result(task_id, {"blob": "x" * ONE_MB}, "PROGRESS")

    assert s3_keys(task_id) == []
    assert backend.get_task_meta(task_id, cache=False)["result"] == 1


def test_a_small_result_after_a_large_one_drops_the_pointer(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    backend.store_result(task_id, {"blob": "x" * ONE_MB}, "PROGRESS")
    assert "result_object" in item(task_id)

    backend.store_result(task_id, 5, states.SUCCESS)

    assert "result_object" not in item(task_id)
    assert AsyncResult(task_id, backend=DynamoDBBackend(app=app), app=app).get(timeout=1) == 5


@pytest.mark.parametrize(
    "operation",
    [
        lambda b: b.store_result(new_id(), 1, states.SUCCESS),
        lambda b: b.store_result(new_id(), 1, states.STARTED),
        lambda b: b.get_task_meta(new_id()),
        lambda b: list(b.get_many([new_id()], timeout=1)),
        lambda b: b.forget(new_id()),
    ],
    ids=["terminal-write", "conditional-write", "get", "get-many", "forget"],
)
def test_a_missing_table_is_a_store_error(
    cloud: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    operation: Callable[[DynamoDBBackend], Sequence[Any]],
) -> None:
    monkeypatch.setenv("RESULTS_TABLE", f"missing-{uuid.uuid4().hex}")
    backend = DynamoDBBackend(app=app)

    with pytest.raises(StoreError) as raised:
        operation(backend)

    assert "ResourceNotFoundException" in str(raised.value.__cause__)


@pytest.mark.parametrize("finished", [states.SUCCESS, states.FAILURE])
def test_revoked_never_rewrites_a_finished_task(backend: DynamoDBBackend, finished: str) -> None:
    # An expired copy of a task that already ran is redelivered: its REVOKED must be dropped.
    task_id = new_id()
    store(backend, task_id, finished, value=42)
    before = item(task_id)

    store(backend, task_id, states.REVOKED)

    assert item(task_id) == before


def test_revoked_replaces_a_pending_or_running_task(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    store(backend, task_id, states.STARTED)

    store(backend, task_id, states.REVOKED)

    assert backend.get_task_meta(task_id, cache=False)["status"] == states.REVOKED


def test_revoked_write_is_guarded_only_by_finished_states() -> None:
    request = update_request("results", write(states.REVOKED))
    values = request["ExpressionAttributeValues"]
    guarded = {v["S"] for k, v in values.items() if k.startswith(":terminal")}
    assert guarded == {states.SUCCESS, states.FAILURE}
