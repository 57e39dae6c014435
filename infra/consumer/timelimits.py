"""Soft and hard time limits inside one process, as a Celery worker's pool enforces them.

A prefork worker kills the child at the hard limit; a Lambda invocation has no child to kill, so
both limits are signals (``ITIMER_REAL``) that raise inside the running task. The soft limit raises
:class:`SoftTimeLimitExceeded` (the task may catch it and clean up). The hard limit raises
:class:`HardTimeLimitReached`, a ``BaseException`` that a task's ``except Exception`` cannot
swallow and that passes through Celery's tracer; the runner then records FAILURE with
``TimeLimitExceeded`` exactly as a worker's parent does after killing the child. The invocation
deadline raises :class:`DeadlineReached`, also a ``BaseException``, left unrecorded: the record goes
back to SQS and runs again with a full invocation.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from billiard.exceptions import SoftTimeLimitExceeded

__all__ = ["DeadlineReached", "HardTimeLimitReached", "time_limits"]


class HardTimeLimitReached(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """The task's hard time limit passed; ``seconds`` is the limit."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class DeadlineReached(BaseException):  # noqa: N818  (a signal, like KeyboardInterrupt)
    """The invocation is about to time out; the task was interrupted and must be retried."""


def _plan(
    soft: float | None, hard: float | None, deadline: float | None
) -> list[tuple[float, BaseException]]:
    """Timer events ``(seconds from now, exception)`` in the order they fire."""
    events: list[tuple[float, BaseException]] = []
    if soft:
        events.append((soft, SoftTimeLimitExceeded(soft)))
    if hard:
        events.append((hard, HardTimeLimitReached(hard)))
    if deadline is not None:
        events.append((max(deadline, 0.001), DeadlineReached(f"{deadline:.1f}s left")))
    return sorted(events, key=lambda event: event[0])


@contextmanager
def time_limits(
    soft: float | None, hard: float | None, deadline: float | None = None
) -> Iterator[None]:
    """Raise the soft/hard limit or deadline exception inside the block when its time comes.

    Only the main thread receives signals; elsewhere the block runs without limits.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = _plan(soft, hard, deadline)
    started = time.monotonic()

    def fire(signum: int, frame: FrameType | None) -> None:
        _, exc = pending.pop(0)
        if pending:
            elapsed = time.monotonic() - started
            signal.setitimer(signal.ITIMER_REAL, max(pending[0][0] - elapsed, 0.001))
        raise exc

    previous = signal.signal(signal.SIGALRM, fire)
    if pending:
        signal.setitimer(signal.ITIMER_REAL, pending[0][0])
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
