"""The result backend against moto: many results read in one BatchGetItem per hundred ids,
groups and native joins (nested ones included), and the plain items groups and chords keep."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from celery import Celery, states
from celery.exceptions import TimeoutError as CeleryTimeoutError
from celery.result import AsyncResult, GroupResult

from infra.store.results import DynamoDBBackend
from tasks import app
from tests.functional.store.support import new_id


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
