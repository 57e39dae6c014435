"""Lambda entry point for SQS batches: every record is a Celery task message."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from infra.consumer.runtime import consumer
from infra.core.observability import logger, metrics


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    """SQS event source mapping → Celery tasks; returns the partial batch response."""
    return consumer().handle(event, context)
