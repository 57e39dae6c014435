"""Task times on the wire: naive ETAs and expiries read as a worker reads them, and the
``DelaySeconds`` that keeps a message invisible until its ETA."""

from __future__ import annotations

import math
from datetime import datetime, tzinfo

from infra.core.limits import SQS_MAX_DELAY_SECONDS

__all__ = ["aware", "delay_for"]


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
