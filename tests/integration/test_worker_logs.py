"""What a ``celery worker`` writes per task: one JSON outcome line, not Celery's own lines too.

A real worker of the test-only app ``tests.apps.probe`` (threads, on a fresh queue of this
module) runs a few small tasks and one that raises; its captured stdout is read as the
CloudWatch agent would ingest it. At ``--loglevel=debug`` Celery's per-task lines come back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import states

from devtools.cloud.deploy import Deployment
from tests.apps import probe
from tests.integration.probe_queue import probe_queue
from tests.workers import celery_worker, outcome_lines


@pytest.fixture
def queue_env(cloud: Deployment, cloud_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """A fresh queue the probe app publishes to; the environment of a worker consuming it."""
    with probe_queue(cloud, cloud_env, "logs") as queue:
        yield queue


def _ended(log: Path, ids: list[str], within: float = 60) -> None:
    """Wait until each task of ``ids`` has its outcome line."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(outcome_lines(log, i) for i in ids):
            return
        time.sleep(0.2)
    pytest.fail(f"no outcome line for every task:\n{log.read_text()[-3000:]}")


def test_each_task_is_one_json_line_and_celery_writes_none_beside_it(
    queue_env: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    name, env = queue_env
    args = ["-Q", name, "--pool=threads", "--concurrency=2"]
    with celery_worker("tests.apps.probe", args, env, tmp_path / "worker.log") as log:
        ok = [probe.record.apply_async((uuid.uuid4().hex, 4)).id for _ in range(5)]
        bad = probe.boom.apply_async((uuid.uuid4().hex,)).id
        _ended(log, [*ok, bad])
        text = log.read_text()

    for task_id in ok:
        [line] = outcome_lines(log, task_id)
        assert line["bytes"] <= 200, line
        assert (line["level"], line["state"], line["task_name"]) == (
            "INFO",
            "SUCCESS",
            "probe.record",
        )
        assert line["queue"] == name and line["duration_ms"] >= 0
        assert not {"task_args", "task_kwargs", "result", "root_id"} & set(line)
        # CloudWatch records when and from which log group each event came.
        assert not {"timestamp", "service", "location"} & set(line)
        assert f"[{task_id}]" not in text  # neither "Task … received" nor "… succeeded in"
    assert "succeeded in" not in text and "] received" not in text
    # The failure: one line, ours, at ERROR with the traceback; Celery's is not written.
    [failed] = outcome_lines(log, bad)
    assert (failed["level"], failed["state"], failed["exception"]) == (
        "ERROR",
        states.FAILURE,
        "ValueError",
    )
    assert "ValueError: boom" in failed["traceback"]
    assert text.count("Traceback (most recent call last)") == 1  # the one in our line
    assert "raised unexpected" not in text


def test_at_debug_celery_writes_its_own_lines_again(
    queue_env: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    name, env = queue_env
    args = ["-Q", name, "--pool=threads", "--concurrency=1", "--loglevel=debug"]
    with celery_worker("tests.apps.probe", args, env, tmp_path / "worker.log") as log:
        task_id = probe.record.apply_async((uuid.uuid4().hex, 4)).id
        _ended(log, [task_id])
        deadline = time.monotonic() + 10
        while "succeeded in" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        text = log.read_text()

    assert f"probe.record[{task_id}] received" in text
    assert f"probe.record[{task_id}] succeeded in" in text
    [line] = outcome_lines(log, task_id)
    assert line["state"] == states.SUCCESS
