"""A user's shell for the CLI tests: ``celery -A tasks lambda …`` started in a session of its own
(so Ctrl-C reaches it as a terminal sends it), its output in a log file, and the environment
``source .celery-lambda/env.sh`` gives."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.cloud.deploy import Deployment
from devtools.cloud.emulator import LOCAL_CREDENTIALS
from devtools.cloud.session import DEPLOYMENTS_DIR, ENV_FILE

__all__ = ["CELERY", "ROOT", "Running", "recorded", "shell", "sourced", "start", "stop"]

ROOT = Path(__file__).resolve().parents[1]
CELERY = [str(Path(sys.executable).with_name("celery")), "-A", "tasks", "lambda"]
"""The console script a user runs (not ``python -m``, which would put the directory on sys.path)."""


@dataclass
class Running:
    """A ``lambda`` command running in a shell of its own; its output goes to ``log``."""

    process: subprocess.Popen[bytes]
    log: Path

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.process.poll() is None, self.output()
            assert time.monotonic() < deadline, f"no {text!r} in time:\n{self.output()}"
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text()

    def interrupt(self) -> float:
        """Ctrl-C as a terminal sends it; the seconds until the command exited."""
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=30)
        return time.monotonic() - started


def shell(tmp_path: Path) -> dict[str, str]:
    """A user's environment with nothing of a local cloud in it (``up`` starts its own)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PYTHONPATH": str(ROOT),
        "AWS_DEFAULT_REGION": "us-east-1",
        "COLUMNS": "250",  # one printed line per line of the log
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }


def start(env: dict[str, str], cwd: Path, *args: str, logs: Path | None = None) -> Running:
    """``lambda *args`` started in ``cwd``; its output in a file in ``logs`` (default ``cwd``)."""
    log = (logs or cwd) / f"{args[0]}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*CELERY, *args], cwd=cwd, env=env, stdout=out, stderr=out, start_new_session=True
        )
    return Running(process, log)


def stop(running: Running) -> None:
    if running.process.poll() is None:
        running.interrupt()


def sourced(cwd: Path) -> dict[str, str]:
    """The shell after ``source .celery-lambda/env.sh``."""
    lines = (cwd / ENV_FILE).read_text().splitlines()
    pairs = (shlex.split(line.removeprefix("export "))[0] for line in lines)
    return {**shell(cwd), **LOCAL_CREDENTIALS, **dict(p.split("=", 1) for p in pairs)}


def recorded(cwd: Path) -> Deployment:
    [record] = (cwd / DEPLOYMENTS_DIR).glob("*.json")
    return Deployment.from_json(record.read_text())
