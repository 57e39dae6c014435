"""``celery -A tasks lambda up`` and ``consume`` as a user runs them: in a shell of their own,
stopped by Ctrl-C (SIGINT to the terminal's foreground process group), with records that fail.

Each ``up`` runs its own emulator in a directory of the test's own (where ``.celery-lambda/`` is
written); the session's ``cloud`` is not touched.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.cloud.emulator import LOCAL_CREDENTIALS, free_port, reachable
from devtools.cloud.redelivery import LOCAL_FAILED_VISIBILITY
from infra.core import aws
from infra.core.settings import Settings
from infra.wire.protocol import decode
from tests.shells import CELERY, Running, recorded, shell, sourced, start, stop

pytestmark = pytest.mark.integration

STOP_WITHIN = 4.0
"""Seconds a Ctrl-C may take: 2 on an idle machine, with room for a loaded one."""
DLQ_WITHIN = 60.0
"""Seconds a record that always fails may take to reach the DLQ under ``up``'s defaults."""


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """``lambda up`` with its defaults, consuming."""
    cwd = tmp_path_factory.mktemp("up")
    running = start(shell(cwd), cwd, "up", "--port", str(free_port()))
    try:
        running.wait_for("failed records:")
        yield running
    finally:
        stop(running)


def test_a_record_that_always_fails_reaches_the_dlq_within_a_minute(
    up: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = up.log.parent
    env, deployment = sourced(cwd), recorded(cwd)
    for name, value in LOCAL_CREDENTIALS.items():
        monkeypatch.setenv(name, value)  # what this process's client signs with
    sqs = aws.client("sqs", Settings.from_env(env))
    send = "from tasks import app; print(app.send_task('tasks.no_such_task', (1,)).id)"
    published = subprocess.run(
        [sys.executable, "-c", send], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert published.returncode == 0, published.stderr
    task_id, sent = published.stdout.strip(), time.monotonic()

    dlq = deployment.resources["CeleryDeadLetterQueue"]
    messages: list[dict[str, Any]] = []
    while not messages and time.monotonic() - sent < DLQ_WITHIN:
        response = sqs.receive_message(
            QueueUrl=dlq, WaitTimeSeconds=1, MessageSystemAttributeNames=["All"]
        )
        messages = response.get("Messages", [])
    took = time.monotonic() - sent

    assert messages, f"not in the DLQ after {took:.0f} s:\n{up.output()}"
    [message] = messages
    assert decode(message["Body"], message_id=message["MessageId"]).task_id == task_id
    # The template's five attempts, each hidden for seconds instead of the queue's timeout.
    assert int(message["Attributes"]["ApproximateReceiveCount"]) >= 5
    print(f"in the DLQ after {took:.1f} s")
    queue = deployment.resources["CeleryQueue"]
    visibility = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["VisibilityTimeout"])
    deployed = int(visibility["Attributes"]["VisibilityTimeout"])
    assert deployed > DLQ_WITHIN  # the queue keeps the template's attributes
    note = next(line for line in up.output().splitlines() if line.startswith("failed records:"))
    assert f"back after {LOCAL_FAILED_VISIBILITY} s, in the DLQ after 5 receives" in note
    assert f"the deployed stack keeps the template's: back after {deployed} s" in note


def test_ctrl_c_stops_up_at_once_and_says_what_it_stopped(tmp_path: Path) -> None:
    port = free_port()
    running = start(shell(tmp_path), tmp_path, "up", "--port", str(port))
    try:
        running.wait_for("failed records:")
        time.sleep(1.5)  # the pollers are in their long polls
    finally:
        took = running.interrupt()

    print(f"up stopped {took:.2f} s after Ctrl-C")
    assert running.process.returncode == 0, running.output()
    endpoint = f"http://127.0.0.1:{port}"
    [line] = [line for line in running.output().splitlines() if line.startswith("stopped:")]
    sources = len(recorded(tmp_path).event_sources)
    assert line.startswith(f"stopped: event source ({sources} pollers: 0 batches,")
    assert line.endswith(f", emulator at {endpoint}")
    assert not reachable(endpoint)
    assert took < STOP_WITHIN, running.output()


def test_ctrl_c_stops_consume_at_once(up: Running) -> None:
    cwd = up.log.parent
    running = start(sourced(cwd), cwd, "consume", "--concurrency", "2")
    try:
        running.wait_for("Ctrl-C stops")
        time.sleep(1.5)
    finally:
        took = running.interrupt()

    print(f"consume stopped {took:.2f} s after Ctrl-C")
    assert running.process.returncode == 0, running.output()
    pollers = 2 * len(recorded(cwd).event_sources)
    assert f"stopped: event source ({pollers} pollers: " in running.output()
    assert took < STOP_WITHIN, running.output()


def test_consume_without_its_environment_says_what_to_source(tmp_path: Path) -> None:
    out = subprocess.run(
        [*CELERY, "consume"],
        cwd=tmp_path,
        env={**shell(tmp_path), **LOCAL_CREDENTIALS},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("Error: AWS_ENDPOINT_URL is not set: `source .celery-lambda/env.sh`")
    assert "`lambda up --no-consume`" in line
