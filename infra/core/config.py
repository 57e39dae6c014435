"""Celery settings derived from :class:`infra.core.settings.Settings`, shared by every app we serve.

``tasks/celeryconfig.py`` uses these; so does the local tooling when it re-points an app at a
freshly deployed emulator.
"""

from __future__ import annotations

from typing import Any

from infra.core.settings import Settings

__all__ = ["QUEUE_VISIBILITY_TIMEOUT", "transport_options"]

QUEUE_VISIBILITY_TIMEOUT = 720
"""The template's queue VisibilityTimeout: 6 x the function timeout of 120 s."""


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
        "batch_publish": settings.batch_publish,
    }
    if settings.queue_urls:
        # Never ListQueues/GetQueueUrl/CreateQueue: the template made the queues.
        options["predefined_queues"] = {
            name: {"url": url} for name, url in settings.queue_urls.items()
        }
    return options
