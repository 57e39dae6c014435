"""The publish benchmark's measurement on the session's emulator: the requests each way of
publishing makes, counted by operation. Never its timings."""

from __future__ import annotations

import dataclasses
import json
import math
import uuid
from collections.abc import Iterator

import pytest

from devtools.bench.publish import BATCHED, LOOP, UNBATCHED, measure
from devtools.cloud.deploy import Deployment
from devtools.cloud.session import point_app_at
from infra.core import aws

TASKS = 30


@pytest.fixture
def cloud(cloud: Deployment) -> Iterator[Deployment]:
    """The session's deployment with the ``celery`` queue on one of this test's own: the bench
    counts what the queue holds, and a consumer of the session's queue would take some of it."""
    from tasks import app

    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"bench-publish-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    urls = {**json.loads(cloud.environment["CELERY_QUEUE_URLS"]), "celery": url}
    environment = {**cloud.environment, "CELERY_QUEUE_URLS": json.dumps(urls)}
    yield dataclasses.replace(cloud, environment=environment)
    point_app_at(app, cloud)  # measure() left the app on this test's queue
    sqs.delete_queue(QueueUrl=url)


def test_a_batched_group_sends_batches_of_ten(cloud: Deployment) -> None:
    from tasks import app

    run = measure(app, cloud, BATCHED, TASKS)
    assert run.counts.get("sqs:SendMessage", 0) == 0
    assert 1 <= run.counts["sqs:SendMessageBatch"] <= math.ceil(TASKS / 10)


def test_an_unbatched_group_and_a_loop_send_one_message_each(cloud: Deployment) -> None:
    from tasks import app

    for mode in (UNBATCHED, LOOP):
        run = measure(app, cloud, mode, TASKS)
        assert run.counts.get("sqs:SendMessageBatch", 0) == 0, mode
        assert run.counts["sqs:SendMessage"] == TASKS, mode


def test_the_app_publishes_in_batches_again_afterwards(cloud: Deployment) -> None:
    from tasks import app

    measure(app, cloud, UNBATCHED, 1)
    assert app.conf.broker_transport_options["batch_publish"] is True


def test_in_rounds_each_group_is_batched_on_its_own(cloud: Deployment) -> None:
    from tasks import app

    run = measure(app, cloud, BATCHED, TASKS, round_size=7)  # rounds of 7, 7, 7, 7, 2
    assert run.counts.get("sqs:SendMessage", 0) == 0
    assert run.counts["sqs:SendMessageBatch"] == 5
