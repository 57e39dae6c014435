"""``devtools.testing.start_lambda``: an app served through the Lambda path in threads of the test
process, as Celery's ``start_worker`` serves it through an embedded worker."""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery, chain, group
from celery.canvas import StampingVisitor
from celery.exceptions import Reject
from celery.signals import task_received, task_success
from celery.worker import state as worker_state
from celery.worker.request import Request

from devtools import testing
from devtools.cloud.deploy import Deployment
from devtools.testing import start_lambda
from infra.core import aws
from infra.install import configure
from tests.sqs_helpers import counts

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300, method="thread")]

QUEUE = "lambda-fixture"

app = Celery("lambda-fixture", task_cls="infra.worker.task:ClaimingTask", set_as_current=False)
app.config_from_object("tasks.celeryconfig")
app.conf.update(task_default_queue=QUEUE, task_queues=None, task_routes=None)
configure(app)


@app.task(name="lambda_fixture.add", shared=False)
def add(x: int, y: int) -> int:
    return x + y


@app.task(name="lambda_fixture.active", shared=False, bind=True)
def active(self: Any) -> bool:
    return self.request.id in {request.id for request in worker_state.active_requests}


@app.task(name="lambda_fixture.fail", shared=False)
def fail() -> None:
    raise ValueError("on purpose")


@app.task(name="lambda_fixture.second_time", shared=False, bind=True, acks_late=True)
def second_time(self: Any) -> str:
    if not self.request.delivery_info.get("redelivered"):
        raise Reject(requeue=True)
    return "redelivered"


class Stamp(StampingVisitor):
    def on_signature(self, sig: Any, **headers: Any) -> dict[str, Any]:
        return {"stamp": 42}


@pytest.fixture(scope="module")
def deployment(cloud: Deployment) -> Iterator[Deployment]:
    """The cloud with a fresh queue of this module's, named ``QUEUE`` in CELERY_QUEUE_URLS."""
    sqs = aws.client("sqs")
    url = sqs.create_queue(QueueName=f"lambda-fixture-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    urls = {**json.loads(cloud.environment["CELERY_QUEUE_URLS"]), QUEUE: url}
    environment = {**cloud.environment, "CELERY_QUEUE_URLS": json.dumps(urls)}
    yield dataclasses.replace(cloud, environment=environment)
    sqs.delete_queue(QueueUrl=url)


def queue_url(deployment: Deployment) -> str:
    return str(json.loads(deployment.environment["CELERY_QUEUE_URLS"])[QUEUE])


def test_a_signal_receiver_in_the_test_process_sees_the_task(deployment: Deployment) -> None:
    seen: list[tuple[str, str]] = []

    def receiver(sender: Any = None, **_: Any) -> None:
        seen.append((sender.request.id, threading.current_thread().name))

    task_success.connect(receiver, weak=False)
    try:
        with start_lambda(app, deployment=deployment, perform_ping_check=False):
            result = add.delay(2, 3)
            assert result.get(timeout=60) == 5
    finally:
        task_success.disconnect(receiver)

    [(task_id, thread)] = [entry for entry in seen if entry[0] == result.id]
    assert thread != threading.main_thread().name  # a poller thread of this process ran it


def test_results_of_a_canvas_come_back(deployment: Deployment) -> None:
    with start_lambda(app, deployment=deployment) as worker:
        assert [source.batching_window for source in worker.sources] == [0]  # no wait per step
        total = chain(add.s(1, 2), add.s(3)).delay()
        parts = group(add.s(i, i) for i in range(4)).delay()
        assert total.get(timeout=60) == 6
        assert parts.get(timeout=60) == [0, 2, 4, 6]
    assert worker.stats.records >= 7  # the ping, the chain's two, the group's four


def test_none_keeps_the_templates_batching_window(deployment: Deployment) -> None:
    [wired] = [s for s in deployment.event_sources if s.queue_url.endswith("-celery")]
    assert wired.batching_window > 0  # the template's, so keeping it is visible
    with start_lambda(
        app, deployment=deployment, batching_window=None, perform_ping_check=False
    ) as worker:
        assert [source.batching_window for source in worker.sources] == [wired.batching_window]


def test_stopping_is_clean(deployment: Deployment) -> None:
    before = dict(os.environ)
    with start_lambda(app, deployment=deployment) as worker:
        assert testing.served_app is app
        assert add.delay(1, 1).get(timeout=60) == 2

    assert not [t for t in threading.enumerate() if t.name.startswith("lambda-")]
    assert testing.served_app is None
    assert dict(os.environ) == before
    assert worker.errors == []
    late = add.delay(2, 2)  # published after the stop: nobody takes it
    assert counts(queue_url(deployment))[0] == 1
    with start_lambda(app, deployment=deployment, perform_ping_check=False):
        assert late.get(timeout=60) == 4


def test_task_received_gives_receivers_a_worker_request(deployment: Deployment) -> None:
    seen: dict[str, Any] = {}

    def receiver(sender: Any = None, request: Any = None, **_: Any) -> None:
        seen[request.id] = (sender, request)

    signature = add.si(1, 1)
    signature.stamp(visitor=Stamp())
    signature.link(add.si(2, 2))
    task_received.connect(receiver, weak=False)
    try:
        with start_lambda(app, deployment=deployment, perform_ping_check=False):
            result = signature.apply_async()
            assert result.get(timeout=60) == 2
    finally:
        task_received.disconnect(receiver)

    sender, request = seen[result.id]
    assert isinstance(request, Request)  # what Celery's strategy sends, as Celery's tests read it
    assert (request.name, request.args, request.replaced_task_nesting) == (add.name, [1, 1], 0)
    assert request.stamps == {"stamp": 42}
    [callback] = request._Request__payload[2]["callbacks"]
    assert callback["task"] == add.name
    assert sender.app is app


def test_worker_state_counts_what_ran_as_a_worker_does(deployment: Deployment) -> None:
    # The module's queue may still hold an earlier test's message (in flight when its block
    # ended): counted here, it would be a second add.
    aws.client("sqs").purge_queue(QueueUrl=queue_url(deployment))
    before = worker_state.total_count[add.name]
    with start_lambda(app, deployment=deployment, perform_ping_check=False):
        ok, running, failed = add.delay(3, 4), active.delay(), fail.delay()
        assert ok.get(timeout=60) == 7
        assert running.get(timeout=60) is True  # active while it ran
        with pytest.raises(ValueError):
            failed.get(timeout=60)

    assert ok.id in worker_state.successful_requests
    assert failed.id not in worker_state.successful_requests
    assert worker_state.total_count[add.name] == before + 1
    ids = {request.id for request in worker_state.active_requests | worker_state.reserved_requests}
    assert not ids & {ok.id, running.id, failed.id}
    assert not {ok.id, running.id, failed.id} & set(worker_state.requests)


def test_a_message_received_again_says_redelivered(deployment: Deployment) -> None:
    with start_lambda(app, deployment=deployment, perform_ping_check=False):
        assert second_time.delay().get(timeout=60) == "redelivered"
