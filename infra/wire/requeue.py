"""Handing a received message back to SQS for later: re-sent with a delay, or (FIFO) held invisible.

Both consumers do it: the Lambda path for a task not due yet or without a turn under its rate
limit, the worker's transport for a task whose ETA is too far to wait for in memory. A standard
queue gets the same body again with ``DelaySeconds`` (at most 15 minutes; the original is then
acked). A FIFO queue takes no per-message delay and a re-send would reorder its group, so the
original is kept invisible instead; SQS ends a message's visibility twelve hours after its first
receive, so a hold is cut to what is left of that. A re-send keeps the message's
``MessageGroupId``: on a standard queue that is its tenant (SQS fair queues), which a later turn
must not lose.

Pure: :func:`hand_back` decides and builds the request; the consumer sends it. A Lambda record
is described by :func:`of_record` without a GetQueueUrl, a message received by kombu by
:func:`of_message`.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.core.limits import SQS_MAX_DELAY_SECONDS, SQS_MAX_VISIBILITY_SECONDS
from infra.core.queues import is_fifo_queue, queue_name
from infra.core.settings import Settings
from infra.wire.offload import Pointer, size_attribute

__all__ = [
    "Hold",
    "Queued",
    "Resend",
    "hand_back",
    "hold_request",
    "is_fifo",
    "of_message",
    "of_record",
    "queue_url_for_arn",
    "resend_request",
]


@dataclass(frozen=True, slots=True)
class Queued:
    """A received message as handing it back needs it."""

    queue_url: str
    receipt_handle: str
    body: str
    """The body to send again (an offloaded body's pointer, not the object)."""
    attributes: Mapping[str, Any] = field(default_factory=dict)
    """Message attributes in the SQS API's shape."""
    first_receive: float | None = None
    """Epoch seconds of the message's first receive; None when unknown (a hold then stays
    within half of SQS's twelve hours, leaving room for earlier holds)."""
    group_id: str | None = None
    """Its ``MessageGroupId``: on a standard queue, the tenant of a fair queue."""

    @property
    def fifo(self) -> bool:
        """Whether it came from a FIFO queue."""
        return is_fifo_queue(self.queue_url)


@dataclass(frozen=True, slots=True)
class Resend:
    """SendMessage of the same body, delayed; the original is then acked."""

    request: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Hold:
    """ChangeMessageVisibility keeping the original invisible; it is not acked."""

    request: dict[str, Any]


def hand_back(message: Queued, wait: float, now: float) -> Resend | Hold:
    """How to give ``message`` back to SQS for ``wait`` seconds (``now``: epoch seconds)."""
    if message.fifo:
        return Hold(hold_request(message, wait, now))
    return Resend(resend_request(message, wait))


def resend_request(message: Queued, seconds: float) -> dict[str, Any]:
    """SendMessage of the same body and attributes, invisible for ``seconds`` (1 s to 15 min)."""
    request: dict[str, Any] = {
        "QueueUrl": message.queue_url,
        "MessageBody": message.body,
        "DelaySeconds": max(1, min(SQS_MAX_DELAY_SECONDS, math.ceil(seconds))),
    }
    if message.attributes:
        request["MessageAttributes"] = dict(message.attributes)
    if message.group_id:
        request["MessageGroupId"] = message.group_id
    return request


def hold_request(message: Queued, seconds: float, now: float) -> dict[str, Any]:
    """ChangeMessageVisibility keeping ``message`` invisible for ``seconds``, within SQS's twelve
    hours from its first receive."""
    if message.first_receive is None:
        longest = SQS_MAX_VISIBILITY_SECONDS // 2
    else:
        longest = int(SQS_MAX_VISIBILITY_SECONDS - (now - message.first_receive) - 1)
    return {
        "QueueUrl": message.queue_url,
        "ReceiptHandle": message.receipt_handle,
        "VisibilityTimeout": max(1, min(math.ceil(seconds), longest)),
    }


def of_record(record: Mapping[str, Any], settings: Settings) -> Queued:
    """The Lambda SQS record as a :class:`Queued` message."""
    first_ms = int(record["attributes"].get("ApproximateFirstReceiveTimestamp", 0))
    return Queued(
        queue_url=queue_url_for_arn(record["eventSourceARN"], settings),
        receipt_handle=record["receiptHandle"],
        body=record["body"],
        attributes=sqs_attributes(record.get("messageAttributes") or {}),
        first_receive=first_ms / 1000,
        group_id=record["attributes"].get("MessageGroupId"),
    )


def of_message(message: Mapping[str, Any], queue_url: str, pointer: Pointer | None) -> Queued:
    """A message as ReceiveMessage returns it (``pointer``: what its fetched body came from, which
    is what a re-send carries again)."""
    attributes = dict(message.get("MessageAttributes") or {})
    if pointer is not None:
        attributes.update(size_attribute(len(message["Body"].encode())))
    return Queued(
        queue_url=queue_url,
        receipt_handle=message["ReceiptHandle"],
        body=pointer.body() if pointer else message["Body"],
        attributes=attributes,
        group_id=(message.get("Attributes") or {}).get("MessageGroupId"),
    )


def is_fifo(record: Mapping[str, Any]) -> bool:
    """Whether the Lambda SQS record came from a FIFO queue."""
    return is_fifo_queue(str(record["eventSourceARN"]))


def queue_url_for_arn(arn: str, settings: Settings) -> str:
    """The queue URL of an SQS ARN, without a GetQueueUrl call."""
    _, _, _, region, account, name = arn.split(":", 5)
    for url in settings.queue_urls.values():
        if queue_name(url) == name:
            return url
    endpoint = settings.endpoint_for("sqs") or f"https://sqs.{region}.amazonaws.com"
    return f"{endpoint.rstrip('/')}/{account}/{name}"


def sqs_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Lambda's lower-camel message attributes → the SQS API's shape."""
    converted: dict[str, Any] = {}
    for name, attr in attributes.items():
        value: dict[str, Any] = {"DataType": attr["dataType"]}
        if attr.get("stringValue") is not None:
            value["StringValue"] = attr["stringValue"]
        if attr.get("binaryValue") is not None:
            value["BinaryValue"] = base64.b64decode(attr["binaryValue"])
        converted[name] = value
    return converted
