"""The worker path's share of the guarantees: the same claim, through a Celery ``Task`` hook.

Make ``ClaimingTask`` the app's task base (``Celery(..., task_cls="infra.worker:ClaimingTask")``)
and a stock ``celery worker`` claims each task id before running it, exactly as the Lambda path
does, so a worker and a Lambda consuming the same queue never run one task twice.
"""

from __future__ import annotations

import os
import time
from typing import Any

import celery
from celery.exceptions import Ignore, Reject

from infra.claims import ClaimRequest, Held, Revoked, Terminal, store_for_app
from infra.config import QUEUE_VISIBILITY_TIMEOUT
from infra.settings import Settings

__all__ = ["CLAIMED_BY_CONSUMER", "ClaimingTask"]

CLAIMED_BY_CONSUMER = "celery_lambda_claimed"
"""Request key set by the Lambda path, which claims whole batches before running them."""


class ClaimingTask(celery.Task):  # type: ignore[misc]
    """A task that claims its id in the results table before a worker runs it."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        """Claim, or skip a duplicate (Ignore), or hand back a task running elsewhere (Reject)."""
        request = self.request
        if request.called_directly or request.is_eager or request.get(CLAIMED_BY_CONSUMER):
            return
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

    def _lease_seconds(self) -> float:
        """How long the claim holds: the hard time limit, else the queue's visibility timeout."""
        hard = (self.request.timelimit or (None, None))[0]
        limit = hard or self.time_limit or self.app.conf.task_time_limit
        return float(limit or QUEUE_VISIBILITY_TIMEOUT)
