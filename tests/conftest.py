"""Fixtures shared by the functional and integration suites: the local cloud, once per session.

``cloud`` (moto) is where every test runs unless it asks for another target; ``localstack`` and
``localstack_cloud`` start the second target only when a test asks for it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Final

import pytest

from devtools.cloud.deploy import Deployment, deploy
from devtools.cloud.emulator import LOCAL_CREDENTIALS
from devtools.cloud.localstack import LocalStack
from devtools.cloud.session import deployment_with_credentials, local_cloud, point_app_at
from infra.core.settings import Settings

FIRST: Final = "test_celery_suite.py"
"""The longest test (Celery's suite on both paths, ~10 min): collected first, so pytest-xdist
starts it at once and the other processes run the rest beside it."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs LocalStack (``make test-fast`` leaves them out: LocalStack is
    installed on first use, and the quick loop installs nothing beyond ``.venv``); put
    :data:`FIRST` first."""
    for item in items:
        if {"localstack", "localstack_cloud"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.localstack)
    items.sort(key=lambda item: item.path.name != FIRST)  # stable: the rest keep their order


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


@pytest.fixture(scope="session")
def localstack() -> Iterator[LocalStack]:
    """LocalStack (SQS, S3) and DynamoDB Local on free ports of 127.0.0.1.

    Installed into ``.localstack/`` on first use (then cached). Nothing is pointed at it here.
    """
    with LocalStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def localstack_cloud(localstack: LocalStack) -> Deployment:
    """template.yaml deployed into LocalStack and DynamoDB Local, as ``cloud`` is into moto.

    Its ``environment`` points a process there (``LOCALSTACK_HOST``, ``AWS_ENDPOINT_URL`` and
    ``AWS_ENDPOINT_URL_DYNAMODB``); this process stays on ``cloud`` until a test switches it.
    """
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    env = {**os.environ, **localstack.environment}
    deployment = deployment_with_credentials(deploy(Settings.from_env(env)))
    environment = {
        **deployment.environment,
        "LOCALSTACK_HOST": f"{localstack.host}:{localstack.port}",
    }
    return dataclasses.replace(deployment, environment=environment)
