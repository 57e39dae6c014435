"""The result backend against moto: a chord's real header size, recorded when the chord is
applied (``set_chord_size``), is what its parts are counted against (:mod:`infra.store.chords`).

End to end, with Celery's nested-group chord on the Lambda path and on a worker:
``tests/integration/guarantees/test_chord_joins.py``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, states
from celery.app.task import Context
from celery.result import AsyncResult, GroupResult

from infra.core import aws
from infra.store.results import DynamoDBBackend
from tests.functional.store.support import new_id, results_table, store


def _raw(key: str) -> dict[str, Any]:
    response = aws.client("dynamodb").get_item(
        TableName=results_table(), Key={"id": {"S": key}}, ConsistentRead=True
    )
    found: dict[str, Any] = response.get("Item", {})
    return found


def _apply(backend: DynamoDBBackend, app: Celery, results: list[Any]) -> tuple[str, dict[str, Any]]:
    """A chord applied as canvas applies it (counter item, saved header); its id and body."""
    group_id, body_id = new_id(), new_id()
    body = app.signature("tests.results.add", options={"task_id": body_id})
    backend.apply_chord((group_id, results), body)
    return group_id, dict(body)


def test_the_size_is_recorded_on_the_chord_counter(
    backend: DynamoDBBackend, results_app: Celery
) -> None:
    group_id, _ = _apply(backend, results_app, [AsyncResult(new_id(), app=results_app)])
    nested_group = new_id()

    backend.set_chord_size(group_id, 3)
    backend.set_chord_size(nested_group, 2)  # canvas's call for a group inside the header

    counter = _raw(str(backend.get_key_for_chord(group_id)))
    assert counter["chord_size"] == {"N": "3"} and counter["chord_count"] == {"N": "0"}
    assert _raw(str(backend.get_key_for_chord(nested_group))) == {}


def test_a_nested_header_is_not_joined_before_its_last_part(
    backend: DynamoDBBackend, results_app: Celery
) -> None:
    """``chord(group(b, group(d, e)), body)``: two results in the header, three parts."""
    b, d, e = (new_id() for _ in range(3))
    nested = GroupResult(new_id(), [AsyncResult(t, app=results_app) for t in (d, e)])
    header = [AsyncResult(b, app=results_app), nested]
    group_id, body = _apply(backend, results_app, header)
    backend.set_chord_size(group_id, 3)

    for task_id in (b, d):
        store(backend, task_id, states.SUCCESS, task_id)
        part = Context({"id": task_id, "group": group_id, "chord": body})
        backend.on_chord_part_return(part, states.SUCCESS, task_id)

    # Counted against the header's two results, the join would fire now, time out waiting for
    # ``e``, fail the body and delete the counter.
    assert backend.get_task_meta(body["options"]["task_id"])["status"] == states.PENDING
    counter = _raw(str(backend.get_key_for_chord(group_id)))
    assert counter["chord_count"] == {"N": "2"}


def test_a_chord_without_a_recorded_size_is_counted_as_celery_counts_it(
    backend: DynamoDBBackend, results_app: Celery
) -> None:
    """A chord applied by a backend that records no size: Celery's count, its header length."""
    b = new_id()
    group_id, body = _apply(backend, results_app, [AsyncResult(b, app=results_app)])
    store(backend, b, states.FAILURE, KeyError("b"))

    part = Context({"id": b, "group": group_id, "chord": body})
    backend.on_chord_part_return(part, states.FAILURE, KeyError("b"))

    assert backend.get_task_meta(body["options"]["task_id"])["status"] == states.FAILURE
    assert _raw(str(backend.get_key_for_chord(group_id))) == {}


def test_each_part_is_one_request_and_only_the_last_reads_the_header(
    backend: DynamoDBBackend, results_app: Celery, calls: list[str]
) -> None:
    """Celery's own counting reads the whole header GroupResult for every part: n² ids for a
    chord of n. Here a part is one UpdateItem that counts it and returns the recorded size."""
    members = [new_id() for _ in range(5)]
    group_id, body = _apply(
        backend, results_app, [AsyncResult(m, app=results_app) for m in members]
    )
    backend.set_chord_size(group_id, len(members))
    for task_id in members:
        store(backend, task_id, states.SUCCESS, 1)
    body_id = body["options"]["task_id"]

    per_part = []
    for task_id in members:
        calls.clear()
        backend.on_chord_part_return(
            Context({"id": task_id, "group": group_id, "chord": body}), states.SUCCESS, 1
        )
        per_part.append(list(calls))

    assert per_part[:-1] == [["dynamodb:UpdateItem"]] * (len(members) - 1)
    # The last: its count, Celery's read of the header, the join, the header's and counter's
    # deletion; the body goes to the broker.
    assert per_part[-1] == [
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
        "dynamodb:BatchGetItem",
        "dynamodb:DeleteItem",
        "dynamodb:DeleteItem",
    ]
    assert _raw(str(backend.get_key_for_chord(group_id))) == {}
    assert backend.get_task_meta(body_id)["status"] == states.PENDING  # sent, not failed
