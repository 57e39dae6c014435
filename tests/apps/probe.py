"""A test-only Celery app whose tasks make what the handler did observable.

Every task that "runs" counts its invocation in the users table under ``probe#<marker>`` (an atomic
``ADD``), so a test can tell "ran once", "ran twice" and "never ran" apart from outside the
process that ran it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import celery
from billiard.exceptions import SoftTimeLimitExceeded
from celery import Celery
from celery.exceptions import Reject

import infra
from infra.core import aws
from infra.core.settings import Settings

# As tasks.app: a worker serving this app claims task ids and paces rate limits (ClaimingTask).
app = Celery("probe", set_as_current=False, task_cls="infra.worker.task:ClaimingTask")
app.config_from_object("tasks.celeryconfig")
infra.configure(app)


def _key(marker: str) -> dict[str, Any]:
    return {"username": {"S": f"probe#{marker}"}}


def record_call(marker: str) -> None:
    """Count one invocation under ``marker``."""
    aws.client("dynamodb").update_item(
        TableName=Settings.from_env().users_table,
        Key=_key(marker),
        UpdateExpression="ADD calls :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )


def calls(marker: str) -> int:
    """How many times a task counted an invocation under ``marker``."""
    item = aws.client("dynamodb").get_item(
        TableName=Settings.from_env().users_table, Key=_key(marker), ConsistentRead=True
    )
    return int(item.get("Item", {}).get("calls", {}).get("N", "0"))


@app.task(name="probe.record")
def record(marker: str, value: Any = None) -> Any:
    """Count the call and return ``value``."""
    record_call(marker)
    return value


@app.task(name="probe.boom")
def boom(marker: str) -> None:
    """Count the call, then raise."""
    record_call(marker)
    raise ValueError(f"boom {marker}")


@app.task(name="probe.on_error")
def on_error(request: Any, exc: BaseException, traceback: str, marker: str) -> None:
    """A new-style errback (``request, exc, traceback``): Celery calls it inline."""
    record_call(f"{marker}:{request.id}:{type(exc).__name__}")


@app.task(name="probe.limited", soft_time_limit=0.5, time_limit=1.5)
def limited(mode: str) -> str:
    """Sleep past the soft limit: ``soft`` returns on it, ``hard`` keeps sleeping into the hard."""
    try:
        time.sleep(5)
    except SoftTimeLimitExceeded:
        if mode == "soft":
            return "soft"
        time.sleep(5)
    return "slept"


@app.task(name="probe.sleep")
def sleep(seconds: float, marker: str) -> float:
    """Count the call, then sleep ``seconds``."""
    record_call(marker)
    time.sleep(seconds)
    return seconds


@app.task(bind=True, name="probe.dump")
def dump(self: celery.Task, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The request as the task sees it."""
    request = self.request
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
        "hostname": request.hostname,
        "args": list(request.args or ()),
        "kwargs": dict(request.kwargs or {}),
        "timelimit": list(request.timelimit or (None, None)),
        "correlation_id": request.correlation_id,
        "origin": request.origin,
    }


@app.task(bind=True, name="probe.spawn")
def spawn(self: celery.Task) -> str:
    """Send ``probe.dump`` from inside a task; return the child's id."""
    child_id: str = dump.apply_async(("from a task",)).id
    return child_id


@app.task(bind=True, name="probe.retrying", max_retries=1)
def retrying(self: celery.Task, marker: str, fail_times: int = 1, countdown: float = 1) -> int:
    """Count the call and retry until ``fail_times`` attempts failed; return the retry count."""
    record_call(marker)
    if self.request.retries < fail_times:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries}"), countdown=countdown)
    retries: int = self.request.retries
    return retries


@app.task(name="probe.reject")
def reject(marker: str) -> None:
    """Count the call and ask for the message to be requeued, as a worker would."""
    record_call(marker)
    raise Reject(f"requeue {marker}", requeue=True)


@app.task(bind=True, name="probe.replaced")
def replaced(self: celery.Task, marker: str, queue: str | None = None) -> None:
    """Count the call and replace itself by ``probe.record`` (same task id, as Celery does),
    sent to ``queue`` (default: the task's)."""
    record_call(marker)
    replacement = record.s(f"{marker}-replacement", "replaced")
    raise self.replace(replacement.set(queue=queue) if queue else replacement)


@app.task(name="probe.reject_gone")
def reject_gone(marker: str) -> None:
    """Count the call and reject the message for good (no requeue)."""
    record_call(marker)
    raise Reject(f"drop {marker}", requeue=False)


@app.task(name="probe.paced", rate_limit="20/s")
def paced(marker: str) -> float:
    """Count the call; return when it started (epoch seconds), to check the rate limit."""
    started = time.time()
    record_call(marker)
    return started


_HELD: list[bytes] = []
"""Memory ``probe.hog`` keeps alive, as a leaking task would."""
LEAKED = threading.Event()
"""Set by :func:`close_leaks` to end the threads ``probe.leak`` left running."""
_OPEN: list[Any] = []
"""Files ``probe.leak`` left open."""


@app.task(name="probe.hog")
def hog(marker: str, megabytes: int) -> None:
    """Count the call and keep ``megabytes`` of resident memory (written, so really resident)."""
    record_call(marker)
    _HELD.append(b"\x01" * (megabytes * 1024 * 1024))


def release_memory() -> None:
    """Drop what ``probe.hog`` kept."""
    _HELD.clear()


@app.task(name="probe.leak")
def leak(marker: str, path: str) -> None:
    """Count the call, leave a thread running and a file open: resources a task forgot."""
    record_call(marker)
    threading.Thread(target=LEAKED.wait, name=f"leaked-{marker}").start()
    _OPEN.append(open(path, "w"))  # noqa: SIM115 - the leak is the point


def close_leaks() -> None:
    """End the leaked threads and close the leaked files."""
    LEAKED.set()
    while _OPEN:
        _OPEN.pop().close()
