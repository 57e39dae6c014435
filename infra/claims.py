"""Claims and revocations: at most one consumer runs a task id, and revoke works on SQS.

Before a task runs, its consumer claims the task's result item with a conditional write: the
claim holds when the task is not terminal and no other consumer holds a live lease. One
``TransactWriteItems`` claims a whole SQS batch and checks, in the same request, the revocation
markers of each task's workflow root and group. The outcome per task is one of:

- :class:`Claimed` -- run it;
- :class:`Terminal` -- it already finished (a redelivery): ack without running;
- :class:`Held` -- a live claim is held elsewhere: report the record, it comes back later;
- :class:`Revoked` -- its root or group was revoked: record REVOKED, ack.

An expired lease (its holder died) is simply taken over. Revoking writes a marker (with TTL) for
the id; the consumer that meets the task records REVOKED, as a worker that received a revoke
broadcast does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery import states

from infra.errors import StoreError
from infra.items import (
    KIND_REVOCATION,
    KIND_TASK,
    TERMINAL_STATES,
    revocation_key,
    task_key,
)
from infra.limits import DYNAMODB_MAX_TRANSACT_ITEMS

__all__ = [
    "BatchClaims",
    "ClaimOutcome",
    "ClaimRequest",
    "ClaimStore",
    "Claimed",
    "Held",
    "Revoked",
    "Terminal",
    "store_for_app",
]


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A task about to run, with the ids whose revocation would revoke it."""

    task_id: str
    root_id: str | None = None
    group_id: str | None = None

    def markers(self) -> tuple[str, ...]:
        """Ids whose revocation markers are checked: the task, its workflow root, its group."""
        return tuple(dict.fromkeys(i for i in (self.task_id, self.root_id, self.group_id) if i))


@dataclass(frozen=True, slots=True)
class Claimed:
    """This consumer holds the task until ``lease_until``."""


@dataclass(frozen=True, slots=True)
class Terminal:
    """The task already reached ``state``."""

    state: str


@dataclass(frozen=True, slots=True)
class Held:
    """Another consumer holds a live claim."""

    owner: str
    lease_until: float


@dataclass(frozen=True, slots=True)
class Revoked:
    """The task's workflow root or group was revoked."""

    by: str


ClaimOutcome = Claimed | Terminal | Held | Revoked

_TERMINAL_VALUES = {f":t{i}": {"S": s} for i, s in enumerate(sorted(TERMINAL_STATES))}
_CLAIM_CONDITION = (
    f"(attribute_not_exists(#status) OR NOT #status IN ({', '.join(_TERMINAL_VALUES)}))"
    " AND (attribute_not_exists(lease_until) OR lease_until < :now OR claim_owner = :owner)"
)


def claim_update(
    table: str, task_id: str, owner: str, lease_until: float, now: float, pending: bytes
) -> dict[str, Any]:
    """The transaction item that claims ``task_id`` (creating its item as PENDING if new).

    A new item gets Celery's PENDING meta in ``result`` so stock readers never see an item
    without one.
    """
    return {
        "Update": {
            "TableName": table,
            "Key": {"id": {"S": task_key(task_id)}},
            "UpdateExpression": (
                "SET claim_owner = :owner, lease_until = :lease, task_id = :id, #kind = :kind,"
                " #result = if_not_exists(#result, :pending),"
                " #status = if_not_exists(#status, :pending_status),"
                " #ts = if_not_exists(#ts, :now)"
            ),
            "ConditionExpression": _CLAIM_CONDITION,
            "ExpressionAttributeNames": {
                "#status": "status",
                "#kind": "kind",
                "#result": "result",
                "#ts": "timestamp",
            },
            "ExpressionAttributeValues": {
                ":owner": {"S": owner},
                ":lease": {"N": f"{lease_until:.3f}"},
                ":now": {"N": f"{now:.3f}"},
                ":id": {"S": task_id},
                ":kind": {"S": KIND_TASK},
                ":pending": {"B": pending},
                ":pending_status": {"S": "PENDING"},
                **_TERMINAL_VALUES,
            },
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
    }


def marker_check(table: str, id_: str) -> dict[str, Any]:
    """The transaction item that fails when ``id_`` has a revocation marker."""
    return {
        "ConditionCheck": {
            "TableName": table,
            "Key": {"id": {"S": revocation_key(id_)}},
            "ConditionExpression": "attribute_not_exists(id)",
        }
    }


def _chunks(requests: Sequence[ClaimRequest]) -> Iterator[list[ClaimRequest]]:
    """Requests grouped so that each transaction stays within DynamoDB's item limit."""
    chunk: list[ClaimRequest] = []
    markers: set[str] = set()
    for request in requests:
        new = set(request.markers()) - markers
        if chunk and len(chunk) + len(markers) + len(new) + 1 > DYNAMODB_MAX_TRANSACT_ITEMS:
            yield chunk
            chunk, markers, new = [], set(), set(request.markers())
        chunk.append(request)
        markers |= new
    if chunk:
        yield chunk


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
        for chunk in _chunks(list(unique.values())):
            outcomes.update(self._claim_chunk(chunk, owner, lease_until))
        return outcomes

    def _claim_chunk(
        self, chunk: list[ClaimRequest], owner: str, lease_until: float
    ) -> dict[str, ClaimOutcome]:
        outcomes: dict[str, ClaimOutcome] = {}
        pending = list(chunk)
        for _ in range(self.attempts):
            if not pending:
                break
            items, index = self._transaction(pending, owner, lease_until)
            try:
                self.client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                decided = _cancelled(exc, index, {r.task_id: r for r in pending})
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

    def revoke(self, ids: Iterable[str], reason: str = "revoked") -> None:
        """Record revocation markers for task, group or workflow-root ids (with TTL).

        Raises:
            StoreError: the markers could not be written.
        """
        now = self.clock()
        for id_ in ids:
            item: dict[str, Any] = {
                "id": {"S": revocation_key(id_)},
                "kind": {"S": KIND_REVOCATION},
                "task_id": {"S": id_},
                "timestamp": {"N": f"{now:.3f}"},
                "reason": {"S": reason},
            }
            if self.ttl_seconds:
                item["ttl"] = {"N": str(int(now + self.ttl_seconds))}
            try:
                self.client.put_item(TableName=self.table, Item=item)
            except (ClientError, BotoCoreError) as exc:
                raise StoreError(f"recording the revocation of {id_} failed: {exc}") from exc

    def is_revoked(self, ids: Iterable[str]) -> str | None:
        """The first of ``ids`` with a revocation marker, if any (one BatchGetItem)."""
        keys = [{"id": {"S": revocation_key(i)}} for i in dict.fromkeys(i for i in ids if i)]
        if not keys:
            return None
        try:
            found = self.client.batch_get_item(
                RequestItems={self.table: {"Keys": keys, "ProjectionExpression": "task_id"}}
            )["Responses"].get(self.table, [])
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"reading revocations failed: {exc}") from exc
        return str(found[0]["task_id"]["S"]) if found else None


def _cancelled(
    exc: ClientError, index: list[tuple[str, str]], requests: Mapping[str, ClaimRequest]
) -> dict[str, ClaimOutcome]:
    """Outcomes decided by a cancelled transaction's reasons (empty: retry them all).

    Raises:
        StoreError: the error is not a cancellation (missing table, access denied, ...).
    """
    error = exc.response.get("Error", {})
    if error.get("Code") != "TransactionCanceledException":
        raise StoreError(f"claiming tasks failed: {error.get('Code')}: {exc}") from exc
    reasons = exc.response.get("CancellationReasons") or _reasons_from_message(
        str(error.get("Message", "")), len(index)
    )
    failed = {
        (kind, ident)
        for (kind, ident), reason in zip(index, reasons, strict=False)
        if reason.get("Code") == "ConditionalCheckFailed"
    }
    revoked_by = {ident for kind, ident in failed if kind == "marker"}
    decided: dict[str, ClaimOutcome] = {}
    for (kind, ident), reason in zip(index, reasons, strict=False):
        if kind != "task":
            continue
        marker = next((m for m in requests[ident].markers() if m in revoked_by), None)
        if marker is not None:
            decided[ident] = Revoked(by=marker)
        elif (kind, ident) in failed:
            decided[ident] = _refusal(reason.get("Item") or {})
    return decided


def _refusal(old: Mapping[str, Any]) -> ClaimOutcome:
    """Why a claim's condition failed, from the item as it was."""
    status = old.get("status", {}).get("S")
    if status in TERMINAL_STATES:
        return Terminal(state=str(status))
    return Held(
        owner=str(old.get("claim_owner", {}).get("S", "?")),
        lease_until=float(old.get("lease_until", {}).get("N", "0")),
    )


def _reasons_from_message(message: str, count: int) -> list[dict[str, Any]]:
    """Cancellation reasons parsed from the message, for clients that drop the structured list.

    DynamoDB's message reads ``... cancelled, please refer cancellation reasons for specific
    reasons [None, ConditionalCheckFailed, ...]``.
    """
    inside = message[message.rfind("[") + 1 : message.rfind("]")]
    codes = [c.strip() for c in inside.split(",")] if inside else []
    return [{"Code": c} for c in codes[:count]] + [{"Code": "None"}] * (count - len(codes))


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


def store_for_app(app: Any) -> ClaimStore | None:
    """The claim store in the app's results table, or None when results are kept elsewhere."""
    from infra import aws
    from infra.results import DynamoDBBackend

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
