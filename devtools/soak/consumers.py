"""The soak's two consumers as killable process groups: a stock ``celery worker`` and the
event-source emulator (``python -m devtools.soak.consumers SOURCE_JSON``: :func:`main`).

Each starts in a session of its own, so one ``killpg(SIGKILL)`` takes the consumer and every
process it started (the worker's pool, the emulator's pollers) at once, as a host dying would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import IO, Final

from devtools.cloud.deploy import EventSource
from devtools.cloud.event_source import consume, handler_from_source, stop_on_signals
from devtools.soak.app import APP, CONSUMER_ENV
from devtools.soak.ledger import Kill

__all__ = ["POLLERS", "WORKER_THREADS", "Consumer", "lambda_command", "main", "worker_command"]

POLLERS: Final = 2
WORKER_THREADS: Final = 4


def worker_command(queue: str, name: str, threads: int = WORKER_THREADS) -> list[str]:
    """A stock ``celery worker`` serving the soak app on ``queue``."""
    return [
        *(sys.executable, "-m", "celery", "-A", APP.partition(":")[0], "worker"),
        *("-P", "threads", "--concurrency", str(threads), "-Q", queue),
        *("--without-gossip", "--without-mingle", "--without-heartbeat"),
        *("--loglevel", "WARNING", "--hostname", f"{name}@%h"),
    ]


def lambda_command(source: EventSource) -> list[str]:
    """The event-source emulator with :data:`POLLERS` pollers on ``source``, in its own process."""
    return [sys.executable, "-m", "devtools.soak.consumers", json.dumps(asdict(source))]


class Consumer:
    """One consumer, restartable: ``start``, ``kill`` (SIGKILL to its group), ``stop``."""

    def __init__(
        self, kind: str, command: Sequence[str], env: Mapping[str, str], log_dir: Path
    ) -> None:
        self.kind = kind
        self.command = list(command)
        self.env = dict(env)
        self.log_dir = log_dir
        self.generation = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def name(self) -> str:
        """``worker#3``: the kind and how many times it was started."""
        return f"{self.kind}#{self.generation}"

    def start(self) -> None:
        """Start a new generation in a session of its own, logging to ``log_dir``."""
        self.generation += 1
        self._log = self._log_path().open("wb")
        self._process = subprocess.Popen(
            self.command,
            env={**self.env, CONSUMER_ENV: self.name},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def started(self) -> bool:
        """True from ``start`` until the consumer was killed or found ended."""
        return self._process is not None

    def alive(self) -> bool:
        """True while the current generation runs."""
        return self._process is not None and self._process.poll() is None

    def kill(self) -> Kill:
        """SIGKILL the whole process group; what was killed, and when.

        Raises:
            RuntimeError: the consumer was not started.
        """
        if self._process is None:
            raise RuntimeError(f"{self.kind} was never started")
        group = self._process.pid  # a session leader's pid is its group's id
        killed = Kill(self.name, group, time.time())
        with contextlib.suppress(ProcessLookupError):  # the whole group had already ended
            os.killpg(group, signal.SIGKILL)
        self._process.wait()
        self._process = None
        self._close_log()
        return killed

    def exited(self) -> Kill:
        """The consumer that ended by itself: its exit code and the log's last error line.

        Raises:
            RuntimeError: the consumer was not started.
        """
        if self._process is None:
            raise RuntimeError(f"{self.kind} was never started")
        code, group = self._process.wait(), self._process.pid
        with contextlib.suppress(ProcessLookupError):  # what it started, if still running
            os.killpg(group, signal.SIGKILL)
        self._process = None
        self._close_log()
        return Kill(self.name, group, time.time(), _last_error(self._log_path(), code))

    def stop(self) -> None:
        """End the consumer at the end of the soak (SIGKILL: its queue is empty by then)."""
        if self._process is not None:
            self.kill()

    def _log_path(self) -> Path:
        return self.log_dir / f"{self.kind}-{self.generation}.log"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _last_error(log: Path, code: int) -> str:
    """``exit 1: Unrecoverable error: ...``: the exit code and the log's last error line."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if "error" in line.lower() and not line.startswith("{")]
    last = errors[-1].strip() if errors else "no error in its log"
    return f"exit {code}: {last[:240]}"


def main(argv: Sequence[str] = ()) -> None:
    """The Lambda side: consume the source in ``argv[0]`` (JSON) with :data:`POLLERS` pollers."""
    source = EventSource(**json.loads((argv or sys.argv[1:])[0]))
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    consume([source], handler_from_source, concurrency=POLLERS, stop=stop_on_signals())


if __name__ == "__main__":
    main()
