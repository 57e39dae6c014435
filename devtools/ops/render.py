"""How the operator's commands look to a human: rich tables and trees, built from plain values.

Pure: every function takes what a command found and returns a renderable, so the commands only
choose between this and ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

if TYPE_CHECKING:  # annotations only: `lambda dlq` should not import what `lambda stats` needs
    from devtools.ops.detail import TaskDetail, TaskNode
    from devtools.ops.dlq import DeadLetter
    from devtools.ops.queues import QueueDepth
    from devtools.ops.stats import Stats
    from devtools.ops.tasks import TaskRow

__all__ = [
    "age",
    "dead_letter_panel",
    "dead_letters_table",
    "queues_table",
    "stats_tables",
    "task_panel",
    "task_tree",
    "tasks_table",
]

STATE_STYLES = {
    "SUCCESS": "green",
    "FAILURE": "red",
    "REVOKED": "magenta",
    "RETRY": "yellow",
    "STARTED": "cyan",
    "PROGRESS": "cyan",
}


def age(seconds: float | None) -> str:
    """``"3d4h"``, ``"12m5s"``, ``"40s"``; n/a when unknown."""
    if seconds is None:
        return "n/a"
    left, parts = int(seconds), list[str]()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts[:2])


def _when(epoch: float | None) -> str:
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _state(state: str | None) -> Text:
    return Text(state or "?", style=STATE_STYLES.get(state or "", ""))


def queues_table(depths: Sequence[QueueDepth], age_source: str) -> Table:
    table = Table(title="queues", caption=f"age of the oldest message: {age_source}")
    for column in ("queue", "visible", "in flight", "delayed", "oldest"):
        table.add_column(column, justify="left" if column == "queue" else "right")
    for depth in depths:
        style = "red" if depth.name.endswith("(dlq)") and depth.visible else ""
        table.add_row(
            depth.name,
            str(depth.visible),
            str(depth.in_flight),
            str(depth.delayed),
            age(depth.oldest_age),
            style=style,
        )
    return table


def tasks_table(rows: Sequence[TaskRow]) -> Table:
    table = Table(title="tasks, newest first")
    for column in ("updated", "task id", "task", "state", "queue", "retries", "consumer"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            _when(row.updated_at),
            Text(row.task_id),
            Text(row.task_name or ""),
            _state(row.state),
            Text(row.queue or ""),
            str(row.retries),
            Text(row.consumer or ""),
        )
    return table


def _task_fields(detail: TaskDetail, parent: TaskRow | None) -> list[tuple[str, str | Text]]:
    """The fields of a task that have a value, in reading order."""
    row = detail.row
    claim = detail.claim_owner and f"{detail.claim_owner} until {_when(detail.lease_until)}"
    family = parent and f"{parent.task_id} ({parent.task_name}, {parent.state})"
    fields: list[tuple[str, str | Text | None]] = [
        ("task", row.task_name),
        ("state", _state(row.state)),
        ("queue", row.queue),
        ("retries", str(row.retries)),
        ("consumer", row.consumer),
        ("done at", row.date_done),
        ("last written", _when(row.updated_at)),
        ("claimed by", claim),
        ("expires", _when(detail.expires_at)),
        ("parent", family or row.parent_id),
        ("root", row.root_id if row.root_id != row.task_id else None),
        ("group", row.group_id),
        ("exception", detail.exception),
        ("result", None if detail.exception else json.dumps(detail.result, default=repr)),
    ]
    # Text, not str: rich reads a str as markup, and names and values come from whoever published.
    return [
        (name, Text(value) if isinstance(value, str) else value) for name, value in fields if value
    ]


def task_panel(detail: TaskDetail, parent: TaskRow | None) -> RenderableType:
    """One task's fields, its result or exception, and its traceback."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column(overflow="fold")
    for name, value in _task_fields(detail, parent):
        fields.add_row(name, value)
    parts: list[RenderableType] = [fields]
    if detail.traceback:
        parts.append(Syntax(detail.traceback, "pytb", word_wrap=True))
    return Panel(Group(*parts), title=f"task {detail.row.task_id}")


def task_tree(node: TaskNode) -> Tree:
    """The workflow below a task: chains, groups and chords as Celery linked them."""
    tree = Tree(_label(node))
    _grow(tree, node)
    return tree


def _label(node: TaskNode) -> Text:
    if node.group:
        return Text(f"group {node.id}", style="bold")
    if node.row is None:
        return Text(f"{node.id} (not in the store)", style="dim")
    label = Text(f"{node.row.task_name} ")
    label.append_text(_state(node.row.state))
    label.append(f"  {node.id}", style="dim")
    return label


def _grow(tree: Tree, node: TaskNode) -> None:
    for child in node.children:
        _grow(tree.add(_label(child)), child)
    if node.truncated:
        tree.add(Text("… more not shown", style="dim"))


def dead_letters_table(letters: Sequence[tuple[str, DeadLetter]]) -> Table:
    """``(queue name, letter)`` pairs as one table; "?" for the task of an undecodable body."""
    table = Table(title="dead-letter queues")
    for column in (
        "queue",
        "message id",
        "task",
        "task id",
        "args",
        "receives",
        "sent",
        "first received",
        "problem",
    ):
        table.add_column(column, overflow="fold")
    for queue, letter in letters:
        task = letter.task
        table.add_row(
            queue,
            letter.message_id,
            Text(task.task_name) if task else Text("?", style="dim"),
            Text(task.task_id) if task else "",
            Text(letter.summary),
            str(letter.receives),
            _when(letter.sent_at.timestamp() if letter.sent_at else None),
            _when(letter.first_received_at.timestamp() if letter.first_received_at else None),
            Text(letter.problem or "", style="red"),
        )
    return table


def dead_letter_panel(letter: DeadLetter) -> RenderableType:
    data = letter.as_json(full=True)
    text = json.dumps(data, indent=2, default=repr)
    return Panel(Syntax(text, "json", word_wrap=True), title=f"message {letter.message_id}")


def stats_tables(stats: Stats) -> RenderableType:
    states = Table(title=f"tasks since {_when(stats.since)} UTC, by state")
    states.add_column("state")
    states.add_column("count", justify="right")
    for state, count in stats.by_state.items():
        states.add_row(_state(state), str(count))
    columns = sorted({state for task in stats.tasks for state in task.states})
    tasks = Table(title="by task", caption=f"durations: {stats.durations}")
    for column in ("task", "queue", *columns, "total", "p50", "p95"):
        tasks.add_column(column, justify="left" if column in ("task", "queue") else "right")
    for task in stats.tasks:
        durations = [f"{v:.0f} ms" if v is not None else "n/a" for v in (task.p50_ms, task.p95_ms)]
        counts = [str(task.states.get(c, 0)) for c in columns]
        tasks.add_row(task.task_name, task.queue, *counts, str(task.total), *durations)
    return Group(states, tasks)
