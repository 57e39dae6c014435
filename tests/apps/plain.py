"""A test-only Celery app with no claims, for proofs that must hold without our consumer's help.

Configured from ``tasks/celeryconfig.py`` like ``tasks.app`` but with Celery's plain task base
(no ``ClaimingTask``): a worker of this app runs every delivery it is handed, so "ran once" can
only come from SQS itself. Its queues are the test's own: ``PLAIN_QUEUES`` holds a JSON
``{celery queue name: SQS URL}`` that every process (this one, a ``celery worker`` subprocess,
the in-process Lambda path) reads into kombu's predefined queues.

With ``PLAIN_STOCK_TRANSPORT`` set the app is left on kombu's own SQS transport, nothing of
``infra.configure`` installed: a stock consumer of what our producer sends.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import celery
from celery import Celery
from kombu import Queue

import infra
from infra.core import aws
from infra.core.config import transport_options
from infra.core.settings import Settings
from tests.apps.probe import record_call

__all__ = [
    "QUEUES_VARIABLE",
    "STOCK_TRANSPORT_VARIABLE",
    "app",
    "configure",
    "recorded_order",
]

QUEUES_VARIABLE = "PLAIN_QUEUES"
"""JSON ``{celery queue name: SQS URL}`` of the test's queues."""
STOCK_TRANSPORT_VARIABLE = "PLAIN_STOCK_TRANSPORT"
"""Non-empty: stay on kombu's stock SQS transport (a stock worker)."""


def configure(celery_app: Celery, env: Mapping[str, str] | None = None) -> None:
    """Route to the queues of :data:`QUEUES_VARIABLE`, with their URLs as predefined queues."""
    env = os.environ if env is None else env
    options = transport_options(Settings.from_env(env))
    urls: dict[str, str] = json.loads(env.get(QUEUES_VARIABLE) or "{}")
    predefined = {**options.get("predefined_queues", {})}
    predefined.update({name: {"url": url} for name, url in urls.items()})
    options["predefined_queues"] = predefined
    celery_app.conf.update(
        broker_transport_options=options,
        task_queues=tuple(Queue(name) for name in urls) or None,
        task_routes=None,
        task_annotations=None,
    )


app = Celery("plain", set_as_current=False)
app.config_from_object("tasks.celeryconfig")
configure(app)
if not os.environ.get(STOCK_TRANSPORT_VARIABLE):
    infra.configure(app, claims=False)  # Celery's plain task base, as above


def _order_key(key: str) -> dict[str, Any]:
    return {"username": {"S": f"order#{key}"}}


def recorded_order(key: str) -> list[int]:
    """The items :func:`append` recorded under ``key``, in the order the tasks ran."""
    item = aws.client("dynamodb").get_item(
        TableName=Settings.from_env().users_table, Key=_order_key(key), ConsistentRead=True
    )
    return [int(value["N"]) for value in item.get("Item", {}).get("items", {}).get("L", [])]


@app.task(name="plain.add")
def add(x: int, y: int) -> int:
    """Plain arithmetic."""
    return x + y


@app.task(name="plain.stamp")
def stamp(marker: str) -> float:
    """Count the call under ``marker``; return when it ran (epoch seconds)."""
    record_call(marker)
    return time.time()


@app.task(name="plain.measure")
def measure(blob: str) -> dict[str, Any]:
    """The length and SHA-256 of the text argument as the task received it."""
    return {"length": len(blob), "sha256": hashlib.sha256(blob.encode()).hexdigest()}


@app.task(name="plain.append")
def append(key: str, value: int) -> int:
    """Append ``value`` to the list under ``key``: the order in which the tasks ran."""
    aws.client("dynamodb").update_item(
        TableName=Settings.from_env().users_table,
        Key=_order_key(key),
        UpdateExpression="SET #items = list_append(if_not_exists(#items, :empty), :value)",
        ExpressionAttributeNames={"#items": "items"},
        ExpressionAttributeValues={":empty": {"L": []}, ":value": {"L": [{"N": str(value)}]}},
    )
    return value


@app.task(bind=True, name="plain.retrying", max_retries=1)
def retrying(self: celery.Task, marker: str) -> int:
    """Count the call; the first attempt retries at once; return the retry count."""
    record_call(marker)
    if self.request.retries < 1:
        raise self.retry(exc=RuntimeError("first attempt"), countdown=0)
    retries: int = self.request.retries
    return retries
