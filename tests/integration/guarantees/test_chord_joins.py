"""Delivery guarantees (see :mod:`tests.integration.guarantees`): a chord join that fires early
never wedges a worker, and is bounded on the Lambda path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import chain, group, states

from tests.apps import probe
from tests.integration.guarantees.app import QUEUE, WORKER_QUEUE, record
from tests.integration.guarantees.support import SETTLE, Queues, drained, marker, state, wait_for
from tests.invoke import invoke
from tests.sqs_helpers import receive

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]


def nested_group_chain(queue: str) -> tuple[Any, list[str]]:
    """Celery's ``test_canvas::test_nested_group_chain`` on ``queue``: a chord whose header ends
    in a group, which Celery 5.7 counts as 2 parts though 3 tasks report to it, so its join
    fires while the last header task still waits in the queue. Its last result and markers."""
    markers = [marker() for _ in range(6)]
    a, b, c, d, e, f = (record.si(m).set(queue=queue) for m in markers)
    return chain(a, group(b, chain(c, group(d, e))), f).apply_async(), markers


def test_an_early_chord_join_never_wedges_a_worker(queues: Queues, worker: Path) -> None:
    """The worker's one process used to wait in that join for ever (issue 17)."""
    last, markers = nested_group_chain(WORKER_QUEUE)
    after = record.si(marker()).set(queue=WORKER_QUEUE).apply_async()

    wait_for(lambda: state(after.id) == states.SUCCESS, "the worker to run the next task")
    wait_for(lambda: state(last.id) in states.READY_STATES, "the chord to end")
    # The early join ends the chord before the header's last task may have run: wait for it.
    wait_for(lambda: all(probe.calls(m) for m in markers[:5]), "every header task to run")
    assert [probe.calls(m) for m in markers[:5]] == [1] * 5


def test_an_early_chord_join_is_bounded_on_the_lambda_path(queues: Queues) -> None:
    url = queues.source.queue_url
    last, markers = nested_group_chain(QUEUE)
    started = time.monotonic()
    while state(last.id) not in states.READY_STATES:
        assert time.monotonic() - started < SETTLE, "the chord never ended"
        assert invoke(queues.source, receive(url, 1, within=SETTLE)) == []

    assert invoke(queues.source, receive(url, 1)) == []  # the header's third task, late
    assert [probe.calls(m) for m in markers[:5]] == [1] * 5
    assert drained(queues, url)
