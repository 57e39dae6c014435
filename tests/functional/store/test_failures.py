"""The result backend against moto: what ``get()`` raises for a failed canvas.

A chord whose header fails stores ``ChordError`` on its body; the header's own exception is what
``get()`` on the body raises, as Celery checks the body's parents before it waits. The wait must
keep that order when both failures land between two of its polls (:meth:`wait_for`).
"""

from __future__ import annotations

import pytest
from celery import Celery, states
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult

from infra.store.results import DynamoDBBackend
from tests.functional.store.support import new_id


def test_a_header_failing_between_polls_raises_its_own_exception(
    backend: DynamoDBBackend, results_app: Celery
) -> None:
    member, body = new_id(), new_id()
    header = GroupResult(new_id(), [AsyncResult(member, app=results_app)], app=results_app)
    result = AsyncResult(body, parent=header, app=results_app)
    polls = []

    def header_fails_then_the_chord(*_: object) -> None:
        """After the first poll and its parent check: the worker's two writes, in its order."""
        polls.append(backend.get_state(body))
        if len(polls) == 1:
            backend.store_result(member, ValueError("the header's"), states.FAILURE)
            backend.store_result(body, ChordError(f"Dependency {member} raised"), states.FAILURE)

    with pytest.raises(ValueError, match="the header's"):
        result.get(timeout=10, interval=0.05, on_interval=header_fails_then_the_chord)
    assert polls == [states.PENDING]  # the body was failed when the wait saw it next


def test_a_body_failing_on_its_own_raises_its_own_exception(
    backend: DynamoDBBackend, results_app: Celery
) -> None:
    member, body = new_id(), new_id()
    backend.store_result(member, 2, states.SUCCESS)
    header = GroupResult(new_id(), [AsyncResult(member, app=results_app)], app=results_app)
    result = AsyncResult(body, parent=header, app=results_app)

    def body_fails(*_: object) -> None:
        backend.store_result(body, KeyError("the body's"), states.FAILURE)

    with pytest.raises(KeyError, match="the body's"):
        result.get(timeout=10, interval=0.05, on_interval=body_fails)
