"""The result store's DynamoDB requests: what a task state write sets, and the batched read.

Pure builders (no client) for the ``UpdateItem`` one state write is, the ``PutRequest`` item a
batched outcome is (:mod:`infra.store.result_batch`), the small meta kept in the item when the
result itself goes to S3, and ``BatchGetItem``; plus :func:`batch_get`, the one loop that reads many
results. :class:`infra.store.results.DynamoDBBackend` sends them; the item layout is drawn in
:mod:`infra.store.items`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from celery import states

from infra.core.errors import StoreError, store_errors
from infra.core.limits import DYNAMODB_MAX_BATCH_GET_ITEMS
from infra.store.items import (
    CONSUMER_REQUEST_KEY,
    KIND_TASK,
    NOT_REGISTERED,
    TERMINAL_STATES,
    task_key,
)

__all__ = [
    "POINTER_KEY",
    "AttributeValue",
    "ResultWrite",
    "batch_get",
    "batch_get_request",
    "is_unconditional",
    "large_result_key",
    "large_result_meta",
    "put_item",
    "queryable_attributes",
    "split_s3_uri",
    "update_request",
]

LARGE_RESULT_PREFIX: Final = "results/"
"""Where large results go in the results bucket: ``results/<task id>/<write>``."""
POINTER_KEY: Final = "__celery_lambda_s3__"
"""Marks a meta whose full version is an S3 object: ``{"bucket": ..., "key": ...}``."""
RELEASING_STATES: Final = TERMINAL_STATES | {states.RETRY}
"""States that end an attempt: the claim is released so that a retry can be claimed at once."""
CLAIM_ATTRIBUTES: Final = ("claim_owner", "lease_until")
_NOT_TERMINAL: Final = "attribute_not_exists(#status) OR NOT #status IN ({})"
_NO_LIVE_CLAIM: Final = "(attribute_not_exists(lease_until) OR lease_until < :timestamp)"
_BATCH_GET_ATTEMPTS: Final = 8

AttributeValue = dict[str, Any]


def queryable_attributes(
    state: str, meta: Mapping[str, Any], request: Any = None
) -> dict[str, AttributeValue]:
    """What the request and meta tell about a task, as attributes; unknown or empty ones left out.

    DynamoDB refuses an empty string as an index key, so nothing empty is ever written.
    """
    info = getattr(request, "delivery_info", None) or {}
    strings = {
        "task_name": getattr(request, "task", None),
        "queue": info.get("routing_key") if isinstance(info, Mapping) else None,
        "root_id": getattr(request, "root_id", None),
        "parent_id": getattr(request, "parent_id", None),
        "group_id": getattr(request, "group", None),
        "worker": getattr(request, "hostname", None),
        "consumer": getattr(request, CONSUMER_REQUEST_KEY, None)
        or getattr(request, "hostname", None),
        "date_done": meta.get("date_done") if state in states.READY_STATES else None,
    }
    attributes = {name: {"S": str(v)} for name, v in strings.items() if v not in (None, "")}
    retries = getattr(request, "retries", None)
    if isinstance(retries, int):
        attributes["retries"] = {"N": str(retries)}
    return attributes


@dataclass(frozen=True, slots=True)
class ResultWrite:
    """One state write of a task, as it goes into the task's item."""

    task_id: str
    state: str
    payload: bytes
    timestamp: float
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    """From :func:`queryable_attributes`."""
    ttl_seconds: int | None = None
    result_object: str | None = None
    """``s3://bucket/key`` when ``payload`` is the small meta pointing at a large result."""


def _values(write: ResultWrite) -> dict[str, AttributeValue]:
    """Every attribute ``write`` sets on the task's item (the key aside)."""
    values: dict[str, AttributeValue] = {
        **write.attributes,
        "kind": {"S": KIND_TASK},
        "status": {"S": write.state},
        "task_id": {"S": write.task_id},
        "result": {"B": write.payload},
        "timestamp": {"N": repr(write.timestamp)},
    }
    if write.ttl_seconds:
        values["ttl"] = {"N": str(int(write.timestamp + write.ttl_seconds))}
    if write.result_object:
        values["result_object"] = {"S": write.result_object}
    return values


def update_request(table: str, write: ResultWrite) -> dict[str, Any]:
    """The one ``UpdateItem`` that records ``write``, conditional where it could rewrite history."""
    values = _values(write)
    removed = [] if write.result_object else ["result_object"]
    if write.state in RELEASING_STATES:
        removed += CLAIM_ATTRIBUTES
    expression = "SET " + ", ".join(f"#{name} = :{name}" for name in values)
    if removed:
        expression += " REMOVE " + ", ".join(f"#{name}" for name in removed)
    request: dict[str, Any] = {
        "TableName": table,
        "Key": {"id": {"S": task_key(write.task_id)}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": {f"#{name}": name for name in [*values, *removed]},
        "ExpressionAttributeValues": {f":{name}": value for name, value in values.items()},
    }
    protected = _protected_from(write.state)
    if protected:
        terminal = {f":terminal{i}": {"S": s} for i, s in enumerate(sorted(protected))}
        request["ConditionExpression"] = _NOT_TERMINAL.format(", ".join(terminal))
        request["ExpressionAttributeValues"].update(terminal)
    if write.state == NOT_REGISTERED:  # never over a task that runs elsewhere
        request["ConditionExpression"] = f"({request['ConditionExpression']}) AND {_NO_LIVE_CLAIM}"
    return request


def put_item(write: ResultWrite) -> dict[str, AttributeValue]:
    """The whole item ``write`` leaves, for a ``PutRequest`` of ``BatchWriteItem``.

    Only for writes no condition guards (:func:`is_unconditional`): the item
    :func:`update_request` would leave, since such a write sets every attribute a task's item
    keeps and removes the claim (the only others: ``claim_owner``, ``lease_until``).
    """
    if not is_unconditional(write.state):
        raise ValueError(f"a {write.state} write is conditional: it cannot be a PutRequest")
    return {"id": {"S": task_key(write.task_id)}, **_values(write)}


def is_unconditional(state: str) -> bool:
    """True when a write of ``state`` replaces whatever the item holds (SUCCESS, FAILURE)."""
    return state in RELEASING_STATES and not _protected_from(state)


def _protected_from(state: str) -> frozenset[str]:
    """States a write of ``state`` must not replace.

    Non-terminal writes never replace a terminal state. REVOKED never replaces a finished
    SUCCESS/FAILURE either (an expired copy redelivered after the task ran must not rewrite
    history); SUCCESS and FAILURE are written as the task ended. NOT_REGISTERED is written once
    (:mod:`infra.store.unregistered`): never over itself.
    """
    if state == NOT_REGISTERED:
        return TERMINAL_STATES | {NOT_REGISTERED}
    if state not in TERMINAL_STATES:
        return TERMINAL_STATES
    if state == states.REVOKED:
        return frozenset({states.SUCCESS, states.FAILURE})
    return frozenset()


def large_result_key(task_id: str) -> str:
    """A fresh key per write: a write that loses never clobbers the object the item uses."""
    return f"{LARGE_RESULT_PREFIX}{task_id}/{uuid.uuid4().hex}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as ``(bucket, key)``."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def large_result_meta(meta: Mapping[str, Any], bucket: str, key: str) -> dict[str, Any]:
    """The small meta kept in the item when the full ``meta`` is the S3 object ``bucket/key``.

    Stock readers see the status and a pointer as the value. For exception states the pointer is
    also a serialized exception of the same type (stock readers rebuild exceptions from it).
    """
    location = {"bucket": bucket, "key": key}
    pointer: dict[str, Any] = {POINTER_KEY: location}
    result = meta.get("result")
    if meta["status"] in states.EXCEPTION_STATES:
        if isinstance(result, BaseException):  # serializers that keep exceptions (pickle)
            result = {"exc_type": type(result).__qualname__, "exc_module": type(result).__module__}
        exc = result if isinstance(result, Mapping) else {}
        pointer.update(
            exc_type=exc.get("exc_type") or "Exception",
            exc_module=exc.get("exc_module") or "builtins",
            exc_message=[f"result stored in s3://{bucket}/{key}"],
        )
    small = {
        "status": meta["status"],
        "result": pointer,
        "traceback": None,
        "children": [],
        "date_done": meta.get("date_done"),
        "task_id": meta.get("task_id"),
        POINTER_KEY: location,
    }
    small.update({k: meta[k] for k in ("group_id", "parent_id") if meta.get(k)})
    return small


def batch_get_request(table: str, keys: Sequence[str]) -> dict[str, Any]:
    """A BatchGetItem of at most 100 distinct keys, fetching the key and ``result`` only."""
    return {
        "RequestItems": {
            table: {
                "Keys": [{"id": {"S": key}} for key in keys],
                "ProjectionExpression": "#id, #result",
                "ExpressionAttributeNames": {"#id": "id", "#result": "result"},
            }
        }
    }


def batch_get(
    client: Any,
    table: str,
    keys: Sequence[str],
    *,
    sleep: Callable[[float], None] = time.sleep,
    attempts: int = _BATCH_GET_ATTEMPTS,
) -> dict[str, bytes]:
    """``result`` of every key that has one: BatchGetItem per 100 keys, unprocessed ones retried.

    Raises:
        StoreError: DynamoDB failed, or left keys unprocessed after every attempt.
    """
    found: dict[str, bytes] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), DYNAMODB_MAX_BATCH_GET_ITEMS):
        pending = unique[start : start + DYNAMODB_MAX_BATCH_GET_ITEMS]
        for attempt in range(attempts):
            if attempt:
                sleep(min(0.05 * 2 ** (attempt - 1), 1.0))
            with store_errors(f"reading {len(pending)} results"):
                response = client.batch_get_item(**batch_get_request(table, pending))
            for item in response.get("Responses", {}).get(table, []):
                if "result" in item:
                    found[item["id"]["S"]] = item["result"]["B"]
            unprocessed = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            pending = [key["id"]["S"] for key in unprocessed]
            if not pending:
                break
        if pending:
            raise StoreError(f"{len(pending)} results still unprocessed after {attempts} attempts")
    return found
