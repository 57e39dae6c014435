"""The soak's ledger and its arithmetic.

Every run of a soak task appends one line to an append-only file (``O_APPEND``: one ``write`` of
a short line is never interleaved with another's, and a SIGKILL cannot tear it): the task id,
the consumer that ran it, that consumer's process group (what the soak kills), the pid and the
time. :func:`tally` then compares the ids published with the ledger, the results table and the
dead-letter queue, and gives each task that ran twice its reason from the kills the soak made.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Entry", "Kill", "RunTwice", "Tally", "append", "read", "reason", "tally"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One run of a task's effect."""

    task_id: str
    consumer: str
    group: int
    pid: int
    at: float

    def line(self) -> str:
        """The ledger line, newline included."""
        return f"{self.task_id} {self.consumer} {self.group} {self.pid} {self.at:.6f}\n"

    @classmethod
    def parse(cls, line: str) -> Entry:
        """The entry a ledger line holds.

        Raises:
            ValueError: not a ledger line.
        """
        task_id, consumer, group, pid, at = line.split()
        return cls(task_id, consumer, int(group), int(pid), float(at))


@dataclass(frozen=True, slots=True)
class Kill:
    """A consumer that ended under the soak: its process group, when, and how (``cause``:
    ``SIGKILL`` for the soak's kills, else what the consumer's log said as it exited)."""

    consumer: str
    group: int
    at: float
    cause: str = "SIGKILL"


@dataclass(frozen=True, slots=True)
class RunTwice:
    """A task whose effect ran more than once, and why."""

    task_id: str
    runs: tuple[Entry, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Tally:
    """A soak's outcome: the ids in each class."""

    published: int
    succeeded: int
    lost: tuple[str, ...]
    twice: tuple[RunTwice, ...]
    dlq: tuple[str, ...]
    unrecorded: tuple[str, ...] = ()
    """Ids whose effect ran but that have no SUCCESS and no dead letter: their message left the
    queue without an outcome stored (never expected)."""

    def line(self) -> str:
        """``soak: published N, succeeded S, lost L, ran twice K, dlq D``."""
        return (
            f"soak: published {self.published}, succeeded {self.succeeded}, "
            f"lost {len(self.lost)}, ran twice {len(self.twice)}, dlq {len(self.dlq)}"
        )


def append(path: Path, entry: Entry) -> None:
    """Append ``entry`` with one ``write`` on an ``O_APPEND`` descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, entry.line().encode())
    finally:
        os.close(fd)


def read(path: Path) -> list[Entry]:
    """Every entry of the ledger, in the order written (none when there is no file)."""
    if not path.exists():
        return []
    return [Entry.parse(line) for line in path.read_text().splitlines() if line.strip()]


def reason(runs: Sequence[Entry], kills: Sequence[Kill]) -> str:
    """Why a task's effect ran more than once, from the first run and the kills after it."""
    first, again = runs[0], runs[1:]
    killed = next((k for k in kills if k.group == first.group and k.at >= first.at), None)
    rerun = ", ".join(f"{r.consumer} +{r.at - first.at:.1f}s" for r in again)
    if killed is not None and killed.cause == "SIGKILL":
        return (
            f"killed between effect and record: {first.consumer} SIGKILLed "
            f"{killed.at - first.at:.2f}s after the effect; run again by {rerun} "
            "(the documented at-least-once window)"
        )
    if killed is not None:
        return (
            f"consumer died between effect and record: {first.consumer} exited by itself "
            f"{killed.at - first.at:.2f}s after the effect ({killed.cause}); run again by {rerun}"
        )
    return (
        f"ran again with no kill of {first.consumer} (group {first.group}) after its run: "
        f"by {rerun} (the outcome was not recorded: look for a store error in its log)"
    )


def tally(
    published: Sequence[str],
    entries: Sequence[Entry],
    succeeded: Collection[str],
    dlq: Collection[str],
    kills: Sequence[Kill],
) -> Tally:
    """Published ids against the ledger: lost = in neither the ledger nor a DLQ."""
    runs: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        runs[entry.task_id].append(entry)
    wanted = set(published)
    twice = tuple(
        RunTwice(task_id, tuple(found), reason(found, kills))
        for task_id, found in runs.items()
        if task_id in wanted and len(found) > 1
    )
    dead, done = set(dlq), set(succeeded)
    return Tally(
        published=len(published),
        succeeded=len(wanted & done),
        lost=tuple(i for i in published if i not in runs and i not in dead),
        twice=twice,
        dlq=tuple(i for i in published if i in dead),
        unrecorded=tuple(i for i in published if i in runs and i not in done | dead),
    )
