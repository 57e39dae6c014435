"""The delivery guarantees' own Celery app: configured like ``tasks.app``, with ``ClaimingTask``
as its task base, routed to the suite's queues (their URLs in ``GUARANTEES_QUEUES``, so every
process -- this one, the worker, the emulator's runner -- routes alike).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu import Queue

from infra.core.config import transport_options
from infra.core.settings import Settings
from tests.apps import probe

__all__ = [
    "APP",
    "CRASH_QUEUE",
    "QUEUE",
    "QUEUES_VARIABLE",
    "WORKER_QUEUE",
    "app",
    "configure",
    "joined",
    "record",
]

QUEUES_VARIABLE = "GUARANTEES_QUEUES"
"""JSON ``{celery queue name: SQS URL}`` of the suite's queues, for every process."""
QUEUE = "guarantees"
WORKER_QUEUE = "guarantees-worker"
CRASH_QUEUE = "guarantees-crash"
WORKER_REQUEUE_SECONDS = 5


def configure(celery_app: Celery, env: Mapping[str, str] | None = None) -> None:
    """Route to the suite's queues, with their URLs among kombu's predefined queues."""
    env = os.environ if env is None else env
    options = transport_options(Settings.from_env(env))
    # A worker hands a message back by making it visible again after ``wait_time_seconds``
    # (kombu's SQS requeue): 20 s in the product's options, shortened here to keep tests quick.
    options["wait_time_seconds"] = WORKER_REQUEUE_SECONDS
    urls = json.loads(env.get(QUEUES_VARIABLE) or "{}")
    predefined = {**options.get("predefined_queues", {})}
    predefined.update({name: {"url": url} for name, url in urls.items()})
    options["predefined_queues"] = predefined
    celery_app.conf.update(
        broker_transport_options=options,
        task_default_queue=QUEUE,
        task_queues=tuple(Queue(name) for name in (QUEUE, WORKER_QUEUE, CRASH_QUEUE)),
        task_routes=None,
        task_annotations=None,
    )


app = Celery("guarantees", task_cls="infra.worker.task:ClaimingTask", set_as_current=False)
app.config_from_object("tasks.celeryconfig")
configure(app)

APP = f"{__name__}:app"
"""What ``-A`` and ``CELERY_APP`` name, in every process."""


@app.task(name="guarantees.record", shared=False)
def record(marker: str, seconds: float = 0.0) -> str:
    """The side effect (count one call under ``marker``), then ``seconds`` of work."""
    probe.record_call(marker)
    time.sleep(seconds)
    return marker


@app.task(name="guarantees.joined", shared=False)
def joined(results: list[Any], marker: str) -> list[Any]:
    """A chord body: count one call under ``marker``, and return the header's results as joined."""
    probe.record_call(marker)
    return results


@app.task(name="guarantees.refused", shared=False)
def refused(marker: str) -> None:
    """A step that fails: count one call under ``marker``, then raise ``ValueError(marker)``."""
    probe.record_call(marker)
    raise ValueError(marker)
