"""The DynamoDB result backend: Celery's own item format, without runtime provisioning.

Selected with ``result_backend = "infra.results:DynamoDBBackend"``. Items keep exactly the shape
Celery's built-in ``dynamodb://`` backend reads (partition key ``id`` holding the literal
``"b'celery-task-meta-<id>'"``, binary ``result``, ``timestamp``, ``ttl``), so a stock Celery client
pointed at the same table reads every state this backend writes. The item layout, with the
queryable attributes this backend adds, is drawn in :mod:`infra.items`.

What differs from the stock backend, and why:

- the table comes from ``template.yaml``; the stock backend calls DescribeTable, CreateTable (a
  1-RCU provisioned table) and UpdateTimeToLive at runtime, which needs IAM rights a least-privilege
  function must not have;
- a task state is one ``UpdateItem`` (no GetItem first, as Celery's ``_store_result`` does): a
  non-terminal state is written only while the item is not terminal, so a late STARTED, RETRY or
  PROGRESS never replaces SUCCESS, FAILURE or REVOKED; RETRY and terminal writes release the
  consumer's claim (``claim_owner``, ``lease_until``); on the Lambda path the SUCCESS and FAILURE
  writes of a batch go out together, a ``BatchWriteItem`` per 25 (:mod:`infra.result_batch`);
- status, task name, queue, ids, retries, consumer and dates are top-level attributes, indexed by
  the template (:data:`infra.items.INDEX_BY_STATUS` and friends);
- ``mget`` (``get_many``, ``GroupResult.get``, chord joins) is one BatchGetItem per 100 keys;
- an encoded meta too large for an item goes to the results bucket; the item's ``result`` then
  holds a small meta with the same status whose value is a pointer (what a stock reader sees),
  which this backend follows transparently;
- AWS errors surface as :class:`infra.errors.StoreError`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from celery import states
from celery.backends.dynamodb import DynamoDBBackend as _StockDynamoDBBackend

from infra import aws
from infra.errors import ConfigurationError, StoreError
from infra.items import CONSUMER_REQUEST_KEY, KIND_TASK, TERMINAL_STATES, task_key
from infra.limits import DYNAMODB_MAX_BATCH_GET_ITEMS, DYNAMODB_MAX_ITEM_BYTES
from infra.settings import Settings

__all__ = [
    "LARGE_RESULT_BYTES",
    "POINTER_KEY",
    "DynamoDBBackend",
    "ResultWrite",
    "batch_get",
    "batch_get_request",
    "is_unconditional",
    "large_result_meta",
    "put_item",
    "queryable_attributes",
    "update_request",
]

log = logging.getLogger(__name__)

LARGE_RESULT_BYTES: Final = DYNAMODB_MAX_ITEM_BYTES - 50 * 1024
"""Encoded metas longer than this go to S3: the rest of the item (key, names, ids) needs room."""
POINTER_KEY: Final = "__celery_lambda_s3__"
"""Marks a meta whose full version is an S3 object: ``{"bucket": ..., "key": ...}``."""
LARGE_RESULT_PREFIX: Final = "results/"

RELEASING_STATES: Final = TERMINAL_STATES | {states.RETRY}
"""States that end an attempt: the claim is released so that a retry can be claimed at once."""
CLAIM_ATTRIBUTES: Final = ("claim_owner", "lease_until")
_NOT_TERMINAL: Final = "attribute_not_exists(#status) OR NOT #status IN ({})"
_BATCH_GET_ATTEMPTS: Final = 8

AttributeValue = dict[str, Any]


# ---------------------------------------------------------------- requests (pure)


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
    history); SUCCESS and FAILURE are written as the task ended.
    """
    if state not in TERMINAL_STATES:
        return TERMINAL_STATES
    if state == states.REVOKED:
        return frozenset({states.SUCCESS, states.FAILURE})
    return frozenset()


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
            with _translated(f"reading {len(pending)} results"):
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


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn botocore's errors into :class:`StoreError`."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise StoreError(f"{action} failed: {exc}") from exc


def _is_condition_failure(exc: ClientError) -> bool:
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _split_s3_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


# ---------------------------------------------------------------- the backend


class DynamoDBBackend(_StockDynamoDBBackend):  # type: ignore[misc]
    """Celery's DynamoDB backend with conditional, queryable, batched writes and large results."""

    #: ``GroupResult.get()`` and chord joins go through ``get_many`` (BatchGetItem).
    supports_native_join = True

    def __init__(
        self,
        url: str | None = None,
        *args: Any,
        dynamodb_client: Any = None,
        s3_client: Any = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(None, *args, **kwargs)
        if str(self.get_key_for_task("x")) != task_key("x"):
            raise ConfigurationError(
                "result_backend_transport_options['global_keyprefix'] is not supported: the "
                "consumers' claims use Celery's unprefixed task keys (infra.items.task_key)"
            )
        self.settings = Settings.from_env()
        self.table_name = self.settings.results_table
        self.aws_region = self.settings.region
        expires = self.expires  # result_expires in seconds, None when disabled
        self.time_to_live_seconds = int(expires) if expires else None
        self._client = dynamodb_client
        self._s3 = s3_client
        self.clock = clock
        self.sleep = sleep
        self._deferring = threading.local()

    def _get_client(
        self, access_key_id: str | None = None, secret_access_key: str | None = None
    ) -> Any:
        """The shared DynamoDB client; the table is never described, created or altered."""
        client: Any = self._client
        if client is None:
            client = self._client = aws.client("dynamodb", self.settings)
        return client

    @property
    def s3(self) -> Any:
        """The shared S3 client (large results)."""
        if self._s3 is None:
            self._s3 = aws.client("s3", self.settings)
        return self._s3

    # -------------------------------------------------------------- writes

    def mark_as_failure(self, task_id: str, exc: BaseException, *args: Any, **kwargs: Any) -> Any:
        """Record FAILURE, unless the "failure" is this store failing to record the outcome.

        Celery's tracer turns an exception from storing SUCCESS into the task's FAILURE (and
        stores that, if the store has recovered): a task that succeeded would end FAILURE for
        good and its record would be acked. Re-raising makes it a consumer failure instead: the
        record goes back to SQS and the outcome is recorded when the store works again.

        Raises:
            StoreError: ``exc`` itself, when it is one.
        """
        if isinstance(exc, StoreError):
            raise exc
        return super().mark_as_failure(task_id, exc, *args, **kwargs)

    def _store_result(
        self,
        task_id: str | bytes,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Record ``state`` with one UpdateItem (or hand it to the thread's batch, see
        :meth:`defer_to`); a late non-terminal state is dropped.

        Raises:
            StoreError: DynamoDB or S3 refused the write or could not be reached.
        """
        task_id = _text(task_id)
        meta = self._get_result_meta(
            result=result, state=state, traceback=traceback, request=request
        )
        meta["task_id"] = task_id
        payload = _bytes(self.encode(meta))
        result_object = None
        if len(payload) > LARGE_RESULT_BYTES:
            bucket, key = self.settings.results_bucket, self._large_result_key(task_id)
            with _translated(f"storing the large result of {task_id} in s3://{bucket}/{key}"):
                self.s3.put_object(Bucket=bucket, Key=key, Body=payload)
            result_object = f"s3://{bucket}/{key}"
            payload = _bytes(self.encode(large_result_meta(meta, bucket, key)))
        write = ResultWrite(
            task_id=task_id,
            state=state,
            payload=payload,
            timestamp=self.clock(),
            attributes=queryable_attributes(state, meta, request),
            ttl_seconds=self.time_to_live_seconds,
            result_object=result_object,
        )
        batch = getattr(self._deferring, "batch", None)
        if batch is not None and is_unconditional(state) and not getattr(request, "chord", None):
            batch.add(write)
        else:
            self.write(write)
        return result

    def defer_to(self, batch: Any) -> None:
        """Hand this thread's SUCCESS/FAILURE writes to ``batch`` (None: write them at once).

        ``batch`` is an :class:`infra.result_batch.ResultBatch` (the Lambda handler's batch);
        writes of tasks in a chord header are never deferred: the chord's join reads them.
        """
        self._deferring.batch = batch

    def _large_result_key(self, task_id: str) -> str:
        """A fresh key per write: a write that loses never clobbers the object the item uses."""
        return f"{LARGE_RESULT_PREFIX}{task_id}/{uuid.uuid4().hex}"

    def write(self, write: ResultWrite) -> None:
        """Record ``write`` now, with its own UpdateItem.

        Raises:
            StoreError: DynamoDB refused the write (other than its condition) or was unreachable.
        """
        try:
            self.client.update_item(**update_request(self.table_name, write))
        except ClientError as exc:
            self._drop_object(write.result_object)
            if not _is_condition_failure(exc):
                raise StoreError(f"storing {write.state} of {write.task_id} failed: {exc}") from exc
            log.debug("%s of %s dropped: the task is already terminal", write.state, write.task_id)
        except BotoCoreError as exc:
            self._drop_object(write.result_object)
            raise StoreError(f"storing {write.state} of {write.task_id} failed: {exc}") from exc

    def _drop_object(self, uri: str | None) -> None:
        """Delete an S3 object no item refers to; best effort, the bucket's lifecycle is the net."""
        if uri:
            bucket, key = _split_s3_uri(uri)
            try:
                self.s3.delete_object(Bucket=bucket, Key=key)
            except (ClientError, BotoCoreError):
                log.warning("could not delete unreferenced large result %s", uri, exc_info=True)

    def set(self, key: str | bytes, value: Any) -> None:
        """Put a non-task value (group result, chord counter) as the stock backend does."""
        with _translated(f"storing {_text(key)}"):
            super().set(key, value)

    def delete(self, key: str | bytes) -> None:
        """Delete an item and the large-result object it refers to, if any."""
        with _translated(f"deleting {_text(key)}"):
            old = self.client.delete_item(
                **self._prepare_get_request(str(key)), ReturnValues="ALL_OLD"
            ).get("Attributes", {})
        uri = old.get("result_object", {}).get("S")
        if uri:
            bucket, key = _split_s3_uri(uri)
            with _translated(f"deleting the large result {uri}"):
                self.s3.delete_object(Bucket=bucket, Key=key)

    def incr(self, key: str | bytes) -> int:
        """Atomically increase a chord counter."""
        with _translated(f"incrementing {_text(key)}"):
            count: int = super().incr(key)
        return count

    # -------------------------------------------------------------- reads

    def get(self, key: str | bytes) -> bytes | None:
        """The ``result`` of an item; None when the item or its result does not exist."""
        with _translated(f"reading {_text(key)}"):
            item = self.client.get_item(
                **self._prepare_get_request(str(key)),
                ProjectionExpression="#result",
                ExpressionAttributeNames={"#result": "result"},
            ).get("Item", {})
        value: bytes | None = item.get("result", {}).get("B")
        return value

    def mget(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        """The ``result`` of each key in order (None when missing), by BatchGetItem."""
        names = [str(key) for key in keys]
        found = batch_get(self.client, self.table_name, names, sleep=self.sleep)
        return [found.get(name) for name in names]

    def decode_result(self, payload: Any) -> dict[str, Any]:
        """Decode a stored meta, fetching the full one from S3 when the item holds a pointer."""
        meta: dict[str, Any] = self.decode(payload)
        location = meta.get(POINTER_KEY) if isinstance(meta, dict) else None
        if isinstance(location, Mapping):
            bucket, key = str(location.get("bucket")), str(location.get("key"))
            with _translated(f"reading the large result s3://{bucket}/{key}"):
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            meta = self.decode(body)
        decoded: dict[str, Any] = self.meta_from_decoded(meta)
        return decoded
