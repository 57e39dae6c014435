"""A worker keeps consuming while SQS throttles it or answers 500: a receive that fails is an
empty poll (kombu's async receive raised a bare ``Exception`` for a 400 and handed our channel a
list for a 5xx; either ended the worker with "Unrecoverable error" -- found by ``lambda soak``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import group

from devtools.cloud.deploy import Deployment
from devtools.soak.proxy import FaultPlan, FaultProxy
from tests.apps import probe
from tests.integration.probe_queue import probe_test_queue
from tests.sqs_helpers import TestQueue
from tests.workers import celery_worker, outcome_lines

pytestmark = pytest.mark.integration

TASKS = 20


@pytest.fixture
def queue(cloud: Deployment, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, TestQueue]]:
    with probe_test_queue(cloud, monkeypatch, "faults", visibility=10) as created:
        yield created


def test_a_worker_rides_out_throttled_and_failing_receives(
    queue: tuple[str, TestQueue], cloud: Deployment, cloud_env: dict[str, str], tmp_path: Path
) -> None:
    name, created = queue
    plan = FaultPlan(0.3, seed=7, services={"sqs"}, kinds=("throttled", "throttling", "internal"))
    results = group(probe.record.s(uuid.uuid4().hex) for _ in range(TASKS)).apply_async(queue=name)
    with FaultProxy(cloud.endpoint_url or "", plan) as proxy:
        env = {
            **cloud_env,
            "AWS_ENDPOINT_URL": proxy.endpoint_url,
            "CELERY_QUEUE_URLS": json.dumps({name: created.url}),
        }
        args = ["-Q", name, "--pool=threads", "--concurrency=4"]
        with celery_worker("tests.apps.probe", args, env, tmp_path / "worker.log") as log:
            deadline = time.monotonic() + 120
            while len(outcome_lines(log)) < TASKS and time.monotonic() < deadline:
                time.sleep(0.5)
            text = log.read_text()
        faulted_receives = sum(
            n
            for (service, operation, _), n in proxy.injected.items()
            if operation == "ReceiveMessage"
        )

    assert "Unrecoverable error" not in text
    assert faulted_receives > 0  # the worker's receives really were throttled or failed
    assert [r.state for r in results.results] == ["SUCCESS"] * TASKS
