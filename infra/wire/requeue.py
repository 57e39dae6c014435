"""Handing an SQS record back for later: re-sent with a delay, or (FIFO) held invisible.

The Lambda path does this for tasks that are not due yet (ETA) or whose rate limit has no turn
for them yet. Requests are built from the record as Lambda delivers it, without a GetQueueUrl.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from typing import Any

from infra.core.limits import SQS_MAX_DELAY_SECONDS, SQS_MAX_VISIBILITY_SECONDS
from infra.core.settings import Settings

__all__ = ["hold_request", "is_fifo", "queue_url_for_arn", "resend_request"]


def queue_url_for_arn(arn: str, settings: Settings) -> str:
    """The queue URL of an SQS ARN, without a GetQueueUrl call."""
    _, _, _, region, account, name = arn.split(":", 5)
    for url in settings.queue_urls.values():
        if url.rstrip("/").rsplit("/", 1)[-1] == name:
            return url
    endpoint = settings.endpoint_for("sqs") or f"https://sqs.{region}.amazonaws.com"
    return f"{endpoint.rstrip('/')}/{account}/{name}"


def is_fifo(record: Mapping[str, Any]) -> bool:
    """Whether the record came from a FIFO queue."""
    return str(record["eventSourceARN"]).endswith(".fifo")


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


def resend_request(record: Mapping[str, Any], seconds: float, settings: Settings) -> dict[str, Any]:
    """SendMessage of the same body and attributes, invisible for ``seconds`` (at most 15 min)."""
    return {
        "QueueUrl": queue_url_for_arn(record["eventSourceARN"], settings),
        "MessageBody": record["body"],
        "DelaySeconds": max(1, min(SQS_MAX_DELAY_SECONDS, math.ceil(seconds))),
        "MessageAttributes": sqs_attributes(record.get("messageAttributes") or {}),
    }


def hold_request(
    record: Mapping[str, Any], seconds: float, now: float, settings: Settings
) -> dict[str, Any]:
    """ChangeMessageVisibility keeping the record invisible for ``seconds``.

    SQS ends a message's visibility at most twelve hours after its first receive, so the hold is
    cut to what is left of that.
    """
    first_ms = int(record["attributes"].get("ApproximateFirstReceiveTimestamp", 0))
    budget = SQS_MAX_VISIBILITY_SECONDS - (now - first_ms / 1000) - 1
    return {
        "QueueUrl": queue_url_for_arn(record["eventSourceARN"], settings),
        "ReceiptHandle": record["receiptHandle"],
        "VisibilityTimeout": max(1, min(math.ceil(seconds), int(budget))),
    }
