"""One consumer's side of the differential comparison: the traces it leaves (logs, deliveries,
record failures, the DLQ), a task's outcome as stored with ids replaced by role names, and what
a phase -- every scenario through one consumer -- came to.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.result import AsyncResult

from devtools.cloud.event_source import ConsumeStats
from infra.core import aws
from infra.core.config import QUEUE_VISIBILITY_TIMEOUT
from infra.core.observability import logger as lambda_logger
from tests.sqs_helpers import queue_with_dlq
from tests.workers import outcome_lines

__all__ = [
    "MAX_RECEIVE_COUNT",
    "CapturedLines",
    "Counts",
    "Outcome",
    "Phase",
    "Published",
    "Queues",
    "Side",
    "UseQueues",
    "counts",
    "create_queues",
    "message_key",
    "normalise",
    "outcome",
    "phase",
    "unsettled",
    "without_stored",
]

MAX_RECEIVE_COUNT = 3
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

Outcome = dict[str, Any]


# ---------------------------------------------------------------- what a consumer left behind


@dataclass(frozen=True, slots=True)
class Queues:
    """A queue of the differential test's own and its dead-letter queue."""

    url: str
    arn: str
    dlq_url: str


@dataclass(slots=True)
class Side:
    """One consumer's traces, for the scenarios to observe: logs, deliveries, record failures."""

    name: str
    queues: Queues
    worker_log: Path | None = None
    lambda_lines: list[dict[str, Any]] = field(default_factory=list)
    lambda_deliveries: Counter[str] = field(default_factory=Counter)
    record_failures: Counter[str] = field(default_factory=Counter)

    @property
    def is_worker(self) -> bool:
        return self.name == "worker"

    def worker_logged(self, text: str) -> int:
        """How often the worker's log has ``text``."""
        assert self.worker_log is not None
        return self.worker_log.read_text(errors="replace").count(text)

    def worker_outcomes(self, task_id: str) -> list[dict[str, Any]]:
        """The worker's "task finished" lines of ``task_id``."""
        assert self.worker_log is not None
        return outcome_lines(self.worker_log, task_id)

    def worker_said(self, text: str) -> str | None:
        """``text`` if the worker logged it."""
        return text if self.worker_logged(text) else None

    def lambda_logged(self, message: str, **keys: Any) -> bool:
        """The handler logged ``message`` with these keys (its lines carry task_id and co.)."""
        return any(
            line.get("message") == message and all(line.get(k) == v for k, v in keys.items())
            for line in self.lambda_lines
        )

    def deliveries(self, task_id: str) -> int:
        """How many times the consumer was handed the message of ``task_id``."""
        if self.is_worker:
            return self.worker_logged(f"[{task_id}] received")
        return self.lambda_deliveries[task_id]

    def poison(self, key: str) -> Outcome:
        """How the Lambda path disposed of a message it must not run: why, failures, the DLQ."""
        response = aws.client("sqs").receive_message(
            QueueUrl=self.queues.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=0
        )
        dead = {message_key(m["Body"]): m["MessageId"] for m in response.get("Messages", [])}
        message_id = dead.get(key)
        errors = {
            line.get("reason") or line["message"]
            for line in self.lambda_lines
            if line.get("message_id") == message_id and line["level"] == "ERROR"
        }
        return {
            "logged": sorted(errors),
            "record_failures": self.record_failures[message_id] if message_id else 0,
            "dead_lettered": message_id is not None,
        }


def message_key(body: str) -> str:
    """The task id of a kombu message body; the body itself for anything else."""
    try:
        envelope = json.loads(base64.b64decode(body, validate=True))
        return str(envelope["headers"]["id"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return body


class CapturedLines(logging.Handler):
    """The handler's structured log lines, formatted exactly as Lambda would print them."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        super().__init__()
        self.lines = lines
        self.setFormatter(lambda_logger.registered_formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


# ---------------------------------------------------------------- observing results


def normalise(value: Any, roles: dict[str, str]) -> Any:
    """``value`` with every id replaced by its role name; exceptions as type name and args."""
    if isinstance(value, BaseException):
        return {"exception": type(value).__name__, "args": normalise(list(value.args), roles)}
    if isinstance(value, str):
        for raw, role in roles.items():
            value = value.replace(raw, f"<{role}>")
        return UUID_RE.sub("<unknown id>", value)
    if isinstance(value, dict):
        return {normalise(k, roles): normalise(v, roles) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [normalise(v, roles) for v in value]
    return value


def outcome(result: AsyncResult, roles: dict[str, str]) -> Outcome:
    """State, result and traceback's last line of one task, plus what else its item stores."""
    meta = result.backend.get_task_meta(result.id, cache=False)  # the item, as stored now
    observed: Outcome = {"state": meta["status"], "result": normalise(meta["result"], roles)}
    if meta.get("traceback"):
        observed["traceback"] = normalise(meta["traceback"].strip().splitlines()[-1], roles)
    observed["stored"] = {
        "fields": sorted(meta),
        "children": normalise(meta.get("children"), roles),
    }
    return observed


def without_stored(value: Any) -> Any:
    """An outcome without the ``stored`` details, which the two sides compare between them."""
    if isinstance(value, dict):
        return {k: without_stored(v) for k, v in value.items() if k != "stored"}
    if isinstance(value, list):
        return [without_stored(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class Published:
    """One published scenario: whether it has settled on a side, and what it came to there."""

    done: Callable[[Side], bool]
    observe: Callable[[Side], Outcome]


# ---------------------------------------------------------------- the two phases


@dataclass(frozen=True, slots=True)
class Counts:
    """Messages in the queue (visible, in flight, delayed) and in its DLQ (all of them)."""

    visible: int
    in_flight: int
    delayed: int
    dead_letters: int


@dataclass(frozen=True, slots=True)
class Phase:
    """What one consumer made of every scenario."""

    outcomes: dict[str, Outcome]
    unsettled: list[str]
    counts: Counts
    seconds: float
    stats: ConsumeStats | None = None


def counts(queues: Queues) -> Counts:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    sqs = aws.client("sqs")
    main = sqs.get_queue_attributes(QueueUrl=queues.url, AttributeNames=names)["Attributes"]
    dlq = sqs.get_queue_attributes(QueueUrl=queues.dlq_url, AttributeNames=names)["Attributes"]
    return Counts(*(int(main[n]) for n in names), sum(int(dlq[n]) for n in names))


def unsettled(published: dict[str, Published], side: Side) -> list[str]:
    return [name for name, p in published.items() if not p.done(side)]


def steady_counts(queues: Queues, *, every: float = 1.0, within: float = 30.0) -> Counts:
    """The queue's counts once three reads ``every`` seconds apart agree: a worker deletes a
    message after storing its result (late ack, batched deletes), so the last deletes of a phase
    can trail its last result, the more on a loaded machine."""
    reads = [counts(queues)]
    deadline = time.monotonic() + within
    while (len(reads) < 3 or len(set(reads[-3:])) > 1) and time.monotonic() < deadline:
        time.sleep(every)
        reads.append(counts(queues))
    return reads[-1]


def phase(published: dict[str, Published], side: Side, started: float, **extra: Any) -> Phase:
    return Phase(
        outcomes={name: p.observe(side) for name, p in published.items()},
        unsettled=unsettled(published, side),
        counts=steady_counts(side.queues),
        seconds=time.monotonic() - started,
        **extra,
    )


def create_queues(label: str) -> Queues:
    """A queue with a DLQ after three receives and the template's visibility timeout."""
    queue = queue_with_dlq(
        f"differential-{label}-{uuid.uuid4().hex[:8]}",
        max_receive_count=MAX_RECEIVE_COUNT,
        attributes={"VisibilityTimeout": str(QUEUE_VISIBILITY_TIMEOUT)},
    )
    return Queues(queue.url, queue.arn, queue.dlq_url)


UseQueues = Callable[[str], Queues]
