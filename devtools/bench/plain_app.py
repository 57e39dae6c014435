"""Plain Celery, the bench's baseline: what a user runs on SQS without this project.

Nothing of the project is imported here (a test checks): kombu's own SQS transport with
``predefined_queues`` (as its docs recommend, so kombu never lists or creates queues), Celery's
own DynamoDB result backend (which creates its table if it is missing, at runtime), JSON, and
``task_acks_late`` so a message is deleted only once its result is stored -- the reliability a
careful user would ask for, and what lets the bench take an empty queue as done.

``celery -A plain_app worker`` (with this folder on ``PYTHONPATH``) runs it; the bench also
makes one with :func:`create_app` to publish and read results. Configured from the environment
the local cloud exports: ``CELERY_QUEUE_URLS`` (JSON, queue name -> URL), ``AWS_ENDPOINT_URL``,
``AWS_DEFAULT_REGION``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from celery import Celery

__all__ = ["QUEUE", "RESULTS_TABLE", "app", "create_app"]

QUEUE = "celery"
RESULTS_TABLE = "celery-plain-results"
"""Celery's DynamoDB backend makes this table itself on first use (with 1 RCU / 1 WCU)."""


def create_app(env: Mapping[str, str]) -> Celery:
    """A Celery app with one task, ``tasks.add``, on ``env``'s queue and endpoint."""
    region = env.get("AWS_DEFAULT_REGION", "us-east-1")
    urls = json.loads(env.get("CELERY_QUEUE_URLS") or "{}")
    plain = Celery("plain")
    plain.conf.update(
        broker_url="sqs://",
        broker_transport_options={
            "region": region,
            "predefined_queues": {QUEUE: {"url": urls[QUEUE]}} if QUEUE in urls else {},
        },
        result_backend=f"dynamodb://{region}/{RESULTS_TABLE}",
        dynamodb_endpoint_url=env.get("AWS_ENDPOINT_URL"),
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        broker_connection_retry_on_startup=True,
    )

    def add(x: int, y: int) -> int:
        return x + y

    plain.task(name="tasks.add", shared=False)(add)  # shared, it would join every app made later
    return plain


app = create_app(os.environ)
