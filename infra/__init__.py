"""celery-lambda's engine, shared by the Lambda handlers and ``celery worker``.

Sub-packages follow the flow, and each imports only those to its left::

    core  <-  wire  <-  store  <-  consumer | producer | worker | beat  <-  install

- :mod:`infra.core`: settings, errors, limits, AWS clients, observability vocabulary, hooks;
- :mod:`infra.wire`: the SQS message, decoded and encoded (pure), offloaded bodies;
- :mod:`infra.store`: results, claims, revocations and rate-limit turns in DynamoDB/S3;
- :mod:`infra.consumer`: the Lambda path's pipeline; :mod:`infra.producer`: publishing;
  :mod:`infra.worker`: the worker path; :mod:`infra.beat`: scheduled ticks;
- :mod:`infra.install`: ``configure(app)``, the one call that wires them into a Celery app;
- the Lambda entry points: :mod:`infra.consumer.handler`, :mod:`infra.beat.handler`.

Nothing here imports the tooling (``devtools``), the example app (``tasks``) or tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

__all__ = [
    "beat",
    "configure",
    "consumer",
    "core",
    "install",
    "producer",
    "store",
    "wire",
    "worker",
]


def configure(app: Celery, *, claims: bool = True, **overrides: Any) -> Celery:
    """Make ``app`` ready from the environment, ``overrides`` first (see :mod:`infra.install`)."""
    from infra.install import configure as install  # lazily: importing infra stays cheap

    return install(app, claims=claims, **overrides)
