"""Claims and revocation markers (``infra.store.claims``, ``infra.store.revoke``) against moto.

A :class:`ClaimStore` works on the template's results table in the session's emulator, through
the shared DynamoDB client, with an injected clock so that leases expire without waiting. Every
test uses fresh task ids, so tests share the table without seeing each other's items. AWS
requests are counted with botocore event hooks on that client.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import states
from celery.result import AsyncResult

from devtools.cloud.deploy import Deployment
from infra.core import aws
from infra.core.errors import StoreError
from infra.core.limits import DYNAMODB_MAX_TRANSACT_ITEMS
from infra.store.claim_requests import Claimed, ClaimRequest, Held, Revoked, Terminal, stamp_ids
from infra.store.claims import BatchClaims, ClaimStore, store_for_app
from infra.store.items import KIND_REVOCATION, revocation_key, task_key
from infra.store.revoke import revoke
from tasks import app

ROOT = Path(__file__).resolve().parents[3]
T0 = 1_900_000_000.0
"""The injected clock's start: leases are compared with it, never with the wall clock."""


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def new_id() -> str:
    return str(uuid.uuid4())


def table() -> str:
    return os.environ["RESULTS_TABLE"]


def pending(task_id: str) -> bytes:
    return f'{{"status": "PENDING", "task_id": "{task_id}"}}'.encode()


@pytest.fixture
def clock(cloud: Deployment) -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> ClaimStore:
    """A claim store on the results table whose clock the test moves."""
    return ClaimStore(aws.client("dynamodb"), table(), pending, ttl_seconds=3600, clock=clock)


@pytest.fixture
def requests_made(cloud: Deployment) -> Iterator[list[str]]:
    """The name of every DynamoDB operation called while the test runs."""
    seen: list[str] = []

    def count(model: Any, **_: Any) -> None:
        seen.append(model.name)

    events = aws.client("dynamodb").meta.events
    events.register("before-call.dynamodb", count)
    yield seen
    events.unregister("before-call.dynamodb", count)


@pytest.fixture
def transactions(cloud: Deployment) -> Iterator[list[int]]:
    """The number of items of every TransactWriteItems call made while the test runs."""
    seen: list[int] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        seen.append(len(json.loads(params["body"])["TransactItems"]))  # the serialized request

    events = aws.client("dynamodb").meta.events
    events.register("before-call.dynamodb.TransactWriteItems", count)
    yield seen
    events.unregister("before-call.dynamodb.TransactWriteItems", count)


def item(key: str) -> dict[str, Any]:
    response = aws.client("dynamodb").get_item(
        TableName=table(), Key={"id": {"S": key}}, ConsistentRead=True
    )
    found: dict[str, Any] = response.get("Item", {})
    return found


def claim_one(store: ClaimStore, request: ClaimRequest | str, owner: str, lease: float) -> Any:
    request = ClaimRequest(request) if isinstance(request, str) else request
    return store.claim([request], owner, lease)[request.task_id]


# ---------------------------------------------------------------- claim, held, terminal, takeover


def test_first_claim_creates_a_pending_item_owned_until_the_lease(store: ClaimStore) -> None:
    task_id = new_id()

    assert claim_one(store, task_id, "lambda:a", T0 + 10) == Claimed()

    stored = item(task_key(task_id))
    assert stored["claim_owner"] == {"S": "lambda:a"}
    assert float(stored["lease_until"]["N"]) == T0 + 10
    assert stored["status"] == {"S": states.PENDING}
    assert stored["result"]["B"] == pending(task_id)  # stock readers always find a meta
    assert stored["task_id"] == {"S": task_id}


def test_live_claim_is_held_then_taken_over_once_its_lease_expired(
    store: ClaimStore, clock: Clock
) -> None:
    task_id = new_id()
    assert claim_one(store, task_id, "lambda:a", T0 + 10) == Claimed()

    clock.now = T0 + 9
    assert claim_one(store, task_id, "worker:b", T0 + 20) == Held("lambda:a", T0 + 10)
    assert claim_one(store, task_id, "lambda:a", T0 + 15) == Claimed()  # its holder may renew

    clock.now = T0 + 15.5  # the holder died: its lease ended
    assert claim_one(store, task_id, "worker:b", T0 + 30) == Claimed()
    stored = item(task_key(task_id))
    assert stored["claim_owner"] == {"S": "worker:b"}
    assert float(stored["lease_until"]["N"]) == T0 + 30
    assert claim_one(store, task_id, "lambda:a", T0 + 40) == Held("worker:b", T0 + 30)


def test_terminal_task_is_never_claimed_again(store: ClaimStore, clock: Clock) -> None:
    done, failed, revoked = new_id(), new_id(), new_id()
    for task_id in (done, failed, revoked):
        assert claim_one(store, task_id, "lambda:a", T0 + 10) == Claimed()
    app.backend.mark_as_done(done, 42)
    app.backend.mark_as_failure(failed, ValueError("no"))
    app.backend.mark_as_revoked(revoked, "revoked")

    clock.now = T0 + 3600  # even long after every lease
    outcomes = store.claim([ClaimRequest(i) for i in (done, failed, revoked)], "lambda:b", T0 + 1e4)

    assert outcomes == {
        done: Terminal(states.SUCCESS),
        failed: Terminal(states.FAILURE),
        revoked: Terminal(states.REVOKED),
    }
    assert AsyncResult(done, app=app).result == 42  # the claim attempt changed nothing


def test_terminal_write_releases_the_claim(store: ClaimStore) -> None:
    task_id = new_id()
    assert claim_one(store, task_id, "lambda:a", T0 + 10) == Claimed()

    app.backend.mark_as_done(task_id, "ok")

    stored = item(task_key(task_id))
    assert "claim_owner" not in stored and "lease_until" not in stored
    assert stored["status"] == {"S": states.SUCCESS}


def test_retry_releases_the_claim_so_the_next_attempt_runs_at_once(store: ClaimStore) -> None:
    task_id = new_id()
    assert claim_one(store, task_id, "lambda:a", T0 + 600) == Claimed()

    app.backend.mark_as_retry(task_id, RuntimeError("again"))

    assert claim_one(store, task_id, "lambda:b", T0 + 600) == Claimed()


def test_late_non_terminal_write_keeps_the_claim(store: ClaimStore) -> None:
    task_id = new_id()
    assert claim_one(store, task_id, "lambda:a", T0 + 600) == Claimed()

    app.backend.mark_as_started(task_id)

    assert claim_one(store, task_id, "lambda:b", T0 + 600) == Held("lambda:a", T0 + 600)


# ---------------------------------------------------------------- revocation markers


@pytest.mark.parametrize("through", ["task", "root", "group"])
def test_marker_on_the_task_its_root_or_its_group_revokes_it(
    store: ClaimStore, through: str
) -> None:
    request = ClaimRequest(new_id(), root_id=new_id(), group_id=new_id())
    marked = {"task": request.task_id, "root": request.root_id, "group": request.group_id}[through]
    store.revoke([marked])

    assert claim_one(store, request, "lambda:a", T0 + 10) == Revoked(by=marked)
    assert "claim_owner" not in item(task_key(request.task_id))  # nothing claimed


def test_a_task_standing_alone_is_claimed_with_one_update_and_no_transaction(
    store: ClaimStore, requests_made: list[str]
) -> None:
    alone, top_level_id = ClaimRequest(new_id()), new_id()
    top_level = ClaimRequest(top_level_id, root_id=top_level_id)  # as Celery sets a root_id

    assert claim_one(store, alone, "worker:a", T0 + 10) == Claimed()
    assert claim_one(store, top_level, "worker:a", T0 + 10) == Claimed()
    assert claim_one(store, alone, "worker:b", T0 + 10) == Held("worker:a", T0 + 10)

    assert requests_made == ["UpdateItem"] * 3
    assert item(task_key(alone.task_id))["claim_owner"] == {"S": "worker:a"}


def test_a_task_revoked_before_its_claim_is_refused_by_the_claim_itself(
    store: ClaimStore, requests_made: list[str]
) -> None:
    task_id, running = new_id(), new_id()
    assert claim_one(store, running, "worker:a", T0 + 10) == Claimed()
    store.revoke([task_id, running])
    requests_made.clear()

    assert claim_one(store, task_id, "worker:a", T0 + 10) == Revoked(by=task_id)
    assert claim_one(store, running, "worker:b", T0 + 10) == Revoked(by=running)
    assert requests_made == ["UpdateItem", "UpdateItem"]  # no marker read, no transaction
    assert store.claim([ClaimRequest(task_id), ClaimRequest(new_id())], "lambda:b", T0 + 10)[
        task_id
    ] == Revoked(by=task_id)  # in a batch's transaction too


def test_revoking_an_id_no_task_has_yet_leaves_a_pending_item_out_of_the_indexes(
    store: ClaimStore,
) -> None:
    id_ = new_id()

    store.revoke([id_])

    stored = item(task_key(id_))
    assert stored["result"]["B"] == pending(id_)  # a stock reader sees PENDING
    assert "kind" not in stored and "status" not in stored  # a group id stays out of the indexes
    assert abs(int(stored["ttl"]["N"]) - (T0 + 3600)) <= 1


def test_revoked_task_does_not_stop_the_rest_of_the_batch(store: ClaimStore) -> None:
    group_id, done = new_id(), new_id()
    assert claim_one(store, done, "lambda:a", T0 + 10) == Claimed()
    app.backend.mark_as_done(done, None)
    store.revoke([group_id])
    revoked = ClaimRequest(new_id(), root_id=new_id(), group_id=group_id)
    fresh = [ClaimRequest(new_id(), root_id=new_id()) for _ in range(3)]

    outcomes = store.claim([fresh[0], revoked, ClaimRequest(done), *fresh[1:]], "lambda:b", T0 + 10)

    assert outcomes == {
        revoked.task_id: Revoked(by=group_id),
        done: Terminal(states.SUCCESS),
        **{r.task_id: Claimed() for r in fresh},
    }
    assert all(item(task_key(r.task_id))["claim_owner"] == {"S": "lambda:b"} for r in fresh)


def test_is_revoked_names_the_marked_id(store: ClaimStore) -> None:
    task_id, root_id = new_id(), new_id()
    store.revoke([root_id])

    assert store.is_revoked([task_id, root_id, None]) == root_id  # type: ignore[list-item]
    assert store.is_revoked([task_id]) is None
    assert store.is_revoked([]) is None


# ---------------------------------------------------------------- batches


def test_task_id_twice_in_one_batch_is_claimed_once_and_held_once(
    store: ClaimStore, transactions: list[int]
) -> None:
    request = ClaimRequest(new_id(), root_id=new_id())
    other = ClaimRequest(new_id())
    claims = BatchClaims(store)

    claims.prepare([("m1", request), ("m2", other), ("m3", request)], "lambda:a", T0 + 10)

    assert claims.outcome("m1", request, "lambda:a", T0 + 10) == Claimed()
    assert claims.outcome("m2", other, "lambda:a", T0 + 10) == Claimed()
    assert claims.outcome("m3", request, "lambda:a", T0 + 10) == Held("lambda:a", T0 + 10)
    assert len(transactions) == 1  # the whole batch in one request


def test_batch_claim_failure_surfaces_when_the_record_is_processed(clock: Clock) -> None:
    broken = ClaimStore(aws.client("dynamodb"), f"missing-{new_id()}", pending, clock=clock)
    claims = BatchClaims(broken)
    request = ClaimRequest(new_id())

    claims.prepare([("m1", request)], "lambda:a", T0 + 10)

    with pytest.raises(StoreError):
        claims.outcome("m1", request, "lambda:a", T0 + 10)


def test_more_than_a_transaction_holds_is_split_and_all_claimed(
    store: ClaimStore, transactions: list[int]
) -> None:
    # 80 tasks with their own root and group: 3 transaction items each, 240 in all.
    requests = [ClaimRequest(new_id(), root_id=new_id(), group_id=new_id()) for _ in range(80)]

    outcomes = store.claim(requests, "lambda:a", T0 + 10)

    assert outcomes == {r.task_id: Claimed() for r in requests}
    assert len(transactions) == 3
    assert all(n <= DYNAMODB_MAX_TRANSACT_ITEMS for n in transactions)
    assert sum(transactions) == 240
    assert all(item(task_key(r.task_id))["claim_owner"] == {"S": "lambda:a"} for r in requests)


def test_shared_markers_are_checked_once_per_transaction(
    store: ClaimStore, transactions: list[int]
) -> None:
    root_id, group_id = new_id(), new_id()
    requests = [ClaimRequest(new_id(), root_id=root_id, group_id=group_id) for _ in range(40)]

    outcomes = store.claim(requests, "lambda:a", T0 + 10)

    assert outcomes == {r.task_id: Claimed() for r in requests}
    assert transactions == [40 + 2]  # 40 updates, the root's and the group's markers


def test_missing_table_is_a_store_error(clock: Clock) -> None:
    broken = ClaimStore(aws.client("dynamodb"), f"missing-{new_id()}", pending, clock=clock)

    with pytest.raises(StoreError, match="ResourceNotFoundException"):
        broken.claim([ClaimRequest(new_id())], "lambda:a", T0 + 10)
    with pytest.raises(StoreError, match="ResourceNotFoundException"):
        broken.revoke([new_id()])
    with pytest.raises(StoreError, match="ResourceNotFoundException"):
        broken.is_revoked([new_id()])


# ---------------------------------------------------------------- revoke: Python, CLI, Celery


def assert_marker(id_: str, *, ttl_seconds: int) -> None:
    marker = item(revocation_key(id_))
    assert marker["kind"] == {"S": KIND_REVOCATION}
    assert marker["task_id"] == {"S": id_}
    expected = time.time() + ttl_seconds
    assert abs(int(marker["ttl"]["N"]) - expected) < 120, marker


def test_store_for_app_uses_the_results_table(cloud: Deployment) -> None:
    store = store_for_app(app)

    assert store is not None
    assert store.table == table() == cloud.environment["RESULTS_TABLE"]
    assert store.ttl_seconds == app.conf.result_expires


def test_revoke_writes_markers_with_ttl(cloud: Deployment) -> None:
    ids = [new_id(), new_id()]

    assert revoke(app, [*ids, ids[0]], reason="operator") == ids

    for id_ in ids:
        assert_marker(id_, ttl_seconds=app.conf.result_expires)
        assert item(revocation_key(id_))["reason"] == {"S": "operator"}


def test_cli_revoke_prints_and_records(cloud_env: dict[str, str]) -> None:
    first, second = new_id(), new_id()

    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "revoke", first, second],
        cwd=ROOT,
        env=cloud_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"revoked {first}", f"revoked {second}"]
    for id_ in (first, second):
        assert_marker(id_, ttl_seconds=app.conf.result_expires)


def test_async_result_revoke_records_a_marker(cloud: Deployment) -> None:
    task_id = new_id()

    AsyncResult(task_id, app=app).revoke()

    assert_marker(task_id, ttl_seconds=app.conf.result_expires)
    store = store_for_app(app)
    assert store is not None
    assert claim_one(store, task_id, "lambda:a", time.time() + 10) == Revoked(by=task_id)


def test_control_revoke_of_many_ids_records_each(cloud: Deployment) -> None:
    ids = [new_id(), new_id()]

    app.control.revoke(ids, terminate=True)  # terminate cannot be honoured; it only warns

    for id_ in ids:
        assert_marker(id_, ttl_seconds=app.conf.result_expires)


def test_revoke_by_stamped_headers_revokes_tasks_with_a_revoked_stamp(cloud: Deployment) -> None:
    """``AsyncResult.revoke_by_stamped_headers`` (through ``app.control``): one marker a value,
    matched as Celery's worker matches its ``revoked_stamps`` -- any value of a list stamp."""
    target, other = uuid.uuid4().hex, uuid.uuid4().hex
    AsyncResult(new_id(), app=app).revoke_by_stamped_headers({"monitoring_id": [target, 42]})
    store = store_for_app(app)
    assert store is not None
    lease = time.time() + 10

    def claimed(**stamps: Any) -> Any:
        request = ClaimRequest(new_id(), stamps=stamp_ids(stamps))
        return claim_one(store, request, "lambda:a", lease)

    assert claimed(monitoring_id=target) == Revoked(by=f'stamp:monitoring_id="{target}"')
    assert claimed(monitoring_id=[other, 42]) == Revoked(by="stamp:monitoring_id=42")
    assert claimed(monitoring_id=other) == Claimed()
    assert claimed(tenant=target) == Claimed()  # another header with the same value
    assert_marker(f'stamp:monitoring_id="{target}"', ttl_seconds=app.conf.result_expires)


def test_celerys_list_form_of_stamped_headers(cloud: Deployment) -> None:
    value = uuid.uuid4().hex
    app.control.revoke_by_stamped_headers([f"monitoring_id={value}"], terminate=True)

    assert_marker(f'stamp:monitoring_id="{value}"', ttl_seconds=app.conf.result_expires)
