"""``celery -A tasks lambda schedule``: the app's ``beat_schedule`` as the scheduled tick sees it.

One row per entry: its schedule, task, the queue its tasks are routed to, the next slots (in the
app's timezone) and the last slot the tick fired, read from the results table when it answers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any

from celery.schedules import BaseSchedule, crontab, schedule, solar
from rich.console import Console
from rich.table import Table

from devtools.cloud.emulator import reachable
from devtools.ops.target import NO_ENVIRONMENT
from infra.beat.engine import Entry, entries_of, slot_task_id
from infra.beat.slots import slots_after
from infra.beat.state import DynamoDBBeatState
from infra.core import aws
from infra.core.errors import StoreError
from infra.core.settings import Settings

__all__ = ["Row", "describe", "last_slots", "render", "rows", "schedule_main"]


@dataclass(frozen=True, slots=True)
class Row:
    """One entry of the schedule."""

    entry: str
    task: str
    schedule: str
    queue: str
    next_slots: tuple[int, ...]
    last_slot: int | None


def describe(s: BaseSchedule) -> str:
    """A schedule in a few words (its cron fields, its interval, its solar event)."""
    if isinstance(s, crontab):
        fields = (s._orig_minute, s._orig_hour, s._orig_day_of_month, s._orig_month_of_year)
        return "crontab " + " ".join(str(f) for f in (*fields, s._orig_day_of_week))
    if type(s) is schedule:
        return f"every {s.human_seconds}"
    if isinstance(s, solar):
        return f"{s.event} at {s.lat}, {s.lon}"
    return repr(s)


def _queue(app: Any, entry: Entry) -> str:
    """The queue the entry's tasks go to, as the app's router decides at publish."""
    route = app.amqp.router.route(dict(entry.options), entry.task, entry.args, dict(entry.kwargs))
    queue = route.get("queue")
    return str(getattr(queue, "name", queue))


def rows(
    app: Any, entries: Sequence[Entry], now: float, last: Mapping[str, int], count: int = 3
) -> list[Row]:
    """The rows of the table: the next ``count`` slots after ``now`` of every entry."""
    return [
        Row(
            entry=entry.name,
            task=entry.task,
            schedule=describe(entry.schedule),
            queue=_queue(app, entry),
            next_slots=tuple(islice(slots_after(entry.schedule, math.floor(now)), count)),
            last_slot=last.get(entry.name),
        )
        for entry in entries
    ]


def last_slots(settings: Settings, names: Sequence[str]) -> tuple[dict[str, int], str | None]:
    """The recorded slots, or none and the one line that says why they could not be read."""
    if not settings.queue_urls and not settings.endpoint_url:
        return {}, NO_ENVIRONMENT  # no deployment named: not botocore's "no credentials"
    if settings.endpoint_url and not reachable(settings.endpoint_url):
        return {}, f"nothing answers at AWS_ENDPOINT_URL={settings.endpoint_url}"
    store = DynamoDBBeatState(aws.client("dynamodb", settings), settings.results_table)
    try:
        return store.last_slots(names), None
    except StoreError as exc:
        return {}, str(exc).splitlines()[0]


def render(table_rows: Sequence[Row], app: Any, known: bool) -> Table:
    """The rows as a rich table, times in the app's timezone."""

    def local(slot: int) -> str:
        return datetime.fromtimestamp(slot, app.timezone).strftime("%Y-%m-%d %H:%M:%S %Z")

    table = Table(title=f"beat_schedule of {app.main} ({app.timezone})")
    for column in ("entry", "schedule", "task", "queue", "next runs", "last fired"):
        table.add_column(column, overflow="fold")
    for row in table_rows:
        if row.last_slot is not None:
            last = f"{local(row.last_slot)}\n{slot_task_id(row.entry, row.last_slot)}"
        else:
            last = "never" if known else "?"
        next_runs = "\n".join(local(slot) for slot in row.next_slots)
        table.add_row(row.entry, row.schedule, row.task, row.queue, next_runs, last)
    return table


def schedule_main(app: Any, count: int = 3, console: Console | None = None) -> None:
    """Print the table; a store that cannot be read is one line, not a failure.

    Raises:
        ConfigurationError: an entry of ``beat_schedule`` names no task or schedule.
    """
    console = console or Console()
    entries = entries_of(app)
    if not entries:
        console.print(f"{app.main} has no beat_schedule entries")
        return
    settings = Settings.from_env()
    last, problem = last_slots(settings, [entry.name for entry in entries])
    table_rows = rows(app, entries, time.time(), last, count)
    console.print(render(table_rows, app, known=problem is None))
    if problem:
        console.print(f"[yellow]last fired slots unavailable:[/] {problem}")
