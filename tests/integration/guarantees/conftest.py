"""The delivery guarantees' fixtures: fresh queues and a results table for each test module, the
app pointed at them, and a stock ``celery worker`` of the app for the modules that ask for one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery._state import get_current_app

from devtools.cloud.deploy import Deployment
from devtools.cloud.session import forget_backend, point_app_at
from infra.consumer import runtime
from infra.core import aws
from tests.integration.guarantees.app import (
    APP,
    CRASH_QUEUE,
    QUEUE,
    QUEUES_VARIABLE,
    WORKER_QUEUE,
    app,
    configure,
)
from tests.integration.guarantees.support import Queues
from tests.tables import results_table_like_template
from tests.workers import celery_worker

MAX_RECEIVE_COUNT = 5
"""Redrive after this many receives, as in the template."""
CRASH_FUNCTION_TIMEOUT = 10
"""The crash test's function timeout: a batch's claims last until the invocation deadline, so
claims left by the killed consumer expire 10 s after they were made (5 s of it is run time, the
rest the handler's safety margin)."""
CRASH_VISIBILITY = 12
"""Longer than the function timeout, as AWS requires: a record of a killed or failed invocation
comes back once the claims of its batch expired, so the restarted consumer takes them over."""


def _arn(url: str) -> str:
    response = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(response["Attributes"]["QueueArn"])


def _create_queue(name: str, visibility: int) -> tuple[str, str]:
    """A queue with a DLQ; ``(url, dlq url)``."""
    sqs = aws.client("sqs")
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    redrive = {"deadLetterTargetArn": _arn(dlq_url), "maxReceiveCount": MAX_RECEIVE_COUNT}
    attributes = {"VisibilityTimeout": str(visibility), "RedrivePolicy": json.dumps(redrive)}
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return url, dlq_url


@pytest.fixture(scope="module")
def queues(cloud: Deployment) -> Iterator[Queues]:
    """Fresh queues; this process's app publishes to them and the handler serves it."""
    suffix = uuid.uuid4().hex[:8]
    table = results_table_like_template(f"guarantees-results-{suffix}")
    url, dlq = _create_queue(f"guarantees-{suffix}", 30)
    worker_url, worker_dlq = _create_queue(f"guarantees-worker-{suffix}", 10)
    crash_url, crash_dlq = _create_queue(f"guarantees-crash-{suffix}", CRASH_VISIBILITY)
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    previous_app = get_current_app()
    with pytest.MonkeyPatch.context() as env:
        point_app_at(app, cloud)  # sets the deployment's environment, CELERY_APP included
        env.setenv(
            QUEUES_VARIABLE,
            json.dumps({QUEUE: url, WORKER_QUEUE: worker_url, CRASH_QUEUE: crash_url}),
        )
        env.setenv("CELERY_APP", APP)  # what the handler serves, in every process
        env.setenv("RESULTS_TABLE", table)
        configure(app)
        forget_backend(app)
        runtime.pipeline.cache_clear()
        yield Queues(
            region=cloud.region,
            source=dataclasses.replace(celery_source, queue_url=url, queue_arn=_arn(url)),
            worker_url=worker_url,
            crash=dataclasses.replace(
                celery_source,
                queue_url=crash_url,
                queue_arn=_arn(crash_url),
                timeout=CRASH_FUNCTION_TIMEOUT,
            ),
            dlqs={url: dlq, worker_url: worker_dlq, crash_url: crash_dlq},
        )
        runtime.pipeline.cache_clear()
    forget_backend(app)
    previous_app.set_current()
    for queue_url in (url, dlq, worker_url, worker_dlq, crash_url, crash_dlq):
        aws.client("sqs").delete_queue(QueueUrl=queue_url)
    aws.client("dynamodb").delete_table(TableName=table)


@pytest.fixture(scope="module")
def worker(queues: Queues, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A stock ``celery worker`` (prefork) of this module's app on its worker queue; its log."""
    log = tmp_path_factory.mktemp("guarantees-worker") / "worker.log"
    env = dict(os.environ)  # the cloud's environment with this module's queues and table
    # One child: two would run claim transactions side by side, and moto's are not isolated
    # (a cancelled one restores a copy of the table, losing the other's write).
    args = ["-Q", WORKER_QUEUE, "--concurrency=1", "--hostname", "guarantees@%h"]
    with celery_worker(APP, args, env, log):
        yield log


@pytest.fixture(autouse=True)
def empty_queues(queues: Queues) -> None:
    """Every test starts with nothing visible in the queues it reads."""
    for url in (queues.source.queue_url, *queues.dlqs.values()):
        aws.client("sqs").purge_queue(QueueUrl=url)
