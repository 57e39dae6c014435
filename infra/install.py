"""``configure(app)``: what a Celery app needs to publish and consume the way this project does.

One call, for ``tasks.app`` or any other app, before it publishes:

- ``broker_transport`` = :mod:`infra.producer.transport` (native delays, FIFO ids, large bodies in
  S3, clear unknown-queue errors, batched group publishing);
- ``app.control.revoke`` records revocations in the results table (:mod:`infra.store.revoke`);
- a group's tasks are published inside one :func:`infra.producer.transport.batched` block;
- a worker writes the Lambda path's metrics (EMF) and outcome lines (:mod:`infra.worker.signals`),
  and above DEBUG Celery's own per-task lines ("Received task", "succeeded in") are not written.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any

from celery import Celery, signals
from celery.canvas import group

from infra.producer.transport import TRANSPORT, batched
from infra.store import revoke

__all__ = ["configure"]

_MARK = "_celery_lambda_batched"


def configure(app: Celery) -> Celery:
    """Install our transport, revoke and batched group publishing on ``app``; returns it."""
    if not app.conf.broker_transport:
        app.conf.broker_transport = TRANSPORT
    revoke.install(app)
    # Only workers need these metrics: producers never import Powertools or the X-Ray SDK.
    signals.worker_init.connect(_install_worker_metrics, weak=False)
    _batch_group_publishing()
    return app


def _install_worker_metrics(sender: Any = None, **_: Any) -> None:
    """At worker start (before the pool forks): the signal handlers of infra.worker.signals, and
    Celery's per-task lines left to them unless the worker logs at DEBUG."""
    from infra.worker import signals as worker_signals  # workers only: producers skip Powertools

    worker_signals.install(getattr(sender, "loglevel", None) or logging.INFO)


def _batch_group_publishing() -> None:
    """Publish each group inside one producer's :func:`batched` block.

    Celery has no hook around a group's publish: ``group._apply_tasks`` acquires one producer
    and calls ``apply_async`` per task. We wrap that method (once, for every app) so the same
    producer collects the messages and sends them with SendMessageBatch when the group is done.
    Messages still go through Celery's and kombu's whole publish path; a producer that is not on
    our transport is untouched.
    """
    original = group._apply_tasks
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _apply_tasks(
        self: group, tasks: Any, producer: Any = None, app: Any = None, *args: Any, **kwargs: Any
    ) -> Iterator[Any]:
        app = app or self.app
        with app.producer_or_acquire(producer) as acquired, batched(acquired):
            yield from original(self, tasks, acquired, app, *args, **kwargs)

    setattr(_apply_tasks, _MARK, True)
    group._apply_tasks = _apply_tasks
