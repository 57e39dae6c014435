"""Record bodies on the Lambda path: fetched through an extended-client pointer when offloaded,
bounded before decoding, and the S3 object deleted once the record is settled."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from celery import states

from infra.consumer.runner import Outcome
from infra.core import aws
from infra.core.errors import MessageDecodeError, StoreError
from infra.core.observability import (
    METRIC_DECODE_FAILED,
    METRIC_DUPLICATE,
    MetricUnit,
    logger,
    metrics,
)
from infra.core.settings import Settings
from infra.wire.envelope import MAX_BODY_CHARS
from infra.wire.offload import PayloadStore, Pointer, parse_pointer
from infra.wire.protocol import TaskMessage, decode

__all__ = ["RecordBodies"]


@dataclass(frozen=True, slots=True)
class RecordBodies:
    """Reads, decodes and disposes of record bodies for one app's pipeline."""

    settings: Settings

    def decode(self, record: Mapping[str, Any], accept: Collection[str]) -> TaskMessage:
        """Decode the record; an extended-client pointer is replaced by its S3 object first.

        Raises:
            MessageDecodeError: not a task message we may run.
            PayloadMissing: the pointer's object does not exist.
            StoreError: S3 could not be read.
        """
        body: str = record["body"]
        limit = MAX_BODY_CHARS
        pointer = parse_pointer(body)
        if pointer is not None:
            body = self._store(pointer).fetch(pointer)
            limit = max(limit, self.settings.max_payload_bytes)
        return decode(body, message_id=record["messageId"], accept=accept, max_chars=limit)

    def missing(self, app: Any, record: Mapping[str, Any], pointer: Pointer) -> Outcome:
        """A pointer whose object is gone: a finished task's redelivery, or a lost body.

        Raises:
            MessageDecodeError: the task did not finish; the record goes back, finally to the DLQ.
        """
        state = str(app.AsyncResult(pointer.task_id).state) if pointer.task_id else ""
        if state in states.READY_STATES:
            metrics.add_metric(name=METRIC_DUPLICATE, unit=MetricUnit.Count, value=1)
            logger.info("finished task redelivered after its body was deleted: acked", state=state)
            return Outcome(state, 0.0, "duplicate")
        metrics.add_metric(name=METRIC_DECODE_FAILED, unit=MetricUnit.Count, value=1)
        reason = f"message body s3://{pointer.bucket}/{pointer.key} does not exist"
        logger.error("record's offloaded body is missing", reason=reason)
        raise MessageDecodeError(record["messageId"], reason, record["body"])

    def settled(self, record: Mapping[str, Any], outcome: Outcome) -> None:
        """Delete an offloaded body once its record is settled (not when it was re-sent)."""
        pointer = parse_pointer(record["body"])
        if pointer is None or outcome.state == states.PENDING:
            return
        try:
            self._store(pointer).delete(pointer)
        except StoreError as exc:
            logger.warning("offloaded body not deleted; lifecycle expires it", error=str(exc))

    def _store(self, pointer: Pointer) -> PayloadStore:
        return PayloadStore(aws.client("s3", self.settings), pointer.bucket)
