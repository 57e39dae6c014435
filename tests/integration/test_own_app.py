"""A second, unrelated app (``tests/apps/own.py``: its own module, task names and queue) made
ready by ``infra.configure(app)`` alone, run through both consumers: the Lambda path (the
event-source emulator calling the template's handler with real SQS events) and a real
``celery worker`` subprocess -- results in the results table, claims and revoke on the worker.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from celery import states

from devtools.cloud.deploy import Deployment
from devtools.cloud.session import point_app_at
from devtools.testing import start_lambda
from infra.core import aws
from infra.core.settings import Settings
from infra.store.items import task_key
from tests.apps import own
from tests.workers import celery_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, method="thread")]


@pytest.fixture(scope="module")
def deployment(cloud: Deployment) -> Iterator[Deployment]:
    """The cloud with a fresh queue for the app, named ``own.QUEUE`` in CELERY_QUEUE_URLS."""
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"own-app-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    urls = {**json.loads(cloud.environment["CELERY_QUEUE_URLS"]), own.QUEUE: url}
    environment = {**cloud.environment, "CELERY_QUEUE_URLS": json.dumps(urls)}
    yield dataclasses.replace(cloud, environment=environment)
    sqs.delete_queue(QueueUrl=url)


@contextmanager
def pointed_at(deployment: Deployment) -> Iterator[None]:
    """This process (environment, clients, the app) on ``deployment``; restored after."""
    saved = dict(os.environ)
    point_app_at(own.app, deployment)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        aws.clear_clients()


def consumer_of(task_id: str) -> str:
    """Who ran the task, as its item in the results table records it."""
    item = aws.client("dynamodb").get_item(
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": task_key(task_id)}},
        ConsistentRead=True,
    )["Item"]
    return str(item["consumer"]["S"])


def test_the_one_call_configures_an_app_from_the_environment() -> None:
    conf = own.app.conf

    assert conf.broker_transport == "infra.producer.transport:Transport"
    assert conf.result_backend == "infra.store.results:DynamoDBBackend"
    assert (conf.task_serializer, list(conf.accept_content)) == ("json", ["json"])
    assert own.app.task_cls == "infra.worker.task:ClaimingTask"
    assert own.greet.name == "own.greet"


def test_its_task_runs_on_the_lambda_path(deployment: Deployment) -> None:
    with start_lambda(own.app, deployment=deployment, queues=[own.QUEUE]) as worker:
        result = own.greet.delay("lambda")
        assert result.get(timeout=60) == "hello lambda"
        assert consumer_of(result.id).startswith("lambda:")

    assert worker.stats.records >= 2  # the ping and the task, in real SQS events


def test_its_task_runs_on_a_worker_with_claims_and_revoke(
    deployment: Deployment, tmp_path: Path
) -> None:
    args = ["-Q", own.QUEUE, "--concurrency=1", "--hostname", "own@%h"]
    env = {**os.environ, **deployment.environment}
    with (
        pointed_at(deployment),
        celery_worker("tests.apps.own", args, env, tmp_path / "worker.log") as log,
    ):
        result = own.greet.delay("worker")
        assert result.get(timeout=60) == "hello worker"
        assert consumer_of(result.id).startswith("own@")

        # Revoked before it is published: a worker claims before it runs, so it never runs it.
        revoked_id = str(uuid.uuid4())
        own.app.control.revoke(revoked_id)
        revoked = own.greet.apply_async(("nobody",), task_id=revoked_id)
        revoked.get(timeout=60, propagate=False)
        assert revoked.state == states.REVOKED, log.read_text()[-3000:]
