"""A real ``celery -A tasks worker`` subprocess against the local cloud."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.cloud.deploy import Deployment
from tests.workers import celery_worker


@pytest.fixture(scope="session")
def worker(
    cloud: Deployment, cloud_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A stock Celery worker consuming every queue of the app; yields its log file."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    args = ["--concurrency=2", "--hostname", "itest@%h"]
    with celery_worker("tasks", args, cloud_env, log):
        yield log
