"""One SQS event through the pipeline: what ``handlers.sqs`` hands every invocation to.

Before the records, the batch's runnable tasks are claimed in one request; each record then goes
through :meth:`Pipeline.process <infra.consumer.pipeline.Pipeline.process>` under Powertools'
partial-batch processor (FIFO: stop at the first failure and report the rest of its group); after
them the batch's outcomes are written together and the records whose outcome was not stored are
added to ``batchItemFailures``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    SqsFifoPartialProcessor,
    process_partial_response,
)
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from infra.consumer.pipeline import Pipeline, record_log_keys
from infra.core.observability import (
    METRIC_MACHINERY_FAILED,
    METRIC_RECORDS,
    MetricUnit,
    logger,
    metrics,
    task_metrics,
)
from infra.core.queues import is_fifo_queue

__all__ = ["Consumer", "with_failures"]


def _fifo_processor() -> SqsFifoPartialProcessor:
    processor = SqsFifoPartialProcessor(skip_group_on_error=True)
    # Its constructor has no such argument; without it a FIFO batch whose every record fails
    # raises instead of returning the partial response (an invocation error on AWS).
    processor.raise_on_entire_batch_failure = False
    return processor


def _standard_processor() -> BatchProcessor:
    return BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


@dataclass(slots=True)
class Consumer:
    """The Lambda path's consumer: SQS events in, partial batch responses out."""

    pipeline: Callable[[], Pipeline]
    """The container's pipeline; raises while the app cannot be loaded (retried per call)."""
    standard: BatchProcessor = field(default_factory=_standard_processor)
    fifo: SqsFifoPartialProcessor = field(default_factory=_fifo_processor)

    def handle(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        """Process every record of ``event``; the partial batch response."""
        records = event.get("Records") or []
        metrics.add_metric(name=METRIC_RECORDS, unit=MetricUnit.Count, value=len(records))
        fifo = is_fifo_queue(str((records or [{}])[0].get("eventSourceARN", "")))
        self._prepare(records, context)
        try:
            response = process_partial_response(
                event=event,
                record_handler=self._record,
                processor=self.fifo if fifo else self.standard,
                context=context,
            )
        finally:
            unstored = self._settle()  # the batch's outcomes, written together
            task_metrics.flush()  # one EMF line per (task, queue) of the batch
        return with_failures(response, unstored)

    def _record(self, record: SQSRecord, lambda_context: Any) -> None:
        """Run one record; raising reports it in batchItemFailures."""
        with record_log_keys(record.raw_event):
            self._loaded().process(record.raw_event, lambda_context)

    def _loaded(self) -> Pipeline:
        """The pipeline for a record; a load failure is logged and counted with its keys."""
        try:
            return self.pipeline()
        except Exception:
            metrics.add_metric(name=METRIC_MACHINERY_FAILED, unit=MetricUnit.Count, value=1)
            logger.exception("cannot load the Celery app; every record goes back to SQS")
            raise

    def _prepare(self, records: list[Mapping[str, Any]], context: Any) -> None:
        """Claim the batch's tasks in one request; on any trouble records claim one by one."""
        try:
            pipeline = self.pipeline()
        except Exception:  # every record reports the load failure when it is processed
            return
        try:
            pipeline.prepare(records, context)
        except Exception:
            logger.exception("preparing the batch failed; claiming record by record")

    def _settle(self) -> list[str]:
        """Write the batch's outcomes; the ids of records whose outcome was not stored."""
        try:
            pipeline = self.pipeline()
        except Exception:  # nothing ran: every record already reported the load failure
            return []
        return pipeline.settle()


def with_failures(
    response: PartialItemFailureResponse, ids: list[str]
) -> PartialItemFailureResponse:
    """``response`` with ``ids`` added to its ``batchItemFailures`` (each reported once)."""
    failures = list(response.get("batchItemFailures", []))
    reported = {f["itemIdentifier"] for f in failures}
    failures += [{"itemIdentifier": i} for i in dict.fromkeys(ids) if i not in reported]
    return {**response, "batchItemFailures": failures}
