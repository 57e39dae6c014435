"""Collecting a group's messages and sending them with SendMessageBatch.

Entries SQS failed on its side (``SenderFault`` false) are sent again with a short backoff; those
it refused, and those still failing, are reported together in one :class:`PublishError` after
the rest was sent. An offloaded body whose message was not sent is deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from infra.core.errors import PublishError, StoreError
from infra.producer.publish import batch_entry, batches
from infra.wire.offload import PayloadStore, Pointer

__all__ = ["BATCH_ATTEMPTS", "PublishBatch", "forget"]

logger = logging.getLogger(__name__)

BATCH_ATTEMPTS = 3
"""SendMessageBatch entries that failed through no fault of ours are sent this many times."""


@dataclass(slots=True)
class _Pending:
    """One request waiting in a batch, with what names it in an error."""

    label: str
    request: dict[str, Any]
    pointer: Pointer | None


@dataclass(slots=True)
class PublishBatch:
    """Requests collected while a group is published, sent with SendMessageBatch on flush."""

    client: Callable[[str], Any]
    """The SQS client for a queue URL."""
    payloads: Callable[[], PayloadStore]
    sleep: Callable[[float], None] = time.sleep
    pending: dict[str, list[_Pending]] = field(default_factory=dict)

    def add(self, label: str, request: dict[str, Any], pointer: Pointer | None) -> None:
        """Queue ``request`` for its queue."""
        self.pending.setdefault(request["QueueUrl"], []).append(_Pending(label, request, pointer))

    def flush(self) -> None:
        """Send everything collected, in order, at most 10 entries and 1 MiB per call.

        Raises:
            PublishError: some messages were not sent; it names each with SQS's reason.
        """
        pending, self.pending = self.pending, {}
        failures: list[str] = []
        for queue_url, items in pending.items():
            by_request = {id(item.request): item for item in items}
            for chunk in batches(item.request for item in items):
                failed = self._send(queue_url, [by_request[id(r)] for r in chunk])
                failures.extend(failed)
        if failures:
            raise PublishError(
                f"{len(failures)} message(s) of a batch were not sent: " + "; ".join(failures)
            )

    def _send(self, queue_url: str, items: list[_Pending]) -> list[str]:
        """Send one chunk; retry entries SQS failed on its side; return what finally failed."""
        waiting = dict(enumerate(items))
        failed: list[tuple[_Pending, str]] = []
        for attempt in range(BATCH_ATTEMPTS):
            if attempt:
                self.sleep(0.1 * 2**attempt)
            entries = [batch_entry(i, item.request) for i, item in waiting.items()]
            try:
                response = self.client(queue_url).send_message_batch(
                    QueueUrl=queue_url, Entries=entries
                )
            except (ClientError, BotoCoreError) as exc:
                failed.extend((item, str(exc)) for item in waiting.values())
                waiting = {}
                break
            retry: dict[int, _Pending] = {}
            for entry in response.get("Failed") or []:
                item = waiting[int(entry["Id"])]
                if entry.get("SenderFault"):
                    failed.append((item, f"{entry.get('Code')} {entry.get('Message')}"))
                else:
                    retry[int(entry["Id"])] = item
            waiting = retry
            if not waiting:
                break
        failed.extend((item, "still failing after retries") for item in waiting.values())
        for item, _ in failed:
            if item.pointer is not None:
                forget(self.payloads(), item.pointer)
        return [f"{item.label}: {reason}" for item, reason in failed]


def forget(payloads: PayloadStore, pointer: Pointer) -> None:
    """Delete an offloaded body nobody will read; the lifecycle rule catches a failure."""
    try:
        payloads.delete(pointer)
    except StoreError as exc:
        logger.warning("%s; the bucket's lifecycle rule will expire it", exc)
