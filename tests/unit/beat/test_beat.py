"""The scheduled tick's engine driven by an injected clock, with an in-memory store and publisher.

Ticks run once a minute, two seconds past the minute (as EventBridge delivers them), across
minute, hour and DST boundaries; each test asserts the exact (entry, slot) pairs published.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from celery import Celery
from celery.schedules import BaseSchedule, crontab, schedule, solar

from infra.beat.engine import Beat, Claim, Entry, entries_of, slot_task_id
from infra.beat.report import TickReport, iso
from infra.beat.slots import CURRENT_SLOT_SECONDS, MAX_SKIP_SCAN, plan
from infra.core.errors import ConfigurationError, StoreError

Pair = tuple[str, str]  # (entry, slot as ISO UTC)


def at(text: str) -> int:
    """Epoch seconds of an ISO time (``Z`` for UTC)."""
    return int(datetime.fromisoformat(text).timestamp())


# ---------------------------------------------------------------- fakes


@dataclass
class MemoryState:
    """The store seam in memory, with DynamoDB's conditions."""

    records: dict[str, int] = field(default_factory=dict)
    fail_claims: bool = False
    fail_releases: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def last_slots(self, names: Sequence[str]) -> Mapping[str, int]:
        return {name: self.records[name] for name in names if name in self.records}

    def claim(self, name: str, slot: int) -> Claim:
        if self.fail_claims:
            raise StoreError("table unreachable")
        with self.lock:
            recorded = self.records.get(name)
            if recorded is not None and recorded >= slot:
                return Claim(won=False, recorded=recorded)
            self.records[name] = slot
            return Claim(won=True)

    def release(self, name: str, slot: int) -> bool:
        if self.fail_releases:
            raise StoreError("table unreachable")
        with self.lock:
            if self.records.get(name) != slot:
                return False
            self.records[name] = slot - 1
            return True


@dataclass
class Recorder:
    """The publisher seam: records task ids; raises for the entries told to fail."""

    sent: list[tuple[str, str]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def __call__(self, entry: Entry, task_id: str) -> None:
        if entry.name in self.failing:
            raise ConnectionError("SQS unreachable")
        self.sent.append((entry.name, task_id))


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    app: Celery
    state: MemoryState
    publisher: Recorder
    clock: Clock
    catchup: int = 900

    def beat(self) -> Beat:
        return Beat(entries_of(self.app), self.state, self.publisher, self.catchup, self.clock)

    def tick(self, when: float, deadline: float | None = None) -> TickReport:
        self.clock.now = when
        return self.beat().tick(deadline)

    def run(self, start: str, end: str) -> list[Pair]:
        """Tick every minute at :02 from ``start`` to ``end`` (inclusive); what was published."""
        published: list[Pair] = []
        when = at(start)
        while when <= at(end):
            report = self.tick(when)
            assert not report.failed, report
            published += [(f.entry, iso(f.slot)) for f in report.fired]
            when += 60
        return published

    def sent_pairs(self, candidates: Iterable[Pair]) -> list[Pair]:
        """The published task ids, as the (entry, slot) pairs they were derived from."""
        by_id = {slot_task_id(name, at(slot)): (name, slot) for name, slot in candidates}
        return [by_id.get(task_id, (name, task_id)) for name, task_id in self.publisher.sent]


def make_app(timezone: str, **entries: dict[str, Any]) -> Celery:
    app = Celery("beat-test", set_as_current=False)
    app.conf.timezone = timezone
    app.conf.beat_schedule = {name: {"task": "tasks.add", **e} for name, e in entries.items()}
    return app


def rig(timezone: str = "UTC", catchup: int = 900, **entries: Any) -> Rig:
    specs = {name: e if isinstance(e, dict) else {"schedule": e} for name, e in entries.items()}
    return Rig(make_app(timezone, **specs), MemoryState(), Recorder(), Clock(), catchup)


def utc(*times: str) -> list[str]:
    return [datetime.fromisoformat(t).astimezone(UTC).isoformat() for t in times]


# ---------------------------------------------------------------- minutes and hours


def test_interval_every_minute_fires_each_minute_once() -> None:
    r = rig(minutely=60)

    published = r.run("2026-05-04T09:58:02Z", "2026-05-04T10:02:02Z")

    expected = utc(*(f"2026-05-04T{t}Z" for t in ("09:58", "09:59", "10:00", "10:01", "10:02")))
    assert published == [("minutely", slot) for slot in expected]
    assert r.sent_pairs(published) == published


def test_interval_slots_are_multiples_of_run_every_since_the_epoch() -> None:
    r = rig(quarterly=timedelta(minutes=15), odd=timedelta(seconds=89.5))

    published = r.run("2026-05-04T10:07:02Z", "2026-05-04T11:00:02Z")

    # Never fired at 10:07: its current slot (10:00) is seven minutes old, so it starts at 10:15.
    quarterly = [s for e, s in published if e == "quarterly"]
    assert quarterly == utc(*(f"2026-05-04T{t}Z" for t in ("10:15", "10:30", "10:45", "11:00")))
    odd = [at(s) for e, s in published if e == "odd"]
    assert all(slot % 90 == 0 for slot in odd)  # 89.5 s rounds up to whole seconds
    assert odd == list(range(odd[0], odd[-1] + 1, 90))


def test_crontab_across_an_hour_and_a_day_boundary() -> None:
    r = rig(five=crontab(minute="*/5"), midnight=crontab(minute=0, hour=0))
    r.state.records["midnight"] = at("2026-05-03T00:00Z")

    published = r.run("2026-05-03T23:50:02Z", "2026-05-04T00:10:02Z")

    # 23:50:02 is the first tick: "five" never fired and starts with its current slot.
    assert published == [
        ("five", utc("2026-05-03T23:50Z")[0]),
        ("five", utc("2026-05-03T23:55Z")[0]),
        ("five", utc("2026-05-04T00:00Z")[0]),
        ("midnight", utc("2026-05-04T00:00Z")[0]),
        ("five", utc("2026-05-04T00:05Z")[0]),
        ("five", utc("2026-05-04T00:10Z")[0]),
    ]


def test_never_fired_crontab_waits_for_its_next_slot_without_backfill() -> None:
    r = rig(daily=crontab(hour=3, minute=0))

    assert r.run("2026-05-04T10:00:02Z", "2026-05-04T10:05:02Z") == []
    assert r.state.records == {}


# ---------------------------------------------------------------- DST


def stock_beat_minutes(app: Celery, s: BaseSchedule, last: int, ticks: Iterable[int]) -> list[str]:
    """The ticks at which stock ``celery beat`` finds the entry due (is_due, last_run_at = now)."""
    pinned = copy.copy(s)
    pinned.app = app
    moment = [datetime.fromtimestamp(last, UTC)]
    pinned.nowfun = lambda: moment[0]
    last_run = moment[0]
    due_at = []
    for tick in ticks:
        moment[0] = datetime.fromtimestamp(tick, UTC)
        if pinned.is_due(last_run)[0]:
            due_at.append(iso(tick))
            last_run = moment[0]
    return due_at


def fire_ticks(published: Sequence[Pair]) -> list[str]:
    """The tick (every minute at :02) at which each published slot went out: the first after it."""
    return [iso(at(slot) + (2 - at(slot)) % 60) for _, slot in published]


def test_berlin_spring_forward_fires_the_missing_0230_once_at_0330_cest() -> None:
    r = rig("Europe/Berlin", daily=crontab(hour=2, minute=30), hourly=crontab(minute=0))
    r.state.records.update(daily=at("2026-03-28T02:30+01:00"), hourly=at("2026-03-29T00:00+01:00"))

    published = r.run("2026-03-29T00:30:02+01:00", "2026-03-29T05:00:02+02:00")

    assert [s for e, s in published if e == "daily"] == utc("2026-03-29T03:30+02:00")
    # 02:00 CET does not exist: the hour after 01:00 CET is 03:00 CEST, one real hour later.
    assert [s for e, s in published if e == "hourly"] == utc(
        "2026-03-29T01:00+01:00",
        "2026-03-29T03:00+02:00",
        "2026-03-29T04:00+02:00",
        "2026-03-29T05:00+02:00",
    )


def test_berlin_fall_back_hourly_fires_each_wall_clock_hour_once() -> None:
    r = rig("Europe/Berlin", hourly=crontab(minute=0), every_20=timedelta(minutes=20))
    r.state.records.update(
        hourly=at("2026-10-25T01:00+02:00"), every_20=at("2026-10-25T01:00+02:00")
    )

    published = r.run("2026-10-25T01:00:02+02:00", "2026-10-25T04:00:02+01:00")

    # Celery's crontab fires 02:00 once, at its first occurrence (CEST): the repeated hour
    # (02:00 CET) fires nothing, like cron for fixed times.
    assert [s for e, s in published if e == "hourly"] == utc(
        "2026-10-25T02:00+02:00", "2026-10-25T03:00+01:00", "2026-10-25T04:00+01:00"
    )
    # An interval counts real time: 20 minutes apart straight through the repeated hour.
    every_20 = [at(s) for e, s in published if e == "every_20"]
    assert len(every_20) == 12
    assert {b - a for a, b in zip(every_20, every_20[1:], strict=False)} == {1200}


@pytest.mark.parametrize(
    ("timezone", "cron", "last", "start", "end", "expected"),
    [
        (
            "America/New_York",
            crontab(hour=2, minute=30),
            "2026-03-07T02:30-05:00",
            "2026-03-08T00:00:02-05:00",
            "2026-03-09T03:00:02-04:00",
            ["2026-03-08T03:30-04:00", "2026-03-09T02:30-04:00"],
        ),
        (
            "America/New_York",
            crontab(hour=1, minute=30),
            "2026-10-31T01:30-04:00",
            "2026-11-01T00:00:02-04:00",
            "2026-11-01T03:00:02-05:00",
            ["2026-11-01T01:30-04:00"],
        ),
        (
            "Europe/Berlin",
            crontab(minute="*/20"),
            "2026-10-25T02:00+02:00",
            "2026-10-25T02:00:02+02:00",
            "2026-10-25T03:40:02+01:00",
            [
                "2026-10-25T02:20+02:00",
                "2026-10-25T02:40+02:00",
                "2026-10-25T03:00+01:00",
                "2026-10-25T03:20+01:00",
                "2026-10-25T03:40+01:00",
            ],
        ),
    ],
    ids=["new-york-spring-forward", "new-york-fall-back", "berlin-fall-back-every-20"],
)
def test_dst_slots_match_stock_beat(
    timezone: str,
    cron: crontab,
    last: str,
    start: str,
    end: str,
    expected: list[str],
) -> None:
    r = rig(timezone, entry=cron)
    r.state.records["entry"] = at(last)
    ticks = range(at(start), at(end) + 1, 60)

    published = r.run(start, end)

    assert published == [("entry", slot) for slot in utc(*expected)]
    # The same minutes in which stock `celery beat` would have found the entry due.
    schedule_ = r.app.conf.beat_schedule["entry"]["schedule"]
    assert fire_ticks(published) == stock_beat_minutes(r.app, schedule_, at(last), ticks)


def test_solar_event_fires_once_a_day_in_the_minutes_stock_beat_would() -> None:
    pytest.importorskip("ephem")
    r = rig("Europe/Berlin", sunrise=solar("sunrise", 52.52, 13.405))
    sunrise = r.app.conf.beat_schedule["sunrise"]["schedule"]
    last = at("2026-06-01T05:00+02:00")  # after that day's sunrise
    r.state.records["sunrise"] = last
    start, end = "2026-06-01T12:00:02Z", "2026-06-03T12:00:02Z"

    published = r.run(start, end)

    # ephem's times (no refraction: Celery sets pressure 0), to the second.
    assert published == [
        ("sunrise", slot) for slot in utc("2026-06-02T04:48:52+02:00", "2026-06-03T04:48:05+02:00")
    ]
    ticks = range(at(start), at(end) + 1, 60)
    assert fire_ticks(published) == stock_beat_minutes(r.app, sunrise, last, ticks)


# ---------------------------------------------------------------- exactly once


def test_retried_tick_publishes_nothing_new() -> None:
    r = rig(minutely=60, five=crontab(minute="*/5"))
    first = r.tick(at("2026-05-04T10:00:02Z"))

    again = r.tick(at("2026-05-04T10:00:41Z"))

    assert {(f.entry, iso(f.slot)) for f in first.fired} == {
        ("minutely", utc("2026-05-04T10:00Z")[0]),
        ("five", utc("2026-05-04T10:00Z")[0]),
    }
    assert again.fired == () and again.failed == ()
    assert len(r.publisher.sent) == 2


def test_overlapping_ticks_publish_each_slot_once() -> None:
    r = rig(**{f"e{i}": 60 for i in range(20)})
    r.state.records.update({f"e{i}": at("2026-05-04T09:50Z") for i in range(20)})
    barrier = threading.Barrier(2)
    reports: list[TickReport] = []

    def tick() -> None:
        barrier.wait()
        reports.append(r.beat().tick())

    r.clock.now = at("2026-05-04T10:00:02Z")
    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    fired = [(f.entry, f.slot) for report in reports for f in report.fired]
    minutes = range(at("2026-05-04T09:51Z"), at("2026-05-04T10:00Z") + 1, 60)
    assert sorted(fired) == sorted((f"e{i}", slot) for i in range(20) for slot in minutes)
    assert len(r.publisher.sent) == len(set(r.publisher.sent)) == 200


def test_a_tick_refused_a_slot_carries_on_after_the_recorded_one() -> None:
    r = rig(minutely=60)
    r.state.records["minutely"] = at("2026-05-04T09:57Z")
    beat = r.beat()
    r.clock.now = at("2026-05-04T10:00:02Z")
    # Another tick recorded up to 09:59 after this one read 09:57.
    stale = r.state.last_slots(["minutely"])
    r.state.records["minutely"] = at("2026-05-04T09:59Z")
    r.state.last_slots = lambda names: stale  # type: ignore[method-assign]

    report = beat.tick()

    assert [iso(f.slot) for f in report.fired] == utc("2026-05-04T10:00Z")


# ---------------------------------------------------------------- catch-up


def test_missed_ticks_catch_up_within_the_window_and_skip_older_slots() -> None:
    r = rig(catchup=900, minutely=crontab())
    r.state.records["minutely"] = at("2026-05-04T10:00Z")

    report = r.tick(at("2026-05-04T10:20:02Z"))

    assert [iso(f.slot) for f in report.fired] == utc(
        *(f"2026-05-04T10:{m:02d}Z" for m in range(6, 21))
    )
    (skipped,) = report.skipped
    assert (skipped.entry, skipped.count) == ("minutely", 5)
    assert (iso(skipped.first or 0), iso(skipped.through or 0)) == (
        utc("2026-05-04T10:01Z")[0],
        utc("2026-05-04T10:05Z")[0],
    )
    assert r.tick(at("2026-05-04T10:21:02Z")).skipped == ()


def test_skipped_slots_with_nothing_due_are_settled_and_reported_once() -> None:
    r = rig(catchup=900, daily=crontab(hour=3, minute=0))
    r.state.records["daily"] = at("2026-05-02T03:00Z")

    first = r.tick(at("2026-05-04T12:00:02Z"))
    second = r.tick(at("2026-05-04T12:01:02Z"))

    assert first.fired == () and [(s.count, s.first) for s in first.skipped] == [
        (2, at("2026-05-03T03:00Z"))
    ]
    assert r.state.records["daily"] == at("2026-05-04T03:00Z")
    assert second.skipped == () and second.fired == ()
    assert [iso(f.slot) for f in r.tick(at("2026-05-05T03:00:02Z")).fired] == utc(
        "2026-05-05T03:00Z"
    )


def test_no_catch_up_still_fires_the_current_slot() -> None:
    r = rig(catchup=0, minutely=60)
    r.state.records["minutely"] = at("2026-05-04T09:00Z")

    report = r.tick(at("2026-05-04T10:00:02Z"))

    assert [iso(f.slot) for f in report.fired] == utc("2026-05-04T10:00Z")
    assert report.skipped[0].count == 59


def test_a_schedule_far_behind_counts_skips_up_to_a_bound() -> None:
    r = rig(every_second=1)
    r.state.records["every_second"] = at("2026-01-01T00:00Z")

    report = r.tick(at("2026-05-04T10:00:00Z"))

    assert report.skipped[0].count == MAX_SKIP_SCAN
    assert len(report.fired) == 900 + 1  # the window, both ends included


# ---------------------------------------------------------------- failures


def test_failed_publish_gives_the_slot_back_and_the_next_tick_retries_it() -> None:
    r = rig(broken=60, healthy=60)
    r.state.records.update(broken=at("2026-05-04T09:58Z"), healthy=at("2026-05-04T09:58Z"))
    r.publisher.failing.add("broken")

    failing = r.tick(at("2026-05-04T10:00:02Z"))

    (failure,) = failing.failed
    assert (failure.entry, iso(failure.slot or 0), failure.released) == (
        "broken",
        utc("2026-05-04T09:59Z")[0],
        True,
    )
    assert "ConnectionError" in failure.error
    assert [f.entry for f in failing.fired] == ["healthy", "healthy"]  # other entries go on
    assert r.state.records["broken"] == at("2026-05-04T09:59Z") - 1

    r.publisher.failing.clear()
    retried = r.tick(at("2026-05-04T10:01:02Z"))

    assert [(f.entry, iso(f.slot)) for f in retried.fired if f.entry == "broken"] == [
        ("broken", slot)
        for slot in utc("2026-05-04T09:59Z", "2026-05-04T10:00Z", "2026-05-04T10:01Z")
    ]


def test_first_slot_that_fails_is_retried_not_forgotten() -> None:
    r = rig(minutely=60)
    r.publisher.failing.add("minutely")
    assert r.tick(at("2026-05-04T10:00:02Z")).failed[0].released

    r.publisher.failing.clear()
    retried = r.tick(at("2026-05-04T10:03:02Z"))

    assert [iso(f.slot) for f in retried.fired] == utc(*(f"2026-05-04T10:0{m}Z" for m in range(4)))


def test_give_back_that_fails_reports_the_slot_lost() -> None:
    r = rig(minutely=60)
    r.publisher.failing.add("minutely")
    r.state.fail_releases = True

    (failure,) = r.tick(at("2026-05-04T10:00:02Z")).failed

    assert failure.released is False
    assert r.state.records["minutely"] == at("2026-05-04T10:00Z")


def test_store_failure_on_claim_is_reported_per_entry() -> None:
    r = rig(minutely=60)
    r.state.fail_claims = True

    report = r.tick(at("2026-05-04T10:00:02Z"))

    assert report.fired == () and "unreachable" in report.failed[0].error
    assert r.publisher.sent == []


def test_deadline_defers_the_rest_to_the_next_tick() -> None:
    r = rig(minutely=60)
    r.state.records["minutely"] = at("2026-05-04T09:55Z")

    late = r.tick(at("2026-05-04T10:00:02Z"), deadline=at("2026-05-04T10:00:00Z"))
    on_time = r.tick(at("2026-05-04T10:01:02Z"))

    assert late.fired == () and len(late.deferred[0].slots) == 5
    assert len(on_time.fired) == 6


def test_schedule_that_never_advances_fails_alone() -> None:
    class Overdue(BaseSchedule):  # type: ignore[misc]
        """Always due since a while: no time after any slot."""

        def remaining_estimate(self, last_run_at: datetime) -> timedelta:
            return timedelta(seconds=-5)

    r = rig(stuck=Overdue(), minutely=60)
    r.state.records["stuck"] = at("2026-05-04T09:00Z")

    report = r.tick(at("2026-05-04T10:00:02Z"))

    assert [f.entry for f in report.failed] == ["stuck"]
    assert [f.entry for f in report.fired] == ["minutely"]


# ---------------------------------------------------------------- entries and slots


def test_entries_read_like_celery_beat() -> None:
    app = make_app(
        "Europe/Berlin",
        seconds={"schedule": 30.0, "args": [2, 2], "kwargs": {"x": 1}, "options": {"queue": "q"}},
        delta={"schedule": timedelta(hours=1)},
        cron={"schedule": crontab(minute=0)},
    )

    entries = {e.name: e for e in entries_of(app)}

    assert type(entries["seconds"].schedule) is schedule
    assert entries["seconds"].schedule.run_every == timedelta(seconds=30)
    assert (entries["seconds"].args, dict(entries["seconds"].kwargs)) == ((2, 2), {"x": 1})
    assert dict(entries["seconds"].options) == {"queue": "q"}
    assert entries["cron"].schedule.tz.key == "Europe/Berlin"
    assert entries["delta"].task == "tasks.add"


def test_entry_without_a_schedule_is_refused() -> None:
    app = Celery("beat-test", set_as_current=False)
    app.conf.beat_schedule = {"broken": {"task": "tasks.add"}}

    with pytest.raises(ConfigurationError, match="broken"):
        entries_of(app)


def test_slot_task_ids_are_stable_and_distinct() -> None:
    assert slot_task_id("a", 60) == slot_task_id("a", 60)
    assert len({slot_task_id("a", 60), slot_task_id("a", 120), slot_task_id("b", 60)}) == 3


def test_plan_of_a_new_entry_is_its_current_slot_only() -> None:
    app = make_app("UTC", e={"schedule": 10})
    (entry,) = entries_of(app)
    now = at("2026-05-04T10:00:35Z")

    assert plan(entry.schedule, None, now, 900).due == (at("2026-05-04T10:00:30Z"),)
    assert CURRENT_SLOT_SECONDS == 60


def test_operators_rows_show_route_schedule_and_next_slots() -> None:
    from devtools.ops.schedule import rows

    app = make_app(
        "Europe/Berlin",
        nightly={"schedule": crontab(hour=2, minute=30), "task": "tasks.upload_files"},
        routed={"schedule": 300, "options": {"queue": "high-priority"}},
    )
    app.conf.task_routes = {"tasks.upload_files": {"queue": "low-priority"}}
    entries = entries_of(app)
    now = at("2026-03-28T12:00Z")

    nightly, routed = rows(app, entries, now, {"routed": at("2026-03-28T11:55Z")}, count=2)

    assert (nightly.schedule, nightly.queue, nightly.last_slot) == (
        "crontab 30 2 * * *",
        "low-priority",
        None,
    )
    assert nightly.next_slots == (at("2026-03-29T03:30+02:00"), at("2026-03-30T02:30+02:00"))
    assert (routed.schedule, routed.queue) == ("every 5.00 minutes", "high-priority")
    assert routed.next_slots == (at("2026-03-28T12:05Z"), at("2026-03-28T12:10Z"))
