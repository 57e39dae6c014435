"""The differential test's Celery app: one task per behaviour both consumers must agree on.

Configured like ``tasks.app`` (``tasks/celeryconfig.py``'s broker, result backend and JSON only;
the claiming task base; revoke markers), but every task goes to one queue of the test's own,
``differential``, whose URL the test passes in ``SCENARIO_QUEUE_URL`` -- to the ``celery worker``
subprocess and to the in-process Lambda path alike -- so no other test's consumer sees them.

Tasks return JSON-representable descriptions of what they saw, so that what arrived can be
compared between a worker and the Lambda handler.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery, Task
from celery.utils.time import maybe_iso8601
from kombu import Queue

import infra
from infra.core import aws
from infra.core.config import transport_options
from infra.core.settings import Settings

__all__ = ["QUEUE", "QUEUE_URL_VARIABLE", "app", "configure", "marker_id"]

QUEUE = "differential"
"""The Celery queue every scenario task is routed to."""
QUEUE_URL_VARIABLE = "SCENARIO_QUEUE_URL"
"""Environment variable holding the SQS URL of :data:`QUEUE`."""


def configure(celery_app: Celery, env: Mapping[str, str] | None = None) -> None:
    """Route everything to :data:`QUEUE`, with its URL among kombu's predefined queues."""
    env = os.environ if env is None else env
    options = transport_options(Settings.from_env(env))
    url = env.get(QUEUE_URL_VARIABLE)
    if url:
        options["predefined_queues"] = {**options.get("predefined_queues", {}), QUEUE: {"url": url}}
    celery_app.conf.update(
        broker_transport_options=options,
        task_default_queue=QUEUE,
        task_queues=(Queue(QUEUE),),
        task_routes=None,
        task_annotations=None,
    )


# As tasks/application.py: workers claim each task id (like the Lambda path), revoke uses markers.
app = Celery("scenarios", task_cls="infra.worker.task:ClaimingTask")
app.config_from_object("tasks.celeryconfig")
configure(app)
infra.configure(app)
# The differential suite counts a worker's deliveries from Celery's "Task … received" line,
# which a worker leaves out above DEBUG unless the app gives that logger a level itself.
logging.getLogger("celery.worker.strategy").setLevel(logging.INFO)


def marker_id(task_id: str) -> str:
    """Result-store id under which the errback records the failure of ``task_id``."""
    return f"errback-marker-{task_id}"


def _describe(value: Any) -> list[str]:
    """``[type name, str(value)]``: what arrived, in a JSON result."""
    return [type(value).__name__, str(value)]


def _request_fields(task: Task) -> dict[str, Any]:
    request = task.request
    return {
        "id": request.id,
        "root_id": request.root_id,
        "parent_id": request.parent_id,
        "group": request.group,
        "group_index": request.group_index,
        "retries": request.retries,
        "routing_key": (request.delivery_info or {}).get("routing_key"),
        "eta": request.eta,
        "expires": request.expires,
        "called_directly": request.called_directly,
        "is_eager": request.is_eager,
    }


@app.task(name="scenarios.add")
def add(x: int, y: int) -> int:
    """Plain positional arguments."""
    return x + y


@app.task(name="scenarios.kwargs")
def kwargs(x: int, *, scale: int = 1, label: str = "") -> dict[str, Any]:
    """Keyword arguments, one left to its default."""
    return {"value": x * scale, "label": label}


@app.task(name="scenarios.rich_types")
def rich_types(*values: Any, **named: Any) -> dict[str, Any]:
    """kombu's JSON ``__type__`` values: describe what arrived and send it back."""
    return {
        "arrived": [_describe(v) for v in values],
        "named": {k: _describe(v) for k, v in sorted(named.items())},
        "echo": list(values),
    }


@app.task(bind=True, name="scenarios.request")
def request(self: Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """What the task sees of its own message (``hostname`` differs by consumer, left out)."""
    return {**_request_fields(self), "args": list(args), "kwargs": kwargs}


@app.task(bind=True, name="scenarios.on_time")
def on_time(self: Task) -> dict[str, Any]:
    """Whether the task ran no earlier than its ETA."""
    eta = maybe_iso8601(self.request.eta)
    return {"has_eta": eta is not None, "not_early": eta is not None and datetime.now(UTC) >= eta}


@app.task(bind=True, name="scenarios.progress")
def progress(self: Task) -> dict[str, Any]:
    """Report PROGRESS, read it back from the result store, then succeed."""
    self.update_state(state="PROGRESS", meta={"step": 1, "of": 2})
    seen = self.AsyncResult(self.request.id)
    return {"seen_state": seen.state, "seen_meta": seen.info}


@app.task(bind=True, name="scenarios.retry_twice")
def retry_twice(self: Task) -> dict[str, Any]:
    """``self.retry(countdown=1)`` until the third attempt, which succeeds."""
    if self.request.retries < 2:
        raise self.retry(countdown=1)
    return {"retries": self.request.retries, "id": self.request.id}


@app.task(bind=True, name="scenarios.retry_forever", max_retries=1)
def retry_forever(self: Task) -> None:
    """Retries once, then exhausts ``max_retries``: FAILURE MaxRetriesExceededError."""
    raise self.retry(countdown=1)


@app.task(
    bind=True,
    name="scenarios.autoretry",
    autoretry_for=(ValueError,),
    retry_backoff=1,
    retry_backoff_max=2,
    retry_jitter=False,
    max_retries=2,
)
def autoretry(self: Task) -> dict[str, Any]:
    """Raises ValueError until the third attempt; Celery retries it with backoff 1 s, 2 s."""
    if self.request.retries < 2:
        raise ValueError(f"attempt {self.request.retries + 1} fails on purpose")
    return {"retries": self.request.retries}


@app.task(name="scenarios.fail")
def fail(value: Any) -> None:
    """Raises ValueError."""
    raise ValueError(f"bad value {value!r}")


@app.task(name="scenarios.record_errback")
def record_errback(request: Any, exc: BaseException, traceback: Any) -> None:
    """New-style errback, run synchronously by the consumer: store a marker result."""
    app.backend.store_result(
        marker_id(request.id),
        {
            "failed_task": request.id,
            "exc_type": type(exc).__name__,
            "exc": str(exc),
            "traceback_mentions_exc": type(exc).__name__ in str(traceback),
        },
        "SUCCESS",
    )


@app.task(name="scenarios.count_runs")
def count_runs(key: str) -> dict[str, int]:
    """Count this task's executions in the results table: a delivery that runs again shows."""
    response = aws.client("dynamodb").update_item(
        TableName=Settings.from_env().results_table,
        Key={"id": {"S": f"runs-{key}"}},
        UpdateExpression="ADD runs :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
        ReturnValues="UPDATED_NEW",
    )
    return {"runs": int(response["Attributes"]["runs"]["N"])}


@app.task(name="scenarios.total")
def total(numbers: list[int]) -> int:
    """The chord body."""
    return sum(numbers)


@app.task(name="scenarios.soft_limit", soft_time_limit=0.5)
def soft_limit() -> str:
    """Sleeps past its soft limit and cleans up."""
    try:
        time.sleep(2)
    except SoftTimeLimitExceeded:
        return "soft"
    return "not interrupted"


@app.task(name="scenarios.hard_limit", time_limit=1)
def hard_limit() -> str:
    """Sleeps past its hard limit: FAILURE TimeLimitExceeded."""
    time.sleep(5)
    return "not interrupted"


@app.task(name="scenarios.hard_limit_caught", time_limit=1)
def hard_limit_caught() -> str:
    """Sleeps past its hard limit inside a broad ``except Exception`` (as I/O code often does)."""
    try:
        time.sleep(5)
    except Exception as exc:
        return f"caught {type(exc).__name__}"
    return "not interrupted"
