"""The worker path's share of the guarantees: the same claim, through a Celery ``Task`` hook.

Make ``ClaimingTask`` the app's task base (``Celery(...,
task_cls="infra.worker.task:ClaimingTask")``) and a stock ``celery worker`` claims each task id
before running it, exactly as the Lambda path does, so a worker and a Lambda consuming the same
queue never run one task twice. What a claim's answer means and how a rate limit is paced are the
Lambda path's rules (:func:`infra.store.claim_requests.action_for`,
:meth:`infra.store.ratelimit.RateLimiter.take_turn`); only how a message goes back differs.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import celery
from celery import signals
from celery.exceptions import Ignore, Reject
from celery.utils.log import get_logger

from infra.core.config import QUEUE_VISIBILITY_TIMEOUT
from infra.core.errors import StoreError
from infra.core.queues import is_fifo_queue
from infra.core.settings import current
from infra.store.claim_requests import (
    UNRELEASED_STATES,
    ClaimRequest,
    Step,
    action_for,
    stamp_ids,
)
from infra.store.claims import store_for_app
from infra.store.items import CLAIMED_BY_CONSUMER
from infra.store.ratelimit import MAX_SLEEP_SECONDS, interval_of, limiter_for
from infra.wire.protocol import stamped

__all__ = ["ClaimingTask"]

logger = get_logger(__name__)

CLAIM_OWNER_KEY = "celery_lambda_claim_owner"
"""Request attribute naming the claim this worker process holds for the running task."""


class ClaimingTask(celery.Task):  # type: ignore[misc]
    """A task that claims its id in the results table before a worker runs it."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Wait for a turn under the rate limit, then claim, or skip a duplicate (Ignore), or
        hand back a task running elsewhere (Reject)."""
        request = self.request
        if request.called_directly or request.is_eager or request.get(CLAIMED_BY_CONSUMER):
            return
        self._pace(args, kwargs)
        store = store_for_app(self.app) if current().claims else None
        if store is None:
            return
        stamps = stamp_ids(stamped(request.stamped_headers, request.stamps))
        claim = ClaimRequest(
            task_id, root_id=request.root_id, group_id=request.group, stamps=stamps
        )
        owner = f"worker:{request.hostname}:{os.getpid()}"
        outcome = store.claim([claim], owner, time.time() + self._lease_seconds())[task_id]
        action = action_for(outcome)
        if action.step is Step.ACK_DUPLICATE:
            raise Ignore(f"task already {action.state}: not run again")
        if action.step is Step.HAND_BACK:
            raise Reject(f"task is running on {action.by}", requeue=True)
        if action.step is Step.RECORD_REVOKED:
            self.backend.mark_as_revoked(task_id, "revoked", request=request)
            raise Ignore(f"task revoked (through {action.by})")
        setattr(request, CLAIM_OWNER_KEY, owner)

    def _pace(self, args: Any, kwargs: Any) -> None:
        """Take a start under the task's ``rate_limit``, shared with every other consumer.

        A wait too long to sleep through re-publishes the same message (same id, same retry
        count) delayed until the turn, and the current one is acked without a state (Ignore):
        no retry is consumed and the worker holds nothing in memory. FIFO queues sleep longer
        instead, then requeue the message in SQS: a re-publish within five minutes would be
        dropped as a duplicate (and would reorder the group).
        """
        interval = interval_of(self.rate_limit)
        limiter = limiter_for(self.backend) if interval is not None else None
        if interval is None or limiter is None:
            return
        fifo = is_fifo_queue(str((self.request.delivery_info or {}).get("routing_key", "")))
        budget = self._lease_seconds() / 2 if fifo else MAX_SLEEP_SECONDS
        back = limiter.take_turn(self.name, interval, budget)
        if back is None:
            return
        if fifo:
            raise Reject("over its rate limit on a FIFO queue: back to SQS", requeue=True)
        retry = self.signature_from_request(self.request, args, kwargs)
        retry.apply_async(countdown=max(1, math.ceil(back.seconds)))
        raise Ignore(f"over its rate limit: re-sent to start in {back.seconds:.1f}s")

    def _lease_seconds(self) -> float:
        """How long the claim holds: the hard time limit, else the queue's visibility timeout."""
        hard = (self.request.timelimit or (None, None))[0]
        limit = hard or self.time_limit or self.app.conf.task_time_limit
        return float(limit or QUEUE_VISIBILITY_TIMEOUT)


def _release_unfinished(
    task_id: str = "", task: Any = None, state: str | None = None, **_: Any
) -> None:
    """Give up the claim of an attempt that ended without a state write (``Ignore``, how
    ``Task.replace`` ends, and ``Reject``): the next delivery of the id -- the replacement, the
    requeued message -- is claimed at once by whichever process receives it, instead of being
    handed back until this lease ends."""
    if state not in UNRELEASED_STATES or not isinstance(task, ClaimingTask):
        return
    owner: str | None = getattr(task.request, CLAIM_OWNER_KEY, None)
    store = store_for_app(task.app) if owner else None
    if owner is None or store is None:
        return
    try:
        store.release(task_id, owner)
    except StoreError as exc:
        logger.warning(
            "releasing the claim on %s failed (it ends with its lease): %s", task_id, exc
        )


# Connected here, beside the task base that takes the claim: every app whose tasks claim releases.
signals.task_postrun.connect(_release_unfinished, weak=False)
