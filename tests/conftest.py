"""Fixtures shared by the functional and integration suites: the local cloud, once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from infra.local.cli import local_cloud, point_app_at
from infra.local.deploy import Deployment


@pytest.fixture(scope="session")
def cloud() -> Iterator[Deployment]:
    """moto in server mode on 127.0.0.1 with template.yaml deployed into it.

    The test process itself (os.environ, the boto3 clients, ``tasks.app``) is pointed at it, and
    ``cloud.environment`` is what a subprocess (a worker, a shell) needs to use it too.
    """
    saved = dict(os.environ)
    with local_cloud() as deployment:
        from tasks import app

        point_app_at(app, deployment)
        yield deployment
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def cloud_env(cloud: Deployment) -> dict[str, str]:
    """The environment of a subprocess that talks to the local cloud."""
    return {**os.environ, **cloud.environment}
