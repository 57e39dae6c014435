"""The result backend's fixtures: a fresh backend and a count of the AWS calls it makes.

The backend is a fresh instance on an app configured as ``tasks.app`` (JSON, ``result_expires``
one day) writing to the template's results table in the session's emulator. AWS requests are
counted with botocore event hooks on the shared clients the backend uses. A module that overrides
``cloud`` (``test_dynamodb_local.py``) gets them on its own target; ``test_result_batch.py``
defines a ``backend`` and ``calls`` of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from devtools.cloud.deploy import Deployment
from infra.core import aws
from infra.store.results import DynamoDBBackend


@pytest.fixture
def results_app(cloud: Deployment) -> Iterator[Celery]:
    """An app configured as ``tasks.app``, with a backend of its own made during the test."""
    fresh = Celery("results-test", set_as_current=False)
    fresh.config_from_object("tasks.celeryconfig")
    yield fresh
    fresh.close()


@pytest.fixture
def backend(results_app: Celery) -> DynamoDBBackend:
    made: DynamoDBBackend = results_app.backend
    assert isinstance(made, DynamoDBBackend)
    return made


@pytest.fixture
def calls(cloud: Deployment) -> Iterator[list[str]]:
    """``service:Operation`` of every DynamoDB and S3 call made while the test runs."""
    seen: list[str] = []

    def count(model: Any, **_: Any) -> None:
        seen.append(f"{model.service_model.endpoint_prefix}:{model.name}")

    hooks = [(aws.client("dynamodb"), "dynamodb"), (aws.client("s3"), "s3")]
    for client, service in hooks:
        client.meta.events.register(f"before-call.{service}.*", count, unique_id="count-calls")
    yield seen
    for client, service in hooks:
        client.meta.events.unregister(f"before-call.{service}.*", unique_id="count-calls")
