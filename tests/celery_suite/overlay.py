"""Imported at the end of Celery's ``t/integration/conftest.py`` by ``make celery-suite``: the
session on the embedded emulator, Celery's test app on our transport, task class and results
table, and, with ``CELERY_SUITE_PATH=lambda``, ``celery_session_worker`` served by the Lambda
path (``devtools.testing``) instead of Celery's embedded worker.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from celery import Celery
from celery._state import connect_on_app_finalize

from devtools.cloud.deploy import Deployment
from devtools.cloud.session import local_cloud
from devtools.testing import LambdaWorker, celery_lambda_session_worker
from infra.core.config import transport_options
from infra.core.settings import Settings
from infra.install import configure
from infra.producer.transport import TRANSPORT

__all__ = [
    "celery_config",
    "celery_lambda_parameters",
    "celery_lambda_session_worker",
    "celery_parameters",
    "celery_session_worker",
    "celery_suite_cloud",
    "celery_worker_parameters",
    "pytest_collection_modifyitems",
]

PATH = os.environ.get("CELERY_SUITE_PATH", "worker")
"""``worker`` (Celery's embedded worker, prefork, one process) or ``lambda``."""
TIMEOUT = float(os.environ.get("CELERY_SUITE_TIMEOUT", "60"))
"""Seconds per test, over Celery's own ``timeout`` marks (300 s on its flaky tests)."""
WINDOW = os.environ.get("CELERY_SUITE_BATCHING_WINDOW")
"""The Lambda path's batching window in seconds, if not the template's (1 s)."""


def _configure(app: Celery) -> None:
    """As a user's app is set up (README): every app the suite makes, the session's and each
    test's. Claims where the app has the claiming task base (Celery's test apps, from
    ``celery_parameters``); Celery's default app, finalized when ``t.integration.tasks`` is
    imported, has its task base built by then, so ``configure`` would refuse claims on it."""
    configure(app, claims=app.task_cls != Celery.task_cls)


connect_on_app_finalize(_configure)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Our per-test timeout before Celery's marks, so it is the one pytest-timeout reads."""
    for item in items:
        item.add_marker(pytest.mark.timeout(TIMEOUT), append=False)


@pytest.fixture(scope="session")
def celery_suite_cloud() -> Iterator[Deployment]:
    """The embedded emulator with template.yaml deployed; this process's environment on it."""
    saved = dict(os.environ)
    with local_cloud() as deployment:
        os.environ.update(deployment.environment)
        yield deployment
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def celery_config(celery_suite_cloud: Deployment) -> dict[str, Any]:
    """Celery's integration config on our broker transport and results table."""
    settings = Settings.from_env()
    return {
        "broker_url": settings.broker_url,
        "broker_transport": TRANSPORT,
        "broker_transport_options": transport_options(settings),
        "result_backend": "infra.store.results:DynamoDBBackend",
        "result_extended": True,
        "task_create_missing_queues": False,
    }


@pytest.fixture(scope="session")
def celery_parameters() -> Mapping[str, Any]:
    return {"task_cls": "infra.worker.task:ClaimingTask"}


@pytest.fixture(scope="session")
def celery_worker_parameters() -> Mapping[str, Any]:
    # The worker's consumer may be in a 20-s long poll when the session ends.
    return {"shutdown_timeout": 60.0}


@pytest.fixture(scope="session")
def celery_lambda_parameters(celery_suite_cloud: Deployment) -> Mapping[str, Any]:
    window = {"batching_window": int(WINDOW)} if WINDOW else {}
    return {"deployment": celery_suite_cloud, **window}


if PATH == "lambda":

    @pytest.fixture(scope="session")
    def celery_session_worker(celery_lambda_session_worker: LambdaWorker) -> LambdaWorker:
        """Celery's session worker fixture, served by the Lambda path."""
        return celery_lambda_session_worker

else:
    from celery.contrib.pytest import celery_session_worker
