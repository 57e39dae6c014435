"""``lambda consume`` starts from what ``deploy-local``/``up`` recorded and never provisions.

Against an emulator of this module's own (not the session's), so that its request counts are only
these commands' requests. Every command runs as a user runs it, in a shell whose working directory
(where ``.celery-lambda/`` is written) is the test's own.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.cloud.emulator import LOCAL_CREDENTIALS, Emulator, free_port, request_counts
from devtools.cloud.session import DEPLOYMENTS_DIR, ENV_FILE

pytestmark = pytest.mark.integration  # real CLI processes and consumers: not in `make test-fast`

ROOT = Path(__file__).resolve().parents[3]
PROVISIONING = ("CreateQueue", "CreateTable", "CreateBucket", "GetCallerIdentity", "SetQueue")


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with Emulator() as started:
        yield started


@pytest.fixture
def shell(emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    """A user's environment pointed at the emulator and nothing else (no exports sourced)."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PYTHONPATH": str(ROOT),
        "AWS_ENDPOINT_URL": emulator.endpoint_url,
        "AWS_DEFAULT_REGION": "us-east-1",
        "CELERY_LAMBDA_CACHE_DIR": str(tmp_path / "cache"),
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        **LOCAL_CREDENTIALS,
    }


@pytest.fixture
def stack() -> str:
    """A stack of the test's own: its queues and tables are no other test's."""
    return f"t{uuid.uuid4().hex[:8]}"


def cli(
    env: dict[str, str], cwd: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tasks", "lambda", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def python(env: dict[str, str], cwd: Path, code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def exports(text: str) -> dict[str, str]:
    pairs = (shlex.split(line.removeprefix("export "))[0] for line in text.splitlines())
    return dict(pair.split("=", 1) for pair in pairs)


def provisioning(counts: dict[str, int]) -> dict[str, int]:
    return {k: n for k, n in counts.items() if k.split(":")[1].startswith(PROVISIONING)}


def deploy_local(shell: dict[str, str], cwd: Path, stack: str) -> dict[str, str]:
    out = cli(shell, cwd, "deploy-local", "--stack-name", stack)
    assert out.returncode == 0, out.stderr
    return exports(out.stdout)


def test_consume_without_a_deployment_says_what_to_run(
    emulator: Emulator, shell: dict[str, str], tmp_path: Path, stack: str
) -> None:
    emulator.reset_counts()

    out = cli(shell, tmp_path, "consume", "--until-empty", "--stack-name", stack)

    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert f"stack {stack} is not deployed on {emulator.endpoint_url}" in line
    assert "`celery -A tasks lambda deploy-local`" in line
    assert provisioning(emulator.counts()) == {}


def test_consume_reads_the_record_and_provisions_nothing(
    emulator: Emulator, shell: dict[str, str], tmp_path: Path, stack: str
) -> None:
    deploy_local(shell, tmp_path, stack)
    [record] = (tmp_path / DEPLOYMENTS_DIR).glob(f"{stack}--*.json")
    emulator.reset_counts()

    out = cli(shell, tmp_path, "consume", "--until-empty", "--stack-name", stack)

    assert out.returncode == 0, out.stderr
    assert "0 batches, 0 records, 0 failed" in out.stderr
    counts = emulator.counts()
    # One look at each empty queue: no deploy, no translation's STS call, not even a long poll.
    assert set(counts) == {"sqs:GetQueueAttributes"}, counts
    assert counts["sqs:GetQueueAttributes"] == record.read_text().count('"queue_url"')


UNNEEDED = (
    *("devtools.bench", "devtools.checks", "devtools.dashboard", "devtools.demo", "devtools.ops"),
    *("devtools.soak", "devtools.testing", "samtranslator", "cfnlint", "moto", "rich"),
    *("starlette", "jinja2", "uvicorn"),
)
"""What ``consume`` must not import: other commands' modules, the template's translation, the
emulator's server, the web stack, rich (two plain lines need no console)."""
PACKAGES = tuple(f"{name}." for name in UNNEEDED)


def imported(importtime: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported."""
    rows = (line.split("|") for line in importtime.splitlines() if line.startswith("import time:"))
    return {row[2].strip() for row in rows if len(row) == 3}


def test_consume_imports_only_what_it_runs(
    shell: dict[str, str], tmp_path: Path, stack: str
) -> None:
    deploy_local(shell, tmp_path, stack)
    argv = [sys.executable, "-X", "importtime", "-m", "celery", "-A", "tasks", "lambda"]

    out = subprocess.run(
        [*argv, "consume", "--until-empty", "--stack-name", stack],
        cwd=tmp_path,
        env=shell,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert out.returncode == 0, out.stderr[-2000:]
    assert "0 batches, 0 records, 0 failed" in out.stderr
    modules = imported(out.stderr)
    assert {"devtools.cloud.event_source", "infra.consumer.handler"} <= modules  # handler loaded
    assert sorted(m for m in modules if m in UNNEEDED or m.startswith(PACKAGES)) == []


def test_the_second_deploy_reuses_the_translation(
    shell: dict[str, str], tmp_path: Path, stack: str
) -> None:
    first = deploy_local(shell, tmp_path, stack)
    [cached] = (tmp_path / "cache").glob("sam-*.json")
    written = cached.stat()

    second = deploy_local(shell, tmp_path, stack)

    assert second == first
    [again] = (tmp_path / "cache").glob("sam-*.json")
    after = again.stat()
    assert (after.st_ino, after.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)


@pytest.mark.parametrize(
    "pollers", [("--concurrency", "2"), ("--concurrency", "2", "--processes")], ids=str
)
def test_consume_runs_published_tasks_with_the_recorded_environment(
    emulator: Emulator,
    shell: dict[str, str],
    tmp_path: Path,
    stack: str,
    pollers: tuple[str, ...],
) -> None:
    published = {**shell, **deploy_local(shell, tmp_path, stack)}
    task_id = python(published, tmp_path, "from tasks import add; print(add.delay(2, 3).id)")
    emulator.reset_counts()

    out = cli(shell, tmp_path, "consume", "--until-empty", "--stack-name", stack, *pollers)

    assert out.returncode == 0, out.stderr
    assert "1 batches, 1 records, 0 failed" in out.stderr
    assert provisioning(emulator.counts()) == {}
    result = f"from tasks import app; print(app.AsyncResult({task_id!r}).get(timeout=10))"
    assert python(published, tmp_path, result) == "5"


def test_consume_on_a_record_whose_queues_are_gone_says_what_to_run(
    emulator: Emulator, shell: dict[str, str], tmp_path: Path, stack: str
) -> None:
    deploy_local(shell, tmp_path, stack)
    emulator.reset()  # the emulator restarted on the same port: its queues are gone

    out = cli(shell, tmp_path, "consume", "--until-empty", "--stack-name", stack)

    assert out.returncode == 1
    [line] = out.stderr.strip().splitlines()
    assert "does not exist" in line and "`celery -A tasks lambda deploy-local`" in line


def test_up_records_the_deployment_that_consume_reads(tmp_path: Path, stack: str) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "PYTHONPATH": str(ROOT),
        "AWS_DEFAULT_REGION": "us-east-1",
        "CELERY_LAMBDA_CACHE_DIR": str(tmp_path / "cache"),
    }
    command = [sys.executable, "-m", "celery", "-A", "tasks", "lambda", "up"]
    log = tmp_path / "up.log"
    with log.open("w") as stderr:
        up = subprocess.Popen(
            [*command, "--port", str(port), "--stack-name", stack, "--no-consume"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        env_file = tmp_path / ENV_FILE
        deadline = time.monotonic() + 90
        while not env_file.exists() or not list((tmp_path / DEPLOYMENTS_DIR).glob("*.json")):
            assert up.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "lambda up did not deploy in time"
            time.sleep(0.2)
        sourced = {**env, **exports(env_file.read_text())}
        request_counts(endpoint, reset=True)

        out = cli(sourced, tmp_path, "consume", "--until-empty", "--stack-name", stack)

        assert out.returncode == 0, out.stderr
        assert set(request_counts(endpoint)) == {"sqs:GetQueueAttributes"}
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
    assert up.returncode == 0, log.read_text()
