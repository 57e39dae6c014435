"""Delivery guarantees (see :mod:`tests.integration.guarantees`): a chord whose header holds a
nested group joins once, with every part, on a worker and on the Lambda path (issue 17)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import chain, group, states

from tests.apps import probe
from tests.integration.guarantees.app import QUEUE, WORKER_QUEUE, joined, record
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
