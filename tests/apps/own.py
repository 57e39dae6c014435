"""A second Celery app, unrelated to ``tasks``: its own module, task names and queue, made ready
by ``infra.configure`` alone -- no config module, no task base, no backend named: what a user's
project writes.

Its queue's URL comes from ``CELERY_QUEUE_URLS`` like every other queue's
(``tests/integration/test_own_app.py`` adds a fresh queue under :data:`QUEUE`).
"""

from __future__ import annotations

from celery import Celery

import infra

__all__ = ["QUEUE", "app", "greet"]

QUEUE = "own"

app = Celery("own", set_as_current=False)
infra.configure(app, task_default_queue=QUEUE)


@app.task(name="own.greet")
def greet(name: str) -> str:
    """Plain work with an argument and a result."""
    return f"hello {name}"
