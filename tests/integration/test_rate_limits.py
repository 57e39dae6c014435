"""``rate_limit`` across concurrent consumers: Lambda pollers in separate processes, and a worker.

``probe.paced`` (``rate_limit='20/s'``) returns the time it started. A group of tasks is
published to a fresh queue and drained by several concurrent consumers (the event-source
emulator runs each poller in its own process, like concurrent invocations); the recorded start
times must never put more than 20 starts in any one-second window, and every task must finish.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import group

from devtools.cloud.deploy import Deployment, EventSource
from devtools.cloud.event_source import consume, handler_from_source
from devtools.cloud.session import point_app_at
from infra.core import aws
from infra.core.settings import Settings
from infra.store.ratelimit import rate_key
from tests.apps import probe
from tests.sqs_helpers import counts, predefine, queue_with_dlq
from tests.workers import celery_worker, outcome_lines

RATE = 20
POLLED = 120
"""Tasks the four pollers drain: six seconds of starts at RATE."""


def most_in_one_second(starts: list[float]) -> int:
    """The largest number of starts in any half-open one-second window."""
    ordered = sorted(starts)
    return max(bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered))


def test_window_count_is_sliding() -> None:
    assert most_in_one_second([0.0, 0.5, 0.99, 1.0, 1.6]) == 3
    assert most_in_one_second([0.9, 1.1, 1.2, 1.89]) == 4


@pytest.fixture
def source(cloud: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[EventSource]:
    """A fresh queue the probe app publishes to, served by the handler with the probe app."""
    [celery_source] = [s for s in cloud.event_sources if s.queue_arn.endswith("-celery")]
    name = f"paced-{uuid.uuid4().hex[:8]}"
    queue = queue_with_dlq(name, attributes={"VisibilityTimeout": "60"})
    point_app_at(probe.app, cloud)
    predefine(probe.app, {name: queue.url})
    probe.app.conf.task_default_queue = name
    monkeypatch.setenv("CELERY_APP", "tests.apps.probe:app")
    monkeypatch.setenv("CELERY_QUEUE_URLS", json.dumps({name: queue.url}))
    aws.client("dynamodb").delete_item(
        TableName=Settings.from_env().results_table, Key={"id": {"S": rate_key("probe.paced")}}
    )
    yield dataclasses.replace(celery_source, queue_url=queue.url, queue_arn=queue.arn)
    for url in (queue.url, queue.dlq_url):
        aws.client("sqs").delete_queue(QueueUrl=url)


def _publish(count: int) -> list[str]:
    marker = uuid.uuid4().hex
    result = group(probe.paced.s(marker) for _ in range(count)).apply_async()
    return [r.id for r in result.results]


def _starts(ids: list[str], within: float = 60.0) -> list[float]:
    """The start times of the tasks, once every one has succeeded."""
    deadline = time.monotonic() + within
    results = [probe.app.AsyncResult(i) for i in ids]
    while not all(r.ready() for r in results) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [r.state for r in results] == ["SUCCESS"] * len(ids)
    return [float(r.result) for r in results]


def test_four_concurrent_pollers_keep_the_rate(source: EventSource) -> None:
    ids = _publish(POLLED)

    stats = consume(  # four environments at once, each a process
        [source],
        handler_from_source,
        concurrency=4,
        processes=True,
        until_empty=True,
        wait_seconds=1,
    )

    starts = _starts(ids)
    assert most_in_one_second(starts) <= RATE
    # Record failures may happen (a claim refused under moto's contention comes back later);
    # what matters is that every task ran once, in pace.
    assert stats.records >= POLLED
    assert counts(source.queue_url) == (0, 0, 0)
    # Paced, not serialised: 120 starts at 20/s take about six seconds.
    assert max(starts) - min(starts) >= (POLLED - RATE) / RATE


def test_a_worker_and_lambda_pollers_share_the_rate(
    source: EventSource, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    queue = probe.app.conf.task_default_queue
    env = {**cloud_env, "CELERY_QUEUE_URLS": json.dumps({queue: source.queue_url})}
    ids = _publish(100)

    with celery_worker(
        "tests.apps.probe",
        ["-Q", queue, "--pool=threads", "--concurrency=4"],
        env,
        tmp_path / "worker.log",
    ) as log:
        consume(
            [source],
            handler_from_source,
            concurrency=2,
            processes=True,
            until_empty=True,
            wait_seconds=1,
        )
        worker_ran = sum(line.get("state") == "SUCCESS" for line in outcome_lines(log))

    starts = _starts(ids)
    assert most_in_one_second(starts) <= RATE
    assert worker_ran > 0  # the worker really took part


def test_a_worker_hands_a_task_without_a_turn_back_to_sqs(
    source: EventSource, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    aws.client("dynamodb").put_item(
        TableName=Settings.from_env().results_table,
        Item={"id": {"S": rate_key("probe.paced")}, "next_at": {"N": str(time.time() + 60)}},
    )
    queue = probe.app.conf.task_default_queue
    env = {**cloud_env, "CELERY_QUEUE_URLS": json.dumps({queue: source.queue_url})}
    [task_id] = _publish(1)

    with celery_worker(
        "tests.apps.probe", ["-Q", queue, "--pool=solo"], env, tmp_path / "worker.log"
    ) as log:
        deadline = time.monotonic() + 30
        while not outcome_lines(log, task_id) and time.monotonic() < deadline:
            time.sleep(0.2)

    [ended] = outcome_lines(log, task_id)
    assert ended["state"] == "IGNORED"  # acked without a state
    assert counts(source.queue_url) == (0, 0, 1)  # the same task, delayed until its turn
    assert probe.app.AsyncResult(task_id).state == "PENDING"
