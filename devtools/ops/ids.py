"""Ids as operators type them: the whole id, or the first characters that the tables show.

A full task id (a UUID, what Celery gives a task) is taken as it is: ``inspect`` then reads it with
one GetItem, as before. Anything shorter is the start of an id, found without a Scan through the
``by-id`` index (partition ``kind``, sort ``task_id``; DynamoDB's ``begins_with`` works on a sort
key only): one Query of at most :data:`MAX_MATCHES` + 1 keys. A prefix of several tasks is refused
with the matches, their names and states read by one BatchGetItem; a text that is one of the
matches exactly (a custom task id that also starts another) names that task.

Dead letters are matched the same way (:func:`matching_letters`), against the message ids and the
task ids of the messages a look at the DLQs received.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from devtools.ops.dlq import DeadLetter
from devtools.ops.target import translated
from infra.core import aws
from infra.core.errors import CeleryLambdaError, StoreError
from infra.store.items import INDEX_BY_ID, KIND_TASK, task_key
from infra.store.results import DynamoDBBackend

__all__ = [
    "MAX_MATCHES",
    "AmbiguousId",
    "Match",
    "UnknownId",
    "is_full_id",
    "matches_request",
    "matching_letters",
    "names_request",
    "resolve_for_app",
    "resolve_letter",
    "resolve_task_id",
]

MAX_MATCHES: Final = 10
"""Matches an ambiguous prefix lists (one more is read, to say that there are more)."""
_FULL_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


class UnknownId(CeleryLambdaError):
    """No task (or dead letter) has this id or an id that starts with it."""


class AmbiguousId(CeleryLambdaError):
    """Several ids start with the text: the message lists them, to pick one."""

    def __init__(self, prefix: str, where: str, matches: Sequence[Match], more: bool) -> None:
        count = f"more than {len(matches)}" if more else str(len(matches))
        lines = [f"  {m.id}  {m.task_name or '?'}  {m.detail or ''}".rstrip() for m in matches]
        if more:
            lines.append("  …")
        super().__init__(
            f"{prefix} is ambiguous: {count} ids in {where} start with it "
            "(type more of the id):\n" + "\n".join(lines)
        )
        self.matches = tuple(matches)


@dataclass(frozen=True, slots=True)
class Match:
    """One id a prefix matched, with what tells it apart."""

    id: str
    task_name: str | None
    detail: str | None
    """A task's state; a dead letter's task id."""


# ---------------------------------------------------------------- pure


def is_full_id(text: str) -> bool:
    """True for a whole UUID: taken as it is, never looked up as a prefix."""
    return _FULL_ID.fullmatch(text) is not None


def matches_request(table: str, prefix: str) -> dict[str, Any]:
    """The Query of the ``by-id`` index for task ids that start with ``prefix``."""
    return {
        "TableName": table,
        "IndexName": INDEX_BY_ID,
        "KeyConditionExpression": "#kind = :kind AND begins_with(#task_id, :prefix)",
        "ExpressionAttributeNames": {"#kind": "kind", "#task_id": "task_id"},
        "ExpressionAttributeValues": {":kind": {"S": KIND_TASK}, ":prefix": {"S": prefix}},
        "Limit": MAX_MATCHES + 1,
    }


def names_request(table: str, task_ids: Iterable[str]) -> dict[str, Any]:
    """The BatchGetItem of the names and states of ``task_ids`` (at most 100)."""
    keys = [{"id": {"S": task_key(task_id)}} for task_id in task_ids]
    projection = {"ProjectionExpression": "task_id, task_name, #status"}
    names = {"ExpressionAttributeNames": {"#status": "status"}}
    return {"RequestItems": {table: {"Keys": keys, **projection, **names}}}


def _chosen(text: str, ids: Sequence[str], more: bool) -> str | None:
    """The one id ``text`` names among the ids that start with it; None if none or several."""
    if text in ids:
        return text
    return ids[0] if len(ids) == 1 and not more else None


def matching_letters(letters: Sequence[DeadLetter], text: str) -> list[DeadLetter]:
    """The letters ``text`` names: whose message or task id it is, else whose ids start with it."""

    def ids(letter: DeadLetter) -> tuple[str, ...]:
        task = letter.task
        return (letter.message_id, task.task_id) if task else (letter.message_id,)

    exact = [letter for letter in letters if text in ids(letter)]
    if exact:
        return exact
    return [letter for letter in letters if any(i.startswith(text) for i in ids(letter))]


def resolve_letter(letters: Sequence[DeadLetter], text: str) -> DeadLetter:
    """The one letter ``text`` names (:func:`matching_letters`).

    Raises:
        UnknownId: none.
        AmbiguousId: several (listed with their task names and task ids).
    """
    found = matching_letters(letters, text)
    if not found:
        raise UnknownId(f"no message {text} in the dead-letter queues (unknown, or moved since)")
    if len(found) > 1:
        matches = [
            Match(f.message_id, f.task.task_name, f.task.task_id)
            if f.task
            else Match(f.message_id, None, None)
            for f in found
        ]
        more = len(matches) > MAX_MATCHES
        raise AmbiguousId(text, "the dead-letter queues", matches[:MAX_MATCHES], more)
    return found[0]


# ---------------------------------------------------------------- AWS


def _described(dynamodb: Any, table: str, task_ids: Sequence[str]) -> list[Match]:
    """The matches with their names and states, in id order."""
    with translated(f"reading tasks of {table}", StoreError):
        response = dynamodb.batch_get_item(**names_request(table, task_ids))
    found = {item["task_id"]["S"]: item for item in response.get("Responses", {}).get(table, [])}
    return [
        Match(
            task_id,
            found.get(task_id, {}).get("task_name", {}).get("S"),
            found.get(task_id, {}).get("status", {}).get("S"),
        )
        for task_id in task_ids
    ]


def resolve_task_id(dynamodb: Any, table: str, text: str) -> str:
    """The full id of the one task ``text`` is the id of, or the start of.

    Raises:
        UnknownId: no task id in ``table`` is or starts with ``text``.
        AmbiguousId: several do (listed, with their names and states).
        StoreError: the table or its index cannot be read.
    """
    if is_full_id(text):
        return text
    if not text:
        raise UnknownId(f"an empty id names no task in {table}")
    with translated(f"looking up task ids starting with {text} in {table}", StoreError):
        items = dynamodb.query(**matches_request(table, text)).get("Items", [])
    ids = [item["task_id"]["S"] for item in items]
    more = len(ids) > MAX_MATCHES
    chosen = _chosen(text, ids[:MAX_MATCHES], more)
    if chosen is not None:
        return chosen
    if not ids:
        raise UnknownId(f"no task {text} in {table} (unknown id, or its result expired)")
    raise AmbiguousId(text, table, _described(dynamodb, table, ids[:MAX_MATCHES]), more)


def resolve_for_app(app: Any, texts: Iterable[str]) -> list[str]:
    """``texts`` as full task ids of the app's results table (as they are if it has none).

    Raises:
        UnknownId, AmbiguousId, StoreError: as :func:`resolve_task_id`.
    """
    backend = app.backend
    if not isinstance(backend, DynamoDBBackend):
        return list(texts)
    dynamodb = aws.client("dynamodb", backend.settings)
    return [resolve_task_id(dynamodb, backend.table_name, text) for text in texts]
