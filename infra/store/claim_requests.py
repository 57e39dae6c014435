"""A claim on the wire: the requests of a batch's claim transaction and what its answer means.

Pure: :class:`infra.store.claims.ClaimStore` sends what is built here. A claim is a conditional
update of the task's item (:func:`claim_update`: not terminal, not revoked -- a revocation of the
task's own id is written on its item, :data:`REVOKED_AT` -- and no live lease held by another
consumer). A task that stands alone (its workflow root is itself, no group: most tasks) is claimed
with that one ``UpdateItem``; otherwise the updates of a batch go in one ``TransactWriteItems`` with
a ``ConditionCheck`` per revocation marker of the tasks' workflow roots and groups
(:func:`marker_check`); :func:`chunks` keeps each within DynamoDB's item limit, and
:func:`cancelled_outcomes` reads a cancelled transaction's reasons back into outcomes,
:func:`refusal` a refused update's old item. What an
outcome means -- run, ack as a duplicate, hand back, record REVOKED -- is :func:`action_for`, which
both consumers (the Lambda pipeline and the worker's ``ClaimingTask``) act on.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import ClientError
from celery import states

from infra.core.errors import StoreError
from infra.core.limits import DYNAMODB_MAX_TRANSACT_ITEMS
from infra.store.items import KIND_TASK, TERMINAL_STATES, revocation_key, task_key

__all__ = [
    "Action",
    "ClaimOutcome",
    "ClaimRequest",
    "Claimed",
    "RUN",
    "Held",
    "Revoked",
    "Step",
    "Terminal",
    "UNRELEASED_STATES",
    "action_for",
    "cancelled_outcomes",
    "chunks",
    "claim_update",
    "release_update",
    "marker_check",
    "refusal",
    "REVOKED_AT",
    "revoked_update",
    "stamp_ids",
]


_STAMP_TEXT_LIMIT: Final = 512
"""Longer stamp values are named by their digest (a key holds 2 KB)."""


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """A task about to run, with the ids whose revocation would revoke it."""

    task_id: str
    root_id: str | None = None
    group_id: str | None = None
    stamps: tuple[str, ...] = ()
    """Marker ids of its stamps (:func:`stamp_ids`): ``revoke_by_stamped_headers`` revokes it."""

    def markers(self) -> tuple[str, ...]:
        """Ids whose revocation markers are checked: its workflow root, its group, its stamps.

        The task's own revocation is on its item (:data:`REVOKED_AT`), checked by the claim's
        condition itself.
        """
        ids = (self.root_id, self.group_id, *self.stamps)
        return tuple(dict.fromkeys(i for i in ids if i and i != self.task_id))


def stamp_ids(stamps: Mapping[str, Any]) -> tuple[str, ...]:
    """The marker id of each stamp value (a list stamp: each of its values), as
    ``revoke_by_stamped_headers`` names them: ``stamp:<header>=<value as JSON>``. Only JSON
    values can be matched (a task message carries nothing else); a long one by its digest."""
    ids = []
    for header, value in stamps.items():
        for one in value if isinstance(value, (list, tuple)) else [value]:
            if one is None:
                continue
            text = json.dumps(one, sort_keys=True, separators=(",", ":"), default=str)
            if len(text) > _STAMP_TEXT_LIMIT:
                text = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
            ids.append(f"stamp:{header}={text}")
    return tuple(dict.fromkeys(ids))


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


class Step(enum.Enum):
    """What a consumer does with a task once its claim is answered."""

    RUN = "run"
    """This consumer holds the claim: run the task."""
    ACK_DUPLICATE = "duplicate"
    """The task already finished (a redelivery): ack the message without running it."""
    HAND_BACK = "hand back"
    """Another consumer runs it: give the message back to SQS, it comes back later."""
    RECORD_REVOKED = "revoked"
    """Its root or group was revoked: record REVOKED without running, ack."""


@dataclass(frozen=True, slots=True)
class Action:
    """A claim's answer as a consumer acts on it."""

    step: Step
    state: str | None = None
    """ACK_DUPLICATE: the state the task finished in; RECORD_REVOKED: REVOKED."""
    by: str | None = None
    """HAND_BACK: the consumer holding the claim; RECORD_REVOKED: the revoked id (the task's,
    its workflow root's or its group's)."""
    until: float | None = None
    """HAND_BACK: when the holder's lease ends (epoch seconds)."""


RUN: Final = Action(Step.RUN)


def action_for(outcome: ClaimOutcome) -> Action:
    """What a consumer does with a task whose claim was answered ``outcome``."""
    if isinstance(outcome, Terminal):
        return Action(Step.ACK_DUPLICATE, state=outcome.state)
    if isinstance(outcome, Held):
        return Action(Step.HAND_BACK, by=outcome.owner, until=outcome.lease_until)
    if isinstance(outcome, Revoked):
        return Action(Step.RECORD_REVOKED, state=states.REVOKED, by=outcome.by)
    return RUN


REVOKED_AT: Final = "revoked_at"
"""Attribute of a task's item recording that its id was revoked (epoch seconds): the claim's
condition refuses it, so a revoked task is never claimed, whichever consumer meets it."""

_TERMINAL_VALUES = {f":t{i}": {"S": s} for i, s in enumerate(sorted(TERMINAL_STATES))}
_CLAIM_CONDITION = (
    f"(attribute_not_exists(#status) OR NOT #status IN ({', '.join(_TERMINAL_VALUES)}))"
    f" AND attribute_not_exists({REVOKED_AT})"
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


UNRELEASED_STATES: Final = frozenset({states.IGNORED, states.REJECTED})
"""States that end an attempt without a state write that releases its claim: the consumer that
ran it gives the claim up itself (:func:`release_update`)."""


def release_update(table: str, task_id: str, owner: str) -> dict[str, Any]:
    """The UpdateItem that gives up ``owner``'s claim on ``task_id`` without recording a state.

    For attempts that end without a write that releases (Celery's ``Ignore`` -- how
    ``Task.replace`` ends, the replacement keeping the task id -- and ``Reject``): the next
    delivery of the id is then claimed at once instead of waiting for the lease to end. Only the
    owner's own claim is removed (a claim taken over since is left alone).
    """
    return {
        "TableName": table,
        "Key": {"id": {"S": task_key(task_id)}},
        "UpdateExpression": "REMOVE claim_owner, lease_until",
        "ConditionExpression": "claim_owner = :owner",
        "ExpressionAttributeValues": {":owner": {"S": owner}},
    }


def revoked_update(
    table: str, id_: str, now: float, pending: bytes, ttl: int | None
) -> dict[str, Any]:
    """The UpdateItem that records the revocation of ``id_`` on the item of the task of that id.

    Any later claim of the task is refused (:data:`REVOKED_AT`). A new item gets Celery's
    PENDING meta so that stock readers see PENDING, but no ``kind`` or ``status``: the id may be a
    group's, and such an item stays out of the indexes.
    """
    names = {"#result": "result"}
    values: dict[str, Any] = {":now": {"N": f"{now:.3f}"}, ":pending": {"B": pending}}
    expression = f"SET {REVOKED_AT} = :now, #result = if_not_exists(#result, :pending)"
    if ttl is not None:
        expression += ", #ttl = if_not_exists(#ttl, :ttl)"
        names["#ttl"] = "ttl"
        values[":ttl"] = {"N": str(ttl)}
    return {
        "TableName": table,
        "Key": {"id": {"S": task_key(id_)}},
        "UpdateExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
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


def chunks(requests: Sequence[ClaimRequest]) -> Iterator[list[ClaimRequest]]:
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


def cancelled_outcomes(
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
            decided[ident] = refusal(ident, reason.get("Item") or {})
    return decided


def refusal(task_id: str, old: Mapping[str, Any]) -> ClaimOutcome:
    """Why the claim of ``task_id`` was refused, from its item as it was."""
    status = old.get("status", {}).get("S")
    if status in TERMINAL_STATES:
        return Terminal(state=str(status))
    if REVOKED_AT in old:
        return Revoked(by=task_id)
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
