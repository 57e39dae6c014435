"""Task times on the wire: the ``eta`` and ``expires`` headers read as a worker reads them, and
the ``DelaySeconds`` that keeps a message invisible until its ETA.

One parser for every reader: the consumers' decoder (:mod:`infra.wire.protocol`), the publish
path's native delay (:mod:`infra.producer.publish`), the worker transport's hand-back of far ETAs
(:mod:`infra.producer.transport`) and the worker's ETA-lag metric (:mod:`infra.worker.signals`).
"""

from __future__ import annotations

import math
from datetime import datetime, tzinfo

from celery.utils.time import maybe_iso8601

from infra.core.limits import SQS_MAX_DELAY_SECONDS

__all__ = ["aware", "delay_for", "parse_time", "zoned_time"]


def parse_time(value: object) -> datetime | None:
    """A time header as Celery sends it (ISO 8601 text, or a datetime through pickle), read with
    Celery's own parser as a worker reads it; None when absent or empty.

    Raises:
        TypeError: the value is neither text nor a datetime.
        ValueError: text that is not an ISO 8601 date (OverflowError: a date out of range).
    """
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise TypeError(f"not an ISO 8601 string: {type(value).__name__}")
    parsed: datetime | None = maybe_iso8601(value)
    return parsed


def zoned_time(value: object) -> datetime | None:
    """The header's time when it names its time zone; None when absent, naive or unreadable.

    What a reader that does not know the app's time zone may act on: delaying a message by a
    wrong offset could run its task late, so a naive time is left to the consumer's gate.
    """
    try:
        moment = parse_time(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return moment if moment is not None and moment.tzinfo is not None else None


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
