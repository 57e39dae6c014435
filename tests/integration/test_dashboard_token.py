"""The command the deployed dashboard runs (template.yaml's WebDashboardTaskDefinition), for real.

``celery -A tasks lambda dashboard --port=P --read-only`` with the token in
``CELERY_LAMBDA_DASHBOARD_TOKEN``, as ECS passes in the stack's secret: it requires that token,
prints a URL without it (its output is the container's log) and refuses actions.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from devtools.cloud.emulator import free_port
from devtools.dashboard.server import TOKEN_VARIABLE
from tests.workers import ROOT

pytestmark = pytest.mark.integration


def status(url: str, token: str | None = None, data: bytes | None = None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def wait_until_it_answers(url: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            status(url)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered at {url} within {within} s")


def test_the_deployed_command_takes_its_token_from_the_environment_and_never_prints_it(
    cloud_env: dict[str, str],
) -> None:
    port, token = free_port(), f"secret-{uuid.uuid4().hex}"
    argv = ["celery", "-A", "tasks", "lambda", "dashboard", f"--port={port}", "--read-only"]
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        cwd=ROOT,
        env={**cloud_env, TOKEN_VARIABLE: token},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = [process.stdout.readline() for _ in range(3)]
        base = f"http://127.0.0.1:{port}"
        wait_until_it_answers(base)

        assert status(f"{base}/", token) == 200
        assert status(f"{base}/") == 401
        assert status(f"{base}/", "another-token") == 401
        assert status(f"{base}/dlq/purge", token, data=b"dlq=x") == 403  # read-only
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert printed[1].strip() == f"{base}/?token=<the value of ${TOKEN_VARIABLE}>"
    assert "read-only" in printed[2]
    assert token not in "".join(printed) + output
