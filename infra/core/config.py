"""Celery settings derived from :class:`infra.core.settings.Settings`, shared by every app we serve.

:func:`infra.configure` applies them to an app; ``tasks/celeryconfig.py`` and the local tooling
(when it re-points an app at a freshly deployed emulator) use them too.
"""

from __future__ import annotations

from typing import Any

from infra.core.settings import Settings

__all__ = [
    "CLAIMING_TASK",
    "QUEUE_VISIBILITY_TIMEOUT",
    "RESULT_BACKEND",
    "app_settings",
    "transport_options",
]

QUEUE_VISIBILITY_TIMEOUT = 750
"""The template's queue VisibilityTimeout: 6 x the 120 s function timeout + 30 s of window."""
RESULT_BACKEND = "infra.store.results:DynamoDBBackend"
"""Celery's DynamoDB item format in the template's table, without runtime provisioning."""
CLAIMING_TASK = "infra.worker.task:ClaimingTask"
"""The task base with which a ``celery worker`` claims each task id as the Lambda path does."""


def transport_options(settings: Settings) -> dict[str, Any]:
    """SQS transport options: long polling, no idle sleep, predefined queues, our publish knobs."""
    options: dict[str, Any] = {
        "region": settings.region,
        # Long polling; kombu otherwise also sleeps `polling_interval` (1 s) after an empty poll.
        "wait_time_seconds": 20,
        "polling_interval": 0,
        "visibility_timeout": QUEUE_VISIBILITY_TIMEOUT,
        # Read by infra.producer.transport (kombu ignores keys it does not know).
        "payload_bucket": settings.results_bucket,
        "offload_threshold": settings.offload_threshold,
        "max_payload_bytes": settings.max_payload_bytes,
        "fifo_group": settings.fifo_group,
        "tenant_header": settings.tenant_header,
        "batch_publish": settings.batch_publish,
    }
    if settings.queue_urls:
        # Never ListQueues/GetQueueUrl/CreateQueue: the template made the queues.
        options["predefined_queues"] = {
            name: {"url": url} for name, url in settings.queue_urls.items()
        }
    return options


def app_settings(settings: Settings) -> dict[str, Any]:
    """The broker-independent Celery settings a served app gets from the environment."""
    return {
        "result_backend": RESULT_BACKEND,
        # A worker that dies mid-task leaves the message to come back instead of losing it, and a
        # claim held elsewhere hands the message back (Reject with requeue), which needs late acks.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Celery 5.3+ warns at every worker start unless this is said explicitly.
        "broker_connection_retry_on_startup": True,
        "worker_max_tasks_per_child": settings.worker_max_tasks_per_child or None,
        "worker_max_memory_per_child": settings.worker_max_memory_per_child or None,
    }
