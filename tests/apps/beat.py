"""A test-only Celery app for the scheduled tick: the tests set its ``beat_schedule`` and queues.

Configured from ``tasks/celeryconfig.py`` like ``tasks.app``; ``tests/functional/beat/test_beat.py``
points it at the local cloud and at queues of its own, and serves it through ``handlers.beat``
with ``CELERY_APP=tests.apps.beat:app``.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

import infra

app = Celery("beat-probe", set_as_current=False, task_cls="infra.worker.task:ClaimingTask")
app.config_from_object("tasks.celeryconfig")
infra.configure(app)


@app.task(name="beat_probe.echo")
def echo(*args: Any, **kwargs: Any) -> Any:
    """Return what it was called with."""
    return [list(args), kwargs]
