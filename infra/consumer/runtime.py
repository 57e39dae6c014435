"""The Lambda runtime state: the served Celery app and its pipeline, built once per container.

:func:`pipeline` is the composition root of the Lambda path: it resolves the settings from the
environment once, loads the app and hands both to everything it builds. A failed build is not
cached (the next invocation tries again, with the environment as it is then); tests that change
the environment rebuild it with ``pipeline.cache_clear()``.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Any

from infra.consumer.batch import Consumer
from infra.consumer.handback import Requeuer
from infra.consumer.pipeline import Pipeline
from infra.consumer.runner import Runner
from infra.consumer.settlement import Settlement
from infra.core import aws
from infra.core.apps import load_app
from infra.core.hooks import Hooks
from infra.core.observability import logger, tracer
from infra.core.settings import Settings
from infra.store.claims import BatchClaims, store_for_app
from infra.store.ratelimit import limiter_for
from infra.store.result_batch import ResultBatch
from infra.store.results import DynamoDBBackend

__all__ = ["batch_claims", "consumer", "pipeline", "result_batch"]


@functools.cache
def consumer() -> Consumer:
    """The container's consumer of SQS events (cheap: the pipeline is built on first use)."""
    return Consumer(pipeline=pipeline)


@functools.cache
def pipeline() -> Pipeline:
    """The pipeline of this container, created on the first invocation (never at import).

    Raises:
        Exception: the app cannot be loaded (a failed load is retried on the next call).
    """
    tracer()  # X-Ray patches boto3 before the app or any client of ours is made
    settings = Settings.from_env()
    app = load_app(settings)
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME") or socket.gethostname()
    return Pipeline(
        app=app,
        runner=Runner(app, hostname=f"lambda@{function}"),
        settings=settings,
        claims=batch_claims(app, settings),
        limiter=limiter_for(app.backend),
        hooks=Hooks.of(app),
        outcomes=Settlement(settings, result_batch(app, settings)),
        requeue=Requeuer(functools.partial(aws.client, "sqs", settings), settings),
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


def batch_claims(app: Any, settings: Settings) -> BatchClaims | None:
    """Claims in the results table, when the app keeps its results there (else None)."""
    if not settings.claims:
        logger.warning("CELERY_LAMBDA_CLAIMS=off: tasks run without claims")
        return None
    store = store_for_app(app)
    if store is None:
        logger.warning("result backend is not the results table: tasks run without claims")
        return None
    return BatchClaims(store)
