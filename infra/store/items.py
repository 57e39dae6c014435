"""The results-table item: Celery's key and ``result`` attribute plus our queryable attributes.

One place for attribute names, shared by the result backend (``infra.store.results``), the claim and
revocation store (``infra.store.claims``), the template's indexes and the operator's CLI.

Item layout (partition key ``id``)::

    id           S   "b'celery-task-meta-<task id>'"   Celery's key, kept literally (stock readers)
    result       B   Celery-encoded meta                 what a stock Celery client decodes
    timestamp    N   epoch seconds of the write          (stock; sort key of by-status/task/time)
    ttl          N   epoch seconds of expiry             (stock attribute; table TTL)
    kind         S   "task" | "revocation"               partition key of by-time and by-id
    status       S   Celery state                        partition key of the by-status index
    task_id      S   Celery's task id                    sort key of the by-id index
    task_name, queue, root_id, parent_id, group_id, worker   S
    consumer     S   who ran it: "lambda:<request id>" or the worker's hostname
    retries      N
    date_done    S   ISO 8601, ready states only
    claim_owner  S   consumer currently running the task (Lambda request id / worker host+pid)
    lease_until  N   epoch seconds after which the claim may be taken over
    result_object S  "s3://<bucket>/<key>" of a result too large for the item (``result`` then
                     holds a small meta pointing at it); absent otherwise

The scheduled tick (``infra.beat.state``) keeps one item per ``beat_schedule`` entry in the same
table, without ``ttl`` (it must never expire) and without the index attributes (it stays out of
the indexes)::

    id           S   "celery-lambda-beat-<entry name>"
    last_slot    N   epoch seconds of the last slot claimed (fired, or skipped as too old)
    updated_at   N   epoch seconds of the last write
"""

from __future__ import annotations

from typing import Final

from celery import states

__all__ = [
    "CLAIMED_BY_CONSUMER",
    "CONSUMER_REQUEST_KEY",
    "INDEX_BY_ID",
    "INDEX_BY_STATUS",
    "INDEX_BY_TASK",
    "INDEX_BY_TIME",
    "KIND_REVOCATION",
    "KIND_TASK",
    "NOT_REGISTERED",
    "RESULT_BATCH_KEY",
    "TERMINAL_STATES",
    "beat_key",
    "revocation_key",
    "task_key",
]

TERMINAL_STATES: Final = frozenset({states.SUCCESS, states.FAILURE, states.REVOKED})
"""States a later write never replaces (a late STARTED/RETRY/PROGRESS is dropped)."""

NOT_REGISTERED: Final = "NOT_REGISTERED"
"""A custom Celery state: the consumer that received the task does not register its name
(:mod:`infra.store.unregistered`). Not terminal and not ready: a claim takes it, so the message
redriven after a deploy that registers the task runs and overwrites it."""

CLAIMED_BY_CONSUMER: Final = "celery_lambda_claimed"
"""Request key set by the Lambda path, which claimed the task itself: ClaimingTask skips its
claim."""

CONSUMER_REQUEST_KEY: Final = "celery_lambda_consumer"
"""Request key naming the Lambda invocation that runs a task (workers are named by hostname)."""

RESULT_BATCH_KEY: Final = "celery_lambda_result_batch"
"""Request key by which the Lambda path hands a task's SUCCESS/FAILURE write to its batch's
:class:`~infra.store.result_batch.ResultBatch` (the backend finds it on the request Celery's
tracer passes with every write)."""

KIND_TASK: Final = "task"
KIND_REVOCATION: Final = "revocation"

INDEX_BY_STATUS: Final = "by-status"
"""GSI: partition ``status``, sort ``timestamp``: tasks in a state, newest first."""
INDEX_BY_TASK: Final = "by-task"
"""GSI: partition ``task_name``, sort ``timestamp``: one task's runs, newest first."""
INDEX_BY_TIME: Final = "by-time"
"""GSI: partition ``kind``, sort ``timestamp``: everything, newest first."""
INDEX_BY_ID: Final = "by-id"
"""GSI: partition ``kind``, sort ``task_id``, keys only: a task by the first characters of its id
(``begins_with`` works on a sort key only), without a Scan."""


def task_key(task_id: str) -> str:
    """The partition key Celery's DynamoDB backend uses: ``str()`` of a bytes key, literally."""
    return str(f"celery-task-meta-{task_id}".encode())


def revocation_key(id_: str) -> str:
    """Key of the revocation marker of a task, group or workflow root id."""
    return f"celery-lambda-revoked-{id_}"


def beat_key(entry_name: str) -> str:
    """Key of the item recording the last fired slot of the ``beat_schedule`` entry."""
    return f"celery-lambda-beat-{entry_name}"
