"""Which deployment the operator's commands look at: the local emulator's exports or a stack.

Without ``--stack`` the commands read the environment that ``celery -A tasks lambda up`` /
``deploy-local`` print (``source .celery-lambda/env.sh``), exactly as producers and workers do.
With ``--stack NAME`` they read the names from the CloudFormation stack's outputs (the ones
``template.yaml`` declares) and talk to AWS, or to ``AWS_ENDPOINT_URL`` when it is set.

Every AWS client the commands use is made from the returned settings, never from a second read of
the environment, so the names and the endpoint always come from the same place.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError

from infra.core.errors import CeleryLambdaError, ConfigurationError
from infra.core.settings import Settings

__all__ = [
    "NO_ENVIRONMENT",
    "STACK_OUTPUTS",
    "Target",
    "stack_environment",
    "stack_outputs",
    "target_from_env",
    "target_from_stack",
    "translated",
]

STACK_OUTPUTS: Final = {
    "CeleryQueueUrls": "CELERY_QUEUE_URLS",
    "ResultsTableName": "RESULTS_TABLE",
    "ResultsBucketName": "RESULTS_BUCKET",
}
"""``template.yaml`` output → the variable it stands for (all three are needed)."""


@dataclass(frozen=True, slots=True)
class Target:
    """The deployment a command inspects."""

    settings: Settings
    origin: str
    """Where the names came from, for messages: ``stack NAME`` or ``the environment``."""

    @property
    def on_aws(self) -> bool:
        """True against AWS itself, where CloudWatch has the queues' and tasks' metrics."""
        return self.settings.endpoint_for("cloudwatch") is None


@contextmanager
def translated(action: str, error: type[CeleryLambdaError] = ConfigurationError) -> Iterator[None]:
    """Turn botocore's errors into ``error`` naming what was being done."""
    try:
        yield
    except ClientError as exc:
        detail = exc.response.get("Error", {})
        message = detail.get("Message") or detail.get("Code") or str(exc)
        raise error(f"{action} failed: {message}") from exc
    except BotoCoreError as exc:
        raise error(f"{action} failed: {exc}") from exc


def stack_environment(stack: str, outputs: Mapping[str, str]) -> dict[str, str]:
    """The variables a stack's outputs stand for.

    Raises:
        ConfigurationError: an output the commands need is missing (not this project's stack).
    """
    missing = [name for name in STACK_OUTPUTS if not outputs.get(name)]
    if missing:
        raise ConfigurationError(
            f"stack {stack!r} has no output {', '.join(missing)}: is it a celery-lambda stack?"
        )
    return {variable: outputs[name] for name, variable in STACK_OUTPUTS.items()}


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    """``{OutputKey: OutputValue}`` of ``stack``.

    Raises:
        ConfigurationError: the stack does not exist or cannot be described.
    """
    try:
        response = cloudformation.describe_stacks(StackName=stack)
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", str(exc))
        if "does not exist" in message:
            raise ConfigurationError(f"no stack {stack!r} in this account and region") from exc
        raise ConfigurationError(f"describing stack {stack!r} failed: {message}") from exc
    except BotoCoreError as exc:
        raise ConfigurationError(f"describing stack {stack!r} failed: {exc}") from exc
    [description] = response["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in description.get("Outputs", [])}


NO_ENVIRONMENT = (
    "CELERY_QUEUE_URLS is not set: `source .celery-lambda/env.sh` (written by "
    "`celery -A tasks lambda up`) or pass --stack NAME"
)
"""The one line every operator's command answers without its environment."""


def target_from_env(env: Mapping[str, str] | None = None) -> Target:
    """The deployment the environment names (``deploy-local``'s exports).

    Raises:
        ConfigurationError: no queue is named, or a variable cannot work.
    """
    settings = Settings.from_env(os.environ if env is None else env)
    if not settings.queue_urls:
        raise ConfigurationError(NO_ENVIRONMENT)
    return Target(settings, "the environment")


def target_from_stack(
    stack: str, cloudformation: Any, env: Mapping[str, str] | None = None
) -> Target:
    """The deployment of CloudFormation stack ``stack``, reached as ``env`` says (region, endpoint).

    Raises:
        ConfigurationError: no such stack, or not one of this project's.
    """
    env = os.environ if env is None else env
    names = stack_environment(stack, stack_outputs(cloudformation, stack))
    return Target(Settings.from_env({**env, **names}), f"stack {stack}")
