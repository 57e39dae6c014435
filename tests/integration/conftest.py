"""A real ``celery -A tasks worker`` subprocess against the local cloud."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.deploy import Deployment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def worker(
    cloud: Deployment, cloud_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A stock Celery worker consuming every queue of the app; yields its log file."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "--loglevel=info",
        "--concurrency=2",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--hostname",
        "itest@%h",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=cloud_env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while b"ready." not in log.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"celery worker did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    yield log
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
