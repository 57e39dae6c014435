"""The Lambda handler driven the way Lambda drives it, against moto in server mode.

Tasks of the test-only app ``tests.apps.probe`` are published with real Celery ``apply_async``
to a queue of this module (with a DLQ, redrive after 3 receives), received with ReceiveMessage,
turned into a real Lambda SQS event by the event-source emulator's ``build_event`` and handed to
``handlers.sqs.handler``. After the invocation the test deletes what the response did not report,
as the event source mapping does. Side effects are counted in the users table (``probe.calls``).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery._state import get_current_app
from celery.signals import before_task_publish

from devtools.cloud.deploy import Deployment
from devtools.cloud.session import point_app_at
from infra.consumer import runtime
from infra.core import aws
from infra.core.observability import (
    logger,
)
from tests.apps import probe
from tests.functional.consumer.support import Queues
from tests.sqs_helpers import queue_with_dlq


@pytest.fixture(scope="module")
def queues(cloud: Deployment) -> Iterator[Queues]:
    """Fresh queues for this module; the probe app publishes to the standard one."""
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    name = f"handler-{uuid.uuid4().hex[:8]}"
    url, arn, dlq_url = dataclasses.astuple(
        queue_with_dlq(name, attributes={"VisibilityTimeout": "60"})
    )
    fifo_url, fifo_arn, fifo_dlq_url = dataclasses.astuple(
        queue_with_dlq(
            f"{name}.fifo",
            attributes={"VisibilityTimeout": "60", "ContentBasedDeduplication": "false"},
        )
    )
    previous_app = get_current_app()
    point_app_at(probe.app, cloud)
    options = dict(probe.app.conf.broker_transport_options)
    options["predefined_queues"] = {**options.get("predefined_queues", {}), name: {"url": url}}
    probe.app.conf.broker_transport_options = options
    probe.app.conf.task_default_queue = name
    source = dataclasses.replace(celery_source, queue_url=url, queue_arn=arn)
    yield Queues(
        region=cloud.region,
        source=source,
        dlq_url=dlq_url,
        fifo=dataclasses.replace(source, queue_url=fifo_url, queue_arn=fifo_arn),
    )
    previous_app.set_current()
    for queue_url in (url, dlq_url, fifo_url, fifo_dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=queue_url)


@pytest.fixture
def served(queues: Queues, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The handler serves the probe app; every test starts with empty queues (``pytestmark``)."""
    monkeypatch.setenv("CELERY_APP", "tests.apps.probe:app")
    runtime.pipeline.cache_clear()
    for url in (queues.source.queue_url, queues.dlq_url, queues.fifo.queue_url):
        aws.client("sqs").purge_queue(QueueUrl=url)
    yield
    runtime.pipeline.cache_clear()


@pytest.fixture
def producer(queues: Queues) -> Iterator[Callable[..., Celery]]:
    """Make stock producer apps (no project configuration, no publish hooks) for the queue."""
    made: list[Celery] = []

    def make(**conf: Any) -> Celery:
        app = Celery(f"producer-{len(made)}", set_as_current=False)
        app.conf.update(
            broker_url=probe.app.conf.broker_url,
            broker_transport_options=probe.app.conf.broker_transport_options,
            task_default_queue=probe.app.conf.task_default_queue,
            **conf,
        )
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


@pytest.fixture
def published() -> Iterator[dict[str, dict[str, Any]]]:
    """Headers of every task message published while the test runs, by task id."""
    seen: dict[str, dict[str, Any]] = {}

    def keep(sender: Any = None, headers: Any = None, **_: Any) -> None:
        seen[headers["id"]] = dict(headers)

    before_task_publish.connect(keep, weak=False)
    yield seen
    before_task_publish.disconnect(keep)


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


@pytest.fixture
def stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> pytest.CaptureFixture[str]:
    """``capsys``, with the handler's JSON logger writing into it too.

    Powertools binds its stream to the ``sys.stdout`` of the moment the logger is created (here:
    pytest's session capture, at collection); on Lambda that is the function's stdout.
    """
    handler = logger.registered_handler
    assert isinstance(handler, logging.StreamHandler)
    monkeypatch.setattr(handler, "stream", _CurrentStdout())
    return capsys
