"""What each page reads and each action does, on one deployment: calls into :mod:`devtools.ops`.

:class:`Sources` holds the deployment (:class:`~devtools.ops.target.Target`), its clients and the
app (for decoding results and revoking). Each method is what one page needs, built only from the
functions the CLI uses, so a page and its command always agree; none scans the table.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from devtools.dashboard.charts import Bucket, buckets
from devtools.ops.detail import TaskNode, TaskView, build_tree, view_task
from devtools.ops.dlq import DeadLetter, peeked, read_letter
from devtools.ops.queues import (
    OldestAge,
    QueueDepth,
    QueuePair,
    oldest_age_from_cloudwatch,
    queue_depths,
    queue_pairs,
    waiting,
)
from devtools.ops.redrive import RedriveResult, destination, purge, redrive_queue, sources_by_dlq
from devtools.ops.schedule import Row as ScheduleRow
from devtools.ops.schedule import last_slots, rows
from devtools.ops.stats import Stats, durations_from_cloudwatch, store_rows, summarize
from devtools.ops.target import Target
from devtools.ops.tasks import TaskPage, TaskRow, query_page, read_item
from infra.beat.engine import entries_of
from infra.core import aws
from infra.core.errors import ConfigurationError
from infra.store.revoke import revoke

__all__ = ["DeadLetterView", "DlqView", "Overview", "Sources", "TaskPageView"]

DAY: Final = 86400.0
HOUR: Final = 3600.0
CHART_BUCKETS: Final = 24
DLQ_LIMIT: Final = 100
NO_DURATIONS: Final = "n/a on an emulator (TaskDuration is a CloudWatch metric, on AWS only)"
NO_AGE: Final = "n/a on an emulator (ApproximateAgeOfOldestMessage is in CloudWatch on AWS only)"

Item = tuple[TaskRow, Mapping[str, Any], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Overview:
    queues: tuple[QueueDepth, ...]
    age_source: str
    last_hour: Mapping[str, int]
    last_day: Stats
    chart: tuple[Bucket, ...]
    generated_at: float


@dataclass(frozen=True, slots=True)
class TaskPageView:
    """The task page: the task, its meta (args when the app records them) and its workflow."""

    view: TaskView
    meta: Mapping[str, Any]
    workflow: TaskNode
    """The tree from the workflow's root (the task's own tree when it is the root)."""


@dataclass(frozen=True, slots=True)
class DeadLetterView:
    letter: DeadLetter
    stored: TaskRow | None
    """The task as the result store has it, when it has it."""
    reason: str


@dataclass(frozen=True, slots=True)
class DlqView:
    pair: QueuePair
    waiting: int
    letters: tuple[DeadLetterView, ...]


def _unknown_age(queue_name: str) -> float | None:
    """An emulator publishes no SQS metrics: every age is unknown."""
    return None


@dataclass
class Sources:
    """One deployment and the clients the pages read it with."""

    target: Target
    app: Any
    clock: Callable[[], float] = time.time
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = aws.client(service, self.target.settings)
        return self._clients[service]

    @property
    def table(self) -> str:
        return self.target.settings.results_table

    # ------------------------------------------------------------ reads

    def pairs(self) -> list[QueuePair]:
        return queue_pairs(self.client("sqs"), self.target.settings)

    def overview(self) -> Overview:
        """Queues, counts by state over the last hour and day, the chart, durations on AWS."""
        now = self.clock()
        age: OldestAge = _unknown_age
        age_source, durations, source = NO_AGE, None, NO_DURATIONS
        if self.target.on_aws:
            end = datetime.fromtimestamp(now, UTC)
            cloudwatch = self.client("cloudwatch")
            age = oldest_age_from_cloudwatch(cloudwatch, lambda: datetime.now(UTC))
            durations = durations_from_cloudwatch(cloudwatch, end - timedelta(days=1), end)
            age_source = "CloudWatch ApproximateAgeOfOldestMessage, latest minute"
            source = "CloudWatch TaskDuration p50/p95 over the last day"
        depths = queue_depths(self.client("sqs"), self.pairs(), age)
        day = store_rows(self.client("dynamodb"), self.table, now - DAY)
        hour = Counter(row.state for row in day if row.updated_at >= now - HOUR)
        chart = buckets(day, now - DAY, now, CHART_BUCKETS)
        stats = summarize(day, now - DAY, durations, source)
        return Overview(tuple(depths), age_source, hour, stats, tuple(chart), now)

    def task_page(
        self,
        query: Any,
        *,
        until: float | None,
        queue: str | None,
        id_prefix: str | None,
        cursor: Mapping[str, Any] | None,
    ) -> TaskPage:
        """One page of the list (an exact id is one GetItem; a prefix filters the index)."""
        if id_prefix and cursor is None:
            found = self._read(id_prefix)
            if found is not None:
                return TaskPage((found[0],), None)
        return query_page(
            self.client("dynamodb"),
            self.table,
            query,
            until=until,
            queue=queue,
            id_prefix=id_prefix,
            start_key=cursor,
        )

    def _read(self, task_id: str) -> Item | None:
        return read_item(
            self.client("dynamodb"), self.table, task_id, self.app.backend.decode_result
        )

    def task(self, task_id: str) -> TaskPageView | None:
        """The task page's content; None when the store has no such task."""
        cache: dict[str, Item | None] = {}

        def read(id_: str) -> Item | None:
            if id_ not in cache:
                cache[id_] = self._read(id_)
            return cache[id_]

        view = view_task(task_id, read)
        if view is None:
            return None
        found = read(task_id)
        meta = found[1] if found else {}
        root = view.detail.row.root_id
        workflow = view.tree
        if root and root != task_id:

            def row_and_meta(id_: str) -> tuple[TaskRow, Mapping[str, Any]] | None:
                item = read(id_)
                return None if item is None else (item[0], item[1])

            workflow = build_tree(root, row_and_meta)
        return TaskPageView(view, meta, workflow)

    def dead_letters(self) -> list[DlqView]:
        """Each DLQ and its messages, decoded, looked at without taking them away."""
        sqs, accept = self.client("sqs"), self.app.conf.accept_content
        views = []
        for pair in self.pairs():
            if not pair.dlq_url:
                continue
            count = waiting(sqs, pair.dlq_url)
            letters: list[DeadLetterView] = []
            if count:
                with peeked(sqs, pair.dlq_url, limit=DLQ_LIMIT) as messages:
                    decoded = [read_letter(m, pair.dlq_url, accept) for m in messages]
                letters = [self._explained(letter, pair) for letter in decoded]
            views.append(DlqView(pair, count, tuple(letters)))
        return views

    def _explained(self, letter: DeadLetter, pair: QueuePair) -> DeadLetterView:
        """Why a message is in the DLQ: undecodable, or received too often without finishing."""
        if letter.task is None:
            return DeadLetterView(letter, None, f"cannot be run: {letter.problem}")
        found = self._read(letter.task.task_id)
        limit = f" (maxReceiveCount {pair.max_receive_count})" if pair.max_receive_count else ""
        reason = f"received {letter.receives} times without finishing{limit}"
        if found is not None:
            row, meta = found[0], found[1]
            reason += f"; the result store says {row.state}"
            result = meta.get("result")
            if isinstance(result, BaseException):
                reason += f" ({type(result).__name__}: {result})"
        return DeadLetterView(letter, found[0] if found else None, reason)

    def schedule(self) -> tuple[list[ScheduleRow], str | None]:
        """The app's beat entries, their next slots and last fired slot (or why it is unknown)."""
        entries = entries_of(self.app)
        last, problem = last_slots(self.target.settings, [entry.name for entry in entries])
        return rows(self.app, entries, self.clock(), last), problem

    # ------------------------------------------------------------ actions

    def revoke(self, ids: Sequence[str], reason: str) -> list[str]:
        """``lambda revoke``: markers both consumers check before running.

        Raises:
            ConfigurationError: the app's results table is not the one shown (``--stack`` names
                another deployment than the app's environment): the marker would go elsewhere.
        """
        table = getattr(self.app.backend, "table_name", None)
        if table is not None and table != self.table:
            raise ConfigurationError(
                f"revoke writes to the app's results table {table}, but this dashboard shows "
                f"{self.table}: run it with the app's environment pointing at that deployment"
            )
        return revoke(self.app, ids, reason)

    def _dlq(self, dlq_url: str) -> tuple[QueuePair, list[QueuePair]]:
        pairs = self.pairs()
        for pair in pairs:
            if pair.dlq_url == dlq_url:
                return pair, pairs
        raise LookupError(f"{dlq_url} is not a dead-letter queue of this deployment")

    def redrive(self, dlq_url: str, ids: Sequence[str] | None = None) -> RedriveResult:
        """``lambda dlq redrive``: the DLQ's messages (or ``ids``) back to their queue."""
        _, pairs = self._dlq(dlq_url)
        sources = sources_by_dlq(pairs)

        def where(message: Any) -> str | None:
            return destination(message, dlq_url, sources, self.target.settings)

        selected = set(ids) if ids else None
        return redrive_queue(self.client("sqs"), dlq_url, where, selected=selected)

    def purge(self, dlq_url: str) -> QueuePair:
        """``lambda dlq purge``: every message of the DLQ deleted."""
        pair, _ = self._dlq(dlq_url)
        purge(self.client("sqs"), dlq_url)
        return pair
