"""The result backend (``infra.store.results``) against moto: what a state writes, which state
wins, the claim it releases, what reads back, and a missing table.

Batch and group reads are in ``test_result_reads.py``, results too large for an item in
``test_large_results.py``; the fixtures and helpers in :mod:`tests.functional.store.support`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from celery import states
from celery.result import AsyncResult

from devtools.cloud.deploy import Deployment
from infra.core import aws
from infra.core.errors import StoreError
from infra.store.items import (
    INDEX_BY_ID,
    INDEX_BY_STATUS,
    INDEX_BY_TASK,
    INDEX_BY_TIME,
    KIND_TASK,
    task_key,
)
from infra.store.results import DynamoDBBackend
from tasks import app
from tests.functional.store.support import (
    NON_TERMINAL,
    TERMINAL,
    item,
    new_id,
    query,
    query_items,
    request_for,
    results_table,
    seed_claim,
    store,
)


def test_the_deployed_table_has_the_template_indexes(cloud: Deployment) -> None:
    table = aws.client("dynamodb").describe_table(TableName=results_table())["Table"]

    indexes = {i["IndexName"]: i["KeySchema"] for i in table["GlobalSecondaryIndexes"]}
    assert {name: [k["AttributeName"] for k in keys] for name, keys in indexes.items()} == {
        INDEX_BY_STATUS: ["status", "timestamp"],
        INDEX_BY_TASK: ["task_name", "timestamp"],
        INDEX_BY_TIME: ["kind", "timestamp"],
        INDEX_BY_ID: ["kind", "task_id"],
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
