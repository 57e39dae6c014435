"""``celery -A tasks lambda bench --tasks 20 --json`` as a user runs it: every consumer's row,
with every field, and every task SUCCESS (the bench checks each result and exits non-zero
otherwise). It starts its own emulator. Never its timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration  # real CLI processes and consumers: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[3]
KINDS = ["plain", "plain", "worker", "lambda", "handler", "noop"]
FIELDS = {
    "consumer", "tasks", "seconds", "tasks_per_second", "x_plain", "requests_per_task",
    "requests_per_task_by_operation", "cpu_ms_per_task", "event_source_cpu_ms_per_task",
    "billed_ms_per_task", "emulator_cpu_ms_per_task", "log_bytes_per_task",
    "dynamodb_units_per_task", "dollars_per_million_tasks",
}  # fmt: skip


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CELERY_"))}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "bench", "--tasks", "20"]
        + ["--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def test_every_consumer_has_a_row_with_every_field(report: dict[str, Any]) -> None:
    assert [row["kind"] for row in report["rows"]] == KINDS
    for row in report["rows"]:
        assert set(row) >= FIELDS, row["consumer"]
        assert set(row["dollars_per_million_tasks"]) == {
            "compute",
            "sqs",
            "dynamodb",
            "logs",
            "total",
        }


def test_every_consumer_drained_the_backlog_with_counted_requests(report: dict[str, Any]) -> None:
    for row in report["rows"]:
        ops = row["requests_per_task_by_operation"]
        assert ops.get("sqs:ReceiveMessage", 0) > 0, row["consumer"]
        if row["kind"] == "handler":  # its first batch warms it up, not measured
            assert 10 <= row["tasks"] < 20
        else:
            assert row["tasks"] == 20


def test_the_event_source_deletes_in_batches_and_the_stock_workers_one_by_one(
    report: dict[str, Any],
) -> None:
    rows = {row["kind"]: row for row in report["rows"]}
    assert rows["lambda"]["requests_per_task_by_operation"].get("sqs:DeleteMessageBatch", 0) > 0
    assert rows["plain"]["requests_per_task_by_operation"]["sqs:DeleteMessage"] == 1.0
    assert "sqs:GetQueueAttributes" not in rows["lambda"]["requests_per_task_by_operation"]


def test_each_consumer_that_stores_results_spends_dynamodb_units(report: dict[str, Any]) -> None:
    for row in report["rows"]:
        units = row["dynamodb_units_per_task"]
        if row["kind"] == "noop":
            assert units == {"write": 0, "read": 0}
        else:
            assert units["write"] >= 1, row["consumer"]


def test_the_budgets_are_reported(report: dict[str, Any]) -> None:
    assert {b["budget"] for b in report["budgets"]} >= {
        "Lambda path drain, x plain Celery's best",
        "Lambda path AWS requests/task (event source counted)",
    }
