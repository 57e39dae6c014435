"""kombu's SQS transport with our publish path and large-message support, for producers and workers.

Selected with Celery's ``broker_transport`` setting (``infra.configure(app)`` sets it), so the
broker URL stays ``sqs://`` and a stock client still reads everything it sends. Over kombu's
transport it changes four things:

- **publish** (``_put``): the request comes from :func:`infra.publish.send_request` (native delay,
  FIFO ids), bodies over the threshold go to S3 behind an extended-client pointer, and inside
  :func:`batched` requests are collected and sent with SendMessageBatch;
- **unknown queues**: with predefined queues, a queue the configuration does not name is a clear
  :class:`~infra.errors.UnknownQueueError` naming it and the known ones;
- **receive**: a pointer body is replaced by its S3 object before kombu parses it; one that cannot
  be fetched is left in SQS (it comes back, finally to the DLQ) instead of reaching Celery, which
  would delete it as an unknown message;
- **ack**: once a message with an offloaded body is deleted from SQS, its S3 object is deleted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from kombu.transport import SQS
from kombu.transport.SQS.exceptions import UndefinedQueueException

from infra import aws
from infra.errors import CeleryLambdaError, PublishError, StoreError, UnknownQueueError
from infra.limits import SQS_MAX_MESSAGE_BYTES
from infra.offload import PayloadStore, Pointer, parse_pointer
from infra.publish import (
    PublishOptions,
    batch_entry,
    batches,
    check_size,
    offloaded,
    send_request,
)
from infra.settings import DEFAULT_FIFO_GROUP, DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_RESULTS_BUCKET

__all__ = ["TRANSPORT", "Channel", "Transport", "batched"]

logger = logging.getLogger(__name__)

TRANSPORT = "infra.transport:Transport"
"""The value of Celery's ``broker_transport`` that selects this transport."""
POINTER_KEY = "celery_lambda_payload"
"""Where a received message's raw SQS dict keeps the pointer its body came from."""
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

    client: Callable[[], Any]
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
                response = self.client().send_message_batch(QueueUrl=queue_url, Entries=entries)
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
                _forget(self.payloads(), item.pointer)
        return [f"{item.label}: {reason}" for item, reason in failed]


def _forget(payloads: PayloadStore, pointer: Pointer) -> None:
    """Delete an offloaded body nobody will read; the lifecycle rule catches a failure."""
    try:
        payloads.delete(pointer)
    except StoreError as exc:
        logger.warning("%s; the bucket's lifecycle rule will expire it", exc)


def _label(message: dict[str, Any]) -> str:
    headers = message.get("headers") or {}
    return f"{headers.get('task', 'message')}[{headers.get('id', '?')}]"


class Channel(SQS.Channel):
    """kombu's SQS channel with our publish, receive and ack additions."""

    _batch: PublishBatch | None = None

    # ---------------------------------------------------------------- configuration
    @property
    def publish_options(self) -> PublishOptions:
        """The publish knobs from the transport options."""
        options = self.transport_options
        return PublishOptions(
            offload_threshold=int(options.get("offload_threshold") or SQS_MAX_MESSAGE_BYTES),
            max_payload_bytes=int(options.get("max_payload_bytes") or DEFAULT_MAX_PAYLOAD_BYTES),
            fifo_group=str(options.get("fifo_group") or DEFAULT_FIFO_GROUP),
            base64=bool(self.sqs_base64_encoding),
        )

    @property
    def batch_publish(self) -> bool:
        """Whether :func:`batched` collects this channel's messages."""
        return bool(self.transport_options.get("batch_publish", True))

    def payloads(self) -> PayloadStore:
        """The store for offloaded bodies: the configured bucket."""
        bucket = self.transport_options.get("payload_bucket") or DEFAULT_RESULTS_BUCKET
        return PayloadStore(aws.client("s3"), bucket)

    # ---------------------------------------------------------------- publish
    def _resolve_queue_url(self, queue: str) -> str:
        try:
            return str(super()._resolve_queue_url(queue))
        except UndefinedQueueException as exc:
            known = ", ".join(sorted(self.predefined_queues)) or "none"
            raise UnknownQueueError(
                f"queue {queue!r} is not configured (CELERY_QUEUE_URLS names: {known}); "
                "declare it in template.yaml and CELERY_QUEUE_URLS, or fix task_routes / "
                "the queue= option"
            ) from exc

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        if message.get("redelivered"):
            super()._put(queue, message, **kwargs)  # kombu's restore: a visibility change
            return
        label = _label(message)
        options = self.publish_options
        request = send_request(
            queue, self._new_queue(queue), message, options=options, now=datetime.now(UTC)
        )
        pointer = None
        if check_size(request, options, label):
            task_id = (message.get("headers") or {}).get("id")
            pointer = self.payloads().put(task_id, request["MessageBody"])
            request = offloaded(request, pointer)
        if self._batch is not None:
            self._batch.add(label, request, pointer)
            return
        try:
            self.sqs(queue=self.canonical_queue_name(queue)).send_message(**request)
        except BaseException:
            if pointer is not None:
                _forget(self.payloads(), pointer)
            raise

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Collect every message published inside the block; send them in batches at its end."""
        if self._batch is not None or not self.batch_publish:
            yield
            return
        self._batch = PublishBatch(client=self.sqs, payloads=self.payloads)
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            batch.flush()

    # ---------------------------------------------------------------- receive and ack
    def _with_bodies(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The messages whose bodies we have: pointers replaced by their S3 objects."""
        ready = []
        for message in messages:
            pointer = parse_pointer(message["Body"])
            if pointer is None:
                ready.append(message)
                continue
            try:
                message["Body"] = self.payloads().fetch(pointer)
            except CeleryLambdaError as exc:
                logger.error(
                    "message %s left in SQS (it comes back, finally to the DLQ): %s",
                    message.get("MessageId"),
                    exc,
                )
                continue
            message[POINTER_KEY] = pointer
            ready.append(message)
        return ready

    def _messages_to_python(self, messages: list[dict[str, Any]], queue: str) -> Any:
        return super()._messages_to_python(self._with_bodies(messages), queue)

    def _on_messages_ready(self, queue: str, qname: str, messages: dict[str, Any]) -> Any:
        if messages.get("Messages"):
            messages = {**messages, "Messages": self._with_bodies(messages["Messages"])}
        return super()._on_messages_ready(queue, qname, messages)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        try:
            raw = self.qos.get(delivery_tag).delivery_info.get("sqs_message") or {}
        except KeyError:
            raw = {}
        super().basic_ack(delivery_tag, multiple)
        pointer = raw.get(POINTER_KEY)
        if pointer is not None:
            _forget(self.payloads(), pointer)


class Transport(SQS.Transport):
    """kombu's SQS transport using :class:`Channel`."""

    Channel = Channel


@contextmanager
def batched(producer: Any) -> Iterator[None]:
    """Send what ``producer`` publishes inside the block with SendMessageBatch, if it is ours."""
    channel = producer.channel
    if isinstance(channel, Channel):
        with channel.collecting():
            yield
    else:
        yield
