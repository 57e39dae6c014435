"""Two fresh queues for one test app: one a real ``celery worker`` consumes, one the Lambda
handler serves in the test's process (for tests that follow a task from one path to the other)."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.session import point_app_at
from infra.consumer import runtime
from infra.core import aws
from tests.sqs_helpers import predefine, queue_with_dlq

__all__ = ["Queues", "worker_and_lambda_queues"]


@dataclasses.dataclass(frozen=True)
class Queues:
    worker: str
    """The queue a real ``celery worker`` consumes."""
    lambda_: EventSource
    """Served by the handler in this process."""
    urls: dict[str, str]

    @property
    def lambda_name(self) -> str:
        return self.lambda_.queue_url.rsplit("/", 1)[-1]


@contextmanager
def worker_and_lambda_queues(
    app: Any, app_path: str, cloud: Deployment, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> Iterator[Queues]:
    """``app`` (``CELERY_APP=app_path`` for the handler) publishing to both queues; the Lambda
    source is the template's ``celery`` source moved to the second queue."""
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    suffix = uuid.uuid4().hex[:8]
    names = f"{prefix}-w-{suffix}", f"{prefix}-l-{suffix}"
    worker, lambda_ = (queue_with_dlq(n, attributes={"VisibilityTimeout": "60"}) for n in names)
    urls = dict(zip(names, (worker.url, lambda_.url), strict=True))
    point_app_at(app, cloud)
    predefine(app, urls)
    monkeypatch.setenv("CELERY_APP", app_path)
    monkeypatch.setenv("CELERY_QUEUE_URLS", json.dumps(urls))
    runtime.pipeline.cache_clear()  # the handler loads CELERY_APP anew
    source = dataclasses.replace(celery_source, queue_url=lambda_.url, queue_arn=lambda_.arn)
    try:
        yield Queues(names[0], source, urls)
    finally:
        runtime.pipeline.cache_clear()
        for queue in (worker, lambda_):
            for url in (queue.url, queue.dlq_url):
                aws.client("sqs").delete_queue(QueueUrl=url)
