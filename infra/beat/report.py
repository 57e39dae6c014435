"""What a scheduled tick did, entry by entry: the engine's answer, logged and returned."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["Deferred", "Failed", "Fired", "Skipped", "TickReport", "iso"]


def iso(slot: int) -> str:
    """A slot as an ISO 8601 UTC time."""
    return datetime.fromtimestamp(slot, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Fired:
    """A slot claimed and published, with the task id derived from it."""

    entry: str
    slot: int
    task_id: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """Slots older than the catch-up window, never published."""

    entry: str
    count: int
    first: int | None
    through: int | None


@dataclass(frozen=True, slots=True)
class Failed:
    """A slot that could not be handled; ``released`` tells whether the next tick retries it."""

    entry: str
    slot: int | None
    error: str
    released: bool = False


@dataclass(frozen=True, slots=True)
class Deferred:
    """Due slots left for the next tick because the invocation's deadline came."""

    entry: str
    slots: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TickReport:
    """What a tick did, entry by entry."""

    now: float
    fired: tuple[Fired, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    failed: tuple[Failed, ...] = ()
    deferred: tuple[Deferred, ...] = ()

    def __add__(self, other: TickReport) -> TickReport:
        return TickReport(
            self.now,
            self.fired + other.fired,
            self.skipped + other.skipped,
            self.failed + other.failed,
            self.deferred + other.deferred,
        )

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (the handler's response)."""
        return {
            "now": datetime.fromtimestamp(self.now, UTC).isoformat(),
            "fired": [
                {"entry": f.entry, "slot": iso(f.slot), "task_id": f.task_id} for f in self.fired
            ],
            "skipped": [
                {"entry": s.entry, "count": s.count, "first": s.first and iso(s.first)}
                for s in self.skipped
            ],
            "failed": [
                {"entry": f.entry, "slot": f.slot and iso(f.slot), "error": f.error}
                for f in self.failed
            ],
            "deferred": [{"entry": d.entry, "slots": len(d.slots)} for d in self.deferred],
        }
