"""A real ``celery worker`` meeting a task it does not register tells the same truth as the Lambda
path: NOT_REGISTERED with the reason (Celery's worker would record a terminal
``FAILURE(NotRegistered)``, which a redrive after a deploy could never replace), written once
however often SQS redelivers the message (kombu leaves a rejected message to the redrive policy).

The Lambda path, the redrive after a deploy and ``lambda inspect`` are in
``tests/functional/consumer/test_handler_unknown.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.cloud.deploy import Deployment
from infra.store.items import NOT_REGISTERED
from tests.apps import probe
from tests.functional.store.support import item
from tests.integration.probe_queue import probe_test_queue
from tests.sqs_helpers import TestQueue
from tests.workers import celery_worker

pytestmark = pytest.mark.integration

UNKNOWN_LINE = b"Received unregistered task of type 'no.such.task'"


@pytest.fixture
def queue(cloud: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, TestQueue]]:
    """A queue of this test's own, whose messages come back 2 s after a worker rejects them."""
    with probe_test_queue(cloud, monkeypatch, "unknown", visibility=2) as created:
        yield created


def wait_for(check: Callable[[], bool], log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out; worker log:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


def test_a_worker_records_not_registered_once(
    queue: tuple[str, TestQueue], cloud_env: dict[str, str], tmp_path: Path
) -> None:
    name, created = queue
    env = {**cloud_env, "CELERY_QUEUE_URLS": json.dumps({name: created.url})}
    args = ["-Q", name, "--pool=threads", "--concurrency=1"]
    task_id = probe.app.send_task("no.such.task", queue=name).id
    result = probe.app.AsyncResult(task_id)

    with celery_worker("tests.apps.probe", args, env, tmp_path / "worker.log") as log:
        wait_for(lambda: result.state == NOT_REGISTERED, log)
        first = item(task_id)
        wait_for(lambda: log.read_bytes().count(UNKNOWN_LINE) >= 2, log)  # redelivered

    assert result.info["consumer"].startswith("worker@")
    assert result.info["exc_message"] == (
        f"task 'no.such.task' is not registered in {result.info['consumer']}"
    )
    assert not result.ready()
    assert item(task_id) == first  # the redelivery wrote nothing
