"""``lambda inspect TASK_ID``: one task in full, and the workflow below it as a tree.

Celery records the results a task sent while it ran (a chain's next step, a group, a chord's
header) in the ``children`` field of its meta, as ``AsyncResult.as_tuple()`` values:
``[[id, parent], None]`` for a task and ``[[group id, parent], [member, ...]]`` for a group.
The tree follows those links down from the task, reading each child's item; it stops at
``max_nodes`` so that a fan-out of thousands stays readable and cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from devtools.ops.tasks import TaskRow
from infra.store.items import NOT_REGISTERED

__all__ = [
    "ChildRef",
    "TaskDetail",
    "TaskNode",
    "TaskView",
    "build_tree",
    "child_refs",
    "task_detail",
    "view_task",
]

MAX_TREE_NODES: Final = 50

Reader = Callable[[str], tuple[TaskRow, Mapping[str, Any]] | None]
"""Task id → its row and decoded meta, None when the store has no item for it."""
ItemReader = Callable[[str], tuple[TaskRow, Mapping[str, Any], Mapping[str, Any]] | None]
"""Task id → row, decoded meta and raw attributes (:func:`devtools.ops.tasks.read_item`)."""


@dataclass(frozen=True, slots=True)
class ChildRef:
    """A child result named in a meta: a task (``members`` None) or a group of them."""

    id: str
    members: tuple[ChildRef, ...] | None = None


@dataclass(frozen=True, slots=True)
class TaskNode:
    """One node of a workflow tree; a group node has no row of its own."""

    id: str
    row: TaskRow | None
    children: tuple[TaskNode, ...] = ()
    group: bool = False
    truncated: bool = False
    """More children exist than the tree shows (``max_nodes`` reached)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "group": self.group,
            "task_name": self.row.task_name if self.row else None,
            "state": self.row.state if self.row else None,
            "children": [child.as_json() for child in self.children],
            "truncated": self.truncated,
        }


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """Everything the store knows about one task."""

    row: TaskRow
    result: Any
    """The return value (SUCCESS, PROGRESS meta), else None."""
    exception: str | None
    traceback: str | None
    claim_owner: str | None
    lease_until: float | None
    expires_at: float | None
    """When the item's TTL deletes it."""

    def as_json(self) -> dict[str, Any]:
        return {
            **self.row.as_json(),
            "result": _jsonable(self.result),
            "exception": self.exception,
            "traceback": self.traceback,
            "claim_owner": self.claim_owner,
            "lease_until": _iso(self.lease_until),
            "expires_at": _iso(self.expires_at),
        }


@dataclass(frozen=True, slots=True)
class TaskView:
    """What ``inspect TASK_ID`` shows: the task, its parent, the workflow below it."""

    detail: TaskDetail
    parent: TaskRow | None
    tree: TaskNode

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.detail.as_json(),
            "parent": self.parent.as_json() if self.parent else None,
            "tree": self.tree.as_json(),
        }


# ---------------------------------------------------------------- pure


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch else None


def _jsonable(value: Any) -> Any:
    """The value as JSON can carry it (repr for what it cannot)."""
    return json.loads(json.dumps(value, default=repr))


def _ref(value: Any) -> ChildRef | None:
    """One ``as_tuple()`` value; None for anything else (a foreign or future shape)."""
    if not (isinstance(value, list | tuple) and len(value) == 2):
        return None
    head, members = value
    if not (isinstance(head, list | tuple) and head and isinstance(head[0], str)):
        return None
    if members is None:
        return ChildRef(head[0])
    if isinstance(members, list | tuple):
        return ChildRef(head[0], tuple(r for r in map(_ref, members) if r is not None))
    return None


def child_refs(meta: Mapping[str, Any]) -> tuple[ChildRef, ...]:
    """The children a decoded meta names."""
    children = meta.get("children") or []
    if not isinstance(children, list | tuple):
        return ()
    return tuple(ref for ref in map(_ref, children) if ref is not None)


def _reason(meta: Mapping[str, Any]) -> str | None:
    """Why a NOT_REGISTERED task never ran (its meta's ``result``,
    :func:`infra.store.unregistered.unregistered_info`), shown as its exception."""
    info = meta.get("result")
    if meta.get("status") != NOT_REGISTERED or not isinstance(info, Mapping):
        return None
    return f"{info.get('exc_type')}: {info.get('exc_message')}"


def task_detail(row: TaskRow, meta: Mapping[str, Any], raw: Mapping[str, Any]) -> TaskDetail:
    """A task's detail from its row, decoded meta and raw attributes (``item_values``)."""
    result = meta.get("result")
    exception = _reason(meta)
    if isinstance(result, BaseException):
        exception, result = f"{type(result).__name__}: {result}", None
    elif exception is not None:
        result = None
    return TaskDetail(
        row=row,
        result=result,
        exception=exception,
        traceback=meta.get("traceback"),
        claim_owner=raw.get("claim_owner"),
        lease_until=raw.get("lease_until"),
        expires_at=raw.get("ttl"),
    )


# ---------------------------------------------------------------- walking the store


@dataclass(slots=True)
class _Budget:
    left: int


def build_tree(task_id: str, read: Reader, max_nodes: int = MAX_TREE_NODES) -> TaskNode:
    """The task and the results it sent, recursively, at most ``max_nodes`` items read."""
    return _node(ChildRef(task_id), read, _Budget(max_nodes))


def _node(ref: ChildRef, read: Reader, budget: _Budget) -> TaskNode:
    if ref.members is not None:
        children, truncated = _children(ref.members, read, budget)
        return TaskNode(ref.id, None, children, group=True, truncated=truncated)
    budget.left -= 1
    found = read(ref.id)
    if found is None:
        return TaskNode(ref.id, None)
    row, meta = found
    children, truncated = _children(child_refs(meta), read, budget)
    return TaskNode(ref.id, row, children, truncated=truncated)


def _children(
    refs: tuple[ChildRef, ...], read: Reader, budget: _Budget
) -> tuple[tuple[TaskNode, ...], bool]:
    nodes: list[TaskNode] = []
    for ref in refs:
        if budget.left <= 0:
            return tuple(nodes), True
        nodes.append(_node(ref, read, budget))
    return tuple(nodes), False


def view_task(task_id: str, read: ItemReader, max_nodes: int = MAX_TREE_NODES) -> TaskView | None:
    """The task, its parent and its tree, read with ``read``; None when the task is unknown."""
    found = read(task_id)
    if found is None:
        return None
    detail = task_detail(*found)
    parent = read(detail.row.parent_id) if detail.row.parent_id else None

    def row_and_meta(id_: str) -> tuple[TaskRow, Mapping[str, Any]] | None:
        item = read(id_)
        return None if item is None else (item[0], item[1])

    tree = build_tree(task_id, row_and_meta, max_nodes)
    return TaskView(detail, parent[0] if parent else None, tree)
