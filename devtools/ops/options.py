"""What every operator's command takes: ``--stack`` and ``--json``, and the deployment they name.

The deployment is resolved once (:mod:`devtools.ops.target`) and checked to answer, so a command
fails with one line before it makes its first request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from devtools.cloud.emulator import reachable
from devtools.ops.output import fail
from devtools.ops.target import Target, target_from_env, target_from_stack
from infra.core import aws
from infra.core.errors import CeleryLambdaError
from infra.core.settings import Settings

__all__ = ["deployment_options", "resolve"]

F = TypeVar("F", bound=Callable[..., Any])


def deployment_options(command: F) -> F:
    """``--stack`` and ``--json``, shared by every operator's command."""
    command = click.option(
        "--stack",
        metavar="NAME",
        default=None,
        help="Read queue and table names from this CloudFormation stack's outputs "
        "(default: the environment `lambda up`/`deploy-local` export).",
    )(command)
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)


def resolve(stack: str | None) -> Target:
    """The deployment to look at; fails with one line when it cannot be found or reached."""
    try:
        if stack:
            cloudformation = aws.client("cloudformation", Settings.from_env())
            target = target_from_stack(stack, cloudformation)
        else:
            target = target_from_env()
    except CeleryLambdaError as exc:
        fail(str(exc))
    endpoint = target.settings.endpoint_url
    if endpoint and not reachable(endpoint):
        fail(
            f"nothing answers at AWS_ENDPOINT_URL={endpoint}: "
            "is `celery -A tasks lambda up` running?"
        )
    return target
