"""A real ``celery worker`` subprocess for the integration suites."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ROOT", "celery_worker", "outcome_lines"]

ROOT = Path(__file__).resolve().parents[1]


def outcome_lines(log: Path, task_id: str | None = None) -> list[dict[str, Any]]:
    """The worker's "task finished" JSON lines, each with its size in bytes under ``"bytes"``
    (only ``task_id``'s when given): one per task that ran, whatever state it ended in."""
    lines = []
    for raw in log.read_bytes().splitlines():
        if not raw.startswith(b'{"level"'):
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # cut off by a concurrent write
        if line.get("message") == "task finished" and task_id in (None, line.get("task_id")):
            lines.append({**line, "bytes": len(raw) + 1})
    return lines


@contextmanager
def celery_worker(
    app: str, args: Sequence[str], env: Mapping[str, str], log: Path
) -> Iterator[Path]:
    """``celery -A app worker *args`` until the block ends; yields its log once it is ready."""
    cmd = [sys.executable, "-m", "celery", "-A", app, "worker", "--loglevel=info", *args]
    cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
