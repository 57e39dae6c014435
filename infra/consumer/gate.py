"""Pure decisions taken before a task runs: expired, not yet due, or run now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from infra.wire.protocol import TaskMessage
from infra.wire.timing import aware, delay_for

__all__ = ["Delay", "Expired", "Run", "Verdict", "decide"]


@dataclass(frozen=True, slots=True)
class Run:
    """Run the task now."""


@dataclass(frozen=True, slots=True)
class Expired:
    """``expires`` has passed: record REVOKED (as a worker does) and ack without running."""


@dataclass(frozen=True, slots=True)
class Delay:
    """Not yet due: re-send with ``DelaySeconds=seconds`` and ack the current message."""

    seconds: int


Verdict = Run | Expired | Delay


def decide(message: TaskMessage, now: datetime, tz: tzinfo = UTC) -> Verdict:
    """What to do with ``message`` at ``now`` (aware); naive message times are in ``tz``."""
    expires = aware(message.expires, tz)
    if expires is not None and now > expires:
        return Expired()
    eta = aware(message.eta, tz)
    wait = None if eta is None else delay_for(eta, now)
    return Run() if wait is None else Delay(wait)
