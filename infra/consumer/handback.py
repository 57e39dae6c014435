"""Handing a record back to SQS from the Lambda path: a task not due yet, or without a turn.

A standard queue gets the same body again with a delay, and the original is acked. A FIFO queue
takes no per-message delay and a re-send would reorder its group, so the record is kept invisible
and reported instead; each hold is one more receive, so a wait longer than the queue's
``maxReceiveCount`` times twelve hours ends in the DLQ. What to send is decided in
:func:`infra.wire.requeue.hand_back`, as for the worker's transport.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from infra.consumer.record_metrics import note
from infra.consumer.seams import HandBackQueue
from infra.core.errors import CeleryLambdaError
from infra.core.observability import METRIC_DELAYED, logger
from infra.core.settings import Settings
from infra.wire.protocol import TaskMessage
from infra.wire.requeue import Hold, hand_back, of_record

__all__ = ["RecordHeld", "Requeuer"]


class RecordHeld(CeleryLambdaError):
    """A FIFO record not yet due: kept invisible until its ETA (FIFO has no per-message delay)."""


@dataclass(frozen=True, slots=True)
class Requeuer:
    """Hands the pipeline's records back to their queue."""

    queue: Callable[[], HandBackQueue]
    """The SQS client, made on first use (most batches hand nothing back)."""
    settings: Settings
    clock: Callable[[], float] = time.time

    def hand_back(
        self, message: TaskMessage, record: Mapping[str, Any], wait: float, why: str
    ) -> None:
        """Re-send the record invisible for ``wait`` seconds (at most 15 minutes), or on FIFO
        hold it that long (within SQS's twelve hours).

        Raises:
            RecordHeld: the record is from a FIFO queue; it must be reported to come back.
        """
        step = hand_back(of_record(record, self.settings), wait, self.clock())
        if isinstance(step, Hold):
            self.queue().change_message_visibility(**step.request)
            note(message, METRIC_DELAYED)
            seconds = step.request["VisibilityTimeout"]
            logger.info(f"FIFO {why}: held invisible", hold_seconds=seconds)
            raise RecordHeld(f"FIFO record held for {seconds}s: {why}")
        self.queue().send_message(**step.request)
        note(message, METRIC_DELAYED)
        logger.info(f"{why}: re-sent with a delay", delay_seconds=step.request["DelaySeconds"])
