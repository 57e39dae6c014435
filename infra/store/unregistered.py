"""What a consumer that does not register a task tells the task's id: NOT_REGISTERED.

Celery's own worker records ``FAILURE(NotRegistered)`` for a message naming a task it does not
know: a terminal state, so the message redriven from the DLQ after a deploy that registers the
task would be acked as a duplicate and never run. Both consumers here record
:data:`~infra.store.items.NOT_REGISTERED` instead (the worker through the result backend's
``mark_as_failure``, which the worker calls for it; the Lambda path directly), a custom Celery
state that every client reads like any other: ``AsyncResult.state`` is it, ``ready()`` is False
(``get()`` keeps waiting: the state is not final) and ``info`` is :func:`unregistered_info`. A
claim takes such an item as it takes PENDING, so the redriven message runs and overwrites it.

The write changes an item at most once (its condition,
:func:`~infra.store.result_requests.update_request`): only while the task is not terminal, not
claimed by a live consumer and not already NOT_REGISTERED. A redelivery never rewrites it, and a
copy that meets a consumer without the task during a rolling deploy never hides the task running
or finished elsewhere. The message's id and task name are whatever its sender chose: an id a
DynamoDB key cannot hold is not recorded, and the name is recorded bounded and printable.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from infra.store.items import NOT_REGISTERED
from infra.store.result_requests import ResultWrite, queryable_attributes

__all__ = [
    "MAX_NAME_CHARS",
    "MAX_TASK_ID_CHARS",
    "recordable_id",
    "shown_name",
    "unregistered_info",
    "unregistered_write",
]

MAX_NAME_CHARS: Final = 200
"""Characters of an unknown task's name kept: real task names are dotted paths far shorter, and
the name is a key of the by-task index (at most 2,048 bytes)."""
MAX_TASK_ID_CHARS: Final = 255
"""Longest task id recorded (Celery's are 36-character UUIDs). With printable ASCII only, the key
``b'celery-task-meta-<id>'`` stays far below DynamoDB's 2,048-byte partition key limit:
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html"""


def recordable_id(task_id: str) -> bool:
    """True when ``task_id`` can key an item: 1 to 255 printable ASCII characters."""
    return 0 < len(task_id) <= MAX_TASK_ID_CHARS and task_id.isascii() and task_id.isprintable()


def shown_name(task_name: str) -> str:
    """The name as recorded and shown: control characters replaced, at most
    :data:`MAX_NAME_CHARS` kept (with the full length said)."""
    kept = "".join(c if c.isprintable() else "?" for c in task_name[:MAX_NAME_CHARS])
    if len(task_name) <= MAX_NAME_CHARS:
        return kept or "?"  # an index key is never empty
    return f"{kept}… ({len(task_name)} characters)"


def unregistered_info(task_name: str, where: str, queue: str | None) -> dict[str, Any]:
    """The ``result`` of a NOT_REGISTERED meta: what ``AsyncResult.info`` gives a client.

    ``exc_type``/``exc_module``/``exc_message`` are Celery's serialized-exception keys, so
    ``backend.exception_to_python(result.info)`` rebuilds a ``celery.exceptions.NotRegistered``.
    """
    name = shown_name(task_name)
    return {
        "exc_type": "NotRegistered",
        "exc_module": "celery.exceptions",
        "exc_message": f"task {name!r} is not registered in {where}",
        "task": name,
        "consumer": where,
        "queue": queue,
    }


def unregistered_write(
    meta: Mapping[str, Any], payload: bytes, timestamp: float, request: Any, ttl: int | None
) -> ResultWrite:
    """The write of a NOT_REGISTERED ``meta`` (encoded: ``payload``).

    Its queryable attributes are the request's, with the shown name (the message's own may be
    any length) and the consumer of :func:`unregistered_info` where the request names none (a
    worker's request for an unknown task does not).
    """
    info = meta["result"]
    attributes = {
        "consumer": {"S": str(info["consumer"])},
        **queryable_attributes(NOT_REGISTERED, meta, request),
        "task_name": {"S": str(info["task"])},
    }
    return ResultWrite(
        task_id=str(meta["task_id"]),
        state=NOT_REGISTERED,
        payload=payload,
        timestamp=timestamp,
        attributes=attributes,
        ttl_seconds=ttl,
    )
