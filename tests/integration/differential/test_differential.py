"""The same task messages through a stock ``celery worker`` and through the Lambda path.

Every scenario of ``tests/apps/scenarios.py`` is published twice with plain Celery calls: first
while a real ``celery -A tests.apps.scenarios worker`` (prefork, so its time limits are real)
consumes the queue, then, with the worker gone and on fresh queues, through the event-source
emulator calling ``handlers.sqs.handler`` in this process's main thread (where its time limits,
which are signals, work). Each side's outcome -- state, result and stored traceback with ids
replaced by role names, callback effects, the rest of the stored result -- is then compared.
Where the two differ by design (poison messages, long ETAs, duplicate deliveries) each side's
behaviour is asserted on its own, with the reason beside it.

The scenarios and what each side must come to are in :mod:`.cases` (published by
:mod:`.publish`), each side's traces and outcomes in :mod:`.sides`, the two phases in
``conftest.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.differential.cases import BY_NAME, SCENARIOS
from tests.integration.differential.sides import MAX_RECEIVE_COUNT, Counts, Phase, without_stored

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]


def marked(names: list[str], *, lambda_side: bool) -> list[Any]:
    params = []
    for name in names:
        bug = BY_NAME[name].lambda_bug
        marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug and lambda_side else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


ALL = [s.name for s in SCENARIOS]
ALIKE = [s.name for s in SCENARIOS if not s.differs]


@pytest.mark.parametrize("name", marked(ALL, lambda_side=False))
def test_worker(name: str, worker_phase: Phase) -> None:
    assert without_stored(worker_phase.outcomes[name]) == BY_NAME[name].expected_for("worker")


@pytest.mark.parametrize("name", marked(ALL, lambda_side=True))
def test_lambda(name: str, lambda_phase: Phase) -> None:
    assert without_stored(lambda_phase.outcomes[name]) == BY_NAME[name].expected_for("lambda")


@pytest.mark.parametrize("name", marked(ALIKE, lambda_side=True))
def test_both_store_the_same(name: str, worker_phase: Phase, lambda_phase: Phase) -> None:
    assert worker_phase.outcomes[name] == lambda_phase.outcomes[name]


def test_every_scenario_settled(worker_phase: Phase, lambda_phase: Phase) -> None:
    assert worker_phase.unsettled == []
    assert lambda_phase.unsettled == []


def test_what_each_consumer_leaves_in_the_queue(worker_phase: Phase, lambda_phase: Phase) -> None:
    # Worker: the three messages it rejected stay in flight (kombu does not delete a rejected
    # message from a queue with a redrive policy): none dead-lettered yet.
    assert worker_phase.counts == Counts(visible=0, in_flight=3, delayed=1, dead_letters=0)
    # Lambda: each poison message failed MAX_RECEIVE_COUNT times and went to the DLQ.
    # Both: the long-ETA message, still delayed in SQS since its publish.
    assert lambda_phase.counts == Counts(visible=0, in_flight=0, delayed=1, dead_letters=3)
    assert lambda_phase.stats is not None
    assert lambda_phase.stats.failures == 3 * MAX_RECEIVE_COUNT
