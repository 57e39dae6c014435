"""The last demo's results table, kept on disk so the next ``lambda up`` starts with its tasks.

The embedded emulator keeps everything in memory and stops with the demo, so a newcomer who runs
``make demo`` and then ``lambda up`` / ``lambda dashboard`` would find an empty table. The demo
saves its table's items here as it ends; ``up`` writes them into its fresh table once (and says
so), so the operator's commands and the dashboard show the demo's tasks. Local emulators only:
nothing here ever reads or writes a deployed stack, and only the results table is kept (queues
are drained by then, and the demo writes no result large enough to live in S3).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from infra.core import aws
from infra.core.settings import Settings

__all__ = ["SNAPSHOT", "restore", "save"]

SNAPSHOT = Path(".celery-lambda") / "last-demo.json"
"""Where the demo leaves its table's items."""

_BATCH = 25  # BatchWriteItem's limit


def save(settings: Settings, path: Path = SNAPSHOT) -> int:
    """Write every item of ``settings.results_table`` to ``path``; returns how many.

    A Scan is fine here: the table is the demo's own, a few dozen items on a local emulator.
    """
    client = aws.client("dynamodb", settings)
    items = [
        _to_json(item)
        for page in client.get_paginator("scan").paginate(TableName=settings.results_table)
        for item in page["Items"]
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"table": settings.results_table, "items": items}))
    return len(items)


def restore(settings: Settings, path: Path = SNAPSHOT) -> int:
    """Write the items ``path`` holds into ``settings.results_table``; returns how many (0 when
    there is no snapshot or it is unreadable: a missing demo is not an error for ``up``)."""
    try:
        items = [_from_json(item) for item in json.loads(path.read_text())["items"]]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    client = aws.client("dynamodb", settings)
    for chunk in _chunks(items):
        request = {settings.results_table: [{"PutRequest": {"Item": item}} for item in chunk]}
        while request:  # the emulator never throttles, but honour UnprocessedItems anyway
            request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
    return len(items)


def _chunks(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


def _to_json(item: Mapping[str, Any]) -> dict[str, Any]:
    """A low-level DynamoDB item with binary values as base64 (JSON has no bytes)."""
    return {
        name: {"B64": base64.b64encode(value["B"]).decode()} if "B" in value else value
        for name, value in item.items()
    }


def _from_json(item: Mapping[str, Any]) -> dict[str, Any]:
    return {
        name: {"B": base64.b64decode(value["B64"])} if "B64" in value else value
        for name, value in item.items()
    }
