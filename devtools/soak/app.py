"""The soak's own Celery app: one task, :func:`record`, whose effect is a ledger line.

Configured as ``tasks/celeryconfig.py`` configures ``tasks.app`` (our transport and result
backend, claims through ``ClaimingTask``, late acks, JSON only) without importing the example
app: ``celery -A devtools.soak.app worker`` serves it, and the Lambda handler does with
``CELERY_APP=devtools.soak.app:app``. The ledger's path and the consumer's name come from the
environment (:data:`LEDGER_ENV`, :data:`CONSUMER_ENV`), set by the soak for each consumer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Final

from celery import Celery

import infra
from devtools.soak.ledger import Entry, append
from infra.core.config import transport_options
from infra.core.settings import Settings

__all__ = ["APP", "CONSUMER_ENV", "LEASE_SECONDS", "LEDGER_ENV", "TASK", "app", "record"]

APP: Final = "devtools.soak.app:app"
TASK: Final = "soak.record"
LEDGER_ENV: Final = "SOAK_LEDGER"
CONSUMER_ENV: Final = "SOAK_CONSUMER"
LEASE_SECONDS: Final = 8
"""The task's hard time limit, which is how long a worker's claim holds (``ClaimingTask``); the
soak gives the Lambda path's event source the same timeout, so a killed consumer's claims end
before its messages come back."""


def _configure(app: Celery) -> Celery:
    settings = Settings.from_env()
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(settings),
        result_backend="infra.store.results:DynamoDBBackend",
        result_expires=24 * 60 * 60,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_default_queue="celery",
        worker_disable_rate_limits=True,
    )
    return infra.configure(app)


app = _configure(Celery("soak", set_as_current=False, task_cls="infra.worker.task:ClaimingTask"))


@app.task(name=TASK, bind=True, time_limit=LEASE_SECONDS)  # type: ignore[untyped-decorator]  # Celery's
def record(self: Any, pause: float = 0.0) -> str:
    """Append this run to the ledger, then take ``pause`` seconds before the outcome is recorded
    (widening the window a kill between effect and record falls into)."""
    entry = Entry(
        task_id=self.request.id,
        consumer=os.environ.get(CONSUMER_ENV, "unknown"),
        group=os.getpgrp(),
        pid=os.getpid(),
        at=time.time(),
    )
    append(Path(os.environ[LEDGER_ENV]), entry)
    if pause:
        time.sleep(pause)
    return str(self.request.id)
