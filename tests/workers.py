"""A real ``celery worker`` subprocess for the integration suites."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["ROOT", "celery_worker"]

ROOT = Path(__file__).resolve().parents[1]


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
