"""A fresh queue of its own for a worker of the test-only app ``tests.apps.probe``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from devtools.cloud.deploy import Deployment
from devtools.cloud.session import point_app_at
from infra.core import aws
from tests.apps import probe
from tests.sqs_helpers import TestQueue, predefine, queue_with_dlq

__all__ = ["probe_queue", "probe_test_queue"]


@contextmanager
def probe_queue(
    cloud: Deployment, cloud_env: dict[str, str], prefix: str
) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh queue the probe app publishes to; the environment of a worker consuming it."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    queue = queue_with_dlq(name, attributes={"VisibilityTimeout": "60"})
    point_app_at(probe.app, cloud)
    predefine(probe.app, {name: queue.url})
    probe.app.conf.task_default_queue = name
    try:
        yield name, {**cloud_env, "CELERY_QUEUE_URLS": json.dumps({name: queue.url})}
    finally:
        for url in (queue.url, queue.dlq_url):
            aws.client("sqs").delete_queue(QueueUrl=url)


@contextmanager
def probe_test_queue(
    cloud: Deployment, monkeypatch: pytest.MonkeyPatch, prefix: str, visibility: int
) -> Iterator[tuple[str, TestQueue]]:
    """A fresh queue (and DLQ) the probe app may publish to, in this process's CELERY_QUEUE_URLS
    for the block; its messages come back ``visibility`` seconds after a receive."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    created = queue_with_dlq(name, attributes={"VisibilityTimeout": str(visibility)})
    point_app_at(probe.app, cloud)
    predefine(probe.app, {name: created.url})
    monkeypatch.setenv("CELERY_QUEUE_URLS", json.dumps({name: created.url}))
    try:
        yield name, created
    finally:
        for url in (created.url, created.dlq_url):
            aws.client("sqs").delete_queue(QueueUrl=url)
