"""When a beat entry is due: its slots, computed by Celery's own schedule classes.

A *slot* is the instant an entry is scheduled for, in whole epoch seconds (UTC). Whole seconds
make a slot an exact, comparable value that every tick computes alike; no Celery schedule is
meant for sub-second precision, and the tick itself runs once a minute.

- Intervals (``schedule``, or a ``timedelta``/number in ``beat_schedule``) are anchored on the
  Unix epoch: every multiple of ``run_every`` (rounded up to whole seconds) is a slot. A tick
  then knows the slots without any state, two ticks agree on them, and ``timedelta(minutes=5)``
  fires at :00, :05, ... (a daily interval at 00:00 UTC: wall-clock times are crontab's job).
  Stock beat anchors an interval on its own start instead, which a server has and a tick has not;
  an entry's ``relative`` flag changes nothing here (the slots are already on round times).
- ``crontab``, ``solar`` and any other schedule class: the next slot after ``t`` is
  ``t + remaining_estimate(t)`` with the schedule's clock (``nowfun``) pinned at ``t`` -- Celery's
  arithmetic in ``app.timezone``, DST included: a wall-clock time that does not exist on the
  spring-forward day fires once, an hour later in wall-clock terms (crontab(hour=2, minute=30)
  in Europe/Berlin fires at 03:30 CEST that day); a wall-clock time that happens twice on the
  fall-back day fires once, at its first occurrence (the repeated hour fires nothing).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import count, takewhile
from typing import Final

from celery.schedules import BaseSchedule, schedule

from infra.core.errors import ConfigurationError

__all__ = [
    "CURRENT_SLOT_SECONDS",
    "MAX_SKIP_SCAN",
    "Plan",
    "plan",
    "slots_after",
]

CURRENT_SLOT_SECONDS: Final = 60
"""A slot that came due within this long (one tick) is current: fired even without catch-up."""
MAX_SKIP_SCAN: Final = 10_000
"""Slots older than the catch-up window are counted up to this many, then jumped over."""
_MAX_PROBES: Final = 3
"""Nudges past ``t`` before a schedule that never yields a slot after ``t`` is refused."""


def _interval(s: BaseSchedule) -> int | None:
    """Whole seconds between slots of a plain interval schedule, else None."""
    if type(s) is not schedule:  # subclasses may compute their own times
        return None
    seconds: float = s.run_every.total_seconds()
    return max(1, math.ceil(seconds))


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _estimated(s: BaseSchedule, after: int) -> Iterator[int]:
    """Slots of ``s`` after ``after`` from ``remaining_estimate`` with its clock pinned.

    The schedule is copied: its clock is set per step, and ticks may run in threads.

    Raises:
        ConfigurationError: the schedule yields no time after a slot (it would repeat forever).
    """
    pinned = copy.copy(s)
    pinned.app = s.app  # a copy is rebuilt from its arguments: it lost the app (the timezone)
    moment = [_at(after)]
    pinned.nowfun = lambda: moment[0]
    while True:
        start = after
        for _ in range(_MAX_PROBES):
            moment[0] = _at(start)
            slot = math.floor((moment[0] + pinned.remaining_estimate(moment[0])).timestamp())
            if slot > after:
                break
            # A time just before an event rounds down onto the slot already known (solar);
            # asking again from a second later finds the next one.
            start = max(start, slot) + 1
        else:
            raise ConfigurationError(f"schedule {s!r} yields no time after {_at(after)}")
        yield slot
        after = slot


def slots_after(s: BaseSchedule, after: int) -> Iterator[int]:
    """Every slot of ``s`` strictly after ``after`` (epoch seconds), in order, without end."""
    period = _interval(s)
    if period is not None:
        return count((after // period + 1) * period, period)
    return _estimated(s, after)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one tick does for one entry: publish ``due`` in order, report what it skipped."""

    due: tuple[int, ...] = ()
    skipped: int = 0
    """Slots older than the catch-up window (counted up to ``MAX_SKIP_SCAN``)."""
    first_skipped: int | None = None
    skipped_through: int | None = None
    """The last skipped slot, or the second before the window when the count was cut short."""

    @property
    def settled(self) -> int | None:
        """The slot to record without publishing, so that skipped slots are reported once."""
        return self.skipped_through if self.skipped and not self.due else None


def plan(s: BaseSchedule, last: int | None, now: float, catchup_seconds: int) -> Plan:
    """The slots one tick at ``now`` publishes for an entry whose last fired slot is ``last``.

    Never fired: its latest slot if that is current (due within ``CURRENT_SLOT_SECONDS``); no
    history is backfilled. Else every slot after ``last`` up to ``now`` that is current or at
    most ``catchup_seconds`` old; older ones are skipped.

    Raises:
        ConfigurationError: the schedule never advances (see :func:`slots_after`).
    """
    if last is None:
        recent = takewhile(
            lambda slot: slot <= now, slots_after(s, math.floor(now) - CURRENT_SLOT_SECONDS)
        )
        return Plan(due=tuple(recent)[-1:])
    window = math.ceil(now - max(catchup_seconds, CURRENT_SLOT_SECONDS))
    slots = slots_after(s, last)
    slot = next(slots)
    skipped, first, through = 0, None, None
    while slot < window:
        if skipped == MAX_SKIP_SCAN:  # a schedule far behind: jump to the window
            slots, through = slots_after(s, window - 1), window - 1
            slot = next(slots)
            break
        first = slot if first is None else first
        skipped, through, slot = skipped + 1, slot, next(slots)
    due: list[int] = []
    while slot <= now:
        due.append(slot)
        slot = next(slots)
    return Plan(tuple(due), skipped, first, through)
