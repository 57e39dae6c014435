"""Claims and revocations: at most one consumer runs a task id, and revoke works on SQS.

Before a task runs, its consumer claims the task's result item with a conditional write: the
claim holds when the task is neither terminal nor revoked and no other consumer holds a live
lease. A lone task that stands alone (no other workflow root, no group) is one ``UpdateItem``;
otherwise one ``TransactWriteItems`` claims a whole SQS batch and checks, in the same request,
the revocation markers of each task's workflow root and group. The outcome per task is one of:

- :class:`Claimed` -- run it;
- :class:`Terminal` -- it already finished (a redelivery): ack without running;
- :class:`Held` -- a live claim is held elsewhere: report the record, it comes back later;
- :class:`Revoked` -- its root or group was revoked: record REVOKED, ack.

The requests and the outcome types are in :mod:`infra.store.claim_requests`. An expired lease (its
holder died) is simply taken over. Revoking an id writes a marker (with TTL) for it -- what
the tasks whose root or group it is are checked against -- and marks the item of the task of that
id (:data:`~infra.store.claim_requests.REVOKED_AT`), which its own claim's condition refuses; the
consumer that meets the task records REVOKED, as a worker that received a revoke broadcast does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import states

from infra.core import aws
from infra.core.errors import StoreError, is_condition_failure, store_errors
from infra.store.claim_requests import (
    Claimed,
    ClaimOutcome,
    ClaimRequest,
    Held,
    cancelled_outcomes,
    chunks,
    claim_update,
    marker_check,
    refusal,
    release_update,
    revoked_update,
)
from infra.store.items import KIND_REVOCATION, revocation_key, task_key
from infra.store.results import DynamoDBBackend

__all__ = ["BatchClaims", "ClaimStore", "store_for_app"]


class ClaimStore:
    """Claims task ids and records revocations in the results table."""

    def __init__(
        self,
        client: Any,
        table: str,
        encode_pending: Callable[[str], bytes],
        *,
        ttl_seconds: int | None = None,
        clock: Callable[[], float] = time.time,
        attempts: int = 4,
    ) -> None:
        self.client = client
        self.table = table
        self.encode_pending = encode_pending
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self.attempts = attempts

    def claim(
        self, requests: Sequence[ClaimRequest], owner: str, lease_until: float
    ) -> dict[str, ClaimOutcome]:
        """Claim every request's task id for ``owner``; the outcome per task id.

        A task id that appears twice is claimed once; the repeat is :class:`Held` by ``owner``.

        Raises:
            StoreError: DynamoDB refused or could not be reached after retries.
        """
        outcomes: dict[str, ClaimOutcome] = {}
        unique: dict[str, ClaimRequest] = {}
        for request in requests:
            unique.setdefault(request.task_id, request)
        for chunk in chunks(list(unique.values())):
            outcomes.update(self._claim_chunk(chunk, owner, lease_until))
        return outcomes

    def _claim_chunk(
        self, chunk: list[ClaimRequest], owner: str, lease_until: float
    ) -> dict[str, ClaimOutcome]:
        if len(chunk) == 1 and not chunk[0].markers():
            return {chunk[0].task_id: self._claim_alone(chunk[0].task_id, owner, lease_until)}
        outcomes: dict[str, ClaimOutcome] = {}
        pending = list(chunk)
        for _ in range(self.attempts):
            if not pending:
                break
            items, index = self._transaction(pending, owner, lease_until)
            try:
                self.client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                decided = cancelled_outcomes(exc, index, {r.task_id: r for r in pending})
                outcomes.update(decided)
                pending = [r for r in pending if r.task_id not in decided]
                if not decided:  # a conflict or throttle, nothing decided: back off and retry
                    time.sleep(0.05)
                continue
            except BotoCoreError as exc:
                raise StoreError(f"claiming {len(pending)} tasks failed: {exc}") from exc
            outcomes.update({r.task_id: Claimed() for r in pending})
            pending = []
        if pending:
            raise StoreError(f"claiming {len(pending)} tasks kept conflicting; giving up")
        return outcomes

    def _claim_alone(self, task_id: str, owner: str, lease_until: float) -> ClaimOutcome:
        """Claim a task with no marker to check: one conditional UpdateItem, no transaction."""
        pending_meta = self.encode_pending(task_id)
        update = claim_update(self.table, task_id, owner, lease_until, self.clock(), pending_meta)
        with store_errors(f"claiming {task_id}"):
            try:
                self.client.update_item(**update["Update"])
            except ClientError as exc:
                if not is_condition_failure(exc):
                    raise
                old = exc.response.get("Item")
                return refusal(task_id, old if old is not None else self._item(task_id))
        return Claimed()

    def _item(self, task_id: str) -> dict[str, Any]:
        """The task's item as it is now (for an emulator that returns no old item on refusal)."""
        key = {"id": {"S": task_key(task_id)}}
        item: dict[str, Any] = self.client.get_item(
            TableName=self.table, Key=key, ConsistentRead=True
        ).get("Item", {})
        return item

    def _transaction(
        self, pending: list[ClaimRequest], owner: str, lease_until: float
    ) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """Transaction items, and what each one is: ``("task", id)`` or ``("marker", id)``."""
        now = self.clock()
        items: list[dict[str, Any]] = []
        index: list[tuple[str, str]] = []
        for request in pending:
            pending_meta = self.encode_pending(request.task_id)
            items.append(
                claim_update(self.table, request.task_id, owner, lease_until, now, pending_meta)
            )
            index.append(("task", request.task_id))
        markers = sorted({m for r in pending for m in r.markers()})
        for marker in markers:
            items.append(marker_check(self.table, marker))
            index.append(("marker", marker))
        return items, index

    def release(self, task_id: str, owner: str) -> bool:
        """Give up ``owner``'s claim on ``task_id`` (:func:`release_update`); False when it no
        longer held one.

        Raises:
            StoreError: DynamoDB refused or could not be reached.
        """
        with store_errors(f"releasing the claim on {task_id}"):
            try:
                self.client.update_item(**release_update(self.table, task_id, owner))
            except ClientError as exc:
                if is_condition_failure(exc):
                    return False
                raise
        return True

    def revoke(self, ids: Iterable[str], reason: str = "revoked") -> None:
        """Record revocations of task, group or workflow-root ids: a marker (with TTL) each, and
        the mark on the item of the task of that id.

        Raises:
            StoreError: the markers could not be written.
        """
        ids, now = list(ids), self.clock()
        ttl = int(now + self.ttl_seconds) if self.ttl_seconds else None
        for id_ in ids:
            with store_errors(f"recording the revocation of {id_}"):
                self.client.update_item(
                    **revoked_update(self.table, id_, now, self.encode_pending(id_), ttl)
                )
        self.revoke_markers(ids, reason)

    def revoke_markers(self, ids: Iterable[str], reason: str = "revoked") -> None:
        """Record revocation markers only (stamp markers, :func:`stamp_ids`: no task has the id).

        Raises:
            StoreError: the markers could not be written.
        """
        now = self.clock()
        ttl = int(now + self.ttl_seconds) if self.ttl_seconds else None
        for id_ in ids:
            item: dict[str, Any] = {
                "id": {"S": revocation_key(id_)},
                "kind": {"S": KIND_REVOCATION},
                "task_id": {"S": id_},
                "timestamp": {"N": f"{now:.3f}"},
                "reason": {"S": reason},
            }
            if ttl is not None:
                item["ttl"] = {"N": str(ttl)}
            with store_errors(f"recording the revocation of {id_}"):
                self.client.put_item(TableName=self.table, Item=item)

    def is_revoked(self, ids: Iterable[str]) -> str | None:
        """The first of ``ids`` with a revocation marker, if any (one BatchGetItem)."""
        keys = [{"id": {"S": revocation_key(i)}} for i in dict.fromkeys(i for i in ids if i)]
        if not keys:
            return None
        with store_errors("reading revocations"):
            found = self.client.batch_get_item(
                RequestItems={self.table: {"Keys": keys, "ProjectionExpression": "task_id"}}
            )["Responses"].get(self.table, [])
        return str(found[0]["task_id"]["S"]) if found else None


class BatchClaims:
    """Claims for one SQS batch, made in one request before the records are processed."""

    def __init__(self, store: ClaimStore) -> None:
        self.store = store
        self._outcomes: dict[str, ClaimOutcome] = {}
        self._error: StoreError | None = None

    def prepare(
        self, items: Sequence[tuple[str, ClaimRequest]], owner: str, lease_until: float
    ) -> None:
        """Claim every ``(message id, request)`` of a batch; repeats of a task id are Held."""
        self._outcomes, self._error = {}, None
        first: dict[str, str] = {}
        for message_id, request in items:
            if request.task_id in first:
                self._outcomes[message_id] = Held(owner=owner, lease_until=lease_until)
            else:
                first[request.task_id] = message_id
        try:
            outcomes = self.store.claim([r for _, r in items], owner, lease_until)
        except StoreError as exc:
            self._error = exc
            return
        for task_id, message_id in first.items():
            self._outcomes[message_id] = outcomes[task_id]

    def outcome(
        self, message_id: str, request: ClaimRequest, owner: str, lease_until: float
    ) -> ClaimOutcome:
        """The prepared outcome of a record, or a claim made now for one not prepared.

        Raises:
            StoreError: the batch's claim (or this one) could not be made.
        """
        if message_id in self._outcomes:
            return self._outcomes.pop(message_id)
        if self._error is not None:
            raise self._error
        return self.store.claim([request], owner, lease_until)[request.task_id]

    def release(self, task_id: str, owner: str) -> bool:
        """Give up ``owner``'s claim on ``task_id`` (:meth:`ClaimStore.release`).

        Raises:
            StoreError: DynamoDB refused or could not be reached.
        """
        return self.store.release(task_id, owner)


def store_for_app(app: Any) -> ClaimStore | None:
    """The claim store in the app's results table, or None when results are kept elsewhere."""
    backend = app.backend
    if not isinstance(backend, DynamoDBBackend):
        return None

    def pending(task_id: str) -> bytes:
        meta = {"status": states.PENDING, "result": None, "traceback": None}
        data = backend.encode({**meta, "children": [], "date_done": None, "task_id": task_id})
        return data if isinstance(data, bytes) else str(data).encode()

    return ClaimStore(
        aws.client("dynamodb", backend.settings),
        backend.table_name,
        pending,
        ttl_seconds=backend.time_to_live_seconds,
    )
