"""The Lambda runtime state: the served Celery app and its pipeline, built once per container."""

from __future__ import annotations

import os
import socket
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse

from infra.consumer.pipeline import Pipeline
from infra.consumer.runner import Runner
from infra.consumer.settlement import Settlement
from infra.core import aws
from infra.core.apps import load_app
from infra.core.hooks import Hooks
from infra.core.observability import (
    METRIC_MACHINERY_FAILED,
    METRIC_RECORDS,
    MetricUnit,
    logger,
    metrics,
)
from infra.core.settings import Settings
from infra.store.claims import BatchClaims, store_for_app
from infra.store.ratelimit import RateLimiter
from infra.store.result_batch import ResultBatch
from infra.store.results import DynamoDBBackend

__all__ = ["pipeline", "prepare_batch", "settle_batch", "with_failures"]


@cache
def pipeline() -> Pipeline:
    """The pipeline of this container, created on the first invocation (never at import).

    Raises:
        Exception: the app cannot be loaded (a failed load is retried on the next call).
    """
    settings = Settings.from_env()
    app = load_app(settings)
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or socket.gethostname()
    return Pipeline(
        app=app,
        runner=Runner(app, hostname=f"lambda@{function}"),
        settings=settings,
        claims=batch_claims(app),
        limiter=rate_limiter(app),
        hooks=Hooks.of(app),
        outcomes=Settlement(app, settings, result_batch(app, settings)),
    )


def result_batch(app: Any, settings: Settings) -> ResultBatch | None:
    """Outcomes written per batch, when the app keeps its results in the results table."""
    backend = app.backend
    if not isinstance(backend, DynamoDBBackend) or not settings.result_flush_ms:
        return None
    return ResultBatch(
        backend.client,
        backend.table_name,
        backend.write,
        flush_after=settings.result_flush_ms / 1000,
    )


def batch_claims(app: Any) -> BatchClaims | None:
    """Claims in the results table, when the app keeps its results there (else None)."""
    if not Settings.from_env().claims:
        logger.warning("CELERY_LAMBDA_CLAIMS=off: tasks run without claims")
        return None
    store = store_for_app(app)
    if store is None:
        logger.warning("result backend is not the results table: tasks run without claims")
        return None
    return BatchClaims(store)


def rate_limiter(app: Any) -> RateLimiter | None:
    """Rate limits paced in the results table, when the app keeps its results there."""
    backend = app.backend
    if not isinstance(backend, DynamoDBBackend):
        return None
    return RateLimiter(aws.client("dynamodb", backend.settings), backend.table_name)


def record_pipeline() -> Pipeline:
    """The pipeline for a record; a load failure is logged and counted with the record's keys."""
    try:
        return pipeline()
    except Exception:
        metrics.add_metric(name=METRIC_MACHINERY_FAILED, unit=MetricUnit.Count, value=1)
        logger.exception("cannot load the Celery app; every record goes back to SQS")
        raise


def prepare_batch(event: dict[str, Any], context: Any) -> None:
    """Claim the batch's tasks in one request; on any trouble records claim one by one."""
    records = event.get("Records") or []
    metrics.add_metric(name=METRIC_RECORDS, unit=MetricUnit.Count, value=len(records))
    try:
        pipe = pipeline()
    except Exception:  # every record reports the load failure when it is processed
        return
    try:
        pipe.prepare(records, context)
    except Exception:
        logger.exception("preparing the batch failed; claiming record by record")


def settle_batch() -> list[str]:
    """Write the batch's outcomes; the ids of records to report because theirs was not stored."""
    try:
        pipe = pipeline()
    except Exception:  # nothing ran: every record already reported the load failure
        return []
    return pipe.settle()


def with_failures(
    response: PartialItemFailureResponse, ids: list[str]
) -> PartialItemFailureResponse:
    """``response`` with ``ids`` added to its ``batchItemFailures`` (each reported once)."""
    failures = list(response.get("batchItemFailures", []))
    reported = {f["itemIdentifier"] for f in failures}
    failures += [{"itemIdentifier": i} for i in dict.fromkeys(ids) if i not in reported]
    return {**response, "batchItemFailures": failures}
