"""What the result backend's tests share: ids, the request a consumer hands the backend, and
readers of the raw items it writes. The fixtures are in this folder's ``conftest.py``.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery import states
from celery.app.task import Context

from infra.core import aws
from infra.core.settings import Settings
from infra.store.items import task_key
from infra.store.results import DynamoDBBackend

__all__ = [
    "NON_TERMINAL",
    "ONE_MB",
    "TERMINAL",
    "item",
    "new_id",
    "query",
    "query_items",
    "request_for",
    "results_table",
    "seed_claim",
    "store",
]

TERMINAL = (states.SUCCESS, states.FAILURE, states.REVOKED)
NON_TERMINAL = (states.STARTED, states.RETRY, "PROGRESS")
ONE_MB = 1024 * 1024


def new_id() -> str:
    return str(uuid.uuid4())


def request_for(task_name: str = "tests.results.add", **fields: Any) -> Context:
    """The request a worker or the Lambda runner hands the backend."""
    defaults: dict[str, Any] = {
        "task": task_name,
        "delivery_info": {"routing_key": "celery"},
        "root_id": "root-1",
        "parent_id": "parent-1",
        "group": "group-1",
        "retries": 2,
        "hostname": "worker@host",
    }
    return Context({**defaults, **fields})


def results_table() -> str:
    return Settings.from_env().results_table


def item(task_id: str) -> dict[str, Any]:
    """The raw item of a task, read consistently."""
    response = aws.client("dynamodb").get_item(
        TableName=results_table(), Key={"id": {"S": task_key(task_id)}}, ConsistentRead=True
    )
    found: dict[str, Any] = response.get("Item", {})
    return found


def query_items(index: str, partition: str, value: str, since: float) -> list[dict[str, Any]]:
    """Items in ``index`` under ``partition = value`` written since ``since``, newest first."""
    response = aws.client("dynamodb").query(
        TableName=results_table(),
        IndexName=index,
        KeyConditionExpression="#p = :v AND #ts >= :since",
        ExpressionAttributeNames={"#p": partition, "#ts": "timestamp"},
        ExpressionAttributeValues={":v": {"S": value}, ":since": {"N": repr(since)}},
        ScanIndexForward=False,
    )
    items: list[dict[str, Any]] = response["Items"]
    return items


def query(index: str, partition: str, value: str, since: float) -> list[str]:
    """Task ids of :func:`query_items`."""
    return [i["task_id"]["S"] for i in query_items(index, partition, value, since)]


def seed_claim(task_id: str) -> None:
    """A live claim on the task's item, as the consumer's claim leaves it."""
    aws.client("dynamodb").update_item(
        TableName=results_table(),
        Key={"id": {"S": task_key(task_id)}},
        UpdateExpression="SET claim_owner = :o, lease_until = :l",
        ExpressionAttributeValues={":o": {"S": "lambda:req-1"}, ":l": {"N": "9999999999"}},
    )


def store(backend: DynamoDBBackend, task_id: str, state: str, value: Any = None) -> None:
    if state == states.FAILURE:
        backend.mark_as_failure(task_id, ValueError("boom"), traceback="Traceback ...")
    elif state == states.REVOKED:
        backend.mark_as_revoked(task_id, "revoked by test")
    elif state == states.RETRY:
        backend.mark_as_retry(task_id, RuntimeError("again"), traceback="Traceback ...")
    else:
        backend.store_result(task_id, value, state)
