"""In-memory fakes of the seams the Lambda pipeline talks to (:mod:`infra.consumer.seams`), and
factories of the Lambda SQS records and contexts it is driven with.

Each fake records what it was asked, so a test can say what the pipeline did without AWS.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.consumer.seams import Claims, HandBackQueue, OutcomeWriter, Pacer
from infra.core.errors import StoreError
from infra.store.claim_requests import Claimed, ClaimOutcome, ClaimRequest
from infra.store.ratelimit import HandBack

__all__ = [
    "ACCOUNT",
    "FakeClaims",
    "FakeContext",
    "FakeOutcomeWriter",
    "FakePacer",
    "FakeQueue",
    "sqs_event",
    "sqs_record",
]

ACCOUNT = "000000000000"


@dataclass
class FakeClaims:
    """Claims answered from ``answers`` (by task id; :class:`Claimed` when absent)."""

    answers: dict[str, ClaimOutcome] = field(default_factory=dict)
    error: StoreError | None = None
    """Raised by every claim: the store is unreachable."""
    prepared: list[str] = field(default_factory=list)
    """Task ids claimed ahead of the batch."""
    asked: list[str] = field(default_factory=list)
    """Task ids whose claim's answer the pipeline asked for."""
    released: list[str] = field(default_factory=list)
    """Task ids whose claim the pipeline gave up."""

    def prepare(
        self, items: Sequence[tuple[str, ClaimRequest]], owner: str, lease_until: float
    ) -> None:
        self.prepared.extend(request.task_id for _, request in items)

    def outcome(
        self, message_id: str, request: ClaimRequest, owner: str, lease_until: float
    ) -> ClaimOutcome:
        self.asked.append(request.task_id)
        if self.error is not None:
            raise self.error
        return self.answers.get(request.task_id, Claimed())

    def release(self, task_id: str, owner: str) -> bool:
        self.released.append(task_id)
        return True


@dataclass
class FakePacer:
    """Turns granted at once, except for the tasks in ``waits`` (seconds to their next turn)."""

    waits: dict[str, float] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)

    def take_turn(self, task_name: str, interval: float, budget: float) -> HandBack | None:
        self.asked.append(task_name)
        wait = self.waits.get(task_name)
        return HandBack(wait) if wait else None


@dataclass
class FakeOutcomeWriter:
    """A batch's result writer whose flush fails for the task ids in ``failing``."""

    pending: dict[str, str] = field(default_factory=dict)
    failing: dict[str, str] = field(default_factory=dict)
    flushes: int = 0

    def state_of(self, task_id: str) -> str | None:
        return self.pending.get(task_id)

    def flush(self) -> dict[str, str]:
        self.flushes += 1
        self.pending.clear()
        return dict(self.failing)


@dataclass
class FakeQueue:
    """The SQS calls of a hand-back, recorded."""

    sent: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)

    def send_message(self, **request: object) -> object:
        self.sent.append(request)
        return {"MessageId": str(uuid.uuid4())}

    def change_message_visibility(self, **request: object) -> object:
        self.held.append(request)
        return {}


# The fakes are what they fake (checked by mypy when it reads this module).
_CLAIMS: type[Claims] = FakeClaims
_PACER: type[Pacer] = FakePacer
_WRITER: type[OutcomeWriter] = FakeOutcomeWriter
_QUEUE: type[HandBackQueue] = FakeQueue


@dataclass
class FakeContext:
    """A Lambda context with ``seconds_left`` until its deadline."""

    seconds_left: float = 60.0
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 0
    """0: no memory budget (the guard never trips)."""
    function_name: str = "celery-lambda-test"
    _started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int((self.seconds_left - (time.monotonic() - self._started)) * 1000)


def sqs_record(
    body: str, *, queue: str = "celery", group: str | None = None, receive_count: int = 1
) -> dict[str, Any]:
    """A Lambda SQS record of ``body`` from ``queue``, with a message id of its own."""
    now_ms = str(int(time.time() * 1000))
    attributes = {
        "ApproximateReceiveCount": str(receive_count),
        "SentTimestamp": now_ms,
        "ApproximateFirstReceiveTimestamp": now_ms,
        "SenderId": ACCOUNT,
    }
    if group is not None:
        attributes |= {"MessageGroupId": group, "MessageDeduplicationId": uuid.uuid4().hex}
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": f"handle-{uuid.uuid4().hex}",
        "body": body,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{queue}",
        "awsRegion": "us-east-1",
    }


def sqs_event(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The event the SQS event source mapping hands the function."""
    return {"Records": [dict(record) for record in records]}
