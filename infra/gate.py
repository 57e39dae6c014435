"""Pure decisions taken before a task runs: expired, not yet due, or run now."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from infra.limits import SQS_MAX_DELAY_SECONDS
from infra.protocol import TaskMessage

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


def decide(message: TaskMessage, now: datetime) -> Verdict:
    """What to do with ``message`` at ``now`` (an aware datetime)."""
    expires = message.expires
    if expires is not None and now > expires:
        return Expired()
    eta = message.eta
    if eta is not None and eta > now:
        # Round up: a message must never come back before its ETA. Long ETAs hop in 15 minutes.
        wait = math.ceil((eta - now).total_seconds())
        return Delay(min(SQS_MAX_DELAY_SECONDS, wait))
    return Run()
