"""The two phases of the differential test: every scenario through a stock ``celery worker``,
then, on fresh queues, through the event-source emulator and ``handlers.sqs.handler``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery._state import get_current_app

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import ConsumeStats, EventSourcePoller, Handler
from devtools.cloud.session import point_app_at
from infra.consumer.runtime import pipeline
from infra.core import aws
from infra.core.observability import logger as lambda_logger
from tests.apps import scenarios as sc
from tests.integration.differential.cases import SCENARIOS
from tests.integration.differential.sides import (
    CapturedLines,
    Phase,
    Queues,
    Side,
    UseQueues,
    create_queues,
    message_key,
    phase,
    unsettled,
)
from tests.workers import celery_worker

SETTLE_SECONDS = 60


@pytest.fixture(scope="module")
def scenario_app(cloud: Deployment) -> Iterator[UseQueues]:
    """Route the scenario app to fresh queues; this process publishes and the handler serves it.

    Each phase gets queues of its own: a worker stopped during a long poll can still take a
    message that arrives while SQS holds that poll open, and the next phase would never see it.
    """
    previous = get_current_app()
    created: list[Queues] = []
    with pytest.MonkeyPatch.context() as env:

        def use(label: str) -> Queues:
            queues = create_queues(label)
            created.append(queues)
            env.setenv(sc.QUEUE_URL_VARIABLE, queues.url)
            point_app_at(sc.app, cloud)  # sets the deployment's CELERY_APP=tasks:app, hence after:
            env.setenv("CELERY_APP", "tests.apps.scenarios:app")
            sc.configure(sc.app)
            pipeline.cache_clear()
            return queues

        yield use
        pipeline.cache_clear()
    previous.set_current()
    for queues in created:
        for url in (queues.url, queues.dlq_url):
            aws.client("sqs").delete_queue(QueueUrl=url)


@pytest.fixture(scope="module")
def worker_phase(
    scenario_app: UseQueues, cloud_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Phase:
    """Every scenario through a stock prefork ``celery worker``."""
    queues = scenario_app("worker")
    log = tmp_path_factory.mktemp("differential") / "worker.log"
    args = ["--pool=prefork", "--concurrency=2", "-Q", sc.QUEUE, "-n", "diff@%h"]
    env = {**cloud_env, sc.QUEUE_URL_VARIABLE: queues.url}
    with celery_worker("tests.apps.scenarios", args, env, log):
        side = Side("worker", queues, worker_log=log)
        started = time.monotonic()
        published = {s.name: s.publish() for s in SCENARIOS}
        while unsettled(published, side) and time.monotonic() < started + SETTLE_SECONDS:
            time.sleep(0.3)
        return phase(published, side, started)


@pytest.fixture(scope="module")
def lambda_phase(worker_phase: Phase, scenario_app: UseQueues) -> Phase:
    """Every scenario through the event-source emulator and ``handlers.sqs.handler``."""
    from handlers.sqs import handler

    queues = scenario_app("lambda")
    source = EventSource(
        function="DifferentialFunction",
        handler="handlers.sqs.handler",
        queue_url=queues.url,
        queue_arn=queues.arn,
        batch_size=10,
        batching_window=0,
        timeout=120,
        report_batch_item_failures=True,
    )
    side = Side("lambda", queues)

    def counting(event: dict[str, Any], context: Any) -> Any:
        side.lambda_deliveries.update(message_key(r["body"]) for r in event["Records"])
        return handler(event, context)

    capture = CapturedLines(side.lambda_lines)
    lambda_logger.addHandler(capture)
    try:
        invoke: Handler = counting
        poller = EventSourcePoller(source, invoke, failed_visibility=1)
        started = time.monotonic()
        published = {s.name: s.publish() for s in SCENARIOS}
        stats = ConsumeStats()
        while time.monotonic() < started + SETTLE_SECONDS:
            batch = poller.poll_once(wait_seconds=1)
            if batch is not None:
                assert batch.handler_error is None, batch.handler_error
                stats += ConsumeStats.of(batch)
                side.record_failures.update(batch.failed_ids)
            elif not unsettled(published, side):
                break
        return phase(published, side, started, stats=stats)
    finally:
        lambda_logger.removeHandler(capture)
