"""An attempt that ends without a state (``Task.replace``'s ``Ignore``) gives its claim up on the
worker path too: the replacement, same task id, runs at once wherever it is received.

Without the release the replacement found the id "running on worker:…" until the worker's lease
(the queue's visibility timeout) ended, and was handed back receive after receive.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import states

from devtools.cloud.deploy import Deployment
from tests.apps import probe
from tests.integration.two_paths import Queues, worker_and_lambda_queues
from tests.invoke import invoke
from tests.sqs_helpers import receive
from tests.workers import celery_worker, outcome_lines

pytestmark = pytest.mark.integration


@pytest.fixture
def queues(cloud: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queues]:
    with worker_and_lambda_queues(
        probe.app, "tests.apps.probe:app", cloud, monkeypatch, "replaced"
    ) as queues:
        yield queues


def test_a_task_replaced_on_a_worker_runs_its_replacement_on_the_lambda_path(
    queues: Queues, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    done = uuid.uuid4().hex
    lambda_queue = queues.lambda_.queue_url.rsplit("/", 1)[-1]
    result = probe.replaced.apply_async((done, lambda_queue), queue=queues.worker)
    env = {**cloud_env, "CELERY_QUEUE_URLS": json.dumps(queues.urls)}
    worker_args = ["-Q", queues.worker, "--pool=solo"]
    with celery_worker("tests.apps.probe", worker_args, env, tmp_path / "worker.log") as log:
        [replacement] = receive(queues.lambda_.queue_url, 1, within=30)

    assert [line["state"] for line in outcome_lines(log, result.id)] == ["IGNORED"]
    assert invoke(queues.lambda_, [replacement]) == []  # not "running on worker:…"
    assert probe.calls(f"{done}-replacement") == 1
    assert probe.app.AsyncResult(result.id).state == states.SUCCESS
    assert probe.app.AsyncResult(result.id).result == "replaced"
