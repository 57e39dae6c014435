"""``lambda dlq redrive|purge``: send dead letters back to their queue, or empty a DLQ.

A redrive sends first and deletes from the DLQ only the messages SQS confirmed sent, so an
interruption (a crash, Ctrl-C, a failed delete) can leave a message in both queues -- it runs
once anyway, because the consumers claim task ids -- but never in neither. While a message is
being moved it is hidden in the DLQ for ``hide_seconds``; after an interruption it reappears
there and the next redrive sends it again. A refused send leaves the message in the DLQ.

Where a message goes back: the queue SQS names in its ``DeadLetterQueueSourceArn`` attribute
(set by AWS when it moves a message), else the one queue whose ``RedrivePolicy`` names this DLQ
(the template's pairing). SQS's own StartMessageMoveTask is not used: it cannot pick messages
by id, and moto does not implement it.

FIFO: a redriven message keeps its ``MessageGroupId`` and gets the deduplication id
``redrive-<DLQ message id>``: never the original's (SQS would drop it as a duplicate within five
minutes of the first send, and the DLQ copy would then be deleted: lost), and the same on a second
attempt, so that a redrive repeated within five minutes is not sent twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from devtools.ops.dlq import receive_all, release
from devtools.ops.queues import QueuePair
from devtools.ops.target import translated
from infra.core.errors import PublishError
from infra.core.limits import SQS_MAX_BATCH_ENTRIES, SQS_MAX_BATCH_PAYLOAD_BYTES
from infra.core.settings import Settings
from infra.wire.requeue import queue_url_for_arn

__all__ = [
    "REDRIVE_HIDE_SECONDS",
    "RedriveResult",
    "delete_entries",
    "destination",
    "purge",
    "redrive_queue",
    "send_batches",
    "send_entry",
    "sources_by_dlq",
]

REDRIVE_HIDE_SECONDS: Final = 60
"""Messages being moved stay hidden in the DLQ this long: after an interruption, they reappear."""

Message = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RedriveResult:
    """What a redrive did: the ids moved, and the ids left in the DLQ with the reason."""

    moved: tuple[str, ...] = ()
    kept: tuple[tuple[str, str], ...] = ()

    def __add__(self, other: RedriveResult) -> RedriveResult:
        return RedriveResult(self.moved + other.moved, self.kept + other.kept)

    def as_json(self) -> dict[str, Any]:
        return {"moved": list(self.moved), "kept": [{"id": i, "reason": r} for i, r in self.kept]}


# ---------------------------------------------------------------- pure


def sources_by_dlq(pairs: Sequence[QueuePair]) -> dict[str, tuple[str, ...]]:
    """DLQ URL → the URLs of the queues whose redrive policy names it."""
    sources: dict[str, tuple[str, ...]] = {}
    for pair in pairs:
        if pair.dlq_url:
            sources[pair.dlq_url] = (*sources.get(pair.dlq_url, ()), pair.url)
    return sources


def destination(
    message: Message, dlq_url: str, sources: Mapping[str, tuple[str, ...]], settings: Settings
) -> str | None:
    """The queue a dead letter came from; None when it cannot be told."""
    arn = message.get("Attributes", {}).get("DeadLetterQueueSourceArn")
    if arn:
        return queue_url_for_arn(str(arn), settings)
    candidates = sources.get(dlq_url, ())
    return candidates[0] if len(candidates) == 1 else None


def send_entry(index: int, message: Message) -> dict[str, Any]:
    """A SendMessageBatch entry carrying the same body and attributes (not its old delay)."""
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["Body"]}
    attributes = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in message.get("MessageAttributes", {}).items()
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    system = message.get("Attributes", {})
    if system.get("AWSTraceHeader"):
        trace = {"DataType": "String", "StringValue": system["AWSTraceHeader"]}
        entry["MessageSystemAttributes"] = {"AWSTraceHeader": trace}
    if system.get("MessageGroupId"):
        entry["MessageGroupId"] = system["MessageGroupId"]
        entry["MessageDeduplicationId"] = f"redrive-{message['MessageId']}"
    return entry


def send_batches(messages: Sequence[Message]) -> list[list[Message]]:
    """Groups for SendMessageBatch: ten entries and 1 MiB of bodies at most each."""
    batches: list[list[Message]] = []
    size = 0
    for message in messages:
        body = len(str(message["Body"]).encode())
        full = batches and (
            len(batches[-1]) == SQS_MAX_BATCH_ENTRIES or size + body > SQS_MAX_BATCH_PAYLOAD_BYTES
        )
        if not batches or full:
            batches.append([])
            size = 0
        batches[-1].append(message)
        size += body
    return batches


def delete_entries(messages: Sequence[Message]) -> list[dict[str, str]]:
    return [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)]


# ---------------------------------------------------------------- AWS


def _send(sqs: Any, url: str, batch: Sequence[Message]) -> tuple[list[Message], RedriveResult]:
    """SendMessageBatch: the messages SQS confirmed, and the refused ones as kept."""
    entries = [send_entry(i, m) for i, m in enumerate(batch)]
    with translated(f"sending {len(batch)} messages back to {url}", PublishError):
        response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
    sent = [batch[int(e["Id"])] for e in response.get("Successful", [])]
    refused = tuple(
        (batch[int(e["Id"])]["MessageId"], f"refused by {url}: {e.get('Message') or e['Code']}")
        for e in response.get("Failed", [])
    )
    return sent, RedriveResult((), refused)


def _delete(sqs: Any, dlq_url: str, url: str, sent: Sequence[Message]) -> RedriveResult:
    """DeleteMessageBatch of messages already sent to ``url``: moved, or kept with a warning."""
    if not sent:
        return RedriveResult()
    with translated(f"deleting {len(sent)} sent messages from {dlq_url}", PublishError):
        response = sqs.delete_message_batch(QueueUrl=dlq_url, Entries=delete_entries(sent))
    failed = {int(f["Id"]): f.get("Message") or f["Code"] for f in response.get("Failed", [])}
    kept = tuple(
        (
            sent[i]["MessageId"],
            f"sent to {url} but still in the DLQ ({why}): a task sent twice runs once",
        )
        for i, why in failed.items()
    )
    moved = tuple(m["MessageId"] for i, m in enumerate(sent) if i not in failed)
    return RedriveResult(moved, kept)


def _redrive(
    sqs: Any,
    dlq_url: str,
    messages: Sequence[Message],
    where: Callable[[Message], str | None],
    on_progress: Callable[[int], None],
) -> RedriveResult:
    """Send each message where it belongs, ten at a time, deleting each batch once sent."""
    result = RedriveResult()
    by_url: dict[str, list[Message]] = {}
    for message in messages:
        url = where(message)
        if url is None:
            result += RedriveResult((), ((message["MessageId"], "source queue unknown"),))
        else:
            by_url.setdefault(url, []).append(message)
    for url, group in by_url.items():
        for batch in send_batches(group):
            sent, refused = _send(sqs, url, batch)
            result += refused + _delete(sqs, dlq_url, url, sent)
            on_progress(len(batch))
    return result


def _redrive_selected(
    sqs: Any,
    dlq_url: str,
    where: Callable[[Message], str | None],
    selected: Collection[str],
    hide_seconds: int,
    on_progress: Callable[[int], None],
) -> RedriveResult:
    """Look through the DLQ for the ``selected`` ids; move those, release the rest at once."""
    received = receive_all(sqs, dlq_url, hide_seconds=hide_seconds, looking_for=selected)
    release(sqs, dlq_url, [m for m in received if m["MessageId"] not in selected])
    chosen = [m for m in received if m["MessageId"] in selected]
    result = _redrive(sqs, dlq_url, chosen, where, on_progress)
    kept = dict(result.kept)
    release(sqs, dlq_url, [m for m in chosen if m["MessageId"] in kept])
    return result


def _redrive_all(
    sqs: Any,
    dlq_url: str,
    where: Callable[[Message], str | None],
    hide_seconds: int,
    on_progress: Callable[[int], None],
) -> RedriveResult:
    """Move the DLQ page by page (ten hidden at a time), until only kept messages are left."""
    result, kept = RedriveResult(), list[Message]()
    while True:
        page = receive_all(sqs, dlq_url, hide_seconds=hide_seconds, limit=SQS_MAX_BATCH_ENTRIES)
        fresh = [m for m in page if m["MessageId"] not in dict(result.kept)]
        if not fresh:
            break  # empty, or only messages that already failed to move this time
        done = _redrive(sqs, dlq_url, fresh, where, on_progress)
        kept += [m for m in fresh if m["MessageId"] in dict(done.kept)]
        result += done
    release(sqs, dlq_url, kept)
    return result


def redrive_queue(
    sqs: Any,
    dlq_url: str,
    where: Callable[[Message], str | None],
    *,
    selected: Collection[str] | None = None,
    hide_seconds: int = REDRIVE_HIDE_SECONDS,
    on_progress: Callable[[int], None] = lambda n: None,
) -> RedriveResult:
    """Move every message of ``dlq_url`` (or the ``selected`` ids) to the queue ``where`` names.

    Messages that stay in the DLQ are made visible again at the end; the ones being moved when
    an exception escapes reappear after ``hide_seconds``.

    Raises:
        PublishError: SQS could not be reached, or refused a whole call.
    """
    if selected is not None:
        return _redrive_selected(sqs, dlq_url, where, selected, hide_seconds, on_progress)
    return _redrive_all(sqs, dlq_url, where, hide_seconds, on_progress)


def purge(sqs: Any, url: str) -> None:
    """Delete every message of ``url`` (SQS finishes within 60 seconds)."""
    with translated(f"purging {url}"):
        sqs.purge_queue(QueueUrl=url)
