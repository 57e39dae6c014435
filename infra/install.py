"""``configure(app)``: the one call that makes a Celery app publish and consume this project's way.

For ``tasks.app`` or any other app, right after ``Celery(...)``, from the environment
(:class:`infra.core.settings.Settings`):

- on an SQS broker (``CELERY_BROKER_URL``, default ``sqs://``): ``broker_transport`` =
  :mod:`infra.producer.transport` (native delays, FIFO ids, large bodies in S3, clear
  unknown-queue errors, batched group publishing) and its options, with the queue URLs of
  ``CELERY_QUEUE_URLS`` as predefined queues. Any other broker (``redis://``, ``amqp://``) is left
  alone: the rest below still holds on it;
- results in the results table (``result_backend`` = :data:`infra.core.config.RESULT_BACKEND`),
  late acks, the worker limits of the environment; JSON stays Celery's default serializer;
- claims on workers: the task base :data:`infra.core.config.CLAIMING_TASK` (with ``claims=True``)
  and Celery's per-worker rate limits off (the limit is shared through the table instead);
- ``app.control.revoke`` records revocations in the results table (:mod:`infra.store.revoke`);
- a group's tasks are published inside one :func:`infra.producer.transport.batched` block;
- a worker writes the Lambda path's metrics (EMF) and outcome lines (:mod:`infra.worker.signals`),
  and above DEBUG Celery's own per-task lines ("Received task", "succeeded in") are not written.

What the app already set wins: each of these settings is only filled in while it still has
Celery's default value (``broker_transport_options`` key by key, the app's keys over ours), and a
task base of the app's own is kept (make it a subclass of ``ClaimingTask`` to keep claims). A
setting the app set to Celery's default value looks unset; say it as a keyword argument: keyword
arguments are Celery settings, and they win over both.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, signals
from celery.app.defaults import DEFAULTS
from celery.canvas import group

from infra.core import tracing
from infra.core.config import CLAIMING_TASK, app_settings, transport_options
from infra.core.errors import ConfigurationError
from infra.core.settings import current
from infra.producer.transport import TRANSPORT, batched
from infra.store import revoke

__all__ = ["configure"]

_MARK = "_celery_lambda_batched"
SQS_SCHEMES = frozenset({"sqs"})
"""Broker URL schemes served by kombu's SQS transport, which ours extends."""


def configure(app: Celery, *, claims: bool = True, **overrides: Any) -> Celery:
    """Make ``app`` ready from the environment (see the module); returns it.

    ``overrides`` are Celery settings (``result_backend=...``, ``task_acks_late=False``), set as
    given (``broker_transport_options`` over ours, key by key); ``claims=False`` keeps Celery's
    task base and the worker's own rate limits.

    Raises:
        ConfigurationError: claims were asked for after the app built its task base.
    """
    settings = current()
    conf = app.conf
    conf.update(overrides)
    ours = {"broker_url": settings.broker_url, **app_settings(settings)}
    if claims:
        ours["worker_disable_rate_limits"] = True
    if urlsplit(conf.broker_url or settings.broker_url).scheme in SQS_SCHEMES:
        ours["broker_transport"] = TRANSPORT
        conf.broker_transport_options = {
            **transport_options(settings),
            **conf.broker_transport_options,
        }
    for key, value in ours.items():
        if key not in overrides and conf.get(key) == DEFAULTS.get(key):
            conf[key] = value
    if claims:
        _claim_on_workers(app)
    revoke.install(app)
    tracing.install()  # with the [otel] extra: trace context on each publish, worker spans
    # Only workers need these metrics: producers never import Powertools or the X-Ray SDK.
    signals.worker_init.connect(_install_worker_metrics, weak=False)
    _batch_group_publishing()
    return app


def _claim_on_workers(app: Celery) -> None:
    """:data:`CLAIMING_TASK` as the task base, unless the app chose its own.

    Raises:
        ConfigurationError: the app's task base was already built, so its tasks would not claim.
    """
    if app.task_cls != Celery.task_cls:
        return
    if "Task" in vars(app):  # Celery builds ``app.Task`` once, from ``task_cls``
        raise ConfigurationError(
            "infra.configure(app) must come before the app's first task is created "
            "(or pass claims=False, or task_cls='infra.worker.task:ClaimingTask' to Celery)"
        )
    app.task_cls = CLAIMING_TASK


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
