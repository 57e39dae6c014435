"""Delivery guarantees (see :mod:`tests.integration.guarantees`): a revoked task, a chain
whose root was revoked, a revoked group and tasks revoked by their stamps do not run, on the
Lambda path and on a worker."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from celery import chain, group, states
from celery.canvas import StampingVisitor
from celery.exceptions import TaskRevokedError

from infra.store.revoke import revoke, revoke_stamps
from tests.apps import probe
from tests.integration.guarantees.app import WORKER_QUEUE, app, record
from tests.integration.guarantees.support import (
    Queues,
    claimed_by,
    drained,
    marker,
    state,
    wait_for,
)
from tests.invoke import invoke
from tests.sqs_helpers import receive

pytestmark = [
    pytest.mark.integration,
    # The Lambda path times tasks with SIGALRM in this thread: keep pytest-timeout off that signal.
    pytest.mark.timeout(300, method="thread"),
]


def test_revoked_before_consumption_on_the_lambda_path(queues: Queues) -> None:
    done = marker()
    result = record.apply_async((done,))
    revoke(app, [result.id])

    assert invoke(queues.source, receive(queues.source.queue_url, 1)) == []

    assert state(result.id) == states.REVOKED
    assert probe.calls(done) == 0
    assert drained(queues, queues.source.queue_url)


def test_revoked_before_consumption_on_a_worker(queues: Queues, worker: Path) -> None:
    done = marker()
    task_id = str(uuid.uuid4())
    revoke(app, [task_id])

    record.apply_async((done,), task_id=task_id, queue=WORKER_QUEUE)
    wait_for(lambda: state(task_id) == states.REVOKED, "the worker to record REVOKED")

    wait_for(lambda: drained(queues, queues.worker_url), "the worker to ack it")
    assert probe.calls(done) == 0


def test_revoking_a_chains_root_revokes_its_members_not_started(queues: Queues) -> None:
    url = queues.source.queue_url
    first, second, third = marker(), marker(), marker()
    last = chain(record.si(first), record.si(second), record.si(third)).apply_async()
    middle = last.parent
    root = middle.parent
    assert invoke(queues.source, receive(url, 1)) == []  # the root runs, publishes the next
    assert state(root.id) == states.SUCCESS

    revoke(app, [root.id])
    assert invoke(queues.source, receive(url, 1)) == []

    assert state(middle.id) == states.REVOKED
    assert state(last.id) == states.PENDING  # never published: the chain stopped
    assert [probe.calls(m) for m in (first, second, third)] == [1, 0, 0]
    assert drained(queues, url)


def test_revoking_a_chains_root_on_a_worker(queues: Queues, worker: Path) -> None:
    first, second, third = marker(), marker(), marker()
    signatures = [record.si(first, 2.0), record.si(second), record.si(third)]
    last = chain(s.set(queue=WORKER_QUEUE) for s in signatures).apply_async()
    middle = last.parent
    root = middle.parent
    wait_for(lambda: claimed_by(root.id, "worker:"), "the worker to start the root")

    revoke(app, [root.id])  # while the root runs: it finishes, the rest does not start
    wait_for(lambda: state(middle.id) == states.REVOKED, "the worker to revoke the next member")

    assert state(root.id) == states.SUCCESS
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")
    assert state(last.id) == states.PENDING
    assert [probe.calls(m) for m in (first, second, third)] == [1, 0, 0]


def test_revoking_a_group_revokes_its_members(queues: Queues) -> None:
    members = [marker(), marker()]
    group_id = str(uuid.uuid4())
    revoke(app, [group_id])

    result = group(record.s(m) for m in members).apply_async(task_id=group_id)
    assert result.id == group_id
    assert invoke(queues.source, receive(queues.source.queue_url, 2)) == []

    assert [r.state for r in result.results] == [states.REVOKED] * 2
    assert [probe.calls(m) for m in members] == [0, 0]
    assert drained(queues, queues.source.queue_url)


def test_revoking_a_group_on_a_worker(queues: Queues, worker: Path) -> None:
    members = [marker(), marker()]
    group_id = str(uuid.uuid4())
    revoke(app, [group_id])

    result = group(record.s(m) for m in members).apply_async(task_id=group_id, queue=WORKER_QUEUE)
    for member in result.results:
        wait_for(lambda m=member: m.state == states.REVOKED, "the worker to revoke the member")

    assert [probe.calls(m) for m in members] == [0, 0]
    wait_for(lambda: drained(queues, queues.worker_url), "the worker queue to drain")


class Monitoring(StampingVisitor):
    """Celery's stamping: every signature of the canvas gets ``monitoring_id``."""

    def __init__(self, monitoring_id: str) -> None:
        self.monitoring_id = monitoring_id

    def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
        return {"monitoring_id": self.monitoring_id}


def stamped(done: str, monitoring_id: str, queue: str | None = None) -> Any:
    signature = record.si(done)
    if queue:
        signature = signature.set(queue=queue)
    signature.stamp(visitor=Monitoring(monitoring_id))
    return signature


def test_revoked_by_stamped_headers_on_the_lambda_path(queues: Queues) -> None:
    """Celery's ``test_revoked_by_headers_simple_canvas``, without a worker's memory: the
    revocation is a marker every consumer checks, the other stamps run."""
    url = queues.source.queue_url
    target, other = uuid.uuid4().hex, uuid.uuid4().hex
    revoked, kept = marker(), marker()
    signatures = stamped(revoked, target), stamped(kept, other)
    revoke_stamps(app, {"monitoring_id": [target]})
    results = [s.apply_async() for s in signatures]

    assert invoke(queues.source, receive(url, 2)) == []

    with pytest.raises(TaskRevokedError):
        results[0].get(timeout=5)
    assert results[1].get(timeout=5) == kept
    assert [probe.calls(m) for m in (revoked, kept)] == [0, 1]
    assert drained(queues, url)


def test_revoked_by_stamped_headers_on_a_worker(queues: Queues, worker: Path) -> None:
    target = uuid.uuid4().hex
    revoked, kept = marker(), marker()
    revoke_stamps(app, [f"monitoring_id={target}"])  # Celery's list form
    results = [
        stamped(revoked, target, WORKER_QUEUE).apply_async(),
        stamped(kept, uuid.uuid4().hex, WORKER_QUEUE).apply_async(),
    ]

    with pytest.raises(TaskRevokedError):
        results[0].get(timeout=60)
    assert results[1].get(timeout=60) == kept
    assert [probe.calls(m) for m in (revoked, kept)] == [0, 1]
