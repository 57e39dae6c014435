"""The examples of the original brief, as real tasks under the brief's names."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from typing import Any

import celery
from botocore.exceptions import ClientError
from celery.result import AsyncResult

from infra.core import aws
from infra.core.settings import Settings
from infra.worker.task import ClaimingTask
from tasks.application import app

logger = logging.getLogger(__name__)

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@app.task(name="tasks.add")
def add(x: float, y: float) -> float:
    """The brief's first task; also the benchmark task (default queue, no rate limit)."""
    return x + y


@app.task(name="tasks.xsum")
def xsum(numbers: list[float]) -> float:
    """Sum a list: the body of the chord examples (``chord(add.s(i, i) ..., xsum.s())``)."""
    return sum(numbers)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """scrypt hash in ``scrypt$n$r$p$salt$hash`` form; the clear password is never stored."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    b64 = base64.b64encode
    return "scrypt${n}${r}${p}$".format(**_SCRYPT) + f"{b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches a hash made by :func:`hash_password`."""
    _, n, r, p, salt, digest = stored.split("$")
    candidate = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p)
    )
    return hmac.compare_digest(candidate, base64.b64decode(digest))


@app.task(name="create_new_user")
def create_user(username: str, password: str) -> dict[str, Any]:
    """Store a user in the users table, password hashed; idempotent on ``username``.

    A redelivered or repeated call for an existing username changes nothing and reports
    ``created: False``, so running the task twice has the effect of running it once.
    """
    table = Settings.from_env().users_table
    try:
        aws.client("dynamodb").put_item(
            TableName=table,
            Item={
                "username": {"S": username},
                "password_hash": {"S": hash_password(password)},
            },
            ConditionExpression="attribute_not_exists(username)",
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
            raise
        return {"username": username, "created": False}
    return {"username": username, "created": True}


@app.task(bind=True, name="tasks.upload_files")
def upload_files(self: celery.Task, filenames: list[str]) -> dict[str, Any]:
    """Write one object per file name to the results bucket, reporting PROGRESS as it goes."""
    bucket = Settings.from_env().results_bucket
    s3 = aws.client("s3")
    keys = []
    for i, name in enumerate(filenames):
        if not self.request.called_directly:
            self.update_state(state="PROGRESS", meta={"current": i, "total": len(filenames)})
        key = f"uploads/{self.request.id or 'local'}/{name}"
        s3.put_object(Bucket=bucket, Key=key, Body=f"uploaded by {self.request.id}\n".encode())
        keys.append(key)
    return {"current": len(filenames), "total": len(filenames), "keys": keys}


@app.task(name="tasks.error_handler")
def error_handler(uuid: str) -> dict[str, str]:
    """The brief's ``link_error`` callback: read the failed task's exception and traceback."""
    result = AsyncResult(uuid, app=app)
    # The result is already stored when an errback runs, so this get() does not wait; the flag
    # only silences Celery's guard against blocking on a result inside a task.
    exc = result.get(propagate=False, disable_sync_subtasks=False)
    print(f"Task {uuid} raised exception: {exc!r}\n{result.traceback!r}")
    return {"task_id": uuid, "exception": repr(exc), "traceback": result.traceback or ""}


@app.task(bind=True, name="tasks.dump_context")
def dump_context(self: celery.Task, x: Any, y: Any) -> dict[str, Any]:
    """The brief's request dump: what the task sees of its own message."""
    print(
        f"Executing task id {self.request.id}, args: {self.request.args!r} "
        f"kwargs: {self.request.kwargs!r}"
    )
    return {
        "id": self.request.id,
        "args": list(self.request.args or ()),
        "kwargs": dict(self.request.kwargs or {}),
        "queue": (self.request.delivery_info or {}).get("routing_key"),
        "retries": self.request.retries,
        "called_directly": self.request.called_directly,
    }


class LoggedTask(ClaimingTask):
    """The brief's custom base class: report failures through ``on_failure``."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        logger.error("%r failed: %r", task_id, exc)


@app.task(base=LoggedTask, name="tasks.always_fails")
def always_fails(x: Any = None, y: Any = None) -> None:
    """The brief's failing ``add`` on a custom base: raises ``KeyError`` every time."""
    raise KeyError(x)


@app.task(bind=True, name="tasks.flaky", max_retries=5)
def flaky(self: celery.Task, failures: int = 2, base_delay: int = 1) -> dict[str, int]:
    """Fail ``failures`` times, retrying with exponential backoff, then succeed."""
    attempt = self.request.retries
    if attempt < failures:
        raise self.retry(
            exc=RuntimeError(f"attempt {attempt + 1} of {failures + 1} fails on purpose"),
            countdown=base_delay * 2**attempt,
        )
    return {"attempts": attempt + 1}
