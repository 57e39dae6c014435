"""What we send to SQS for one kombu message: pure request builders for the publish path.

kombu's SQS ``Channel._put`` builds and sends in one method, so its choices cannot be reused or
tested apart from the network. These builders make the same request kombu would (same body, same
``MessageAttributes``/``MessageGroupId`` handling, so stock consumers read what we send) and add:

- ``DelaySeconds`` from the Celery ``eta`` header (``countdown``/``eta``), so no consumer receives
  a task before it is due and none holds one in memory past its visibility timeout (celery#3270);
- FIFO: ``MessageGroupId`` from the publish options or a configured default, and a deduplication
  id of task id + retry count, so a retry is never dropped as a duplicate of its first attempt;
- standard queues (SQS fair queues): ``MessageGroupId`` from the publish options or from the
  configured tenant header, so SQS keeps one busy tenant from delaying the others' messages;
  a group id SQS would refuse is a :class:`PublishError` naming the task, never rewritten (two
  tenants rewritten to one id would share their fairness);
- the size of the request as SQS counts it, to decide about offloading and to pack batches.

:mod:`infra.producer.transport` sends what these return.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kombu.utils.json import dumps

from infra.core.errors import PublishError
from infra.core.limits import (
    SQS_MAX_BATCH_ENTRIES,
    SQS_MAX_BATCH_PAYLOAD_BYTES,
    SQS_MAX_DELAY_SECONDS,
)
from infra.core.queues import is_fifo_queue
from infra.wire.offload import Pointer, size_attribute
from infra.wire.timing import delay_for, zoned_time

__all__ = [
    "MESSAGE_GROUP_ID_PATTERN",
    "PublishOptions",
    "batches",
    "deduplication_id",
    "label",
    "message_delay",
    "message_group_id",
    "offloaded",
    "request_size",
    "send_request",
]


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """The publish knobs, from the transport options
    (:func:`infra.core.config.transport_options`)."""

    offload_threshold: int
    max_payload_bytes: int
    fifo_group: str = "default"
    base64: bool = True
    """kombu's ``sqs_base64_encoding`` (on by default): the envelope is base64 in the SQS body."""
    tenant_header: str | None = None
    """On standard queues, the message header whose value becomes the ``MessageGroupId``."""


# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_SendMessage.html
MESSAGE_GROUP_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")
"""A ``MessageGroupId`` SQS accepts: 1 to 128 letters, digits and ASCII punctuation."""


def label(message: Mapping[str, Any]) -> str:
    """How an error names a kombu message: ``task[id]``."""
    headers = message.get("headers") or {}
    return f"{headers.get('task', 'message')}[{headers.get('id', '?')}]"


def _explicit_delay(properties: Mapping[str, Any]) -> int | None:
    """A delay given directly (``apply_async(DelaySeconds=…)``), as kombu reads it."""
    for key in ("delay_seconds", "DelaySeconds"):
        value = properties.get(key)
        if value is None:
            continue
        try:
            return max(0, min(SQS_MAX_DELAY_SECONDS, int(value)))
        except (TypeError, ValueError):
            return None
    return None


def message_delay(message: Mapping[str, Any], now: datetime) -> int | None:
    """Seconds SQS should keep ``message`` invisible: until its ETA, at most 15 minutes.

    A naive ETA is left alone: the transport does not know the app's time zone, and delaying by
    a wrong offset could run the task late; the consumer's gate handles it instead.
    """
    explicit = _explicit_delay(message.get("properties") or {})
    if explicit is not None:
        return explicit
    eta = zoned_time((message.get("headers") or {}).get("eta"))
    return None if eta is None else delay_for(eta, now)


def deduplication_id(message: Mapping[str, Any]) -> str:
    """FIFO deduplication id: task id + retry count, so each attempt is a new message."""
    properties = message.get("properties") or {}
    given = properties.get("MessageDeduplicationId")
    if given:
        return str(given)
    headers = message.get("headers") or {}
    task_id = headers.get("id")
    if not task_id:
        return str(uuid.uuid4())  # not a Celery task message: never deduplicate it
    return f"{task_id}-{int(headers.get('retries') or 0)}"


def _checked_group(value: Any, source: str, message: Mapping[str, Any]) -> str:
    """``value`` as a ``MessageGroupId``.

    Raises:
        PublishError: SQS would refuse it (empty, over 128 characters, a space or non-ASCII).
    """
    group = str(value)
    if MESSAGE_GROUP_ID_PATTERN.fullmatch(group) is None:
        raise PublishError(
            f"{label(message)}: {source} {group[:140]!r} is not a valid SQS MessageGroupId "
            "(1 to 128 letters, digits or ASCII punctuation, no spaces); map the tenant to such "
            "an id before publishing"
        )
    return group


def message_group_id(queue: str, message: Mapping[str, Any], options: PublishOptions) -> str | None:
    """The ``MessageGroupId`` of ``message`` on ``queue``; None to send it without one.

    ``apply_async(MessageGroupId=…)`` wins. Otherwise a FIFO queue gets the configured default
    group (it needs one) and a standard queue the tenant header's value, when one is configured
    and the message carries it.

    Raises:
        PublishError: the id SQS would get is not one it accepts.
    """
    given = (message.get("properties") or {}).get("MessageGroupId")
    if given not in (None, ""):
        return _checked_group(given, "MessageGroupId", message)
    if is_fifo_queue(queue):
        return options.fifo_group
    if not options.tenant_header:
        return None
    tenant = (message.get("headers") or {}).get(options.tenant_header)
    if tenant in (None, ""):
        return None
    return _checked_group(tenant, f"tenant header {options.tenant_header!r}", message)


def send_request(
    queue: str,
    queue_url: str,
    message: MutableMapping[str, Any],
    *,
    options: PublishOptions,
    now: datetime,
    trace_header: str | None = None,
) -> dict[str, Any]:
    """SendMessage parameters for one kombu message published to ``queue``.

    ``message_attributes`` is popped from the message's properties (as kombu does) so it is sent
    as SQS attributes instead of inside the body. ``trace_header`` (the X-Ray header of the
    publishing invocation) becomes the ``AWSTraceHeader`` system attribute, which links the
    consumer's trace to the producer's.

    Raises:
        PublishError: the message's ``MessageGroupId`` would be refused by SQS.
    """
    properties = message.setdefault("properties", {})
    request: dict[str, Any] = {"QueueUrl": queue_url}
    attributes = properties.pop("message_attributes", None)
    if attributes:
        request["MessageAttributes"] = attributes
    group = message_group_id(queue, message, options)
    if group is not None:
        request["MessageGroupId"] = group
    if is_fifo_queue(queue):
        # FIFO queues take no per-message delay: the consumer holds a not-yet-due message.
        request["MessageDeduplicationId"] = deduplication_id(message)
    else:
        delay = message_delay(message, now)
        if delay:
            request["DelaySeconds"] = delay
    if trace_header:
        request["MessageSystemAttributes"] = {
            "AWSTraceHeader": {"DataType": "String", "StringValue": trace_header}
        }
    body: str = dumps(message)  # type: ignore[no-untyped-call]
    request["MessageBody"] = base64.b64encode(body.encode()).decode() if options.base64 else body
    return request


def _attribute_bytes(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Message attributes count towards the size limit: name, type and value."""
    total = 0
    for name, attr in attributes.items():
        total += len(name.encode()) + len(str(attr.get("DataType", "")).encode())
        value = attr.get("StringValue")
        if value is None:
            value = attr.get("BinaryValue") or b""
        total += len(value if isinstance(value, bytes) else str(value).encode())
    return total


def request_size(request: Mapping[str, Any]) -> int:
    """The size SQS checks against its limit: the body in UTF-8 plus the attributes."""
    return len(str(request["MessageBody"]).encode()) + _attribute_bytes(
        request.get("MessageAttributes") or {}
    )


def offloaded(request: Mapping[str, Any], pointer: Pointer) -> dict[str, Any]:
    """The request with its body replaced by an extended-client pointer to ``pointer``."""
    size = len(str(request["MessageBody"]).encode())
    attributes = {**(request.get("MessageAttributes") or {}), **size_attribute(size)}
    return {**request, "MessageBody": pointer.body(), "MessageAttributes": attributes}


def check_size(request: Mapping[str, Any], options: PublishOptions, task: str) -> bool:
    """True when the body must be offloaded to S3.

    Raises:
        PublishError: the body is larger than even an offloaded body may be.
    """
    size = request_size(request)
    if size > options.max_payload_bytes:
        raise PublishError(
            f"{task}: message of {size} bytes exceeds the largest body we publish "
            f"({options.max_payload_bytes} bytes, CELERY_LAMBDA_MAX_PAYLOAD_BYTES); pass a "
            "reference to the data (e.g. an S3 key) instead of the data itself"
        )
    return size > options.offload_threshold


def batches(
    requests: Iterable[dict[str, Any]],
    *,
    max_entries: int = SQS_MAX_BATCH_ENTRIES,
    max_bytes: int = SQS_MAX_BATCH_PAYLOAD_BYTES,
) -> Iterator[list[dict[str, Any]]]:
    """Group SendMessage requests for one queue into SendMessageBatch-sized lists, in order."""
    chunk: list[dict[str, Any]] = []
    used = 0
    for request in requests:
        size = request_size(request)
        if chunk and (len(chunk) == max_entries or used + size > max_bytes):
            yield chunk
            chunk, used = [], 0
        chunk.append(request)
        used += size
    if chunk:
        yield chunk


def batch_entry(index: int, request: Mapping[str, Any]) -> dict[str, Any]:
    """A SendMessageBatch entry for one SendMessage request."""
    entry = {key: value for key, value in request.items() if key != "QueueUrl"}
    entry["Id"] = str(index)
    return entry
