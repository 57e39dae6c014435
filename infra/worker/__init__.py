"""The worker path: a stock ``celery worker`` held to the Lambda path's guarantees.

``ClaimingTask`` claims each task id before it runs (:mod:`~infra.worker.task`); the worker's
metrics and outcome lines come from Celery signals (:mod:`~infra.worker.signals`).

May import: :mod:`infra.core`, :mod:`infra.wire`, :mod:`infra.store`.
"""

__all__ = [
    "signals",
    "task",
]
