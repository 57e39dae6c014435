"""Speed fixes to the embedded emulator: moto's answers are unchanged, only how fast it gives them.

Two of moto 5's costs grow with the data it holds, so an emulator that has served a few thousand
tasks answered each request more slowly than the one before, and per-task figures measured on it
(``lambda bench``) grew with the backlog:

- ``TransactWriteItems`` backs up each table it touches before applying the transaction, to
  restore it when the transaction is cancelled: a deep copy of the whole table, once per *item*
  of the transaction. A claim of ten tasks copied the results table ten to twenty times (0.8 s on
  a table of 2,000 items). Here the items the transaction names are backed up instead (a
  transaction writes nothing else), and a cancelled one puts exactly those back.
- A queue's attributes (``Queue.attributes``) are built whole wherever moto reads one of them,
  and building them counts every message in the queue (visible, delayed, in flight):
  ``ReceiveMessage`` did that for each message it returns (its retention check), ``SendMessage``
  for each message it takes (``ContentBasedDeduplication``), ``GetQueueAttributes`` once per name
  asked for. A publish of n messages into a queue walked it n times, a receive of ten 30 times.
  Here the retention check reads the period alone, and ``attributes`` is a mapping with the same
  keys whose values are worked out when read, as moto's property works them out.

And one race: ``Queue.delete_message`` rebuilds the queue's message list from a copy without the
lock ``add_message`` takes, so two deletes at once (two pollers) could put a deleted message back
(in flight, so it came back after the visibility timeout: 10 to 83 records stranded per 1,000 to
3,000 tasks, and some delivered twice) and a send during a delete could be dropped. Here a delete
holds the queue's lock.

py-spy profiles of the moto server (Celery's 1,000-task chord; ``lambda bench --tasks 3000``)
showed these at half its time or more. moto's other copies and scans are left alone.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from moto.core.utils import camelcase_to_underscores, unix_time
from moto.dynamodb import models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.sqs.models import Queue, SQSBackend

__all__ = ["install"]

_FIXED = "_celery_lambda_fixed"
MOTO_QUEUE_ATTRIBUTES: Any = None
"""moto's own ``Queue.attributes`` property, once :func:`install` replaced it (what tests compare
the replacement with)."""


class _CopyModule:
    """``copy`` for moto's DynamoDB models: inside a transaction a table is not deep-copied (its
    touched items are backed up instead, :func:`_backing_up_items`), so moto's rollback, which
    assigns the "copy" back, leaves the table object in place."""

    def __init__(self) -> None:
        self.in_transaction = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)

    def deepcopy(self, value: Any, memo: dict[int, Any] | None = None) -> Any:
        if memo is None and isinstance(value, Table) and getattr(self.in_transaction, "on", False):
            return value
        return copy.deepcopy(value, memo)


_Backup = tuple[Table, DynamoType, DynamoType | None, Any]


def _touched(backend: Any, transact_items: Sequence[Mapping[str, Any]]) -> list[_Backup]:
    """Each item the transaction names, as it is now (a deep copy; None where absent)."""
    backups: list[_Backup] = []
    for entry in transact_items:
        for op in entry.values():
            table = backend.tables.get(op.get("TableName")) if isinstance(op, Mapping) else None
            if table is None:
                continue  # moto raises its own error for it, before writing anything
            key = op.get("Key") or op.get("Item") or {}
            if table.hash_key_attr not in key:
                continue
            hash_key = DynamoType(key[table.hash_key_attr])
            range_key = None
            if table.range_key_attr is not None:
                if table.range_key_attr not in key:
                    continue
                range_key = DynamoType(key[table.range_key_attr])
            old = table.items.get(hash_key)
            if range_key is not None:
                old = (old or {}).get(range_key)
            backups.append((table, hash_key, range_key, copy.deepcopy(old)))
    return backups


def _restore(backups: Sequence[_Backup]) -> None:
    """Put the backed-up items back, the first backup of a key last (it is the oldest)."""
    for table, hash_key, range_key, old in reversed(backups):
        if range_key is None:
            if old is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = old
        elif old is None:
            table.items.get(hash_key, {}).pop(range_key, None)
        else:
            table.items[hash_key][range_key] = old


def _backing_up_items(shim: _CopyModule, method: Callable[..., Any]) -> Callable[..., Any]:
    def transact_write_items(backend: Any, transact_items: Any, *args: Any, **kwargs: Any) -> Any:
        backups = _touched(backend, transact_items)
        shim.in_transaction.on = True
        try:
            return method(backend, transact_items, *args, **kwargs)
        except Exception:
            _restore(backups)
            raise
        finally:
            shim.in_transaction.on = False

    setattr(transact_write_items, _FIXED, True)
    return transact_write_items


class _LazyAttributes(Mapping[str, Any]):
    """``Queue.attributes`` as moto builds it (same keys, same values, booleans as "true"/"false",
    the redrive policy as JSON), each value worked out when it is read."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        names = list(queue.BASE_ATTRIBUTES)
        if queue.fifo_queue:
            names += queue.FIFO_ATTRIBUTES
        if queue.kms_master_key_id:
            names += queue.KMS_ATTRIBUTES
        if queue.policy:
            names.append("Policy")
        if queue.redrive_policy:
            names.append("RedrivePolicy")
        self._names = dict.fromkeys(names)

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        if name == "Policy":
            return self._queue.policy
        if name == "RedrivePolicy" and self._queue.redrive_policy:
            return json.dumps(self._queue.redrive_policy)
        value = getattr(self._queue, camelcase_to_underscores(name))
        return str(value).lower() if isinstance(value, bool) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    def delete_message(queue: Any, receipt_handle: str) -> Any:
        with queue._messages_lock:  # the lock add_message appends under (a Condition: reentrant)
            return method(queue, receipt_handle)

    return delete_message


def _retained(backend: SQSBackend, queue_name: str, message: Any) -> bool:
    """moto's ``is_message_valid_based_on_retention_period``, without counting the queue."""
    # Set from the queue's attributes by name (moto's _set_attributes), an int.
    queue: Any = backend.get_queue(queue_name)
    retention_period: int = queue.message_retention_period
    return bool(retention_period + message.sent_timestamp / 1000 > unix_time())


def install() -> None:
    """Patch moto's DynamoDB and SQS backends in this process (idempotent)."""
    method = models.DynamoDBBackend.transact_write_items
    if getattr(method, _FIXED, False):
        return
    shim = _CopyModule()
    models.copy = shim  # type: ignore[attr-defined,assignment]
    models.DynamoDBBackend.transact_write_items = _backing_up_items(shim, method)  # type: ignore[method-assign]
    SQSBackend.is_message_valid_based_on_retention_period = _retained  # type: ignore[method-assign,assignment]
    Queue.delete_message = _locked(Queue.delete_message)  # type: ignore[method-assign]
    global MOTO_QUEUE_ATTRIBUTES
    MOTO_QUEUE_ATTRIBUTES = Queue.__dict__["attributes"]
    Queue.attributes = property(_LazyAttributes)  # type: ignore[assignment]
