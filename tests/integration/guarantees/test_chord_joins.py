"""Delivery guarantees (see :mod:`tests.integration.guarantees`): a chord whose header holds a
nested group joins once, with every part, and a chain ending in a group after a failed step
fails that group's members instead of leaving them waiting, on a worker and on the Lambda path
(issue 17)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import chain, group, states

from tests.apps import probe
from tests.integration.guarantees.app import QUEUE, WORKER_QUEUE, joined, record, refused
from tests.integration.guarantees.support import SETTLE, Queues, drained, marker, state, wait_for
from tests.invoke import invoke
from tests.sqs_helpers import receive

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]


def nested_group_chain(queue: str) -> tuple[Any, list[str], list[Any]]:
    """Celery's ``test_canvas::test_nested_group_chain`` on ``queue``: a chord whose header ends
    in a group, two results in the header's GroupResult but three tasks reporting to it. Celery
    5.7's key-value count fires its join after two of them. Its last result, the markers (the
    body's last) and the results the body must get."""
    markers = [marker() for _ in range(6)]
    a, b, c, d, e = (record.si(m).set(queue=queue) for m in markers[:5])
    body = joined.s(markers[5]).set(queue=queue)
    expected = [markers[1], [markers[3], markers[4]]]
    return chain(a, group(b, chain(c, group(d, e))), body).apply_async(), markers, expected


def test_a_nested_chord_joins_once_with_every_part_on_a_worker(
    queues: Queues, worker: Path
) -> None:
    """Joined early, the worker's one process also used to wait in that join for ever."""
    last, markers, expected = nested_group_chain(WORKER_QUEUE)
    after = record.si(marker()).set(queue=WORKER_QUEUE).apply_async()

    wait_for(lambda: state(after.id) == states.SUCCESS, "the worker to run the next task")
    wait_for(lambda: state(last.id) in states.READY_STATES, "the chord to end")
    assert last.get(timeout=1) == expected
    assert [probe.calls(m) for m in markers] == [1] * 6


def test_a_nested_chord_joins_once_with_every_part_on_the_lambda_path(queues: Queues) -> None:
    """One record an invocation: an early join would wait in ``d``'s invocation for ``e``, still
    queued, and fail the chord when its join timeout ends."""
    url = queues.source.queue_url
    last, markers, expected = nested_group_chain(QUEUE)
    started = time.monotonic()
    while state(last.id) not in states.READY_STATES:
        assert time.monotonic() - started < SETTLE, "the chord never ended"
        assert invoke(queues.source, receive(url, 1, within=SETTLE)) == []

    assert last.get(timeout=1) == expected
    assert [probe.calls(m) for m in markers] == [1] * 6
    assert drained(queues, url)


def failed_chain_into_group(queue: str) -> tuple[Any, list[str]]:
    """Celery's ``test_chord::test_error_propagates_from_chord`` on ``queue``:
    ``a | refused | group(b, c | d)``; its GroupResult and the markers. Celery alone stores the
    failure under the group's id only, so the GroupResult's ``get()`` waits for ever (Celery
    issue #6437)."""
    markers = [marker() for _ in range(5)]
    a, b, c, d = (record.si(m).set(queue=queue) for m in (markers[0], *markers[2:]))
    failing = refused.si(markers[1]).set(queue=queue)
    return chain(a, failing, group(b, chain(c, d))).apply_async(), markers


def assert_failed_without_running(result: Any, markers: list[str]) -> None:
    with pytest.raises(ValueError, match=markers[1]):
        result.get(timeout=5)
    assert [probe.calls(m) for m in markers] == [1, 1, 0, 0, 0]
    members = [result.results[0].id, result.results[1].id, result.results[1].parent.id]
    assert [state(task_id) for task_id in members] == [states.FAILURE] * 3


def test_a_failed_step_fails_the_group_after_it_on_a_worker(queues: Queues, worker: Path) -> None:
    result, markers = failed_chain_into_group(WORKER_QUEUE)

    wait_for(lambda: result.ready(), "the group's members to get the failure")
    assert_failed_without_running(result, markers)


def test_a_failed_step_fails_the_group_after_it_on_the_lambda_path(queues: Queues) -> None:
    url = queues.source.queue_url
    result, markers = failed_chain_into_group(QUEUE)
    started = time.monotonic()
    while not result.ready():
        assert time.monotonic() - started < SETTLE, "the group's members never got a state"
        assert invoke(queues.source, receive(url, 1, within=SETTLE)) == []

    assert_failed_without_running(result, markers)
    assert drained(queues, url)
