"""celery-lambda's engine room, shared by the Lambda handler and ``celery worker``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

__all__ = ["configure"]


def configure(app: Celery) -> Celery:
    """Set ``app`` up to publish and consume through this project (see :mod:`infra.install`)."""
    from infra.install import configure as install  # lazily: importing infra stays cheap

    return install(app)
