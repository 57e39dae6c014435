"""Pure decisions taken before a task runs: expired, not yet due, or run now."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from infra.limits import SQS_MAX_DELAY_SECONDS
from infra.protocol import TaskMessage

__all__ = ["Delay", "Expired", "Run", "Verdict", "aware", "decide", "delay_for"]


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


def aware(moment: datetime | None, tz: tzinfo) -> datetime | None:
    """``moment`` with a time zone: naive values are in ``tz``, as a worker reads them."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=tz)


def delay_for(eta: datetime, now: datetime) -> int | None:
    """``DelaySeconds`` that keeps a message invisible until ``eta``; None when it is due.

    Rounded up, so a message never comes back before its ETA; long ETAs hop in 15 minutes.
    """
    if eta <= now:
        return None
    return min(SQS_MAX_DELAY_SECONDS, math.ceil((eta - now).total_seconds()))


def decide(message: TaskMessage, now: datetime, tz: tzinfo = UTC) -> Verdict:
    """What to do with ``message`` at ``now`` (aware); naive message times are in ``tz``."""
    expires = aware(message.expires, tz)
    if expires is not None and now > expires:
        return Expired()
    eta = aware(message.eta, tz)
    wait = None if eta is None else delay_for(eta, now)
    return Run() if wait is None else Delay(wait)
