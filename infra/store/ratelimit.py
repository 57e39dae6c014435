"""A task's ``rate_limit`` enforced across every consumer, through one DynamoDB item per task.

Celery's worker enforces ``rate_limit`` with an in-memory token bucket of capacity one per worker
process, so ten workers run a ``'10/s'`` task at up to 100/s, and a Lambda function has no
memory that outlives an invocation. Here every consumer takes its turn from the same item:

    id       "celery-lambda-rate-<task name>"
    next_at  N   epoch seconds before which no further start may be granted

A start at ``now`` is granted by one conditional update, ``SET next_at = now + 1/rate`` if
``next_at <= now``; when it is refused, DynamoDB returns the item and the consumer learns how long
to wait. Starts are therefore at least ``1/rate`` apart (a little more, see SPACING), which is the
worker's capacity-one bucket made global: no one-second window ever holds more than ``rate``.

A consumer that must wait briefly sleeps and asks again; one that would wait longer hands the
message back to SQS with a delay (re-sent, so the wait consumes neither a Celery retry nor one of
the queue's ``maxReceiveCount`` receives). :func:`pace` decides which, for both consumers;
:meth:`RateLimiter.take_turn` is what they call.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from celery.utils.time import rate

from infra.core import aws
from infra.core.errors import StoreError, is_condition_failure
from infra.store.results import DynamoDBBackend

__all__ = [
    "MAX_SLEEP_SECONDS",
    "HandBack",
    "RateLimiter",
    "Sleep",
    "interval_of",
    "limiter_for",
    "pace",
    "rate_key",
]

SPACING = 1.05
"""Starts are granted 5 % further apart than ``1/rate``: the task's first line runs a claim write
after its grant, and that latency varies; the margin keeps the starts themselves, not only the
grants, within the rate (20 jitters of up to 2.5 ms each fit into 1.05 s)."""
MAX_SLEEP_SECONDS = 2.0
"""A consumer sleeps through waits up to this long; a longer one hands the message back."""
MAX_TURNS = 50
"""Refusals a consumer accepts (sleeping between them) before handing the message back."""


def rate_key(task_name: str) -> str:
    """The item that paces ``task_name``."""
    return f"celery-lambda-rate-{task_name}"


def interval_of(rate_limit: Any) -> float | None:
    """Seconds between two starts for a Celery ``rate_limit`` (``'10/s'``, ``'5/m'``, 2.5)."""
    if not rate_limit:
        return None
    per_second = float(rate(rate_limit))
    return 1.0 / per_second if per_second > 0 else None


@dataclass(frozen=True, slots=True)
class Sleep:
    """A wait short enough to sleep through, then ask for a turn again."""

    seconds: float


@dataclass(frozen=True, slots=True)
class HandBack:
    """No turn soon enough: hand the message back to SQS to come back in ``seconds``."""

    seconds: float


def pace(wait: float, budget_left: float) -> Sleep | HandBack:
    """After a refused turn with ``wait`` seconds to the next: sleep, or hand the message back.

    A consumer sleeps through waits of up to :data:`MAX_SLEEP_SECONDS` that fit into what is left
    of its budget; a longer one would hold the consumer (and its message) idle.
    """
    if wait > MAX_SLEEP_SECONDS or wait > budget_left:
        return HandBack(wait)
    return Sleep(wait)


@dataclass(frozen=True, slots=True)
class RateLimiter:
    """Grants task starts from the shared item, one conditional update each."""

    dynamodb: Any
    table: str
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep

    def try_start(self, task_name: str, interval: float) -> float:
        """0.0 when this consumer may start ``task_name`` now; else seconds until it may ask again.

        Raises:
            StoreError: the table could not be reached.
        """
        now = self.clock()
        try:
            self.dynamodb.update_item(
                TableName=self.table,
                Key={"id": {"S": rate_key(task_name)}},
                UpdateExpression="SET next_at = :next",
                ConditionExpression="attribute_not_exists(next_at) OR next_at <= :now",
                ExpressionAttributeValues={
                    ":now": {"N": repr(now)},
                    ":next": {"N": repr(now + interval * SPACING)},
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_condition_failure(exc):
                raise StoreError(f"rate limit of {task_name}: {exc}") from exc
            next_at = float(exc.response.get("Item", {}).get("next_at", {}).get("N", now))
            return max(next_at - now, 0.001)
        except BotoCoreError as exc:
            raise StoreError(f"rate limit of {task_name}: {exc}") from exc
        return 0.0

    def wait_turn(self, task_name: str, interval: float, budget: float) -> float:
        """Take a start, sleeping through short waits within ``budget`` seconds.

        Returns 0.0 once started, else the wait left when this consumer should hand the message
        back instead (a wait too long to sleep through, or the budget spent).

        Raises:
            StoreError: the table could not be reached.
        """
        deadline = self.clock() + budget
        for _ in range(MAX_TURNS):
            wait = self.try_start(task_name, interval)
            if wait == 0.0:
                return 0.0
            step = pace(wait, deadline - self.clock())
            if isinstance(step, HandBack):
                return step.seconds
            # Jitter: consumers refused together must not all ask again at the same instant.
            self.sleep(step.seconds + random.uniform(0, interval))
        return interval

    def take_turn(self, task_name: str, interval: float, budget: float) -> HandBack | None:
        """Start ``task_name`` under its rate limit (:meth:`wait_turn`); None once started, else
        how long its message should go back to SQS for.

        Raises:
            StoreError: the table could not be reached.
        """
        wait = self.wait_turn(task_name, interval, budget)
        return None if wait == 0.0 else HandBack(wait)


def limiter_for(backend: Any) -> RateLimiter | None:
    """Rate limits paced in ``backend``'s results table; None when it is not the results table."""
    if not isinstance(backend, DynamoDBBackend):
        return None
    return RateLimiter(aws.client("dynamodb", backend.settings), backend.table_name)
