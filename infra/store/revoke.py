"""Revoke on SQS: markers in the results table instead of a broadcast SQS cannot carry.

Celery revokes by broadcasting to every worker, which needs a fanout exchange (SNS on SQS, and a
worker that keeps the revoked ids in memory). Here a revocation is a marker item with TTL; both
consumers check it (for the task id, its workflow root and its group) in the claim that precedes
every run, and record REVOKED.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from infra.core.errors import ConfigurationError
from infra.store.claims import store_for_app

__all__ = ["install", "revoke"]

logger = logging.getLogger(__name__)


def revoke(app: Any, ids: Iterable[str], reason: str = "revoked") -> list[str]:
    """Revoke task, group or workflow-root ids; returns the ids recorded.

    Raises:
        ConfigurationError: the app's results are not in the results table.
        StoreError: the markers could not be written.
    """
    store = store_for_app(app)
    if store is None:
        raise ConfigurationError(
            "revoke needs result_backend = 'infra.store.results:DynamoDBBackend'"
        )
    recorded = list(dict.fromkeys(ids))
    store.revoke(recorded, reason)
    return recorded


def install(app: Any) -> None:
    """Make ``app.control.revoke`` (and so ``AsyncResult.revoke``) record markers."""

    def control_revoke(
        task_id: str | Iterable[str], terminate: bool = False, **_options: Any
    ) -> None:
        if terminate:
            logger.warning("revoke(terminate=True): a running task cannot be stopped on SQS")
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        revoke(app, ids)

    app.control.revoke = control_revoke
