"""Which local cloud the commands use: ``--target moto`` (default) or ``--target localstack``.

- ``moto``: the embedded emulator (:mod:`devtools.cloud.emulator`), started by ``up`` and ``demo``;
  ``deploy-local`` and ``consume`` use the one ``AWS_ENDPOINT_URL`` names.
- ``localstack``: a LocalStack that is already running, found as ``localstack-client`` finds it:
  ``AWS_ENDPOINT_URL`` when set, else ``LOCALSTACK_HOST`` (default ``localhost:4566``). DynamoDB is
  at ``AWS_ENDPOINT_URL_DYNAMODB`` when set (``make localstack`` runs DynamoDB Local there), else
  at LocalStack too. boto3, kombu's SQS transport and the result backends all take these from the
  environment, so the command sets them and everything it runs follows.

:func:`devtools.cloud.session.local_cloud` starts or finds the target and deploys into it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from localstack_client.config import get_service_endpoint

from devtools.cloud.emulator import LOCAL_CREDENTIALS, reachable
from devtools.cloud.localstack import localstack_health
from infra.core import aws
from infra.core.errors import ConfigurationError

__all__ = [
    "DEFAULT_TARGET",
    "TARGETS",
    "LocalStackEndpoints",
    "check_localstack",
    "localstack_endpoints",
    "use_localstack",
]

TARGETS = ("moto", "localstack")
DEFAULT_TARGET = "moto"

START_HINT = (
    "start it with `make localstack` (no Docker needed) or `localstack start`, "
    "or point LOCALSTACK_HOST or AWS_ENDPOINT_URL at yours"
)


@dataclass(frozen=True, slots=True)
class LocalStackEndpoints:
    """Where LocalStack's edge and the DynamoDB it is paired with answer."""

    edge: str
    dynamodb: str

    def environment(self) -> dict[str, str]:
        env = {"AWS_ENDPOINT_URL": self.edge}
        if self.dynamodb != self.edge:
            env["AWS_ENDPOINT_URL_DYNAMODB"] = self.dynamodb
        return env


def localstack_endpoints() -> LocalStackEndpoints:
    """LocalStack's endpoints by ``localstack-client``'s resolution of this environment."""
    edge = get_service_endpoint("sqs")
    if not edge:
        raise ConfigurationError("localstack-client resolved no endpoint for SQS")
    edge = edge.rstrip("/")
    return LocalStackEndpoints(edge, os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or edge)


def check_localstack(endpoints: LocalStackEndpoints) -> None:
    """Raise one clear line unless LocalStack and its DynamoDB both answer.

    Raises:
        ConfigurationError: nothing answers, or LocalStack serves no DynamoDB and no
            ``AWS_ENDPOINT_URL_DYNAMODB`` names another.
    """
    if not reachable(endpoints.edge):
        raise ConfigurationError(f"nothing answers at {endpoints.edge} (LocalStack): {START_HINT}")
    if endpoints.dynamodb != endpoints.edge:
        if not reachable(endpoints.dynamodb):
            raise ConfigurationError(
                f"nothing answers at AWS_ENDPOINT_URL_DYNAMODB={endpoints.dynamodb}: "
                "start DynamoDB Local (`make localstack` starts it with LocalStack)"
            )
    elif localstack_health(endpoints.edge).get("dynamodb") == "disabled":
        raise ConfigurationError(
            f"LocalStack at {endpoints.edge} serves no DynamoDB: set AWS_ENDPOINT_URL_DYNAMODB "
            "(`make localstack` runs DynamoDB Local at http://127.0.0.1:8000)"
        )


def use_localstack() -> LocalStackEndpoints:
    """Point this process (environment, AWS clients) at LocalStack, once it answers.

    Raises:
        ConfigurationError: as :func:`check_localstack`.
    """
    endpoints = localstack_endpoints()
    check_localstack(endpoints)
    for name, value in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(name, value)
    os.environ.update(endpoints.environment())
    aws.clear_clients()
    return endpoints
