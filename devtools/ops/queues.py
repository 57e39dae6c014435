"""``lambda queues``: what each queue of the deployment and its dead-letter queue hold.

Counts come from GetQueueAttributes. SQS has no queue attribute for the age of the oldest message:
it is the CloudWatch metric ``AWS/SQS ApproximateAgeOfOldestMessage``, which AWS publishes every
minute for every queue. So on AWS the age is read from CloudWatch (the latest one-minute maximum),
and on an emulator it is left out (``None``, shown as n/a): moto publishes no SQS metrics, and
the only other way to see a message's SentTimestamp is to receive it, which adds one to its
receive count -- with ``maxReceiveCount`` on the source queues a look could itself push a
message into the DLQ, and an inspection command must never change what it inspects.

Which DLQ belongs to which queue is read from each queue's ``RedrivePolicy`` (what SQS itself
uses), not guessed from names; the same pairing tells ``lambda dlq redrive`` where to send back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from devtools.ops.target import translated
from infra.core.errors import ConfigurationError
from infra.core.settings import Settings
from infra.wire.requeue import queue_url_for_arn

__all__ = [
    "COUNT_ATTRIBUTES",
    "QueueDepth",
    "QueuePair",
    "age_request",
    "depth_from_attributes",
    "latest_maximum",
    "oldest_age_from_cloudwatch",
    "pair_from_attributes",
    "queue_depths",
    "queue_pairs",
    "sqs_name",
    "waiting",
]

COUNT_ATTRIBUTES: Final = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)
AGE_WINDOW: Final = timedelta(minutes=5)
"""How far back to look for the latest datapoint: SQS metrics arrive a few minutes late."""

OldestAge = Callable[[str], float | None]
"""Queue name → age of its oldest message in seconds, or None when unknown."""


@dataclass(frozen=True, slots=True)
class QueuePair:
    """A Celery queue, its SQS queue and the dead-letter queue its redrive policy names."""

    name: str
    url: str
    dlq_url: str | None
    max_receive_count: int | None


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """What one SQS queue holds."""

    name: str
    """The Celery queue name; its DLQ is ``<name> (dlq)``."""
    url: str
    visible: int
    in_flight: int
    delayed: int
    oldest_age: float | None
    """Seconds; None when unknown (emulator) or when CloudWatch has no recent datapoint."""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "visible": self.visible,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "oldest_age_seconds": self.oldest_age,
        }


# ---------------------------------------------------------------- pure


def sqs_name(url: str) -> str:
    """The SQS queue name of a queue URL (CloudWatch's ``QueueName`` dimension)."""
    return url.rstrip("/").rsplit("/", 1)[-1]


def pair_from_attributes(
    name: str, url: str, attributes: Mapping[str, str], settings: Settings
) -> QueuePair:
    """The pairing a queue's ``RedrivePolicy`` attribute describes (none: no DLQ)."""
    raw = attributes.get("RedrivePolicy")
    if not raw:
        return QueuePair(name, url, None, None)
    policy = json.loads(raw)
    dlq_url = queue_url_for_arn(str(policy["deadLetterTargetArn"]), settings)
    return QueuePair(name, url, dlq_url, int(policy["maxReceiveCount"]))


def depth_from_attributes(
    name: str, url: str, attributes: Mapping[str, str], oldest_age: float | None
) -> QueueDepth:
    visible, in_flight, delayed = (int(attributes.get(a, "0")) for a in COUNT_ATTRIBUTES)
    return QueueDepth(name, url, visible, in_flight, delayed, oldest_age)


def age_request(queue_name: str, now: datetime) -> dict[str, Any]:
    """GetMetricStatistics of the queue's age of oldest message over the last few minutes."""
    return {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
        "StartTime": now - AGE_WINDOW,
        "EndTime": now,
        "Period": 60,
        "Statistics": ["Maximum"],
    }


def latest_maximum(response: Mapping[str, Any]) -> float | None:
    """The Maximum of the newest datapoint, None without any."""
    points = sorted(response.get("Datapoints", []), key=lambda p: p["Timestamp"])
    return float(points[-1]["Maximum"]) if points else None


# ---------------------------------------------------------------- AWS


def oldest_age_from_cloudwatch(cloudwatch: Any, clock: Callable[[], datetime]) -> OldestAge:
    """Ages read from CloudWatch with ``cloudwatch`` (AWS only)."""

    def age(queue_name: str) -> float | None:
        with translated(f"reading the age of the oldest message of {queue_name}"):
            return latest_maximum(
                cloudwatch.get_metric_statistics(**age_request(queue_name, clock()))
            )

    return age


def _attributes(sqs: Any, url: str, names: list[str]) -> dict[str, str]:
    with translated(f"reading the attributes of queue {url}"):
        response = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
    attributes: dict[str, str] = response.get("Attributes", {})
    return attributes


def queue_pairs(sqs: Any, settings: Settings) -> list[QueuePair]:
    """Every Celery queue the settings name, with its dead-letter queue.

    Raises:
        ConfigurationError: a queue does not exist or cannot be read.
    """
    if not settings.queue_urls:
        raise ConfigurationError("no queue is configured (CELERY_QUEUE_URLS is empty)")
    return [
        pair_from_attributes(name, url, _attributes(sqs, url, ["RedrivePolicy"]), settings)
        for name, url in sorted(settings.queue_urls.items())
    ]


def waiting(sqs: Any, url: str) -> int:
    """Messages in ``url``, visible, in flight or delayed (as SQS counts them, roughly).

    Raises:
        ConfigurationError: the queue does not exist or cannot be read.
    """
    return sum(int(v) for v in _attributes(sqs, url, list(COUNT_ATTRIBUTES)).values())


def queue_depths(sqs: Any, pairs: list[QueuePair], oldest_age: OldestAge) -> list[QueueDepth]:
    """Each queue then its DLQ: visible, in flight, delayed, age of the oldest message."""
    depths = []
    for pair in pairs:
        queues = [(pair.name, pair.url)]
        if pair.dlq_url:
            queues.append((f"{pair.name} (dlq)", pair.dlq_url))
        for name, url in queues:
            attributes = _attributes(sqs, url, list(COUNT_ATTRIBUTES))
            age = oldest_age(sqs_name(url))
            depths.append(depth_from_attributes(name, url, attributes, age))
    return depths
