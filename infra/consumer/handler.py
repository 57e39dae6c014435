"""The Lambda entry point for SQS batches: ``Handler: infra.consumer.handler.handler``.

Every record is a Celery task message of the app ``CELERY_APP`` names. It ships in the installed
package, so a project of its own names it in its template; this repository's template names the
thin re-export ``handlers.sqs.handler``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from infra.consumer.runtime import consumer
from infra.core.observability import logger, metrics

__all__ = ["handler"]


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    """SQS event source mapping → Celery tasks; returns the partial batch response."""
    return consumer().handle(event, context)
