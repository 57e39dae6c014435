"""Running a test against another local cloud than the session's moto: switching this process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from celery import Celery

import tasks
from devtools.cloud.deploy import Deployment
from devtools.cloud.session import point_app_at
from infra.consumer import runtime
from infra.core import aws

__all__ = ["TARGETS", "pointed_at"]

TARGETS = ("moto", "localstack")


@contextmanager
def pointed_at(deployment: Deployment, back_to: Deployment, *apps: Celery) -> Iterator[None]:
    """This process on ``deployment`` inside the block, on ``back_to`` after it.

    Switches the environment (per-service endpoints of the other target removed), the AWS
    clients, ``tasks.app`` and ``apps``, and the handler's cached pipeline.
    """
    saved = dict(os.environ)
    everything = (tasks.app, *apps)
    for name in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
        del os.environ[name]
    for app in everything:
        point_app_at(app, deployment)
    runtime.pipeline.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for app in everything:
            point_app_at(app, back_to)
        aws.clear_clients()
        runtime.pipeline.cache_clear()
