"""The worker path's share of the guarantees: the same claim, through a Celery ``Task`` hook.

Make ``ClaimingTask`` the app's task base (``Celery(...,
task_cls="infra.worker.task:ClaimingTask")``) and a stock ``celery worker`` claims each task id
before running it, exactly as the Lambda path does, so a worker and a Lambda consuming the same
queue never run one task twice.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import celery
from celery.exceptions import Ignore, Reject

from infra.core import aws
from infra.core.config import QUEUE_VISIBILITY_TIMEOUT
from infra.core.settings import Settings
from infra.store.claim_requests import ClaimRequest, Held, Revoked, Terminal
from infra.store.claims import store_for_app
from infra.store.items import CLAIMED_BY_CONSUMER
from infra.store.ratelimit import MAX_SLEEP_SECONDS, RateLimiter, interval_of
from infra.store.results import DynamoDBBackend

__all__ = ["ClaimingTask"]


class ClaimingTask(celery.Task):  # type: ignore[misc]
    """A task that claims its id in the results table before a worker runs it."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Wait for a turn under the rate limit, then claim, or skip a duplicate (Ignore), or
        hand back a task running elsewhere (Reject)."""
        request = self.request
        if request.called_directly or request.is_eager or request.get(CLAIMED_BY_CONSUMER):
            return
        self._pace(args, kwargs)
        store = store_for_app(self.app) if Settings.from_env().claims else None
        if store is None:
            return
        claim = ClaimRequest(task_id, root_id=request.root_id, group_id=request.group)
        owner = f"worker:{request.hostname}:{os.getpid()}"
        outcome = store.claim([claim], owner, time.time() + self._lease_seconds())[task_id]
        if isinstance(outcome, Terminal):
            raise Ignore(f"task already {outcome.state}: not run again")
        if isinstance(outcome, Held):
            raise Reject(f"task is running on {outcome.owner}", requeue=True)
        if isinstance(outcome, Revoked):
            self.backend.mark_as_revoked(task_id, "revoked", request=request)
            raise Ignore(f"task revoked (through {outcome.by})")

    def _pace(self, args: Any, kwargs: Any) -> None:
        """Take a start under the task's ``rate_limit``, shared with every other consumer.

        A wait too long to sleep through re-publishes the same message (same id, same retry
        count) delayed until the turn, and the current one is acked without a state (Ignore):
        no retry is consumed and the worker holds nothing in memory. FIFO queues sleep longer
        instead, then requeue the message in SQS: a re-publish within five minutes would be
        dropped as a duplicate (and would reorder the group).
        """
        interval = interval_of(self.rate_limit)
        backend = self.backend
        if interval is None or not isinstance(backend, DynamoDBBackend):
            return
        limiter = RateLimiter(aws.client("dynamodb", backend.settings), backend.table_name)
        fifo = str((self.request.delivery_info or {}).get("routing_key", "")).endswith(".fifo")
        budget = self._lease_seconds() / 2 if fifo else MAX_SLEEP_SECONDS
        wait = limiter.wait_turn(self.name, interval, budget)
        if wait == 0.0:
            return
        if fifo:
            raise Reject("over its rate limit on a FIFO queue: back to SQS", requeue=True)
        retry = self.signature_from_request(self.request, args, kwargs)
        retry.apply_async(countdown=max(1, math.ceil(wait)))
        raise Ignore(f"over its rate limit: re-sent to start in {wait:.1f}s")

    def _lease_seconds(self) -> float:
        """How long the claim holds: the hard time limit, else the queue's visibility timeout."""
        hard = (self.request.timelimit or (None, None))[0]
        limit = hard or self.time_limit or self.app.conf.task_time_limit
        return float(limit or QUEUE_VISIBILITY_TIMEOUT)
