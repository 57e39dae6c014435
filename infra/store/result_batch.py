"""The outcomes of one SQS batch, written together: a ``BatchWriteItem`` per 25 tasks instead of
an ``UpdateItem`` per task (DESIGN's budget: at most 0.6 AWS requests per task on the Lambda path).

While a batch is open (the Lambda handler's), the runner names it in each task's request
(:data:`infra.store.items.RESULT_BATCH_KEY`) and the result backend hands the SUCCESS and FAILURE
writes of those tasks to the :class:`ResultBatch` instead of making them. They are written

- when the batch settles, before the handler returns, so that SQS deletes no record whose
  outcome is not stored: a write that fails reports its record in ``batchItemFailures``;
- earlier, from a timer, once the oldest of them has waited ``CELERY_LAMBDA_RESULT_FLUSH_MS``
  (default 1000): a result is never much later than with a write per task, however long the
  tasks after it in the batch run.

A ``PutRequest`` is the same write as the backend's ``UpdateItem`` for these two states: no
condition guards them and they set every attribute a task's item keeps, removing the claim
(:func:`infra.store.result_requests.put_item`). A chunk that DynamoDB refuses as a whole is retried
write by write through the backend's ``UpdateItem``, so one bad item does not fail its neighbours.

Not deferred: conditional writes (STARTED, RETRY, REVOKED, progress), tasks in a chord header
(the chord's join reads every header result as soon as its counter completes), FIFO batches (a
failed write would report a record whose group's later records already ran) and workers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from infra.core.errors import StoreError
from infra.core.limits import DYNAMODB_MAX_BATCH_WRITE_ITEMS
from infra.store.result_requests import ResultWrite, put_item

__all__ = ["ResultBatch"]

log = logging.getLogger(__name__)

_UNPROCESSED_ATTEMPTS: Final = 6
_BACKOFF_SECONDS: Final = 0.05


class ResultBatch:
    """Pending SUCCESS/FAILURE writes of one consumer, written by :meth:`flush`.

    Thread-safe: the handler's thread adds writes while the timer's may be flushing.
    """

    def __init__(
        self,
        client: Any,
        table: str,
        write_one: Callable[[ResultWrite], None],
        *,
        flush_after: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``write_one`` records one write on its own (raising StoreError); ``flush_after`` is
        the longest a write waits for the timer (0: no timer, writes wait for :meth:`flush`)."""
        self.client = client
        self.table = table
        self.write_one = write_one
        self.flush_after = flush_after
        self.sleep = sleep
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._pending: dict[str, ResultWrite] = {}
        self._in_flight: dict[str, ResultWrite] = {}
        self._timer: threading.Timer | None = None

    def add(self, write: ResultWrite) -> None:
        """Keep ``write`` until the next flush (a later write of the same task replaces it)."""
        with self._lock:
            self._pending[write.task_id] = write
            if self._timer is None and self.flush_after > 0:
                self._timer = threading.Timer(self.flush_after, self._flush_early)
                self._timer.daemon = True
                self._timer.start()

    def state_of(self, task_id: str) -> str | None:
        """The state of ``task_id`` waiting to be written, if any."""
        with self._lock:
            write = self._pending.get(task_id) or self._in_flight.get(task_id)
        return write.state if write else None

    def flush(self) -> dict[str, str]:
        """Write everything pending; the task ids whose write failed, with the reason.

        Failed writes are dropped from the batch: their records go back to SQS and the task's
        next run records its outcome.
        """
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        with self._flushing:  # waits for a timer's flush already under way
            failed = self._write_pending()
            with self._lock:
                self._in_flight.clear()
        for task_id, reason in failed.items():
            log.error("the outcome of task %s was not stored: %s", task_id, reason)
        return failed

    def _flush_early(self) -> None:
        """The timer's flush: what fails stays pending for the batch's own flush to retry."""
        with self._lock:
            self._timer = None
        with self._flushing:
            failed = self._write_pending()
            if failed:
                log.warning("%d outcomes not stored yet; retried as the batch settles", len(failed))
                with self._lock:
                    for task_id in failed:
                        write = self._in_flight.get(task_id)
                        if write is not None:
                            self._pending.setdefault(task_id, write)
            with self._lock:
                self._in_flight.clear()

    def _write_pending(self) -> dict[str, str]:
        with self._lock:
            writes, self._pending = self._pending, {}
            self._in_flight.update(writes)
        failed: dict[str, str] = {}
        chunk_size = DYNAMODB_MAX_BATCH_WRITE_ITEMS
        ordered = list(writes.values())
        for start in range(0, len(ordered), chunk_size):
            failed.update(self._write_chunk(ordered[start : start + chunk_size]))
        with self._lock:
            for task_id in writes:
                if task_id not in failed:
                    self._in_flight.pop(task_id, None)
        return failed

    def _write_chunk(self, writes: list[ResultWrite]) -> dict[str, str]:
        by_id = {w.task_id: w for w in writes}
        requests = [{"PutRequest": {"Item": put_item(w)}} for w in writes]
        for attempt in range(_UNPROCESSED_ATTEMPTS):
            try:
                response = self.client.batch_write_item(RequestItems={self.table: requests})
            except (ClientError, BotoCoreError) as exc:
                log.warning("BatchWriteItem failed (%s): writing one by one", exc)
                return self._one_by_one([by_id[_task_id(r)] for r in requests])
            requests = response.get("UnprocessedItems", {}).get(self.table, [])
            if not requests:
                return {}
            self.sleep(_BACKOFF_SECONDS * 2**attempt)  # throttled: DynamoDB asks to back off
        return self._one_by_one([by_id[_task_id(r)] for r in requests])

    def _one_by_one(self, writes: list[ResultWrite]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for write in writes:
            try:
                self.write_one(write)
            except StoreError as exc:
                failed[write.task_id] = str(exc)
        return failed


def _task_id(request: Mapping[str, Any]) -> str:
    return str(request["PutRequest"]["Item"]["task_id"]["S"])
