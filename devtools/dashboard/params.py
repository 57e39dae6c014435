"""Query parameters, checked: each becomes a :mod:`devtools.ops` value or a :class:`BadRequest`.

A page names the parameters it takes; an unknown one, a state Celery does not have, a limit out of
range, a time that is neither a duration (``90s``, ``1h``, ``2d``: that long ago) nor an ISO 8601
date, or a cursor that was not handed out here is a 400 saying which and why -- never a guess.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from celery import states

from devtools.ops.tasks import TaskQuery, parse_duration

__all__ = [
    "BadRequest",
    "TaskFilters",
    "decode_cursor",
    "encode_cursor",
    "parse_time",
    "task_filters",
    "task_id",
]

STATES: Final = frozenset(states.ALL_STATES)
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500
_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_NAME: Final = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_TASK_PARAMS: Final = frozenset(
    {"state", "task", "queue", "since", "until", "id", "limit", "cursor"}
)


class BadRequest(ValueError):
    """A query parameter that cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class TaskFilters:
    """The task list's filters, as the ops query functions take them."""

    query: TaskQuery
    until: float | None
    queue: str | None
    id_prefix: str | None
    cursor: Mapping[str, Any] | None

    def as_params(self) -> dict[str, str]:
        """The filters as query parameters (the cursor left out), for links and the form."""
        params = {
            "state": self.query.state or "",
            "task": self.query.task_name or "",
            "queue": self.queue or "",
            "id": self.id_prefix or "",
            "since": _iso(self.query.since),
            "until": _iso(self.until),
        }
        if self.query.limit != DEFAULT_LIMIT:
            params["limit"] = str(self.query.limit)
        return {k: v for k, v in params.items() if v}


def _iso(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if epoch else ""


def check_names(params: Mapping[str, str], allowed: frozenset[str]) -> None:
    """Raises :class:`BadRequest` for a parameter the page does not take."""
    unknown = sorted(set(params) - allowed - {"token"})
    if unknown:
        raise BadRequest(
            f"unknown query parameter {', '.join(unknown)} (this page takes: "
            f"{', '.join(sorted(allowed)) or 'none'})"
        )


def parse_time(name: str, text: str, now: float) -> float:
    """``90s``/``1h``/``2d`` (that long before ``now``) or an ISO 8601 date → epoch seconds."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"{name}={text!r} is neither a duration (90s, 15m, 1h, 2d) nor an ISO 8601 date"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _pattern(name: str, value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise BadRequest(f"{name}={value[:80]!r} is not {what}")
    return value


def task_id(value: str) -> str:
    """A task id from a path or a form (letters, digits, ``._:-``), or :class:`BadRequest`."""
    return _pattern("id", value, _ID, "a task id (letters, digits, '.', '_', ':', '-')")


def encode_cursor(key: Mapping[str, Any]) -> str:
    """An index key as an opaque URL-safe string."""
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def decode_cursor(text: str) -> dict[str, Any]:
    """The index key a :func:`encode_cursor` string stands for, or :class:`BadRequest`."""
    try:
        key = json.loads(base64.urlsafe_b64decode(text.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not one this dashboard handed out") from None
    shape_ok = isinstance(key, dict) and all(
        isinstance(k, str) and isinstance(v, dict) and len(v) == 1 and set(v) <= {"S", "N"}
        for k, v in key.items()
    )
    if not shape_ok or not {"id", "timestamp"} <= set(key):
        raise BadRequest("cursor is not one this dashboard handed out")
    return dict(key)


def _limit(text: str) -> int:
    try:
        limit = int(text)
    except ValueError:
        raise BadRequest(f"limit={text!r} is not a whole number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit={limit} is out of range: 1 to {MAX_LIMIT}")
    return limit


def task_filters(params: Mapping[str, str], now: float | None = None) -> TaskFilters:
    """The task list's filters from its query parameters (blank ones are left out).

    Raises:
        BadRequest: a parameter is unknown or its value cannot be used.
    """
    check_names(params, _TASK_PARAMS)
    now = time.time() if now is None else now
    given = {k: v.strip() for k, v in params.items() if v.strip()}
    state = given.get("state", "").upper() or None
    if state is not None and state not in STATES:
        raise BadRequest(
            f"state={given['state']!r} is not a Celery state ({', '.join(sorted(STATES))})"
        )
    task_name = given.get("task")
    if task_name is not None:
        _pattern("task", task_name, _NAME, "a task name")
    queue = given.get("queue")
    if queue is not None:
        _pattern("queue", queue, _NAME, "a queue name")
    id_prefix = task_id(given["id"]) if "id" in given else None
    since = parse_time("since", given["since"], now) if "since" in given else None
    until = parse_time("until", given["until"], now) if "until" in given else None
    if since is not None and until is not None and since > until:
        raise BadRequest("since is after until: the time range is empty")
    limit = _limit(given["limit"]) if "limit" in given else DEFAULT_LIMIT
    cursor = decode_cursor(given["cursor"]) if "cursor" in given else None
    query = TaskQuery(state=state, task_name=task_name, since=since, limit=limit)
    return TaskFilters(query, until, queue, id_prefix, cursor)
