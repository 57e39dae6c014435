"""``lambda dlq list|show``: dead-letter messages, looked at without taking them away.

SQS has no "peek": the only way to read a message is ReceiveMessage, which hides it for a
visibility timeout and adds one to its receive count. A look therefore receives every message
with a short visibility (so that the next ReceiveMessage of the same look returns new ones, not
the same ten again) and makes them all visible again at once when it is done, in a ``finally``:
if the command dies midway, SQS shows them again after ``hide_seconds`` anyway. A DLQ has no
redrive policy of its own, so the extra receive never moves a message anywhere; the receive
count shown is SQS's minus the look's own receive.

Bodies are decoded with :func:`infra.wire.protocol.decode` (what the Lambda path runs), with the
app's ``accept_content``; a body that is not a task message we may run is shown with the reason.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from devtools.ops.target import translated
from infra.core.errors import MessageDecodeError
from infra.core.limits import SQS_MAX_BATCH_ENTRIES
from infra.wire.envelope import MAX_BODY_CHARS
from infra.wire.offload import PayloadMissing, Pointer, parse_pointer
from infra.wire.protocol import TaskMessage, decode

__all__ = [
    "PEEK_SECONDS",
    "DeadLetter",
    "peeked",
    "read_letter",
    "receive_all",
    "receive_request",
    "release",
    "visibility_entries",
]

PEEK_SECONDS: Final = 30
"""How long a look hides the messages it received, at most (they are released when it ends)."""
SUMMARY_CHARS: Final = 60

Fetch = Callable[[Pointer], str]
"""Reads an offloaded body (``PayloadStore.fetch``)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of a dead-letter queue, decoded when it is a task message."""

    message_id: str
    dlq_url: str
    receipt_handle: str
    body: str
    attributes: Mapping[str, str]
    message_attributes: Mapping[str, Any]
    task: TaskMessage | None
    problem: str | None
    """Why ``task`` is None: the decode error, or where an offloaded body is."""

    @property
    def receives(self) -> int:
        """Receives before this look (on the source queue, and by earlier looks)."""
        return max(0, int(self.attributes.get("ApproximateReceiveCount", "1")) - 1)

    @property
    def sent_at(self) -> datetime | None:
        return _epoch_ms(self.attributes.get("SentTimestamp"))

    @property
    def first_received_at(self) -> datetime | None:
        return _epoch_ms(self.attributes.get("ApproximateFirstReceiveTimestamp"))

    @property
    def summary(self) -> str:
        """The arguments in a few characters: Celery's ``argsrepr``/``kwargsrepr`` when sent.

        Empty without a decoded task: why there is none is :attr:`problem`, and only there.
        """
        if self.task is None:
            return ""
        headers = self.task.headers
        args = headers.get("argsrepr") or reprlib.repr(self.task.args)
        kwargs = headers.get("kwargsrepr") or reprlib.repr(self.task.kwargs)
        text = f"{args} {kwargs}" if kwargs not in ("{}", "") else str(args)
        return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"

    def as_json(self, *, full: bool = False) -> dict[str, Any]:
        task = self.task
        data: dict[str, Any] = {
            "message_id": self.message_id,
            "dlq_url": self.dlq_url,
            "task_name": task.task_name if task else None,
            "task_id": task.task_id if task else None,
            "args": self.summary if task else None,
            "receives": self.receives,
            "sent_at": _iso(self.sent_at),
            "first_received_at": _iso(self.first_received_at),
            "problem": self.problem,
        }
        if full:
            data.update(
                body=self.body,
                attributes=dict(self.attributes),
                message_attributes=dict(self.message_attributes),
                task=_task_json(task) if task else None,
            )
        return data


# ---------------------------------------------------------------- pure


def _epoch_ms(value: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(value) / 1000, UTC) if value else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _task_json(task: TaskMessage) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "task_name": task.task_name,
        "args": list(task.args),
        "kwargs": task.kwargs,
        "headers": task.headers,
        "embed": task.embed,
        "protocol": task.protocol,
        "content_type": task.content_type,
    }


def _decoded(
    body: str, message_id: str, accept: Collection[str], fetch: Fetch | None, max_chars: int
) -> tuple[TaskMessage | None, str | None]:
    """The task a body carries, or why there is none to show."""
    pointer = parse_pointer(body)
    try:
        if pointer is None:
            return decode(body, message_id=message_id, accept=accept), None
        if fetch is None:
            return None, f"body offloaded to s3://{pointer.bucket}/{pointer.key}"
        return decode(
            fetch(pointer), message_id=message_id, accept=accept, max_chars=max_chars
        ), None
    except MessageDecodeError as exc:
        return None, exc.reason
    except PayloadMissing as exc:
        return None, str(exc)


def read_letter(
    message: Mapping[str, Any],
    dlq_url: str,
    accept: Collection[str],
    fetch: Fetch | None = None,
    max_payload_chars: int = MAX_BODY_CHARS,
) -> DeadLetter:
    """A received DLQ message, decoded; an offloaded body is fetched only with a ``fetch``.

    Raises:
        StoreError: S3 could not be read (a missing object is shown as the problem instead).
    """
    body = str(message["Body"])
    task, problem = _decoded(body, message["MessageId"], accept, fetch, max_payload_chars)
    return DeadLetter(
        message_id=message["MessageId"],
        dlq_url=dlq_url,
        receipt_handle=message["ReceiptHandle"],
        body=body,
        attributes=message.get("Attributes", {}),
        message_attributes=message.get("MessageAttributes", {}),
        task=task,
        problem=problem,
    )


def visibility_entries(messages: Sequence[Mapping[str, Any]], seconds: int) -> list[list[Any]]:
    """ChangeMessageVisibilityBatch entries, ten per call."""
    entries = [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": seconds}
        for i, m in enumerate(messages)
    ]
    return [
        entries[i : i + SQS_MAX_BATCH_ENTRIES]
        for i in range(0, len(entries), SQS_MAX_BATCH_ENTRIES)
    ]


# ---------------------------------------------------------------- AWS


def receive_request(url: str, count: int, hide_seconds: int) -> dict[str, Any]:
    """One ReceiveMessage of up to ``count`` messages with every attribute, hidden a while."""
    return {
        "QueueUrl": url,
        "MaxNumberOfMessages": min(SQS_MAX_BATCH_ENTRIES, count),
        "VisibilityTimeout": hide_seconds,
        "WaitTimeSeconds": 1,  # long polling asks every SQS server; short polling only a sample
        "MessageSystemAttributeNames": ["All"],
        "MessageAttributeNames": ["All"],
    }


def receive_all(
    sqs: Any,
    url: str,
    *,
    hide_seconds: int = PEEK_SECONDS,
    limit: int | None = None,
    looking_for: Collection[str] = (),
    into: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Receive up to ``limit`` messages (all by default), each hidden for ``hide_seconds``.

    Stops at the first empty receive, or once every id in ``looking_for`` was seen; a message
    seen twice (its visibility ran out during a long look) is kept once. Each message is appended
    to ``into`` as it arrives, so that a caller can release what was received even when a later
    receive fails.
    """
    received = [] if into is None else into
    seen: set[str] = set()
    left = set(looking_for)
    while limit is None or len(seen) < limit:
        count = SQS_MAX_BATCH_ENTRIES if limit is None else limit - len(seen)
        with translated(f"receiving from {url}"):
            response = sqs.receive_message(**receive_request(url, count, hide_seconds))
        messages = [m for m in response.get("Messages", []) if m["MessageId"] not in seen]
        seen.update(m["MessageId"] for m in messages)
        received.extend(messages)
        left -= seen
        if not messages or (looking_for and not left):
            break
    return received


def release(sqs: Any, url: str, messages: Sequence[Mapping[str, Any]]) -> None:
    """Make received messages visible again now (failures only shorten nothing: they reappear)."""
    for entries in visibility_entries(messages, 0):
        with translated(f"making messages of {url} visible again"):
            sqs.change_message_visibility_batch(QueueUrl=url, Entries=entries)


@contextmanager
def peeked(
    sqs: Any,
    url: str,
    *,
    hide_seconds: int = PEEK_SECONDS,
    limit: int | None = None,
    looking_for: Collection[str] = (),
) -> Iterator[list[dict[str, Any]]]:
    """The messages of ``url`` (see :func:`receive_all`), visible again when the block ends."""
    messages: list[dict[str, Any]] = []
    try:
        yield receive_all(
            sqs, url, hide_seconds=hide_seconds, limit=limit, looking_for=looking_for, into=messages
        )
    finally:
        release(sqs, url, messages)
