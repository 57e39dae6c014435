"""NOT_REGISTERED in the result backend (``infra.store.unregistered``) against moto: what a client
reads, that it is written once and never over a finished or running task, that a claim and a
later state take it over, the worker's ``NotRegistered`` recorded as it, and hostile input.

The Lambda path end to end is in ``tests/functional/consumer/test_handler_unknown.py``.
"""

from __future__ import annotations

import time

import pytest
from celery import Celery, states
from celery.exceptions import NotRegistered, TimeoutError
from celery.result import AsyncResult
from celery.utils.objects import Bunch

from infra.store.claim_requests import Claimed, ClaimRequest, Held
from infra.store.claims import store_for_app
from infra.store.items import NOT_REGISTERED
from infra.store.results import DynamoDBBackend
from infra.store.unregistered import MAX_NAME_CHARS
from tests.functional.store.support import (
    TERMINAL,
    item,
    new_id,
    request_for,
    seed_claim,
    store,
)

WHERE = "lambda@fn"


def unregistered(backend: DynamoDBBackend, task_id: str, name: str = "no.such.task") -> None:
    request = request_for(name, celery_lambda_consumer="lambda:req-1")
    backend.mark_as_unregistered(task_id, name, WHERE, request)


def test_a_client_reads_the_state_and_the_reason(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    unregistered(backend, task_id)

    result = AsyncResult(task_id, backend=backend)
    assert result.state == NOT_REGISTERED
    assert not result.ready()
    assert result.info == {
        "exc_type": "NotRegistered",
        "exc_module": "celery.exceptions",
        "exc_message": "task 'no.such.task' is not registered in lambda@fn",
        "task": "no.such.task",
        "consumer": WHERE,
        "queue": "celery",
    }
    rebuilt = backend.exception_to_python(result.info)
    assert isinstance(rebuilt, NotRegistered)
    raw = item(task_id)
    assert raw["status"] == {"S": NOT_REGISTERED}
    assert raw["task_name"] == {"S": "no.such.task"}
    assert raw["consumer"] == {"S": "lambda:req-1"}
    assert raw["kind"] == {"S": "task"} and "ttl" in raw


def test_get_waits_and_its_timeout_names_the_reason(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    unregistered(backend, task_id)

    with pytest.raises(TimeoutError, match="'no.such.task' is not registered in lambda@fn"):
        AsyncResult(task_id, backend=backend).get(timeout=0.3, interval=0.1)


def test_it_is_written_once(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    unregistered(backend, task_id)
    first = item(task_id)

    backend.mark_as_unregistered(task_id, "no.such.task", "lambda@other", request_for())

    assert item(task_id) == first


@pytest.mark.parametrize("state", TERMINAL)
def test_it_never_replaces_a_terminal_state(backend: DynamoDBBackend, state: str) -> None:
    task_id = new_id()
    store(backend, task_id, state, 1)

    unregistered(backend, task_id)

    assert AsyncResult(task_id, backend=backend).state == state


def test_it_never_hides_a_task_running_elsewhere(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    backend.store_result(task_id, None, states.STARTED)
    seed_claim(task_id)

    unregistered(backend, task_id)

    assert AsyncResult(task_id, backend=backend).state == states.STARTED


def test_a_claim_takes_it_and_the_outcome_replaces_it(
    results_app: Celery, backend: DynamoDBBackend
) -> None:
    task_id = new_id()
    unregistered(backend, task_id)
    claims = store_for_app(results_app)
    assert claims is not None
    lease = time.time() + 60

    assert claims.claim([ClaimRequest(task_id)], "lambda:new", lease) == {task_id: Claimed()}
    held = claims.claim([ClaimRequest(task_id)], "lambda:other", lease)[task_id]
    assert isinstance(held, Held) and held.owner == "lambda:new"
    backend.store_result(task_id, 8, states.SUCCESS, request=request_for("no.such.task"))
    result = AsyncResult(task_id, backend=backend)
    assert (result.state, result.result) == (states.SUCCESS, 8)


def test_a_workers_not_registered_failure_is_recorded_not_registered(
    backend: DynamoDBBackend,
) -> None:
    task_id = new_id()
    # What celery.worker.consumer.Consumer.on_unknown_task hands the backend.
    request = Bunch(name="no.such.task", chord=None, root_id=task_id, errbacks=None)

    backend.mark_as_failure(task_id, NotRegistered("no.such.task"), request=request)

    result = AsyncResult(task_id, backend=backend)
    assert result.state == NOT_REGISTERED
    assert result.info["consumer"].startswith("worker@")
    assert "'no.such.task' is not registered in worker@" in result.info["exc_message"]
    assert item(task_id)["consumer"] == {"S": result.info["consumer"]}


def test_a_hostile_name_is_recorded_bounded_and_printable(backend: DynamoDBBackend) -> None:
    task_id = new_id()
    name = "evil\n\x1b[31m" + "x" * 100_000

    unregistered(backend, task_id, name)

    recorded = item(task_id)["task_name"]["S"]
    assert len(recorded) < MAX_NAME_CHARS + 40
    assert recorded.isprintable() and recorded.endswith(f"({len(name)} characters)")
    info = AsyncResult(task_id, backend=backend).info
    assert info["task"] == recorded and recorded in info["exc_message"]


@pytest.mark.parametrize("task_id", ["x" * 256, "id-\u00e9", "id\nnewline", ""])
def test_an_id_no_key_can_hold_is_not_recorded(backend: DynamoDBBackend, task_id: str) -> None:
    unregistered(backend, task_id)

    assert item(task_id) == {}
