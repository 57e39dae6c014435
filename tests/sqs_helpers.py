"""SQS helpers shared by the test suites: queues with a DLQ, and what a queue holds."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra.core import aws

__all__ = ["TestQueue", "counts", "predefine", "queue_arn", "queue_with_dlq", "receive"]

_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True, slots=True)
class TestQueue:
    """A queue and its dead-letter queue."""

    __test__ = False  # not a pytest test class

    url: str
    arn: str
    dlq_url: str


def predefine(app: Any, urls: Mapping[str, str]) -> None:
    """Add ``urls`` (queue name -> URL) to ``app``'s predefined queues, as ``CELERY_QUEUE_URLS``
    adds them in a subprocess: kombu then publishes there without listing or creating queues."""
    options = dict(app.conf.broker_transport_options)
    added = {name: {"url": url} for name, url in urls.items()}
    options["predefined_queues"] = {**options.get("predefined_queues", {}), **added}
    app.conf.broker_transport_options = options


def queue_arn(url: str) -> str:
    """The ARN of the queue at ``url``."""
    response = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(response["Attributes"]["QueueArn"])


def queue_with_dlq(
    name: str, *, max_receive_count: int = 3, attributes: Mapping[str, str] | None = None
) -> TestQueue:
    """Create ``name`` (a ``.fifo`` name makes both FIFO) with a DLQ it redrives to."""
    sqs = aws.client("sqs")
    fifo = name.endswith(".fifo")
    extra = {"FifoQueue": "true"} if fifo else {}
    dlq_name = name.replace(".fifo", "-dlq.fifo") if fifo else f"{name}-dlq"
    dlq_url = sqs.create_queue(QueueName=dlq_name, Attributes=extra)["QueueUrl"]
    redrive = {"deadLetterTargetArn": queue_arn(dlq_url), "maxReceiveCount": max_receive_count}
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"RedrivePolicy": json.dumps(redrive), **extra, **(attributes or {})},
    )["QueueUrl"]
    return TestQueue(url, queue_arn(url), dlq_url)


def counts(url: str) -> tuple[int, int, int]:
    """Messages visible, in flight and delayed."""
    response = aws.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=list(_COUNTS))
    visible, in_flight, delayed = (int(response["Attributes"][name]) for name in _COUNTS)
    return visible, in_flight, delayed


def receive(url: str, count: int, *, within: float = 10.0) -> list[dict[str, Any]]:
    """Exactly ``count`` messages, received as the event source mapping receives them."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while len(messages) < count and time.monotonic() < deadline:
        response = aws.client("sqs").receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=min(10, count - len(messages)),
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages.extend(response.get("Messages", []))
    assert len(messages) == count, f"expected {count} messages, got {len(messages)}"
    return messages
