"""Handing a record back to SQS from the Lambda path: a task not due yet, or without a turn.

A standard queue gets the same body again with a delay, and the original is acked. A FIFO queue
takes no per-message delay and a re-send would reorder its group, so the record is kept invisible
and reported instead; each hold is one more receive, so a wait longer than the queue's
``maxReceiveCount`` times twelve hours ends in the DLQ. The requests are built in
:mod:`infra.wire.requeue`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from infra.consumer.record_metrics import note
from infra.core import aws
from infra.core.errors import CeleryLambdaError
from infra.core.observability import METRIC_DELAYED, logger
from infra.core.settings import Settings
from infra.wire.protocol import TaskMessage
from infra.wire.requeue import hold_request, is_fifo, resend_request

__all__ = ["RecordHeld", "hand_back"]


class RecordHeld(CeleryLambdaError):
    """A FIFO record not yet due: kept invisible until its ETA (FIFO has no per-message delay)."""


def hand_back(
    message: TaskMessage,
    record: Mapping[str, Any],
    seconds: float,
    why: str,
    settings: Settings,
    *,
    hold_seconds: float | None = None,
) -> None:
    """Re-send the record invisible for ``seconds``, or on FIFO hold it ``hold_seconds``.

    ``hold_seconds`` (default ``seconds``) is the whole wait: a hold is not capped at SQS's
    longest delay as a re-send is.

    Raises:
        RecordHeld: the record is from a FIFO queue; it must be reported to come back.
    """
    sqs = aws.client("sqs", settings)
    if is_fifo(record):
        wait = seconds if hold_seconds is None else hold_seconds
        request = hold_request(record, wait, time.time(), settings)
        sqs.change_message_visibility(**request)
        note(message, METRIC_DELAYED)
        logger.info(f"FIFO {why}: held invisible", hold_seconds=request["VisibilityTimeout"])
        raise RecordHeld(f"FIFO record held for {request['VisibilityTimeout']}s: {why}")
    resent = resend_request(record, seconds, settings)
    sqs.send_message(**resent)
    note(message, METRIC_DELAYED)
    logger.info(f"{why}: re-sent with a delay", delay_seconds=resent["DelaySeconds"])
