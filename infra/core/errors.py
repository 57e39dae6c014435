"""The project's errors, one small tree.

::

    CeleryLambdaError
    ├── ConfigurationError      settings or template that cannot work (bad env value, missing queue)
    ├── MessageDecodeError      an SQS record that is not a Celery task message we may run
    ├── UnknownTaskError        a well-formed message naming a task the app does not register
    ├── PublishError            a message could not be published as asked (size, queue, SQS refused)
    │   └── UnknownQueueError   routed to a queue the configuration does not name
    ├── StoreError              the result/claim store could not be reached or refused a write
    └── ScheduleError           a scheduled tick could not publish every beat slot that came due

AWS ``ClientError``s are translated at the boundary with ``raise ... from exc`` so callers never
need botocore to tell these apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "CeleryLambdaError",
    "ConfigurationError",
    "MessageDecodeError",
    "PublishError",
    "ScheduleError",
    "StoreError",
    "UnknownQueueError",
    "UnknownTaskError",
    "is_condition_failure",
    "store_errors",
]


class CeleryLambdaError(Exception):
    """Base of every error raised by this project."""


class ConfigurationError(CeleryLambdaError):
    """The environment, app configuration or template cannot work as given."""


class MessageDecodeError(CeleryLambdaError):
    """An SQS record could not be decoded into a task message we are allowed to run.

    Carries the SQS message id, what was wrong, and the raw body for the log / DLQ inspection.
    """

    def __init__(self, message_id: str, reason: str, raw: object = None) -> None:
        super().__init__(f"message {message_id}: {reason}")
        self.message_id = message_id
        self.reason = reason
        self.raw = raw


class UnknownTaskError(CeleryLambdaError):
    """The message names a task that is not registered in the served Celery app."""

    def __init__(self, message_id: str, task_name: str) -> None:
        super().__init__(f"message {message_id}: task {task_name!r} is not registered in the app")
        self.message_id = message_id
        self.task_name = task_name


class StoreError(CeleryLambdaError):
    """The result, claim or revocation store failed; the record must go back to SQS."""


class PublishError(CeleryLambdaError):
    """A message could not be published as asked; nothing of it was sent."""


class UnknownQueueError(PublishError):
    """A task was routed to a queue that the configuration (``CELERY_QUEUE_URLS``) does not name."""


class ScheduleError(CeleryLambdaError):
    """A scheduled tick left slots unpublished (each is given back for the next tick if it can)."""


@contextmanager
def store_errors(action: str) -> Iterator[None]:
    """Turn botocore's errors inside the block into :class:`StoreError` naming ``action``."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise StoreError(f"{action} failed: {exc}") from exc


def is_condition_failure(exc: ClientError) -> bool:
    """Whether DynamoDB refused a write because its condition did not hold (not a fault)."""
    return bool(exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")
