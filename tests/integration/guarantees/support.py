"""What the delivery guarantees' tests share: the suite's queues, and how a test observes a task
from outside the process that ran it (its item, its state, its side effects, the queues).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from celery import states

from devtools.cloud.deploy import EventSource
from infra.core import aws
from infra.core.settings import Settings
from infra.store.items import task_key
from infra.store.result_requests import batch_get
from tests.integration.guarantees.app import app
from tests.sqs_helpers import counts, receive

__all__ = [
    "SETTLE",
    "Message",
    "Queues",
    "calls_of",
    "claimed_by",
    "drained",
    "duplicated",
    "item",
    "marker",
    "state",
    "states_of",
    "wait_for",
]

SETTLE = 90.0

Message = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Queues:
    """This module's queues: the Lambda path's, the worker's and the crash test's."""

    region: str
    source: EventSource
    """The Lambda path's queue as an event source (the template's settings)."""
    worker_url: str
    crash: EventSource
    dlqs: Mapping[str, str]
    """Queue URL → its DLQ URL."""


def marker() -> str:
    return uuid.uuid4().hex


def duplicated(url: str) -> tuple[Message, Message]:
    """The one message on ``url`` and a second delivery of its body (sent again with boto3)."""
    [original] = receive(url, 1)
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=original["Body"])
    [copy] = receive(url, 1)
    assert copy["Body"] == original["Body"] and copy["MessageId"] != original["MessageId"]
    return original, copy


def state(task_id: str) -> str:
    return str(app.AsyncResult(task_id).state)


def item(task_id: str) -> dict[str, Any]:
    """The task's item in the results table as stored (claim attributes included)."""
    response = aws.client("dynamodb").get_item(
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": task_key(task_id)}},
        ConsistentRead=True,
    )
    found: dict[str, Any] = response.get("Item", {})
    return found


def wait_for(
    condition: Callable[[], bool], what: str, within: float = SETTLE, every: float = 0.1
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def claimed_by(task_id: str, prefix: str) -> bool:
    return str(item(task_id).get("claim_owner", {}).get("S", "")).startswith(prefix)


def states_of(task_ids: Sequence[str]) -> dict[str, str]:
    """Each task's state as a Celery client decodes it (BatchGetItem, 100 keys a call)."""
    keys = {task_key(t): t for t in task_ids}
    found = batch_get(aws.client("dynamodb"), Settings.from_env().results_table, list(keys))
    decoded = {keys[k]: app.backend.decode_result(v)["status"] for k, v in found.items()}
    return {t: decoded.get(t, states.PENDING) for t in task_ids}


def calls_of(markers: Sequence[str]) -> dict[str, int]:
    """How many times each marker's side effect happened (BatchGetItem on the users table)."""
    table = Settings.from_env().users_table
    found: dict[str, int] = {}
    for start in range(0, len(markers), 100):
        keys = [{"username": {"S": f"probe#{m}"}} for m in markers[start : start + 100]]
        while keys:
            response = aws.client("dynamodb").batch_get_item(
                RequestItems={table: {"Keys": keys, "ConsistentRead": True}}
            )
            for row in response["Responses"].get(table, []):
                found[row["username"]["S"].removeprefix("probe#")] = int(row["calls"]["N"])
            keys = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
    return {m: found.get(m, 0) for m in markers}


def drained(queues: Queues, url: str) -> bool:
    return counts(url) == (0, 0, 0) and counts(queues.dlqs[url]) == (0, 0, 0)
