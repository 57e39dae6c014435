"""This process in a local cloud: the cloud started (moto) or found (LocalStack), the template
deployed into it, and the environment, the AWS clients and a Celery app pointed at it.

What every command, the demo, ``make events`` and the benchmarks do before they publish or
consume; :mod:`devtools.cloud.targets` says where each target is found. ``deploy-local`` and
``up`` record what they deployed (:func:`record_deployment`) so that ``consume`` starts from the
record (:func:`recorded_deployment`) instead of deploying again: a consumer never provisions.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery._state import _get_active_apps
from kombu import pools

from devtools.cloud.deploy import DEFAULT_STACK, Deployment, deploy
from devtools.cloud.emulator import LOCAL_CREDENTIALS, Emulator, reachable
from devtools.cloud.targets import DEFAULT_TARGET, use_localstack
from infra.core import aws
from infra.core.config import transport_options
from infra.core.errors import ConfigurationError
from infra.core.settings import Settings

__all__ = [
    "DEPLOYMENTS_DIR",
    "ENV_FILE",
    "deployment_path",
    "deployment_with_credentials",
    "forget_backend",
    "local_cloud",
    "local_settings",
    "localstack_cloud",
    "point_app_at",
    "record_deployment",
    "recorded_deployment",
    "write_env_file",
]

ENV_FILE = Path(".celery-lambda") / "env.sh"
"""Where ``lambda up`` writes the exports for another shell to ``source``."""
DEPLOYMENTS_DIR = Path(".celery-lambda") / "deployments"
"""Where ``deploy-local`` and ``up`` record their deployments, one file per stack and endpoint."""


def point_app_at(app: Any, deployment: Deployment) -> None:
    """Make this process (env, AWS clients, the Celery app) use the deployment's resources."""
    os.environ.update(deployment.environment)
    aws.clear_clients()
    app.conf.broker_transport_options = transport_options(Settings.from_env())
    app.conf.broker_url = deployment.environment.get("CELERY_BROKER_URL", app.conf.broker_url)
    # The backend reads its table from the environment when created, and connections carry the
    # old transport options; Celery caches both per app and has no public reset, so drop them the
    # way its own after-fork hook does.
    forget_backend(app)
    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None
        pools.reset()  # type: ignore[no-untyped-call]  # else kombu hands back the closed pool
        # kombu's reset closed every app's producer pool: the others must fetch a new one too,
        # or their next publish fails with "Acquire on closed pool".
        for other in _get_active_apps():
            other.amqp._producer_pool = None


def forget_backend(app: Any) -> None:
    """Drop the app's cached result backend, so the next one reads the environment as it is now
    (``RESULTS_TABLE`` changed). Celery has no public reset; this is what its after-fork hook
    does."""
    app._backend_cache = None
    vars(app._local).pop("backend", None)


def write_env_file(deployment: Deployment, path: Path = ENV_FILE) -> Path:
    """Write the exports to a file a shell can ``source``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deployment.exports() + "\n")
    return path


def deployment_path(
    stack_name: str, region: str, endpoint_url: str | None, directory: Path = DEPLOYMENTS_DIR
) -> Path:
    """The record of ``stack_name`` deployed on ``endpoint_url`` in ``region``.

    One file per endpoint: emulators on other ports (another shell, a test session) never read
    each other's record.
    """
    where = re.sub(r"[^A-Za-z0-9.]+", "-", endpoint_url or "aws").strip("-")
    return directory / f"{stack_name}--{region}--{where}.json"


def record_deployment(deployment: Deployment, directory: Path = DEPLOYMENTS_DIR) -> Path:
    """Write the deployment where :func:`recorded_deployment` finds it; the file written."""
    path = deployment_path(
        deployment.stack_name, deployment.region, deployment.endpoint_url, directory
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(deployment.to_json() + "\n")
    return path


def recorded_deployment(
    settings: Settings, stack_name: str = DEFAULT_STACK, directory: Path = DEPLOYMENTS_DIR
) -> Deployment:
    """What ``deploy-local`` or ``up`` deployed on ``settings``' endpoint, without asking it.

    Raises:
        ConfigurationError: nothing is recorded for this stack, endpoint and region (one line
            saying what to run), or the record cannot be read.
    """
    path = deployment_path(stack_name, settings.region, settings.endpoint_url, directory)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(
            f"stack {stack_name} is not deployed on {settings.endpoint_url} in {settings.region} "
            f"(no {path}): run `celery -A tasks lambda deploy-local` (or `lambda up`) first"
        ) from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the deployment record {path}: {exc}") from exc
    try:
        return Deployment.from_json(text)
    except ConfigurationError as exc:
        raise ConfigurationError(
            f"{path}: {exc}; run `celery -A tasks lambda deploy-local` again"
        ) from exc


def deployment_with_credentials(deployment: Deployment) -> Deployment:
    """The deployment whose exports also carry the emulator's dummy credentials."""
    environment = {**LOCAL_CREDENTIALS, **dict(deployment.environment)}
    return dataclasses.replace(deployment, environment=environment)


@contextmanager
def localstack_cloud(stack_name: str = DEFAULT_STACK) -> Iterator[Deployment]:
    """Deploy the template into the running LocalStack; the deployment, with credentials.

    Raises:
        ConfigurationError: LocalStack or its DynamoDB does not answer.
    """
    use_localstack()
    yield deployment_with_credentials(deploy(stack_name=stack_name))


@contextmanager
def local_cloud(
    port: int | None = None, stack_name: str = DEFAULT_STACK, target: str = DEFAULT_TARGET
) -> Iterator[Deployment]:
    """Start the embedded emulator, deploy the template into it, stop it on exit.

    With ``target="localstack"`` the running LocalStack is used instead (``port`` is moto's).

    Raises:
        ConfigurationError: the emulator did not start, or LocalStack does not answer.
    """
    if target == "localstack":
        with localstack_cloud(stack_name) as deployment:
            yield deployment
        return
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    with _sigterm_unwinds(), Emulator(port=port) as emulator:
        os.environ["AWS_ENDPOINT_URL"] = emulator.endpoint_url
        aws.clear_clients()
        yield deployment_with_credentials(deploy(stack_name=stack_name))


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM as ``SystemExit`` while the emulator runs, so that the ``with`` blocks above stop
    what they started: killed by ``timeout`` or ``kill``, ``lambda bench`` or ``soak`` would
    otherwise leave the emulator and its consumers running. Only in the main thread, and only
    over the default handler (a command that handles SIGTERM itself keeps its own)."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def exit_on_sigterm(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def local_settings(target: str = DEFAULT_TARGET) -> Settings:
    """Settings for a command that only talks to a local endpoint, once that endpoint answers.

    Raises:
        ConfigurationError: the environment is invalid, names no local endpoint, or nothing
            answers there.
    """
    if target == "localstack":
        use_localstack()
    settings = Settings.from_env()
    if not settings.endpoint_url:
        raise ConfigurationError(
            "AWS_ENDPOINT_URL is not set: `source .celery-lambda/env.sh` (written by "
            "`celery -A tasks lambda up`, or by `lambda up --no-consume` to consume from here); "
            "this command only talks to a local emulator (deploy to AWS with `sam deploy`)"
        )
    if not reachable(settings.endpoint_url):
        raise ConfigurationError(
            f"nothing answers at AWS_ENDPOINT_URL={settings.endpoint_url}: "
            "start the emulator with `celery -A tasks lambda up`"
        )
    return settings
