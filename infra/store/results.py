"""The DynamoDB result backend: Celery's own item format, without runtime provisioning.

Selected with ``result_backend = "infra.store.results:DynamoDBBackend"``. Items keep exactly the
shape Celery's built-in ``dynamodb://`` backend reads (partition key ``id`` holding the literal
``"b'celery-task-meta-<id>'"``, binary ``result``, ``timestamp``, ``ttl``), so a stock Celery client
pointed at the same table reads every state this backend writes. The item layout, with the
queryable attributes this backend adds, is drawn in :mod:`infra.store.items`; the requests are built
in :mod:`infra.store.result_requests`.

What differs from the stock backend, and why:

- the table comes from ``template.yaml``; the stock backend calls DescribeTable, CreateTable (a
  1-RCU provisioned table) and UpdateTimeToLive at runtime, which needs IAM rights a least-privilege
  function must not have;
- a task state is one ``UpdateItem`` (no GetItem first, as Celery's ``_store_result`` does): a
  non-terminal state is written only while the item is not terminal, so a late STARTED, RETRY or
  PROGRESS never replaces SUCCESS, FAILURE or REVOKED; RETRY and terminal writes release the
  consumer's claim (``claim_owner``, ``lease_until``); on the Lambda path the SUCCESS and FAILURE
  writes of a batch go out together, a ``BatchWriteItem`` per 25 (:mod:`infra.store.result_batch`):
  the runner puts the batch in the task's request (:data:`infra.store.items.RESULT_BATCH_KEY`),
  which Celery's tracer hands to every write of the task's outcome;
- status, task name, queue, ids, retries, consumer and dates are top-level attributes, indexed by
  the template (:data:`infra.store.items.INDEX_BY_STATUS` and friends);
- ``mget`` (``get_many``, ``GroupResult.get``, chord joins) is one BatchGetItem per 100 keys;
- a chord is counted against its header's real size, recorded when it is applied, one request a
  part; its join waits for nested groups within its own timeout; a failed chain step fails the
  groups after it too (:mod:`infra.store.canvas_backend`);
- an encoded meta too large for an item goes to the results bucket; the item's ``result`` then
  holds a small meta with the same status whose value is a pointer (what a stock reader sees),
  which this backend follows transparently;
- a task its consumer does not register is NOT_REGISTERED, not Celery's terminal
  ``FAILURE(NotRegistered)`` (:mod:`infra.store.unregistered`); a ``get()`` timing out says why;
- AWS errors surface as :class:`infra.core.errors.StoreError`.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError
from celery import states
from celery.exceptions import NotRegistered
from celery.exceptions import TimeoutError as WaitTimeout

from infra.core import aws
from infra.core.errors import ConfigurationError, StoreError, is_condition_failure, store_errors
from infra.core.limits import DYNAMODB_MAX_ITEM_BYTES
from infra.core.settings import Settings
from infra.store.canvas_backend import CanvasBackend
from infra.store.items import NOT_REGISTERED, RESULT_BATCH_KEY, task_key
from infra.store.result_batch import ResultBatch
from infra.store.result_requests import (
    POINTER_KEY,
    ResultWrite,
    batch_get,
    is_unconditional,
    large_result_key,
    large_result_meta,
    queryable_attributes,
    split_s3_uri,
    update_request,
)
from infra.store.unregistered import recordable_id, unregistered_info, unregistered_write

__all__ = ["LARGE_RESULT_BYTES", "DynamoDBBackend"]

log = logging.getLogger(__name__)

LARGE_RESULT_BYTES: Final = DYNAMODB_MAX_ITEM_BYTES - 50 * 1024
"""Encoded metas longer than this go to S3: the rest of the item (key, names, ids) needs room."""


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


# ---------------------------------------------------------------- the backend


class DynamoDBBackend(CanvasBackend):
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
                "consumers' claims use Celery's unprefixed task keys (infra.store.items.task_key)"
            )
        # Celery builds the backend from ``result_backend`` and passes no settings: it resolves
        # the environment as it is at construction (a re-pointed app gets a new backend).
        self.settings = Settings.from_env()
        self.table_name = self.settings.results_table
        self.aws_region = self.settings.region
        expires = self.expires  # result_expires in seconds, None when disabled
        self.time_to_live_seconds = int(expires) if expires else None
        self._client = dynamodb_client
        self._s3 = s3_client
        self.clock = clock
        self.sleep = sleep

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

        A worker's ``NotRegistered`` (the only way it records an unknown task) is recorded
        NOT_REGISTERED instead (:meth:`mark_as_unregistered`).

        Raises:
            StoreError: ``exc`` itself, when it is one.
        """
        if isinstance(exc, StoreError):
            raise exc
        if isinstance(exc, NotRegistered):
            name = str(exc.args[0]) if exc.args else ""
            where = f"worker@{socket.gethostname()}"
            return self.mark_as_unregistered(task_id, name, where, kwargs.get("request"))
        return super().mark_as_failure(task_id, exc, *args, **kwargs)

    def mark_as_unregistered(
        self, task_id: str, task_name: str, where: str, request: Any = None
    ) -> None:
        """Record that the consumer ``where`` does not register ``task_name``: NOT_REGISTERED,
        written once and never over a terminal state or a live claim
        (:mod:`infra.store.unregistered`); an id no key can hold is only logged.

        Raises:
            StoreError: DynamoDB refused the write (other than its condition) or was unreachable.
        """
        if not recordable_id(task_id):
            log.warning("NOT_REGISTERED not recorded: unusable task id %r", task_id[:80])
            return
        queue = (getattr(request, "delivery_info", None) or {}).get("routing_key")
        meta = self._get_result_meta(
            result=unregistered_info(task_name, where, queue),
            state=NOT_REGISTERED,
            traceback=None,
            request=request,
        )
        meta["task_id"] = task_id
        ttl, payload = self.time_to_live_seconds, _bytes(self.encode(meta))
        self.write(unregistered_write(meta, payload, self.clock(), request, ttl))

    def _store_result(
        self,
        task_id: str | bytes,
        result: Any,
        state: str,
        traceback: str | None = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Record ``state`` with one UpdateItem (or hand it to the request's batch, see
        :meth:`_batch_of`); a late non-terminal state is dropped.

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
            bucket, key = self.settings.results_bucket, large_result_key(task_id)
            with store_errors(f"storing the large result of {task_id} in s3://{bucket}/{key}"):
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
        batch = self._batch_of(request)
        if batch is not None and is_unconditional(state):
            batch.add(write)
        else:
            self.write(write)
        return result

    def _batch_of(self, request: Any) -> ResultBatch | None:
        """The batch the request's SUCCESS/FAILURE writes go to (None: write them at once).

        The Lambda path's runner names it in the request (:data:`RESULT_BATCH_KEY`); writes of
        tasks in a chord header are never deferred (the chord's join reads them), nor writes for
        a batch of another table.
        """
        batch = getattr(request, RESULT_BATCH_KEY, None)
        if not isinstance(batch, ResultBatch) or batch.table != self.table_name:
            return None
        return None if getattr(request, "chord", None) else batch

    def write(self, write: ResultWrite) -> None:
        """Record ``write`` now, with its own UpdateItem.

        Raises:
            StoreError: DynamoDB refused the write (other than its condition) or was unreachable.
        """
        try:
            self.client.update_item(**update_request(self.table_name, write))
        except ClientError as exc:
            self._drop_object(write.result_object)
            if not is_condition_failure(exc):
                raise StoreError(f"storing {write.state} of {write.task_id} failed: {exc}") from exc
            log.debug("%s of %s dropped: the task is already terminal", write.state, write.task_id)
        except BotoCoreError as exc:
            self._drop_object(write.result_object)
            raise StoreError(f"storing {write.state} of {write.task_id} failed: {exc}") from exc

    def _drop_object(self, uri: str | None) -> None:
        """Delete an S3 object no item refers to; best effort, the bucket's lifecycle is the net."""
        if uri:
            bucket, key = split_s3_uri(uri)
            try:
                self.s3.delete_object(Bucket=bucket, Key=key)
            except (ClientError, BotoCoreError):
                log.warning("could not delete unreferenced large result %s", uri, exc_info=True)

    def set(self, key: str | bytes, value: Any) -> None:
        """Put a non-task value (group result, chord counter) as the stock backend does."""
        with store_errors(f"storing {_text(key)}"):
            super().set(key, value)

    def delete(self, key: str | bytes) -> None:
        """Delete an item and the large-result object it refers to, if any."""
        with store_errors(f"deleting {_text(key)}"):
            old = self.client.delete_item(
                **self._prepare_get_request(str(key)), ReturnValues="ALL_OLD"
            ).get("Attributes", {})
        uri = old.get("result_object", {}).get("S")
        if uri:
            bucket, key = split_s3_uri(uri)
            with store_errors(f"deleting the large result {uri}"):
                self.s3.delete_object(Bucket=bucket, Key=key)

    # -------------------------------------------------------------- reads

    def wait_for(self, task_id: str, timeout: float | None = None, **options: Any) -> Any:
        """Celery's wait, whose timeout on a NOT_REGISTERED task says why the task never ran
        (not at once: a redrive after a deploy still runs it), and whose failure gives way to a
        failed parent's, as ``get()`` checks parents before it waits: a chord body failed with
        ``ChordError`` raises its header's exception however the polls fell.

        Raises:
            celery.exceptions.TimeoutError: not ready within ``timeout``.
            Exception: a parent's failure (``get(follow_parents=True)``'s ``on_interval``).
        """
        try:
            meta = super().wait_for(task_id, timeout=timeout, **options)
        except WaitTimeout as exc:
            meta = self.get_task_meta(task_id)
            result = meta.get("result")
            if meta.get("status") != NOT_REGISTERED or not isinstance(result, Mapping):
                raise
            raise WaitTimeout(f"{exc} {result.get('exc_message')}") from exc
        if meta.get("status") in states.PROPAGATE_STATES and options.get("on_interval"):
            options["on_interval"]()
        return meta

    def get(self, key: str | bytes) -> bytes | None:
        """The ``result`` of an item; None when the item or its result does not exist."""
        with store_errors(f"reading {_text(key)}"):
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
            with store_errors(f"reading the large result s3://{bucket}/{key}"):
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            meta = self.decode(body)
        decoded: dict[str, Any] = self.meta_from_decoded(meta)
        return decoded
