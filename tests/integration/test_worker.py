"""The brief's examples published with apply_async and run by a real ``celery worker``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from celery.result import AsyncResult

from devtools.cloud.deploy import Deployment
from infra.core import aws
from tasks import add, always_fails, app, create_user, error_handler, flaky, upload_files
from tasks.examples import verify_password

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("worker")]


def test_add_delay_get() -> None:
    assert add.delay(4, 4).get(timeout=60) == 8


def test_link_passes_the_result_to_the_callback() -> None:
    parent = add.apply_async((2, 2), link=add.s(16))
    assert parent.get(timeout=60) == 4
    deadline = time.monotonic() + 60
    while not parent.children and time.monotonic() < deadline:
        time.sleep(0.2)
        parent = AsyncResult(parent.id, app=app)
        parent.get(timeout=10)
    (child,) = parent.children
    assert child.get(timeout=60) == 20


def test_link_error_callback_reads_exception_and_traceback(worker) -> None:
    failing = always_fails.apply_async((7, 8), link_error=error_handler.s())
    with pytest.raises(KeyError):
        failing.get(timeout=60)
    assert failing.state == "FAILURE"
    assert "KeyError" in failing.traceback
    deadline = time.monotonic() + 60
    log = ""
    while f"Task {failing.id} raised exception: KeyError(7)" not in log:
        assert time.monotonic() < deadline, f"error_handler did not run:\n{log[-2000:]}"
        time.sleep(0.3)
        log = worker.read_text()
    assert "error_handler" in log


def test_progress_is_reported_while_files_upload(cloud: Deployment) -> None:
    names = [f"file-{i}.txt" for i in range(40)]
    result = upload_files.apply_async((names,))
    seen = []
    deadline = time.monotonic() + 60
    while not result.ready():
        assert time.monotonic() < deadline
        meta = app.backend.get_task_meta(result.id)  # state and info from one read
        if meta["status"] == "PROGRESS":
            seen.append(meta["result"])
        time.sleep(0.01)
    assert result.get(timeout=10)["total"] == 40
    assert seen, "never saw a PROGRESS state"
    assert all(info["total"] == 40 and 0 <= info["current"] < 40 for info in seen)
    keys = aws.client("s3").list_objects_v2(
        Bucket=cloud.environment["RESULTS_BUCKET"], Prefix=f"uploads/{result.id}/"
    )
    assert keys["KeyCount"] == 40


def test_routed_task_runs_from_the_low_priority_queue() -> None:
    result = upload_files.apply_async((["routed.txt"],))
    assert result.get(timeout=60)["total"] == 1
    queues = [add.apply_async((1, 1), queue=q) for q in ("high-priority", "low-priority")]
    assert [r.get(timeout=60) for r in queues] == [2, 2]


def test_create_new_user_hashes_and_is_idempotent(cloud: Deployment) -> None:
    first = create_user.apply_async(("alice", "s3cret-pass")).get(timeout=60)
    again = app.send_task("create_new_user", args=("alice", "other")).get(timeout=60)
    assert first == {"username": "alice", "created": True}
    assert again == {"username": "alice", "created": False}
    item = aws.client("dynamodb").get_item(
        TableName=cloud.environment["USERS_TABLE"], Key={"username": {"S": "alice"}}
    )["Item"]
    stored = item["password_hash"]["S"]
    assert "s3cret-pass" not in str(item)
    assert verify_password("s3cret-pass", stored)
    assert not verify_password("other", stored)


def test_retry_with_backoff_then_success() -> None:
    result = flaky.apply_async(kwargs={"failures": 2, "base_delay": 1})
    assert result.get(timeout=90) == {"attempts": 3}


def test_the_briefs_commands_verbatim(cloud_env: dict[str, str]) -> None:
    code = "from tasks import add; print(add.delay(4, 4).get(timeout=60))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=cloud_env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "8"
