"""Celery beat without a beat server: the engine of the scheduled tick.

An EventBridge schedule invokes ``handlers.beat`` once a minute. A tick reads the last fired
slot of every ``beat_schedule`` entry, works out which slots came due since
(:mod:`infra.beat.slots`, Celery's own schedule classes in ``app.timezone``), and for each one
first *claims* the slot in the state store, then *publishes* the entry with ``apply_async``.
Store, publisher and clock are seams, so this module does no I/O of its own.

Exactly once per (entry, slot):

- **Overlapping or retried ticks.** The claim is a conditional write (``last_slot < slot``):
  of two ticks that want the same slot one wins, the other learns the slot already recorded and
  carries on after it. A retried tick finds its slots recorded and publishes nothing.
- **Claim, then publish.** A publish that fails gives the slot back (the record returns to the
  second before the slot, only while it still names that slot), so the next tick retries it:
  a slot is not lost to a broken publish, and the failure is reported. What this order gives up:
  a tick that dies between claim and publish, or whose give-back fails too, loses that slot
  (at most once, never twice). The reverse order would publish twice instead.
- **Published twice anyway?** A publish can fail after SQS accepted it (a timeout); the retry
  then sends the slot again. Its task id is derived from (entry, slot), so both consumers' claims
  (keyed on the task id) run it once and FIFO queues drop the copy.

Catch-up: a tick publishes every slot since the last one fired that is at most
``CELERY_LAMBDA_BEAT_CATCHUP`` seconds old (beyond the current minute), in order, and skips and
reports older ones once, as beat does after downtime. An entry that never fired starts with its
current slot; its history is not backfilled.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

from celery.schedules import BaseSchedule, maybe_schedule

from infra.beat.report import Deferred, Failed, Fired, Skipped, TickReport
from infra.beat.slots import plan
from infra.core.errors import ConfigurationError, StoreError

__all__ = [
    "Beat",
    "BeatState",
    "Claim",
    "Entry",
    "Publisher",
    "entries_of",
    "slot_task_id",
]

TASK_ID_NAMESPACE: Final = uuid.UUID("4f1c2b1e-9a51-4d36-8a43-6f0c8e3c1b7a")
"""uuid5 namespace of the task ids of scheduled slots."""


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, eq=False)
class Entry:
    """One ``beat_schedule`` entry, its schedule bound to the app (and so to its timezone)."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=_empty)
    options: Mapping[str, Any] = field(default_factory=_empty)


def entries_of(app: Any) -> tuple[Entry, ...]:
    """The app's ``beat_schedule`` as entries, read the way ``celery beat`` reads it.

    Raises:
        ConfigurationError: an entry names no task or no schedule.
    """
    entries = []
    for name, spec in dict(app.conf.beat_schedule or {}).items():
        if not spec.get("task") or spec.get("schedule") is None:
            raise ConfigurationError(f"beat_schedule entry {name!r} needs a task and a schedule")
        entries.append(
            Entry(
                name=name,
                task=spec["task"],
                schedule=maybe_schedule(spec["schedule"], spec.get("relative", False), app=app),
                args=tuple(spec.get("args") or ()),
                kwargs=MappingProxyType(dict(spec.get("kwargs") or {})),
                options=MappingProxyType(dict(spec.get("options") or {})),
            )
        )
    return tuple(entries)


def slot_task_id(entry_name: str, slot: int) -> str:
    """The task id of an entry's slot: the same on every tick that publishes it."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{entry_name}@{slot}"))


# ---------------------------------------------------------------- seams


@dataclass(frozen=True, slots=True)
class Claim:
    """Outcome of claiming a slot: won, or refused because ``recorded`` (>= the slot) is."""

    won: bool
    recorded: int | None = None


class BeatState(Protocol):
    """Where the last fired slot of each entry is kept (:mod:`infra.beat.state`)."""

    def last_slots(self, names: Sequence[str]) -> Mapping[str, int]:
        """The recorded slot of each named entry that has one."""
        ...

    def claim(self, name: str, slot: int) -> Claim:
        """Record ``slot`` unless this or a later slot is recorded."""
        ...

    def release(self, name: str, slot: int) -> bool:
        """Give ``slot`` back (record the second before it) if it is still the recorded one."""
        ...


class Publisher(Protocol):
    """Publishes an entry as a task with the given id (``apply_async``)."""

    def __call__(self, entry: Entry, task_id: str) -> None: ...


# ---------------------------------------------------------------- engine


@dataclass(frozen=True, slots=True)
class Beat:
    """Evaluates the entries at the clock's time and publishes what came due, once each."""

    entries: tuple[Entry, ...]
    state: BeatState
    publish: Publisher
    catchup_seconds: int
    clock: Callable[[], float] = time.time

    def tick(self, deadline: float | None = None) -> TickReport:
        """One tick; no new slot is started once the clock passes ``deadline``.

        Raises:
            StoreError: the recorded slots could not be read (nothing was published).
        """
        now = self.clock()
        recorded = self.state.last_slots([entry.name for entry in self.entries])
        report = TickReport(now)
        for entry in self.entries:
            report += self._entry(entry, recorded.get(entry.name), now, deadline)
        return report

    def _entry(
        self, entry: Entry, last: int | None, now: float, deadline: float | None
    ) -> TickReport:
        try:
            todo = plan(entry.schedule, last, now, self.catchup_seconds)
            if todo.settled is not None:
                self.state.claim(entry.name, todo.settled)
        except (ConfigurationError, StoreError) as exc:
            return TickReport(now, failed=(Failed(entry.name, None, str(exc)),))
        skipped = (
            (Skipped(entry.name, todo.skipped, todo.first_skipped, todo.skipped_through),)
            if todo.skipped
            else ()
        )
        return TickReport(now, skipped=skipped) + self._fire(entry, todo.due, last, now, deadline)

    def _fire(
        self,
        entry: Entry,
        due: tuple[int, ...],
        last: int | None,
        now: float,
        deadline: float | None,
    ) -> TickReport:
        """Claim and publish each due slot in order; stop at the first failure."""
        fired: list[Fired] = []
        for index, slot in enumerate(due):
            if last is not None and slot <= last:
                continue  # another tick recorded it (or a later one) meanwhile
            if deadline is not None and self.clock() >= deadline:
                return TickReport(now, tuple(fired), deferred=(Deferred(entry.name, due[index:]),))
            try:
                claim = self.state.claim(entry.name, slot)
            except StoreError as exc:
                return TickReport(now, tuple(fired), failed=(Failed(entry.name, slot, str(exc)),))
            if not claim.won:
                last = claim.recorded if claim.recorded is not None else slot
                continue
            task_id = slot_task_id(entry.name, slot)
            try:
                self.publish(entry, task_id)
            except Exception as exc:  # whatever broke the publish, the slot must be given back
                failure = Failed(
                    entry.name,
                    slot,
                    f"{type(exc).__name__}: {exc}",
                    self._give_back(entry.name, slot),
                )
                return TickReport(now, tuple(fired), failed=(failure,))
            fired.append(Fired(entry.name, slot, task_id))
            last = slot
        return TickReport(now, tuple(fired))

    def _give_back(self, name: str, slot: int) -> bool:
        """Release a claimed slot after a failed publish; False if it is lost."""
        try:
            return self.state.release(name, slot)
        except StoreError:
            return False
