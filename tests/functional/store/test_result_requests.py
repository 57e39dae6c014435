"""The result backend's request builders (``infra.store.result_requests``), pure: updates and
their conditions, the attributes the indexes read, large-result pointers and batch reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from celery import Celery, states

from infra.core.errors import ConfigurationError, StoreError
from infra.store.items import KIND_TASK
from infra.store.result_requests import (
    POINTER_KEY,
    ResultWrite,
    batch_get,
    batch_get_request,
    large_result_meta,
    queryable_attributes,
    update_request,
)
from infra.store.results import DynamoDBBackend
from tasks import app
from tests.functional.store.support import NON_TERMINAL, TERMINAL, request_for


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


def test_revoked_write_is_guarded_only_by_finished_states() -> None:
    request = update_request("results", write(states.REVOKED))
    values = request["ExpressionAttributeValues"]
    guarded = {v["S"] for k, v in values.items() if k.startswith(":terminal")}
    assert guarded == {states.SUCCESS, states.FAILURE}
