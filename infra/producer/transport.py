"""kombu's SQS transport with our publish path and large-message support, for producers and workers.

Selected with Celery's ``broker_transport`` setting (``infra.configure(app)`` sets it), so the
broker URL stays ``sqs://`` and a stock client still reads everything it sends. Over kombu's
transport it changes four things:

- **publish** (``_put``): the request comes from :func:`infra.producer.publish.send_request`
  (native delay, FIFO ids, a tenant's ``MessageGroupId`` on standard queues), bodies over the
  threshold go to S3 behind an extended-client pointer, and inside :func:`batched` requests are
  collected and sent with SendMessageBatch;
- **unknown queues**: with predefined queues, a queue the configuration does not name is a clear
  :class:`~infra.core.errors.UnknownQueueError` naming it and the known ones;
- **receive**: a pointer body is replaced by its S3 object before kombu parses it; one that cannot
  be fetched is left in SQS (it comes back, finally to the DLQ) instead of reaching Celery, which
  would delete it as an unknown message;
- **not yet due**: a task whose ETA is more than a minute away (ETAs over 15 minutes arrive after
  SQS's longest delay) is handed back to SQS instead of waiting in the worker's memory past its
  visibility timeout: re-sent with a delay (FIFO: kept invisible, which keeps the group's order);
- **ack**: in a worker (a channel on an event loop) acks are deleted together: a message's
  prefetch slot is freed at once, and its ``DeleteMessage`` waits (at most ``ack_batch_seconds``,
  :data:`ACK_BATCH_SECONDS` by default; 0 deletes each at once, as kombu does) to go out in one
  ``DeleteMessageBatch`` of up to ten. A worker killed in that window leaves those messages to come
  back after their visibility timeout, as one killed between a task and its ack does: their claim
  acks them without running the task again. Once a message with an offloaded body is deleted from
  SQS, its S3 object is deleted.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from kombu.asynchronous.aws.sqs.connection import AsyncSQSConnection
from kombu.transport import SQS
from kombu.transport.SQS.exceptions import UndefinedQueueException

from infra.core import aws
from infra.core.errors import CeleryLambdaError, UnknownQueueError
from infra.core.limits import SQS_MAX_BATCH_ENTRIES, SQS_MAX_MESSAGE_BYTES
from infra.core.settings import (
    DEFAULT_FIFO_GROUP,
    DEFAULT_MAX_PAYLOAD_BYTES,
    DEFAULT_RESULTS_BUCKET,
)
from infra.producer.batch import PublishBatch, forget
from infra.producer.publish import (
    PublishOptions,
    check_size,
    label,
    offloaded,
    send_request,
)
from infra.wire.offload import PayloadStore, Pointer, parse_pointer
from infra.wire.requeue import Hold, hand_back, of_message
from infra.wire.timing import zoned_time

__all__ = ["ACK_BATCH_SECONDS", "TRANSPORT", "Channel", "Transport", "batched", "delete_batch"]

logger = logging.getLogger(__name__)

TRANSPORT = "infra.producer.transport:Transport"
"""The value of Celery's ``broker_transport`` that selects this transport."""
WORKER_HOLD_SECONDS = 60
"""A worker may hold a task this long in its ETA timer; one due later goes back to SQS."""
POINTER_KEY = "celery_lambda_payload"
"""Where a received message's raw SQS dict keeps the pointer its body came from."""
ACK_BATCH_SECONDS = 0.25
"""How long a worker's acked message may wait for others to be deleted with (DeleteMessageBatch)."""


@dataclass(frozen=True, slots=True)
class _Acked:
    """An acked message waiting to be deleted from SQS."""

    receipt_handle: str
    pointer: Pointer | None


def delete_batch(queue_url: str, receipt_handles: Sequence[str]) -> dict[str, Any]:
    """The DeleteMessageBatch of up to ten received messages; entry ids are their positions."""
    if not 0 < len(receipt_handles) <= SQS_MAX_BATCH_ENTRIES:
        raise ValueError(f"a DeleteMessageBatch holds 1 to 10 entries, not {len(receipt_handles)}")
    return {
        "QueueUrl": queue_url,
        "Entries": [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)],
    }


class Channel(SQS.Channel):
    """kombu's SQS channel with our publish, receive and ack additions."""

    _batch: PublishBatch | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._acked: dict[tuple[str, str | None], list[_Acked]] = {}
        self._acked_lock = threading.Lock()
        self._acked_timer = False
        super().__init__(*args, **kwargs)

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
            tenant_header=str(options.get("tenant_header") or "") or None,
        )

    @property
    def batch_publish(self) -> bool:
        """Whether :func:`batched` collects this channel's messages."""
        return bool(self.transport_options.get("batch_publish", True))

    @property
    def ack_batch_seconds(self) -> float:
        """How long an acked message may wait to be deleted with others (0: at once)."""
        value = self.transport_options.get("ack_batch_seconds")
        return ACK_BATCH_SECONDS if value is None else float(value)

    @property
    def get_message_attributes(self) -> dict[str, Any]:
        """kombu's attributes to receive, and ``MessageGroupId`` (a tenant) for a hand-back."""
        wanted: dict[str, Any] = super().get_message_attributes
        system = list(wanted["MessageSystemAttributeNames"])
        if "ALL" not in system:
            system = sorted({*system, "MessageGroupId"})
        return {**wanted, "MessageSystemAttributeNames": system}

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
        named = label(message)
        options = self.publish_options
        request = send_request(
            queue,
            self._new_queue(queue),
            message,
            options=options,
            now=datetime.now(UTC),
            # Lambda sets this per invocation when tracing is active.
            trace_header=os.environ.get("_X_AMZN_TRACE_ID"),
        )
        pointer = None
        if check_size(request, options, named):
            task_id = (message.get("headers") or {}).get("id")
            pointer = self.payloads().put(task_id, request["MessageBody"])
            request = offloaded(request, pointer)
        if self._batch is not None:
            self._batch.add(named, request, pointer)
            return
        try:
            self.sqs(queue=self.canonical_queue_name(queue)).send_message(**request)
        except BaseException:
            if pointer is not None:
                forget(self.payloads(), pointer)
            raise

    def _client_for_url(self, queue_url: str) -> Any:
        """The SQS client kombu uses for the queue at ``queue_url``."""
        for name, url in self._queue_cache.items():
            if url == queue_url:
                return self.sqs(queue=name if self.predefined_queues else None)
        return self.sqs()

    @contextmanager
    def collecting(self) -> Iterator[None]:
        """Collect every message published inside the block; send them in batches at its end."""
        if self._batch is not None or not self.batch_publish:
            yield
            return
        self._batch = PublishBatch(client=self._client_for_url, payloads=self.payloads)
        try:
            yield
        finally:
            batch, self._batch = self._batch, None
            batch.flush()

    # ---------------------------------------------------------------- receive and ack
    def _deliverable(
        self, messages: list[dict[str, Any]], qname: str, q_url: str
    ) -> list[dict[str, Any]]:
        """The messages to hand to the consumer: bodies fetched, those not yet due handed back."""
        ready = []
        for message in messages:
            if self._fetch_body(message) and not self._handed_back(message, qname, q_url):
                ready.append(message)
        return ready

    def _fetch_body(self, message: dict[str, Any]) -> bool:
        """Replace a pointer body by its S3 object; False when it cannot be had."""
        pointer = parse_pointer(message["Body"])
        if pointer is None:
            return True
        try:
            message["Body"] = self.payloads().fetch(pointer)
        except CeleryLambdaError as exc:
            logger.error(
                "message %s left in SQS (it comes back, finally to the DLQ): %s",
                message.get("MessageId"),
                exc,
            )
            return False
        message[POINTER_KEY] = pointer
        return True

    def _eta(self, message: dict[str, Any]) -> datetime | None:
        """The task's ETA, when the message is a task with an aware one."""
        text = self._decode_python_message_body(message["Body"]).decode("utf-8", "replace")
        return zoned_time((self._prepare_json_payload(text).get("headers") or {}).get("eta"))

    def _handed_back(self, message: dict[str, Any], qname: str, q_url: str) -> bool:
        """Give a task due in more than a minute back to SQS; False to deliver it as it is.

        A refused hand-back leaves the task to the worker's ETA timer.
        """
        eta = self._eta(message)
        wait = None if eta is None else (eta - datetime.now(UTC)).total_seconds()
        if wait is None or wait <= WORKER_HOLD_SECONDS:
            return False
        client = self.sqs(queue=qname)
        step = hand_back(of_message(message, q_url, message.get(POINTER_KEY)), wait, time.time())
        try:
            if isinstance(step, Hold):
                client.change_message_visibility(**step.request)
                return True
            client.send_message(**step.request)
        except (ClientError, BotoCoreError) as exc:
            logger.warning("not-yet-due task kept by the worker's timer: %s", exc)
            return False
        try:
            client.delete_message(QueueUrl=q_url, ReceiptHandle=message["ReceiptHandle"])
        except (ClientError, BotoCoreError) as exc:  # comes back; its claim makes it a no-op
            logger.warning("re-delayed message %s not deleted: %s", message.get("MessageId"), exc)
        return True

    def _messages_to_python(self, messages: list[dict[str, Any]], queue: str) -> Any:
        return super()._messages_to_python(
            self._deliverable(messages, self.canonical_queue_name(queue), self._new_queue(queue)),
            queue,
        )

    def asynsqs(self, queue: str | None = None) -> Any:
        """kombu's asynchronous SQS connection, made to treat a throttled receive as empty."""
        connection = super().asynsqs(queue)
        if type(connection) is AsyncSQSConnection:
            # kombu builds the connection inside asynsqs and offers no factory to override;
            # the subclass only adds the throttle handling of _ThrottleTolerantConnection.
            connection.__class__ = _ThrottleTolerantConnection
        return connection

    def _on_messages_ready(self, queue: str, qname: str, messages: Any) -> Any:
        # kombu passes the queue URL as `queue` here, and an empty list for a receive that SQS
        # answered with a 5xx or a timeout (kombu's own handler then fails on `.get`, and the
        # worker exits): both are a poll that found nothing.
        if not isinstance(messages, dict):
            return 0
        if messages.get("Messages"):
            deliverable = self._deliverable(messages["Messages"], qname, queue)
            messages = {**messages, "Messages": deliverable}
        return super()._on_messages_ready(queue, qname, messages)

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        try:
            info = self.qos.get(delivery_tag).delivery_info
            raw, queue_url = info["sqs_message"], info["sqs_queue"]
        except KeyError:
            super().basic_ack(delivery_tag, multiple)
            return
        if self.hub is None or self.ack_batch_seconds <= 0:
            super().basic_ack(delivery_tag, multiple)  # kombu's DeleteMessage, at once
            if raw.get(POINTER_KEY) is not None:
                forget(self.payloads(), raw[POINTER_KEY])
            return
        queue = self.canonical_queue_name(info["routing_key"]) if "routing_key" in info else None
        # kombu's virtual channel: the delivery is done, its prefetch slot free for the next one.
        super(SQS.Channel, self).basic_ack(delivery_tag, multiple)
        self._defer_delete(queue_url, queue, _Acked(raw["ReceiptHandle"], raw.get(POINTER_KEY)))

    def _defer_delete(self, queue_url: str, queue: str | None, acked: _Acked) -> None:
        """Queue ``acked`` for deletion: ten for a queue go at once, the rest on the timer."""
        full: list[_Acked] = []
        with self._acked_lock:
            waiting = self._acked.setdefault((queue_url, queue), [])
            waiting.append(acked)
            if len(waiting) >= SQS_MAX_BATCH_ENTRIES:
                full = self._acked.pop((queue_url, queue))
            elif not self._acked_timer and self.hub is not None:
                self._acked_timer = True
                self.hub.call_later(self.ack_batch_seconds, self.flush_acks)
        if full:
            self._delete_acked(queue_url, queue, full)

    def flush_acks(self) -> None:
        """Delete every acked message still waiting (the timer, and before the channel closes)."""
        with self._acked_lock:
            waiting, self._acked, self._acked_timer = self._acked, {}, False
        for (queue_url, queue), acked in waiting.items():
            for start in range(0, len(acked), SQS_MAX_BATCH_ENTRIES):
                self._delete_acked(queue_url, queue, acked[start : start + SQS_MAX_BATCH_ENTRIES])

    def _delete_acked(self, queue_url: str, queue: str | None, acked: list[_Acked]) -> None:
        """One DeleteMessageBatch; a message not deleted comes back, and its claim acks it."""
        request = delete_batch(queue_url, [a.receipt_handle for a in acked])
        try:
            response = self.sqs(queue=queue).delete_message_batch(**request)
        except (ClientError, BotoCoreError) as exc:
            logger.warning(
                "%d acked messages not deleted from %s (they come back; their claims ack them "
                "without running): %s",
                len(acked),
                queue_url,
                exc,
            )
            return
        failed = {entry["Id"]: entry for entry in response.get("Failed") or []}
        if failed:
            logger.warning(
                "%d acked messages not deleted from %s (they come back; their claims ack them "
                "without running): %s",
                len(failed),
                queue_url,
                sorted({str(entry.get("Code")) for entry in failed.values()}),
            )
        for index, entry in enumerate(acked):
            if str(index) not in failed and entry.pointer is not None:
                forget(self.payloads(), entry.pointer)

    def close(self) -> None:
        self.flush_acks()
        super().close()


class _ThrottleTolerantConnection(AsyncSQSConnection):
    """A throttled ReceiveMessage (HTTP 400 ``RequestThrottled``/``ThrottlingException``) is an
    empty poll, as kombu already treats a 5xx: kombu raises a bare ``Exception`` for it, which
    ends a worker with "Unrecoverable error" (found by ``lambda soak``'s fault proxy)."""

    def _on_list_ready(self, parent: Any, markers: Any, operation: str, response: Any) -> Any:
        if response.status == 400:
            body = response.read() or b""
            if any(code in body for code in _THROTTLE_CODES):
                logger.warning("SQS throttled %s; polling again", operation)
                return []
            raise self._for_status(response, body)
        return super()._on_list_ready(parent, markers, operation, response)


_THROTTLE_CODES = (b"RequestThrottled", b"ThrottlingException", b"Throttling")


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
