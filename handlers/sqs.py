"""Lambda entry point for SQS batches: every record is a Celery task message."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from infra.consumer.pipeline import record_log_keys
from infra.consumer.runtime import prepare_batch, record_pipeline, settle_batch, with_failures
from infra.core.observability import logger, metrics, task_metrics

processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
fifo_processor = SqsFifoPartialProcessor(skip_group_on_error=True)
# Its constructor has no such argument; without it a FIFO batch whose every record fails raises
# instead of returning the partial response (an invocation error on AWS).
fifo_processor.raise_on_entire_batch_failure = False


def record_handler(record: SQSRecord, lambda_context: Any) -> None:
    """Run one record; raising reports it in batchItemFailures."""
    with record_log_keys(record.raw_event):
        record_pipeline().process(record.raw_event, lambda_context)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    """SQS event source mapping → Celery tasks; returns the partial batch response."""
    records = event.get("Records") or [{}]
    fifo = str(records[0].get("eventSourceARN", "")).endswith(".fifo")
    prepare_batch(event, context)
    try:
        response = process_partial_response(
            event=event,
            record_handler=record_handler,
            processor=fifo_processor if fifo else processor,
            context=context,
        )
    finally:
        unstored = settle_batch()  # the batch's outcomes, written together
        task_metrics.flush()  # one EMF line per (task, queue) of the batch
    return with_failures(response, unstored)
