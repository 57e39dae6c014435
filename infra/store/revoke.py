"""Revoke on SQS: markers in the results table instead of a broadcast SQS cannot carry.

Celery revokes by broadcasting to every worker, which needs a fanout exchange (SNS on SQS, and a
worker that keeps the revoked ids in memory). Here a revocation is a marker item with TTL; both
consumers check it (for the task id, its workflow root, its group and its stamps) in the claim
that precedes every run, and record REVOKED.

``revoke_by_stamped_headers`` is a marker per stamp value (:func:`infra.store.claim_requests.
stamp_ids`), matched as Celery's worker matches its ``revoked_stamps``: a task is revoked when
one of its stamped headers has a revoked value. Unlike a worker's memory, the markers reach every
consumer, later ones too, until their TTL (``result_expires``); a task already running is not
stopped (``terminate`` cannot be carried out on SQS).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from infra.core.errors import ConfigurationError
from infra.store.claim_requests import stamp_ids
from infra.store.claims import ClaimStore, store_for_app

__all__ = ["install", "revoke", "revoke_stamps"]

logger = logging.getLogger(__name__)


def revoke(app: Any, ids: Iterable[str], reason: str = "revoked") -> list[str]:
    """Revoke task, group or workflow-root ids; returns the ids recorded.

    Raises:
        ConfigurationError: the app's results are not in the results table.
        StoreError: the markers could not be written.
    """
    recorded = list(dict.fromkeys(ids))
    _store(app).revoke(recorded, reason)
    return recorded


def revoke_stamps(app: Any, headers: Mapping[str, Any] | list[str]) -> list[str]:
    """Revoke every task stamped with one of ``headers``' values (``{header: value or
    [values]}``, or Celery's ``["header=value"]``); returns the marker ids recorded.

    Raises:
        ConfigurationError: the app's results are not in the results table.
        StoreError: the markers could not be written.
    """
    if isinstance(headers, list):  # as Celery's control command reads a list
        headers = dict(h.split("=", 1) for h in headers)
    recorded = list(stamp_ids(headers))
    _store(app).revoke_markers(recorded, "revoked by stamped headers")
    return recorded


def _store(app: Any) -> ClaimStore:
    store = store_for_app(app)
    if store is None:
        raise ConfigurationError(
            "revoke needs result_backend = 'infra.store.results:DynamoDBBackend'"
        )
    return store


def install(app: Any) -> None:
    """Make ``app.control.revoke`` and ``revoke_by_stamped_headers`` (and so their
    ``AsyncResult`` methods) record markers."""

    def control_revoke(
        task_id: str | Iterable[str], terminate: bool = False, **_options: Any
    ) -> None:
        if terminate:
            logger.warning("revoke(terminate=True): a running task cannot be stopped on SQS")
        ids = [task_id] if isinstance(task_id, str) else list(task_id)
        revoke(app, ids)

    def control_revoke_by_stamped_headers(
        headers: Mapping[str, Any] | list[str], terminate: bool = False, **_options: Any
    ) -> None:
        if terminate:
            logger.warning("revoke(terminate=True): a running task cannot be stopped on SQS")
        revoke_stamps(app, headers)

    app.control.revoke = control_revoke
    app.control.revoke_by_stamped_headers = control_revoke_by_stamped_headers
