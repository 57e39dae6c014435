"""X-Ray only where it traces: the tracer (and the X-Ray SDK's import, with its recorder and
sampling client) is made inside Lambda only, by Powertools' own rule."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from infra.core.observability import xray_enabled
from tests.workers import ROOT

SETUP = (
    "import sys; from infra.consumer.runtime import pipeline; pipeline(); "
    "print('aws_xray_sdk.core' in sys.modules)"
)


@pytest.mark.parametrize(
    ("env", "enabled"),
    [
        ({}, False),  # a local consumer, a test, a worker
        ({"LAMBDA_TASK_ROOT": "/var/task"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "POWERTOOLS_TRACE_DISABLED": "0"}, True),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_SAM_LOCAL": "true"}, False),
        ({"LAMBDA_TASK_ROOT": "/var/task", "AWS_CHALICE_CLI_MODE": "true"}, False),
    ],
)
def test_tracing_is_on_inside_lambda_only(env: dict[str, str], enabled: bool) -> None:
    assert xray_enabled(env) is enabled


@pytest.mark.parametrize(("lambda_env", "imported"), [(False, "False"), (True, "True")])
def test_the_first_invocation_loads_the_xray_sdk_only_inside_lambda(
    lambda_env: bool, imported: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMBDA_", "POWERTOOLS_"))}
    env |= {"CELERY_APP": "tasks:app", "AWS_DEFAULT_REGION": "us-east-1"}
    if lambda_env:
        env["LAMBDA_TASK_ROOT"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", SETUP], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == imported
