"""``lambda inspect``: tasks from the result store, through its indexes (never a Scan).

A listing is one Query of the index that fits the filter (:mod:`infra.store.items`): ``by-task``
for a task name (the state, if also given, filters it), ``by-status`` for a state, ``by-time`` for
everything; each index sorts by ``timestamp`` (the item's last write), newest first, and
``--since`` bounds that sort key. One task is a GetItem of Celery's key; its ``result`` is
decoded by the app's result backend, as ``AsyncResult`` would (large results follow their S3
pointer), and its children come from Celery's ``children`` field of that meta.

The dashboard's list is :func:`query_page`: the same Query, also bounded above (``until``) and
filtered by queue or id prefix, one page at a time; the next page resumes after the last row
shown (:func:`index_key`), so a page never skips or repeats a task.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from devtools.ops.target import translated
from infra.core.errors import StoreError
from infra.store.items import INDEX_BY_STATUS, INDEX_BY_TASK, INDEX_BY_TIME, KIND_TASK, task_key

__all__ = [
    "TaskPage",
    "TaskQuery",
    "TaskRow",
    "get_item_request",
    "index_key",
    "item_values",
    "page_request",
    "parse_duration",
    "query_page",
    "query_pages",
    "query_request",
    "query_tasks",
    "read_item",
    "task_row",
]

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION: Final = re.compile(r"(\d+)([smhdw])")
FILTERED_PAGE: Final = 100
"""Page size of a filtered Query: DynamoDB applies ``Limit`` before the filter."""
ROW_ATTRIBUTES: Final = (
    "task_id", "task_name", "status", "queue", "retries", "consumer", "worker", "date_done",
    "timestamp", "root_id", "parent_id", "group_id",
)  # fmt: skip


def parse_duration(text: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h30m"``, ``"2d"``, ``"1w"`` → seconds.

    Raises:
        ValueError: anything else.
    """
    cleaned = text.strip().lower()
    if not cleaned or _DURATION.sub("", cleaned):
        raise ValueError(f"{text!r} is not a duration like 90s, 15m, 1h30m, 2d or 1w")
    return sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(cleaned))


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """What ``inspect`` lists: newest first, at most ``limit``."""

    state: str | None = None
    task_name: str | None = None
    since: float | None = None
    """Epoch seconds: only items written at or after it."""
    limit: int = 20


@dataclass(frozen=True, slots=True)
class TaskRow:
    """The queryable attributes of one task item (what the indexes project)."""

    task_id: str
    task_name: str | None
    state: str
    queue: str | None
    retries: int
    consumer: str | None
    date_done: str | None
    updated_at: float
    """Epoch seconds of the item's last write (its ``timestamp``)."""
    root_id: str | None
    parent_id: str | None
    group_id: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "task_name": self.task_name,
            "state": self.state,
            "queue": self.queue,
            "retries": self.retries,
            "consumer": self.consumer,
            "date_done": self.date_done,
            "updated_at": datetime.fromtimestamp(self.updated_at, UTC).isoformat(),
            "root_id": self.root_id,
            "parent_id": self.parent_id,
            "group_id": self.group_id,
        }


# ---------------------------------------------------------------- pure


def item_values(item: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """DynamoDB's typed attributes → plain values (S as str, N as float, B as bytes)."""
    values: dict[str, Any] = {}
    for name, typed in item.items():
        [(kind, value)] = typed.items()
        values[name] = float(value) if kind == "N" else value
    return values


def task_row(item: Mapping[str, Mapping[str, Any]]) -> TaskRow:
    """A row from an item or an index entry."""
    v = item_values(item)
    return TaskRow(
        task_id=v.get("task_id", ""),
        task_name=v.get("task_name"),
        state=v.get("status", "PENDING"),
        queue=v.get("queue"),
        retries=int(v.get("retries", 0)),
        consumer=v.get("consumer") or v.get("worker") or v.get("claim_owner"),
        date_done=v.get("date_done"),
        updated_at=float(v.get("timestamp", 0.0)),
        root_id=v.get("root_id"),
        parent_id=v.get("parent_id"),
        group_id=v.get("group_id"),
    )


def query_request(
    table: str, query: TaskQuery, start_key: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """One Query page of the index that answers ``query``, newest first."""
    if query.task_name:
        index, key, value = INDEX_BY_TASK, "task_name", query.task_name
    elif query.state:
        index, key, value = INDEX_BY_STATUS, "status", query.state
    else:
        index, key, value = INDEX_BY_TIME, "kind", KIND_TASK
    names = {"#pk": key}
    values: dict[str, Any] = {":pk": {"S": value}}
    condition = "#pk = :pk"
    if query.since is not None:
        names["#ts"] = "timestamp"
        values[":since"] = {"N": repr(float(query.since))}
        condition += " AND #ts >= :since"
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ScanIndexForward": False,
        "Limit": query.limit,
    }
    if query.task_name and query.state:
        names["#status"] = "status"
        values[":status"] = {"S": query.state}
        request["FilterExpression"] = "#status = :status"
        request["Limit"] = max(query.limit, FILTERED_PAGE)
    request["ExpressionAttributeNames"] = names
    request["ExpressionAttributeValues"] = values
    if start_key:
        request["ExclusiveStartKey"] = dict(start_key)
    return request


def get_item_request(table: str, task_id: str) -> dict[str, Any]:
    return {"TableName": table, "Key": {"id": {"S": task_key(task_id)}}, "ConsistentRead": True}


# ---------------------------------------------------------------- AWS


def query_pages(dynamodb: Any, table: str, query: TaskQuery) -> Iterator[list[dict[str, Any]]]:
    """The items of each Query page, newest first, until the index has no more.

    Raises:
        StoreError: the table or its index cannot be queried.
    """
    start: Mapping[str, Any] | None = None
    while True:
        with translated(f"querying {table}", StoreError):
            response = dynamodb.query(**query_request(table, query, start))
        yield response.get("Items", [])
        start = response.get("LastEvaluatedKey")
        if not start:
            return


def query_tasks(dynamodb: Any, table: str, query: TaskQuery) -> list[TaskRow]:
    """At most ``query.limit`` tasks, newest first.

    Raises:
        StoreError: the table or its index cannot be queried.
    """
    rows: list[TaskRow] = []
    for items in query_pages(dynamodb, table, query):
        rows.extend(task_row(item) for item in items)
        if len(rows) >= query.limit:
            break
    return rows[: query.limit]


def read_item(
    dynamodb: Any, table: str, task_id: str, decode: Callable[[bytes], Mapping[str, Any]]
) -> tuple[TaskRow, Mapping[str, Any], dict[str, Any]] | None:
    """A task's row, its decoded Celery meta and its raw attributes; None if there is no item.

    Raises:
        StoreError: the table cannot be read.
    """
    with translated(f"reading task {task_id} from {table}", StoreError):
        item = dynamodb.get_item(**get_item_request(table, task_id)).get("Item")
    if not item:
        return None
    payload = item.get("result", {}).get("B")
    meta = decode(payload) if payload else {}
    return task_row(item), meta, item_values({k: v for k, v in item.items() if k != "result"})


# ---------------------------------------------------------------- pages (the dashboard's list)


LIST_FILTERED_PAGE: Final = 1000
"""Items a filtered list Query evaluates per page (index entries are small: well under 1 MB)."""
MAX_PAGES_PER_LIST: Final = 10
"""Query pages one list page reads at most: a rare filter returns what it found and a cursor."""
_INDEX_PARTITION: Final = {
    INDEX_BY_TASK: "task_name",
    INDEX_BY_STATUS: "status",
    INDEX_BY_TIME: "kind",
}


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a listing, and where the next one starts (None: there is no more)."""

    rows: tuple[TaskRow, ...]
    next_key: Mapping[str, Any] | None


def page_request(
    table: str,
    query: TaskQuery,
    *,
    until: float | None = None,
    queue: str | None = None,
    id_prefix: str | None = None,
    start_key: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`query_request` bounded above by ``until`` and filtered by queue and id prefix."""
    request = query_request(table, query, start_key)
    names, values = request["ExpressionAttributeNames"], request["ExpressionAttributeValues"]
    if until is not None:
        names["#ts"] = "timestamp"
        values[":until"] = {"N": repr(float(until))}
        condition = request["KeyConditionExpression"]
        if ":since" in values:
            condition = condition.replace("#ts >= :since", "#ts BETWEEN :since AND :until")
        else:
            condition += " AND #ts <= :until"
        request["KeyConditionExpression"] = condition
    filters = [request["FilterExpression"]] if "FilterExpression" in request else []
    if queue:
        names["#queue"], values[":queue"] = "queue", {"S": queue}
        filters.append("#queue = :queue")
    if id_prefix:
        names["#task_id"], values[":prefix"] = "task_id", {"S": id_prefix}
        filters.append("begins_with(#task_id, :prefix)")
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
        request["Limit"] = max(query.limit, LIST_FILTERED_PAGE)
    return request


def index_key(index: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ExclusiveStartKey`` that resumes a Query of ``index`` just after ``item``."""
    return {name: item[name] for name in ("id", "timestamp", _INDEX_PARTITION[index])}


def query_page(
    dynamodb: Any,
    table: str,
    query: TaskQuery,
    *,
    until: float | None = None,
    queue: str | None = None,
    id_prefix: str | None = None,
    start_key: Mapping[str, Any] | None = None,
    max_pages: int = MAX_PAGES_PER_LIST,
) -> TaskPage:
    """At most ``query.limit`` tasks from ``start_key`` on, newest first, and the next page's key.

    Raises:
        StoreError: the table or its index cannot be queried.
    """
    rows: list[TaskRow] = []
    start = start_key
    for _ in range(max_pages):
        request = page_request(
            table, query, until=until, queue=queue, id_prefix=id_prefix, start_key=start
        )
        with translated(f"querying {table}", StoreError):
            response = dynamodb.query(**request)
        items = response.get("Items", [])
        start = response.get("LastEvaluatedKey")
        for i, item in enumerate(items):
            rows.append(task_row(item))
            if len(rows) == query.limit:
                last = i == len(items) - 1 and not start
                return TaskPage(
                    tuple(rows), None if last else index_key(request["IndexName"], item)
                )
        if not start:
            return TaskPage(tuple(rows), None)
    return TaskPage(tuple(rows), start)
