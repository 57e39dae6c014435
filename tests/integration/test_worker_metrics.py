"""A worker writes the Lambda path's metric vocabulary (EMF) and outcome lines to its stdout.

The session's ``celery -A tasks worker`` (prefork) runs real tasks; its captured stdout is parsed
for EMF lines and "task finished" JSON lines, as the CloudWatch agent would ingest them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from infra.core.observability import (
    CONSUMER_METRICS,
    METRIC_DURATION,
    METRIC_FAILED,
    METRIC_RECEIVED,
    METRIC_STARTED,
    METRIC_SUCCEEDED,
    TASK_METRICS,
)
from tasks import add, always_fails


def _json_lines(log: Path) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                lines.append(json.loads(line))
            except ValueError:
                continue
    return lines


def _metrics_for(log: Path, task_name: str) -> dict[str, list[float]]:
    merged: dict[str, list[float]] = {}
    for blob in _json_lines(log):
        if "_aws" not in blob or blob.get("task_name") != task_name:
            continue
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
    time.sleep(0.5)  # the postrun line follows the result write

    added = _metrics_for(worker, "tasks.add")
    for name in (METRIC_RECEIVED, METRIC_STARTED, METRIC_SUCCEEDED, METRIC_DURATION):
        assert len(added.get(name, [])) > before.get(name, 0), name
    assert _metrics_for(worker, "tasks.always_fails").get(METRIC_FAILED)

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
    assert finished["root_id"] == ok.id and finished["duration_ms"] >= 0
