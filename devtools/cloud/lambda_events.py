"""The Lambda side of the SQS event source mapping, as pure values: context, event, response.

What the event-source emulator (:mod:`devtools.cloud.event_source`) hands the handler and how it
reads the answer, kept apart from the polling and the processes so each can be tested alone. Shapes
follow https://docs.aws.amazon.com/lambda/latest/dg/with-sqs.html and the Python runtime's context;
the scheduled tick's event follows
https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-scheduled.html.
"""

from __future__ import annotations

import base64
import functools
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from devtools.cloud.deploy import EventSource, ScheduleSource
from infra.core.limits import SQS_MAX_BATCH_ENTRIES

__all__ = [
    "LambdaContext",
    "build_event",
    "build_record",
    "build_scheduled_event",
    "delete_requests",
    "make_context",
    "parse_batch_response",
    "visibility_requests",
]

Clock = Callable[[], float]

_ATTRIBUTE_ORDER = (
    "ApproximateReceiveCount",
    "AWSTraceHeader",
    "SentTimestamp",
    "SequenceNumber",
    "MessageGroupId",
    "SenderId",
    "MessageDeduplicationId",
    "ApproximateFirstReceiveTimestamp",
    "DeadLetterQueueSourceArn",
)


# ---------------------------------------------------------------- context


@dataclass(frozen=True, slots=True)
class LambdaContext:
    """The ``context`` a Python Lambda handler receives (the runtime's attribute names)."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int
    function_version: str = "$LATEST"
    identity: None = None
    client_context: None = None
    clock: Clock = field(default=time.time, repr=False, compare=False)

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function times out (never negative, as in Lambda)."""
        return max(0, self.deadline_ms - int(self.clock() * 1000))


@functools.cache
def _environment_id(pid: int) -> str:
    """One id per process, as one log stream per Lambda execution environment."""
    return uuid.uuid4().hex


def make_context(
    source: EventSource | ScheduleSource,
    *,
    clock: Clock = time.time,
    memory_limit_in_mb: int | None = None,
) -> LambdaContext:
    """A fresh invocation context whose deadline is now + the function's timeout."""
    arn = source.queue_arn if isinstance(source, EventSource) else source.rule_arn
    _, _, _, region, account, _ = arn.split(":", 5)
    now = clock()
    return LambdaContext(
        function_name=source.function,
        invoked_function_arn=f"arn:aws:lambda:{region}:{account}:function:{source.function}",
        memory_limit_in_mb=memory_limit_in_mb or source.memory_size,
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{source.function}",
        log_stream_name=time.strftime("%Y/%m/%d", time.gmtime(now))
        + f"/[$LATEST]{_environment_id(os.getpid())}",
        deadline_ms=int((now + source.timeout) * 1000),
        clock=clock,
    )


# ---------------------------------------------------------------- event


def _message_attribute(value: Mapping[str, Any]) -> dict[str, Any]:
    """SQS API attribute (``StringValue``, bytes) → Lambda's (``stringValue``, base64 text)."""
    converted: dict[str, Any] = {}
    if "StringValue" in value:
        converted["stringValue"] = value["StringValue"]
    if "BinaryValue" in value:
        converted["binaryValue"] = base64.b64encode(value["BinaryValue"]).decode()
    converted["stringListValues"] = list(value.get("StringListValues", []))
    converted["binaryListValues"] = [
        base64.b64encode(item).decode() for item in value.get("BinaryListValues", [])
    ]
    converted["dataType"] = value["DataType"]
    return converted


def _system_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    ordered = {name: attributes[name] for name in _ATTRIBUTE_ORDER if name in attributes}
    return {**ordered, **attributes}


def build_record(message: Mapping[str, Any], source: EventSource, region: str) -> dict[str, Any]:
    """One ReceiveMessage message as a record of the Lambda SQS event."""
    record: dict[str, Any] = {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": _system_attributes(message.get("Attributes", {})),
        "messageAttributes": {
            name: _message_attribute(value)
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
    }
    if "MD5OfMessageAttributes" in message:
        record["md5OfMessageAttributes"] = message["MD5OfMessageAttributes"]
    record.update(eventSource="aws:sqs", eventSourceARN=source.queue_arn, awsRegion=region)
    return record


def build_event(
    messages: Sequence[Mapping[str, Any]], source: EventSource, region: str
) -> dict[str, Any]:
    """The event Lambda's SQS event source mapping invokes the function with."""
    return {"Records": [build_record(message, source, region) for message in messages]}


def build_scheduled_event(
    source: ScheduleSource, *, when: float | None = None, event_id: str | None = None
) -> dict[str, Any]:
    """The event an EventBridge schedule invokes its function with, for the minute of ``when``."""
    _, _, _, region, account, _ = source.rule_arn.split(":", 5)
    moment = time.time() if when is None else when
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account,
        # The scheduled time, on the minute (the invocation itself comes seconds later).
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment - moment % 60)),
        "region": region,
        "resources": [source.rule_arn],
        "detail": {},
    }


# ---------------------------------------------------------------- response


def parse_batch_response(
    response: object, message_ids: Sequence[str]
) -> tuple[tuple[str, ...], str | None]:
    """The ids to leave in the queue per a partial batch response, and why if it is invalid.

    None, ``{}`` and an empty or null ``batchItemFailures`` mean full success; anything
    malformed, or an ``itemIdentifier`` not in the batch, fails the whole batch (AWS semantics).
    """
    everything = tuple(message_ids)
    if response is None:
        return (), None
    if not isinstance(response, dict):
        return everything, f"response is a {type(response).__name__}, not an object"
    failures = response.get("batchItemFailures")
    if failures is None:
        return (), None
    if not isinstance(failures, list):
        return everything, "batchItemFailures is not a list"
    failed = {item.get("itemIdentifier") if isinstance(item, dict) else None for item in failures}
    unknown = failed - set(message_ids)
    if unknown:
        return everything, f"itemIdentifier {sorted(map(repr, unknown))} not in the batch"
    return tuple(i for i in message_ids if i in failed), None


# ---------------------------------------------------------------- requests


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), SQS_MAX_BATCH_ENTRIES):
        yield items[start : start + SQS_MAX_BATCH_ENTRIES]


def delete_requests(messages: Sequence[Mapping[str, Any]]) -> list[list[dict[str, str]]]:
    """DeleteMessageBatch entry lists, ten at most each."""
    return [
        [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)]
        for chunk in _chunks(messages)
    ]


def visibility_requests(
    messages: Sequence[Mapping[str, Any]], seconds: int
) -> list[list[dict[str, Any]]]:
    """ChangeMessageVisibilityBatch entry lists, ten at most each."""
    return [
        [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
            for i, m in enumerate(chunk)
        ]
        for chunk in _chunks(messages)
    ]
