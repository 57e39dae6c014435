"""An unknown task on the Lambda path: its record fails (retries, then the DLQ) and its task id
tells why -- NOT_REGISTERED, as on a worker (:mod:`infra.store.unregistered`).

Written on the record's first receive only: the receives that follow would record the same
thing (and the write's condition refuses to rewrite it), so they cost no request. Written only
when the app keeps its results in the results table: another backend has no conditional write
that keeps the state from replacing a finished task's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery.app.task import Context

from infra.core.errors import StoreError
from infra.core.observability import logger
from infra.core.queues import queue_name
from infra.store.items import CONSUMER_REQUEST_KEY
from infra.store.results import DynamoDBBackend
from infra.wire.protocol import TaskMessage

__all__ = ["tell_unregistered"]


def _first_receive(record: Mapping[str, Any]) -> bool:
    count = (record.get("attributes") or {}).get("ApproximateReceiveCount")
    return str(count or "1") == "1"


def _request(message: TaskMessage, record: Mapping[str, Any], consumer: str) -> Context:
    """What the item records about the message besides the state: ids, queue, invocation."""
    info = message.properties.get("delivery_info") or {}
    queue = info.get("routing_key") or queue_name(str(record.get("eventSourceARN", "")))
    return Context(
        {
            "root_id": message.root_id,
            "parent_id": message.parent_id,
            "group": message.group,
            "retries": message.retries,
            "delivery_info": {"routing_key": queue or None},
            CONSUMER_REQUEST_KEY: consumer,
        }
    )


def tell_unregistered(
    app: Any, message: TaskMessage, record: Mapping[str, Any], where: str, consumer: str
) -> None:
    """Record that ``where`` (this function) does not register the message's task.

    A failed write is logged, not raised: the record fails anyway and goes back to SQS.
    """
    backend = app.backend
    if not isinstance(backend, DynamoDBBackend) or not _first_receive(record):
        return
    request = _request(message, record, consumer)
    try:
        backend.mark_as_unregistered(message.task_id, message.task_name, where, request)
    except StoreError as exc:
        logger.warning("NOT_REGISTERED could not be recorded", error=str(exc))
