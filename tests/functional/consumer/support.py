"""What the Lambda handler's functional tests share: their queues and helpers.

The fixtures are in this folder's ``conftest.py``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from devtools.cloud.deploy import EventSource
from devtools.cloud.event_source import delete_requests
from devtools.cloud.session import forget_backend
from infra.core import aws
from infra.core.observability import (
    NAMESPACE,
)
from infra.store.ratelimit import rate_key
from tests.apps import probe
from tests.sqs_helpers import receive

__all__ = [
    "Message",
    "Queues",
    "reset_backend",
    "visible_again",
    "envelope",
    "task_id",
    "by_task",
    "send_raw",
    "marker",
    "json_lines",
    "emf_metrics",
    "stored",
    "celery_bodies",
    "no_turn_for",
]

Message = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Queues:
    """This module's queues: a standard one the probe app publishes to, and a FIFO one."""

    region: str
    source: EventSource
    dlq_url: str
    fifo: EventSource


reset_backend = forget_backend
"""Drop the app's cached result backend after ``result_backend`` changed."""


def visible_again(url: str, messages: Sequence[Message]) -> None:
    """End the visibility timeout of received messages now, as if it had passed."""
    aws.client("sqs").change_message_visibility_batch(
        QueueUrl=url,
        Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ],
    )


def envelope(message: Message) -> dict[str, Any]:
    """The kombu envelope of a message Celery published (base64 SQS body)."""
    parsed: dict[str, Any] = json.loads(base64.b64decode(message["Body"]))
    return parsed


def task_id(message: Message) -> str:
    return str(envelope(message)["headers"]["id"])


def by_task(messages: Sequence[Message]) -> dict[str, Message]:
    return {task_id(m): m for m in messages}


def send_raw(url: str, body: str, **options: Any) -> str:
    """Send a body with boto3; its message id."""
    response = aws.client("sqs").send_message(QueueUrl=url, MessageBody=body, **options)
    return str(response["MessageId"])


def marker() -> str:
    return uuid.uuid4().hex


def json_lines(text: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``text`` that ``keep`` selects."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            parsed = json.loads(line)
            if keep(parsed):
                found.append(parsed)
    return found


def emf_metrics(text: str) -> dict[str, list[float]]:
    """The application metrics of the EMF lines printed (not the cold-start one), merged."""
    blobs = json_lines(text, lambda o: "_aws" in o and "ColdStart" not in o)
    assert blobs, f"no EMF line in {text!r}"
    merged: dict[str, list[float]] = {}
    for blob in blobs:
        [directive] = blob["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == NAMESPACE
        for metric in directive["Metrics"]:
            merged.setdefault(metric["Name"], []).extend(
                float(v) for v in _as_list(blob[metric["Name"]])
            )
    return merged


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def stored(task: str) -> Any:
    return probe.app.AsyncResult(task)


def celery_bodies(queues: Queues, *markers: str, task: Any = probe.record) -> list[str]:
    """Real Celery message bodies for ``task(marker)``, taken off the standard queue."""
    ids = [task.apply_async((m,)).id for m in markers]
    messages = by_task(receive(queues.source.queue_url, len(markers)))
    for entries in delete_requests(list(messages.values())):
        aws.client("sqs").delete_message_batch(QueueUrl=queues.source.queue_url, Entries=entries)
    return [messages[i]["Body"] for i in ids]


def no_turn_for(seconds: float) -> None:
    """Another consumer just started ``probe.paced``: the next turn is ``seconds`` away."""
    aws.client("dynamodb").put_item(
        TableName=os.environ["RESULTS_TABLE"],
        Item={"id": {"S": rate_key("probe.paced")}, "next_at": {"N": str(time.time() + seconds)}},
    )
