"""A worker writes the Lambda path's metric vocabulary (EMF) and outcome lines to its stdout.

The session's ``celery -A tasks worker`` (prefork) runs real tasks; its captured stdout is parsed
for EMF lines and "task finished" JSON lines, as the CloudWatch agent would ingest them. Workers
of ``tests.integration.held_metrics_app`` (metrics written when a document is full or at
shutdown, never by age) show how a worker aggregates: a few EMF documents per (task, queue) for
many tasks, each task counted once, and what a worker holds written when it is stopped.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cloud.deploy import Deployment
from infra.core.observability import (
    CONSUMER_METRICS,
    MAX_VALUES,
    METRIC_DURATION,
    METRIC_FAILED,
    METRIC_RECEIVED,
    METRIC_STARTED,
    METRIC_SUCCEEDED,
    TASK_METRICS,
)
from tasks import add, always_fails
from tests.apps import probe
from tests.integration.probe_queue import probe_queue
from tests.workers import celery_worker, outcome_lines

HELD = "tests.integration.held_metrics_app"


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def _documents(log: Path, task_name: str) -> list[dict[str, Any]]:
    return [b for b in _json_lines(log) if "_aws" in b and b.get("task_name") == task_name]


def _metrics_for(log: Path, task_name: str) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for blob in _documents(log, task_name):
        for metric in blob["_aws"]["CloudWatchMetrics"][0]["Metrics"]:
            value = blob[metric["Name"]]
            merged.setdefault(metric["Name"], []).extend(
                value if isinstance(value, list) else [value]
            )
    return merged


def test_worker_emits_the_vocabulary_with_task_and_queue(worker: Path) -> None:
    before = {name: len(v) for name, v in _metrics_for(worker, "tasks.add").items()}
    ok = add.apply_async((20, 22))
    bad = always_fails.apply_async((1, 2))
    assert ok.get(timeout=30) == 42
    bad.get(timeout=30, propagate=False)

    # A worker left idle still writes what it holds, about a second later.
    names = (METRIC_RECEIVED, METRIC_STARTED, METRIC_SUCCEEDED, METRIC_DURATION)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        added = _metrics_for(worker, "tasks.add")
        failed = _metrics_for(worker, "tasks.always_fails").get(METRIC_FAILED)
        if failed and all(len(added.get(n, [])) > before.get(n, 0) for n in names):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no metrics of the tasks written:\n{worker.read_text()[-3000:]}")

    for blob in _json_lines(worker):
        if "_aws" not in blob:
            continue
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        names = {m["Name"] for m in directive["Metrics"]}
        assert names <= TASK_METRICS | CONSUMER_METRICS
        if names <= TASK_METRICS:
            assert sorted(directive["Dimensions"][0]) == ["queue", "service", "task_name"]
            assert blob["queue"] == "celery" or blob["queue"].endswith("priority")

    [finished] = [
        line
        for line in _json_lines(worker)
        if line.get("message") == "task finished" and line.get("task_id") == ok.id
    ]
    assert finished["state"] == "SUCCESS" and finished["queue"] == "celery"
    # Its own root (no workflow): no root_id to repeat its task_id.
    assert "root_id" not in finished and finished["duration_ms"] >= 0


@pytest.fixture
def queue_env(cloud: Deployment, cloud_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh queue the probe app publishes to; the environment of a worker consuming it."""
    with probe_queue(cloud, cloud_env, "emf") as queue:
        yield queue


def _run(env: dict[str, str], name: str, args: list[str], log: Path, count: int) -> str:
    """``count`` small tasks on a worker of the held app; its log before it was stopped."""
    with celery_worker(HELD, ["-Q", name, *args], env, log) as out:
        ids = [probe.record.apply_async((uuid.uuid4().hex,)).id for _ in range(count)]
        deadline = time.monotonic() + 120
        while len(outcome_lines(out)) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        assert {line["task_id"] for line in outcome_lines(out)} == set(ids)
        return out.read_text()


def _counted_once(log: Path, count: int) -> dict[str, list[float]]:
    metrics = _metrics_for(log, "probe.record")
    for name in (METRIC_RECEIVED, METRIC_STARTED, METRIC_SUCCEEDED):
        assert sum(metrics[name]) == count, name
    assert len(metrics[METRIC_DURATION]) == count
    return metrics


def test_many_tasks_are_a_few_documents_and_under_200_bytes_each(
    queue_env: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    name, env = queue_env
    count, children = 250, 2
    log = tmp_path / "worker.log"
    _run(env, name, ["--pool=prefork", f"--concurrency={children}"], log, count)

    _counted_once(log, count)
    documents = _documents(log, "probe.record")
    # Received in the worker's main process, run in its children: each aggregates its own.
    assert len(documents) <= 2 * math.ceil(count / MAX_VALUES) + children
    assert all(doc["queue"] == name for doc in documents)
    after_ready = log.read_bytes().split(b"ready.", 1)[1]
    assert len(after_ready) / count <= 200


@pytest.mark.parametrize(
    "pool", [["--pool=prefork", "--concurrency=2"], ["--pool=threads", "--concurrency=4"]]
)
def test_a_stopped_worker_writes_the_metrics_it_holds(
    pool: list[str], queue_env: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    name, env = queue_env
    log = tmp_path / "worker.log"
    before_stop = _run(env, name, pool, log, 5)

    held = [line for line in before_stop.splitlines() if line.startswith('{"_aws"')]
    assert not [line for line in held if '"probe.record"' in line]
    _counted_once(log, 5)


def test_a_recycled_child_counts_none_of_its_parents_values(
    queue_env: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    """A child forked while the main process holds received counts starts empty."""
    name, env = queue_env
    args = ["--pool=prefork", "--concurrency=2", "--max-tasks-per-child=2"]
    log = tmp_path / "worker.log"
    _run(env, name, args, log, 9)

    _counted_once(log, 9)
